"""tradeops ops agent: the host-side commands of tradeops.

``tradeops_agent.health`` and ``tradeops_agent.release`` are copied at build time from
``plugins/module_utils/tradeops_health.py`` and ``tradeops_release.py`` by
``scripts/build_agent.py`` (they are not in this source tree), which also writes the
version below into the built copy.
"""

__version__ = "0.1.0"
