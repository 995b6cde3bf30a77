# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The option `requirements` shared by app_release and app_deploy (its check: check_requirements in
module_utils/tradeops_release.py; its documentation: this fragment)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  requirements:
    description:
      - Distributions the application runs with but does not declare (its WSGI/ASGI server, e.g. C(gunicorn>=22)),
        installed into the release's dependency layer beside the application's own requirements, offline from
        O(wheelhouse), which must hold their wheels (C(scripts/build_wheelhouse.py --requirement)).
      - Requirement specifiers only (name, extras, versions, marker); a URL, a path or a pip option is refused.
    type: list
    elements: str
    default: []
"""
