#!/usr/bin/python
# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation only: the module is win_app_health.ps1 (PowerShell runs on Windows targets).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: win_app_health
short_description: Verify the health of a Windows host and its services, with app_health's result shape
version_added: "0.1.0"
description:
  - Windows twin of M(app_health). Runs HTTP probes (status, body text, a JSON field such as the deployed version),
    Windows service state (Running is healthy), TCP ports, and disk / memory thresholds, and aggregates them to
    C(healthy), C(degraded) or C(unhealthy) (the worst check).
  - Retries with a doubling pause inside one overall O(deadline), and stops as soon as the result is O(min_status) or
    better. The task fails when the final result is worse than O(min_status); its message names the failing checks.
  - Returns the same keys as M(app_health) (C(status checks failed_checks attempts elapsed)); a service check is
    named C(service:<name>) with kind C(service) where M(app_health) has C(unit:<name>) with kind C(systemd).
author:
  - tradeops contributors
attributes:
  check_mode:
    support: full
    description: The module only reads, so it runs its checks in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: windows
options:
  http:
    description: HTTP(S) probes. Proxies are not used.
    type: list
    elements: dict
    default: []
    suboptions:
      url:
        description: URL to request. User and password in it are never shown in results.
        type: str
        required: true
      name:
        description: Name of the check in results (default the URL).
        type: str
      status:
        description: Accepted HTTP status codes.
        type: list
        elements: int
        default: [200]
      body_contains:
        description: Text the response body must contain.
        type: str
      json_field:
        description: Dotted path of a field in the JSON body.
        type: str
      json_value:
        description: Value the JSON field must have (compared as text).
        type: raw
      timeout:
        description: Seconds for this probe (default O(timeout)); never beyond what is left of O(deadline).
        type: float
      headers:
        description: Request headers (not logged).
        type: dict
      method:
        description: HTTP method.
        type: str
        default: GET
        choices: [GET, HEAD]
      validate_certs:
        description: Verify TLS certificates.
        type: bool
        default: true
      follow_redirects:
        description: Follow redirects.
        type: bool
        default: true
  services:
    description: Windows services that must be Running.
    type: list
    elements: str
    default: []
  tcp:
    description: C(host:port) (or C([v6]:port)) that must accept a connection.
    type: list
    elements: str
    default: []
  thresholds:
    description: Resources to check; a resource not named is not checked. Over warning is degraded, over critical
      unhealthy.
    type: dict
    suboptions:
      memory:
        description: Physical memory used, percent.
        type: dict
        suboptions:
          warning: {description: Warning percent., type: float, default: 85}
          critical: {description: Critical percent., type: float, default: 95}
      disk:
        description: Space used on each drive of O(thresholds.disk.paths), percent.
        type: dict
        suboptions:
          paths: {description: Drive roots., type: list, elements: str, default: ['C:\']}
          warning: {description: Warning percent., type: float, default: 85}
          critical: {description: Critical percent., type: float, default: 95}
  timeout:
    description: Default seconds of a probe.
    type: float
    default: 5
  retries:
    description: Further attempts after the first while the result is worse than O(min_status).
    type: int
    default: 0
  delay:
    description: First pause between attempts (doubles, up to O(max_delay)).
    type: float
    default: 1
  max_delay:
    description: Longest pause between attempts.
    type: float
    default: 5
  deadline:
    description: Overall limit in seconds for all attempts.
    type: float
    default: 60
  min_status:
    description: Worst acceptable result; the task fails when the result is worse.
    type: str
    default: healthy
    choices: [healthy, degraded, unhealthy]
notes:
  - Nothing of this module has run on a real Windows host yet; its syntax is checked by C(scripts/check_powershell.py).
seealso:
  - module: app_health
  - module: win_app_release
"""

EXAMPLES = r"""
- name: Health gate after a switch
  win_app_health:
    http:
      - url: http://127.0.0.1:8000/health
        json_field: version
        json_value: "{{ app_version }}"
    services: [AITradingEngine]
    retries: 30
    delay: 0.5
    max_delay: 2
    deadline: 60

- name: Host health, accept degraded
  win_app_health:
    thresholds:
      disk: {paths: ['C:\']}
      memory: {}
    min_status: degraded
"""

RETURN = r"""
status:
  description: Aggregate result, the worst check.
  returned: always
  type: str
  sample: healthy
checks:
  description: One entry per check with name, kind (http, service, tcp, memory, disk), status, detail, duration
    and data.
  returned: always
  type: list
  elements: dict
failed_checks:
  description: Names of the checks that were not healthy.
  returned: always
  type: list
  elements: str
attempts:
  description: Number of attempts made.
  returned: always
  type: int
elapsed:
  description: Seconds spent in all attempts.
  returned: always
  type: float
"""
