#!/usr/bin/python
# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_health
short_description: Verify the health of a host and its services
version_added: "0.1.0"
description:
  - Runs health checks on the target, HTTP probes (status, body text, a JSON field such as the deployed
    version), systemd unit state, TCP ports, PostgreSQL and Redis reachability, and disk / memory / CPU
    thresholds, and aggregates them to C(healthy), C(degraded) or C(unhealthy) (the worst check).
  - An HTTP, TCP, PostgreSQL, Redis or unit failure is unhealthy; a resource over its warning percent is
    degraded, over its critical percent unhealthy; a unit restarted by systemd since it was started is degraded.
  - Retries with a doubling pause inside one overall O(deadline), and stops as soon as the result is
    O(min_status) or better. The task fails when the final result is worse than O(min_status), and its
    message names the failing checks.
  - The same logic is the C(tradeops-health) command shipped to hosts (exit 0 healthy, 1 degraded, 2 unhealthy,
    3 could not check).
author:
  - tradeops contributors
attributes:
  check_mode:
    support: full
    description: The module only reads, so it runs its checks in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  http:
    description: HTTP(S) probes. Proxies from the environment are not used.
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
        description: Accepted HTTP status codes, each a code (C(200)) or an inclusive range (C("200-299")).
        type: list
        elements: raw
        default: [200]
      body_contains:
        description: Text the response body must contain.
        type: str
      json_field:
        description: Dotted path of a field in the JSON body (C(version), C(checks.db.status), C(items.0.id)).
        type: str
      json_value:
        description: Value the JSON field must have (compared as JSON value or as text), e.g. the deployed version.
        type: raw
      header:
        description: Response header that must be present, e.g. C(X-Version).
        type: str
      header_value:
        description: Value the response header O(http[].header) must have (surrounding blanks ignored).
        type: str
      timeout:
        description: Seconds for this probe (default O(timeout)); never beyond what is left of O(deadline).
        type: float
      headers:
        description: Request headers. Values may be secrets; they are not logged.
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
        description: Follow redirects (the final status is checked).
        type: bool
        default: true
  systemd_units:
    description: Units that must be C(active) (running, or exited for oneshot units); read with one C(systemctl show).
    type: list
    elements: str
    default: []
  tcp:
    description: C(host:port) (or C([v6]:port)) that must accept a connection.
    type: list
    elements: str
    default: []
  postgresql:
    description: PostgreSQL servers that must answer the protocol's SSLRequest (no credentials needed).
    type: list
    elements: dict
    default: []
    suboptions:
      host:
        description: Host name or address.
        type: str
        required: true
      port:
        description: Port.
        type: int
        default: 5432
      name:
        description: Name of the check in results.
        type: str
      timeout:
        description: Seconds (default O(timeout)).
        type: float
  redis:
    description:
      - Redis servers that must answer PING. C(+PONG) is healthy, and so is an authentication refusal
        (C(-NOAUTH), C(-WRONGPASS)), which proves the server answers; C(-LOADING) and the like are degraded.
    type: list
    elements: dict
    default: []
    suboptions:
      host:
        description: Host name or address.
        type: str
        required: true
      port:
        description: Port.
        type: int
        default: 6379
      name:
        description: Name of the check in results.
        type: str
      timeout:
        description: Seconds (default O(timeout)).
        type: float
  thresholds:
    description:
      - Resource limits in percent used; only the resources named are checked. Above C(warning) is degraded,
        above C(critical) unhealthy. Uses psutil when installed, else C(/proc) and C(statvfs).
    type: dict
    suboptions:
      cpu:
        description: CPU use measured over O(thresholds.cpu.interval) seconds.
        type: dict
        suboptions:
          warning:
            description: Degraded above this percent.
            type: float
            default: 80
          critical:
            description: Unhealthy above this percent.
            type: float
            default: 95
          interval:
            description: Seconds to measure over.
            type: float
            default: 0.5
      memory:
        description: Memory in use (total minus available).
        type: dict
        suboptions:
          warning:
            description: Degraded above this percent.
            type: float
            default: 85
          critical:
            description: Unhealthy above this percent.
            type: float
            default: 95
      disk:
        description: Space used of the filesystems of O(thresholds.disk.paths), as C(df) shows it.
        type: dict
        suboptions:
          paths:
            description: Paths whose filesystems are checked.
            type: list
            elements: path
            default: [/]
          warning:
            description: Degraded above this percent.
            type: float
            default: 85
          critical:
            description: Unhealthy above this percent.
            type: float
            default: 95
  timeout:
    description: Default seconds per probe (HTTP, TCP, PostgreSQL, Redis, systemctl).
    type: float
    default: 5
  retries:
    description: Attempts after the first while the result is worse than O(min_status).
    type: int
    default: 0
  delay:
    description: Pause before the second attempt; doubled after each attempt up to O(max_delay).
    type: float
    default: 1
  max_delay:
    description: Longest pause between attempts.
    type: float
    default: 5
  deadline:
    description: Overall limit in seconds for all attempts; probe timeouts are cut to the time left.
    type: float
    default: 60
  min_status:
    description: Worst acceptable result; the task fails when the result is worse.
    type: str
    default: healthy
    choices: [healthy, degraded, unhealthy]
notes:
  - Every duration (deadlines, delays, timeouts, soak) is a finite number of seconds, at most 86400; a value
    that is not (NaN, an infinity, 0 where more than 0 is needed) is refused naming the option, never replaced by
    the default. Probe URLs must be http(s) URLs with a host and a valid port.
  - The logic lives in C(module_utils/tradeops_health.py) (standard library only), also usable as a command.
seealso:
  - module: app_release
"""

EXAMPLES = r"""
- name: Health gate after a switch (wait up to 60 s for the new release)
  app_health:
    http:
      - url: http://127.0.0.1:8000/health/live
      - url: http://127.0.0.1:8000/health/ready
        json_field: version
        json_value: "{{ app_version }}"
    systemd_units: [refapp.service]
    retries: 30
    delay: 0.5
    max_delay: 2
    deadline: 60
  register: app_health_gate

- name: Verify a database host, accept degraded
  app_health:
    postgresql:
      - host: 127.0.0.1
    redis:
      - host: 127.0.0.1
    thresholds:
      disk: {paths: [/, /var/lib/postgresql]}
      memory: {}
      cpu: {}
    min_status: degraded

- name: A probe with a secret header
  app_health:
    http:
      - url: https://127.0.0.1/api/status
        headers:
          Authorization: "Bearer {{ vault_status_token }}"
        validate_certs: false
"""

RETURN = r"""
status:
  description: Aggregate result, the worst check.
  returned: always
  type: str
  sample: healthy
checks:
  description: One entry per check, with name, kind (http, systemd, tcp, postgresql, redis, cpu, memory, disk),
    status, detail, duration (seconds) and data (e.g. the HTTP status, the JSON value, the percent used).
  returned: always
  type: list
  elements: dict
  sample:
    - name: http://127.0.0.1:8000/health/ready
      kind: http
      status: healthy
      detail: HTTP 200
      duration: 0.004
      data: {status: 200, json_value: 1.4.2}
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

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tradeops_health import CheckError, HealthSpec, at_least, evaluate, probe_argument_spec


def _limit(warning: float, critical: float, interval: bool = False) -> dict:
    spec = dict(warning=dict(type="float", default=warning), critical=dict(type="float", default=critical))
    if interval:
        spec["interval"] = dict(type="float", default=0.5)
    return spec


def _endpoint(port: int) -> dict:
    return dict(
        host=dict(type="str", required=True),
        port=dict(type="int", default=port),
        name=dict(type="str"),
        timeout=dict(type="float"),
    )


def argument_spec() -> dict:
    return dict(
        http=dict(type="list", elements="dict", default=[], options=probe_argument_spec()),
        systemd_units=dict(type="list", elements="str", default=[]),
        tcp=dict(type="list", elements="str", default=[]),
        postgresql=dict(type="list", elements="dict", default=[], options=_endpoint(5432)),
        redis=dict(type="list", elements="dict", default=[], options=_endpoint(6379)),
        thresholds=dict(type="dict", options=dict(
            cpu=dict(type="dict", options=_limit(80.0, 95.0, interval=True)),
            memory=dict(type="dict", options=_limit(85.0, 95.0)),
            disk=dict(type="dict", options=dict(paths=dict(type="list", elements="path", default=["/"]),
                                                **_limit(85.0, 95.0))),
        )),
        timeout=dict(type="float", default=5.0),
        retries=dict(type="int", default=0),
        delay=dict(type="float", default=1.0),
        max_delay=dict(type="float", default=5.0),
        deadline=dict(type="float", default=60.0),
        min_status=dict(type="str", default="healthy", choices=["healthy", "degraded", "unhealthy"]),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:  # every option is checked by HealthSpec.validate and evaluate: a bad one is a CheckError naming it
        report = evaluate(
            HealthSpec.from_params(params),
            retries=params["retries"],
            delay=params["delay"],
            max_delay=params["max_delay"],
            deadline=params["deadline"],
            min_status=params["min_status"],
        )
    except CheckError as exc:
        module.fail_json(msg=f"could not check: {exc}", status=None)
    result = dict(changed=False, **report.as_dict())
    if not at_least(report.status, params["min_status"]):
        module.fail_json(
            msg=f"health is {report.status}, worse than min_status={params['min_status']}, after {report.attempts} "
                f"attempt(s) in {report.elapsed:.1f} s; failing: {report.failing_text()}",
            **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
