"""tradeops ops agent: the host-side commands of tradeops.

``tradeops_agent.health``, ``tradeops_agent.release`` and ``tradeops_agent.backup`` are copied at
build time from ``plugins/module_utils/tradeops_health.py``, ``tradeops_release.py`` and
``tradeops_backup.py`` by
``scripts/build_agent.py`` (they are not in this source tree), which also writes the
version below into the built copy.
"""

__version__ = "0.1.0"
