#!/usr/bin/python
# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_deploy
short_description: Health-gated deploy, rollback, restart or verify of an application, in one call on the host
version_added: "0.2.0"
description:
  - Runs the whole health-gated switch of one application on the host, in one module call (the task-based
    flow of the role took about twenty), over the same logic as M(app_release) and M(app_health).
  - "C(deploy): lock, create the release from O(wheelhouse) (idempotent), and when it is already current, marked
    good and every service passes one pass of its checks: nothing else (C(changed=false)). Otherwise run
    O(migrate) from the new release (whenever it is not current yet; a failure marks it bad and switches
    nothing), switch C(current), restart the services (C(systemctl stop) in reverse order, C(reset-failed),
    then C(systemctl start) each in order behind its own health gate before the next one starts), mark the
    release good, prune, unlock."
  - "A failed gate marks the release bad, rolls back to the release that served before (or the previous good
    one), restarts and gates that one with its own version, and fails naming the failing checks, the release
    rolled back to and whether it is healthy. With no release to go back to, the units are stopped and the
    failure says that nothing serves."
  - "C(rollback): switch to the previous good release (or O(release) / O(version)), restart and gate it; when it
    fails its gate, switch forward to the release that served before, restart it, and fail."
  - C(restart) restarts the current release behind the gate (no rollback; with no release deployed yet it does
    nothing and says so); C(verify) only reads the health of
    every service (no lock, nothing written).
  - The deploy lock is taken first and always released at the end, also on failure. Taking and releasing it
    writes no ledger line (breaking a lock with O(force_unlock) does); a run that changed something ends
    with one C(summary) line in C(ledger.jsonl) (run, outcome, lock holder, timings), after the store's own
    C(create)/C(activate)/C(mark)/C(rollback)/C(prune) lines. A re-deploy that changes nothing writes nothing.
author:
  - tradeops contributors
attributes:
  check_mode:
    support: full
    description:
      - Reports what would happen (the lock is checked, create and the switch run in check mode); runs no
        C(systemctl start/stop/reset-failed) and no migration, writes nothing.
      - C(verify) only reads, so it runs its checks in check mode too.
  diff_mode:
    support: full
    description: Shows the target of C(current) before and after.
  platform:
    platforms: posix
extends_documentation_fragment:
  - tradeops_lock
  - tradeops_requirements
options:
  path:
    description: Root of the application tree, for example C(/opt/refapp).
    type: path
    required: true
  action:
    description:
      - C(deploy) the release of O(version) built from O(wheelhouse), behind the health gate.
      - C(rollback) to the previous good release, or to O(release) / O(version), behind the health gate.
      - C(restart) the current release behind the health gate.
      - C(verify) the health of every service of the current release (read only).
      - C(soak) watches the current release for O(soak) seconds while it takes traffic (after the host is put
        back at its load balancers); a unit that restarts, stops or fails, or HTTP probes failing 3 passes in a
        row, fail it like a health gate (release marked bad, previous good release restarted behind the gate).
    type: str
    default: deploy
    choices: [deploy, rollback, restart, verify, soak]
  version:
    description:
      - C(deploy), the version label of the release (required).
      - C(rollback), the newest release of that version (a good one when there is one).
    type: str
  release:
    description: C(rollback), the release id to go to (C(<version>-<YYYYmmddTHHMMSSZ>)).
    type: str
  reason:
    description:
      - Why; recorded in the ledger on the summary line of a run that succeeds (e.g. a deploy window override).
      - C(rollback), also on its switch line (default C(manual rollback)).
    type: str
  wheelhouse:
    description: C(deploy), the directory on the host with the app wheel and its dependency wheels (as M(app_release)).
    type: path
  wheelhouse_name:
    description:
      - C(deploy), keep the wheelhouse found in O(wheelhouse) (a temporary directory it was shipped to) as
        C(wheelhouses/<name>) under O(path), owned by root and O(group), and build the release from there; an
        identical one already there is reused.
      - Set by the action plugin from O(wheelhouse_src); rarely given by hand.
    type: str
  wheelhouse_src:
    description:
      - C(deploy), a wheelhouse directory B(on the controller) (as C(scripts/build_wheelhouse.py) prints it). The
        action plugin ships its files to a temporary directory on the host (no module round trip per file) and
        sets O(wheelhouse) and O(wheelhouse_name) (the directory's name). Mutually exclusive with O(wheelhouse).
    type: path
  wheelhouse_build:
    description:
      - C(deploy), build the wheelhouse B(on the controller) first, with C(scripts/build_wheelhouse.py) (reused when
        built before from the same inputs), then ship it as O(wheelhouse_src) would be. Role app's deploy uses this.
      - Done by the action plugin, in check mode too (a plan compares the wheelhouse it would ship).
      - Mutually exclusive with O(wheelhouse) and O(wheelhouse_src).
    type: dict
    suboptions:
      source:
        description: The application's source tree (with C(pyproject.toml)) or a ready wheel, on the controller.
        type: path
        required: true
      version:
        description: The release version; a source that carries another version is refused.
        type: str
        required: true
      out:
        description: Directory on the controller the wheelhouses of this application are kept under.
        type: path
        required: true
      python_version:
        description: The hosts' Python (X.Y or X.Y.Z) the dependency wheels are chosen for.
        type: str
      requirements:
        description: Requirements the application runs with but does not declare (its WSGI/ASGI server).
        type: list
        elements: str
  package:
    description: Distribution name of the application (default the C(name) in the wheelhouse's C(wheelhouse.json)).
    type: str
  python:
    description: Interpreter the release virtualenvs are made with.
    type: path
    default: /usr/bin/python3
  shared_links:
    description: Symlinks made in each release, path inside the release -> path under C(shared/).
    type: dict
    default: {data: data, logs: logs, config: config}
  owner:
    description:
      - Owner of C(shared/{data,logs,config}) (the app user); default user of O(migrate).
      - A user that does not exist is refused; in check mode (a first deploy, whose user task only reported)
        the plan names it (RV(missing_accounts)).
    type: str
  group:
    description: Group of the shared directories and of the release tree (the app group); default group of O(migrate).
    type: str
  min_free_mb:
    description: Free disk (MB) needed under O(path) for a new release; refused before anything is written when short.
    type: int
    default: 0
  keep:
    description:
      - Releases kept by the prune after a successful deploy (plus current, the last and previous good one); at least
        1 (C(0) is refused).
    type: int
    default: 5
  console_scripts:
    description:
      - Programs the services (and the migration) run from the release's C(venv/bin), each with the setting that
        names it. After the release is made and before anything is switched, each must exist there (a console
        script of the application or of any distribution installed in the release); one that does not marks the
        release bad, switches nothing and fails, naming the setting and the scripts the release has.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: File name under C(venv/bin) (no path).
        type: str
        required: true
      setting:
        description: The setting that names it, quoted in the failure (e.g. C(app_services[web].console_script)).
        type: str
        required: true
  migrate:
    description:
      - Command run from the new release before the switch, whenever the release is not current yet (after an
        interrupted run too, so migrations must be idempotent). An empty O(migrate.argv) runs nothing.
      - "Run as C(systemd-run --wait --pipe --quiet --collect --uid=USER --gid=GROUP
        --property=EnvironmentFile=ENV_FILE --property=RuntimeMaxSec=TIMEOUT --working-directory=RELEASE
        RELEASE/venv/bin/ARGV0 ARGS...), so it sees the same environment as the units."
      - A failure (or a timeout) marks the release bad, switches nothing and fails with the tail of its output.
    type: dict
    suboptions:
      argv:
        description: Program (a name in the release's C(venv/bin), e.g. C(refapp)) and its arguments.
        type: list
        elements: str
        required: true
      user:
        description: User it runs as (default O(owner); root when neither is set).
        type: str
      group:
        description: Group it runs as (default O(group)).
        type: str
      env_file:
        description: Environment file loaded for it, as the units' C(EnvironmentFile=).
        type: path
      timeout:
        description: Seconds before systemd kills it (C(RuntimeMaxSec)).
        type: int
        default: 600
  services:
    description:
      - The application's systemd units in start order (dependencies first, as the caller sorted them).
        They are stopped in reverse order and started in this order, each behind its own health gate
        (the unit active and its O(services[].probes) healthy) before the next one starts.
      - An empty list deploys without restarting anything.
    type: list
    elements: dict
    default: []
    suboptions:
      unit:
        description:
          - Unit name, one of the application's own service units, C(<app_name>-<service>.service), e.g.
            C(refapp-web.service). Any other name (a glob such as C(*), another application's or the system's
            unit) is refused before anything is stopped.
        type: str
        required: true
      deadline:
        description: Seconds the gate of this unit may take, retries included (default O(deadline)).
        type: float
      probes:
        description:
          - Probes of this service (its health contract), each of O(services[].probes[].kind) C(http) (exactly as the
            C(http) option of M(app_health), plus O(services[].probes[].expect_version)), C(tcp) or C(command).
          - A probe with O(services[].probes[].expect_version) (or, when that is unset, an HTTP probe whose
            C(json_field) is O(version_field)) expects the version of the release being gated (the new one, or the
            one rolled back to).
          - "Command probes run from the current release: in its directory, its C(venv/bin) first on C(PATH), the
            entries of O(services[].probes[].env_file) (read by root, never shown, masked in the output) in the
            environment, as O(services[].probes[].user). Their result holds the exit code and the last 400
            characters of the output."
        type: list
        elements: dict
        default: []
        suboptions: &probe_options
          kind:
            description: C(http) (a request), C(tcp) (a connection to O(services[].probes[].port)) or C(command).
            type: str
            default: http
            choices: [http, tcp, command]
          url:
            description: C(http), URL to request (required). User and password in it are never shown in results.
            type: str
          name:
            description: Name of the check in results (default the URL, C(tcp:HOST:PORT) or C(command:PROGRAM)).
            type: str
          expect_version:
            description:
              - Gate on the version being started, C(http) in C(json_field) and in C(header) when they have no value
                of their own, C(command) in its output. Unset, an HTTP probe whose C(json_field) is O(version_field)
                expects it.
            type: bool
          status:
            description: C(http), accepted status codes, each a code (C(200)) or an inclusive range (C("200-299")).
            type: list
            elements: raw
            default: [200]
          body_contains:
            description: C(http), text the response body must contain.
            type: str
          json_field:
            description: C(http), dotted path of a field in the JSON body (C(version), C(checks.db.status)).
            type: str
          json_value:
            description: C(http), value the JSON field must have (replaced by the gated version on O(version_field)).
            type: raw
          header:
            description: C(http), response header that must be present, e.g. C(X-Version).
            type: str
          header_value:
            description: C(http), value the response header must have.
            type: str
          timeout:
            description: Seconds for this probe (default 5); never beyond what is left of the deadline.
            type: float
          headers:
            description: C(http), request headers. Values may be secrets; they are not logged.
            type: dict
          method:
            description: C(http), HTTP method.
            type: str
            default: GET
            choices: [GET, HEAD]
          validate_certs:
            description: C(http), verify TLS certificates.
            type: bool
            default: true
          follow_redirects:
            description: C(http), follow redirects (the final status is checked).
            type: bool
            default: true
          host:
            description: C(tcp), address to connect to.
            type: str
            default: 127.0.0.1
          port:
            description: C(tcp), port that must accept a connection (required).
            type: int
          argv:
            description:
              - C(command), program (a name found in the release's C(venv/bin) first, or a path) and its arguments;
                exit 0 is healthy. Never a secret here (arguments are visible to every process); secrets come from
                O(services[].probes[].env_file).
            type: list
            elements: str
          expect_output:
            description: C(command), text its output must contain (besides the version, with expect_version).
            type: str
          user:
            description: C(command), user it runs as, with its own groups (default root, none dropped).
            type: str
          group:
            description: C(command), primary group it runs as (default the user's).
            type: str
          env_file:
            description: C(command), environment file loaded for it, as the units' C(EnvironmentFile=).
            type: path
  gate:
    description:
      - The application's own gate, probes as O(services[].probes) (typically one C(command), e.g. C(myapp --version)
        or a dry run), each run B(once) from the release being gated (no retries), within O(deadline).
      - "With O(services): run after every service passed its own gate, from C(current); a failure is a failed
        gate (rolled back as one)."
      - "Without O(services) (a batch-only application, whose jobs run C(current)): C(deploy) runs it from the new
        release B(before) the switch, and a failure switches nothing (the release is marked bad, outcome
        C(not-switched)); C(rollback) runs it from the target before switching to it; C(verify) and C(restart)
        run it from C(current) (C(restart) restarts nothing); C(soak) has nothing to watch."
      - Its result is RV(health) C(gate).
    type: list
    elements: dict
    default: []
    suboptions: *probe_options
  version_field:
    description:
      - JSON field (in a probe's C(json_field)) that reports the serving version; such probes are gated on the
        version of the release being started. Empty disables the substitution (probes run as given).
    type: str
    default: version
  deadline:
    description: Seconds each unit's gate may take, retries included (per unit, O(services[].deadline) overrides it).
    type: float
    default: 60
  retries:
    description: Attempts of a gate after the first while not healthy (the deadline bounds them), as M(app_health).
    type: int
    default: 1000
  delay:
    description: Pause before a gate's second attempt; doubled after each attempt up to O(max_delay).
    type: float
    default: 0.5
  max_delay:
    description: Longest pause between attempts of a gate.
    type: float
    default: 2
  soak:
    description:
      - C(soak), seconds to watch the current release (one pass of every service's checks each second).
      - Required (> 0) with C(soak); ignored by the other actions.
    type: float
  soak_memory_horizon:
    description:
      - C(soak), seconds ahead. Each unit's C(MemoryCurrent) over the second half of the soak is fitted to a line,
        and a release whose memory would reach the unit's C(MemoryMax) within this time at that rate fails the soak
        (a leak slower than the soak itself, caught before the kernel's OOM kill).
      - Units without C(MemoryMax) are not judged, nor a rise under 4 MiB in all. 0 skips the check.
      - C(MemoryCurrent) counts the unit's page cache too, so a service that fills its cache up to C(MemoryMax) by
        design needs 0 here.
    type: float
    default: 300
  metrics_dir:
    description:
      - node_exporter's textfile collector directory. A C(deploy), C(rollback) or C(soak) that changes anything
        (a failed soak rolls back) writes its
        outcome to C(tradeops_deploy.prom) there, through the shared metrics writer
        (C(tradeops_deploy_last_outcome{app,outcome}) with outcome C(success), C(failed) or C(rolled_back);
        C(tradeops_deploy_last_timestamp_seconds{app}); C(tradeops_deploy_last_duration_seconds{app})).
      - A successful C(rollback) is C(rolled_back) too (the previous release serves), so the DeployFailed alert
        stays until the next successful deploy.
      - Unset (the default), no metrics. A metrics file that cannot be written is a warning, never a failure.
    type: path
  metrics_app:
    description: The application's name, the C(app) label of the metrics and RV(app) (default the last component of
      O(path), e.g. C(refapp)).
    type: str
  app_name:
    description:
      - The application's name; every unit of O(services) must be C(<app_name>-<service>.service).
      - Default O(metrics_app), else the last component of O(path) (C(/opt/refapp) -> C(refapp)).
    type: str
notes:
  - Every duration (deadlines, delays, timeouts, soak) is a finite number of seconds, at most 86400; a value
    that is not (NaN, an infinity, 0 where more than 0 is needed) is refused naming the option, never replaced by
    the default. Probe URLs must be http(s) URLs with a host and a valid port.
  - Runs as root on the target. The logic lives in C(module_utils/tradeops_deploy.py) over
    C(tradeops_release.py) and C(tradeops_health.py) (standard library only).
  - The timings are keyed by the phases of the C(tradeops_summary) callback (C(lock), C(unpack), C(venv),
    C(migrate), C(switch), C(restart), C(health), C(prune), C(other)) and add up to RV(elapsed).
  - Migrations are not reverted by a rollback; they must keep the previous release working.
seealso:
  - module: app_release
  - module: app_health
"""

EXAMPLES = r"""
- name: Deploy 1.4.2, gated on the health of every service
  app_deploy:
    path: /opt/refapp
    version: "1.4.2"
    wheelhouse: /opt/refapp/wheelhouses/tradeops-refapp-1.4.2
    package: tradeops-refapp
    owner: refapp
    group: refapp
    min_free_mb: 300
    keep: 5
    migrate:
      argv: [refapp, migrate]
      env_file: /opt/refapp/shared/config/.env
    services:
      - unit: refapp-web.service
        probes:
          - url: http://127.0.0.1:8000/api/health/liveness
            name: liveness
          - url: http://127.0.0.1:8000/api/health/readiness
            name: readiness
            json_field: version
      - unit: refapp-worker.service
        probes:
          - kind: command
            name: readiness
            argv: [refapp, --version]
            expect_version: true
            user: refapp
            env_file: /opt/refapp/shared/config/.env
            timeout: 10
    deadline: 60
    lock_owner: "{{ lookup('env', 'USER') }}"
    lock_host: "{{ lookup('pipe', 'hostname') }}"
    force_unlock: "{{ force_unlock | default(false) | bool }}"
  register: app_deployed

- name: Deploy a batch-only application (no services; its jobs run current), gated before the switch by a dry run
  app_deploy:
    path: /opt/screener
    version: "2.0.0"
    wheelhouse: /opt/screener/wheelhouses/screener-2.0.0
    owner: screener
    group: screener
    migrate: {argv: [screener, migrate], env_file: /opt/screener/shared/config/.env}
    gate:
      - kind: command
        name: app_gate
        argv: [screener, scan, --dry-run]
        expect_output: "dry run ok"
        expect_version: true
        timeout: 120
        user: screener
        env_file: /opt/screener/shared/config/.env

- name: Roll back to a named release, verified
  app_deploy:
    path: /opt/refapp
    action: rollback
    release: 1.4.1-20250301T101500Z
    reason: errors after 1.4.2
    services: "{{ app_deploy_services }}"

- name: Watch the new release for 20 s once it takes traffic again (rolled back if it fails)
  app_deploy:
    path: /opt/refapp
    action: soak
    version: 1.4.2
    soak: 20
    services: "{{ app_deploy_services }}"

- name: Health of every service (read only)
  app_deploy:
    path: /opt/refapp
    action: verify
    services: "{{ app_deploy_services }}"
"""

RETURN = r"""
action:
  description: The action run.
  returned: always
  type: str
app:
  description: The application, O(metrics_app) or else the last component of O(path).
  returned: always
  type: str
  sample: refapp
outcome:
  description:
    - deploy, C(deployed), C(unchanged), C(rolled-back) (gate failed, previous release healthy), C(not-switched)
      (the migration failed, or the O(gate) of an application without services did; nothing switched or
      restarted, the previous release still current), C(rollback-failed), C(failed); rollback, C(rolled-back),
      C(unchanged), C(restarted), C(switched-forward), C(not-switched) (no services, the target failed its
      O(gate)), C(failed);
      restart, C(restarted), C(unchanged) (nothing deployed yet, or no services and the gate passed), C(failed);
      verify, C(healthy), C(unhealthy); soak, C(soaked) (healthy the whole time, or no service to watch),
      C(rolled-back), C(rollback-failed), C(failed).
  returned: always
  type: str
  sample: deployed
release:
  description: The release deployed (also when it was rolled back), or rolled back to, restarted, verified.
  returned: when known
  type: str
  sample: 1.4.2-20250301T101500Z
version:
  description: Version of RV(release).
  returned: when known
  type: str
previous:
  description: Release C(current) pointed to before the run.
  returned: when known
  type: str
current:
  description: Release C(current) points to after the run.
  returned: always
  type: str
rolled_back_to:
  description: Release switched back to, after a failed gate (deploy) or by a rollback.
  returned: deploy with a failed gate, rollback
  type: str
release_path:
  description: Directory of the release deployed.
  returned: deploy
  type: str
existed:
  description: True when the release of this version, wheelhouse and interpreter existed already.
  returned: deploy
  type: bool
deps_reused:
  description: True when the dependency layer existed already.
  returned: deploy
  type: bool
restarted:
  description: True when units were stopped and started.
  returned: always
  type: bool
health:
  description:
    - Per unit (in start order), the last health result, of the release serving at the end (after a rollback, of
      the release rolled back to), and under C(gate) the last result of O(gate) (with the C(release) it ran from),
      status (C(healthy), C(degraded), C(unhealthy), or C(not-started) for a unit
      after one whose gate failed), version expected, checks, failed_checks, attempts, elapsed.
  returned: always
  type: dict
  sample:
    refapp-web.service:
      status: healthy
      version: 1.4.2
      attempts: 2
      elapsed: 0.61
      failed_checks: []
      checks:
        - {name: unit:refapp-web.service, kind: systemd, status: healthy, detail: active/running}
failed_gate:
  description: The gate that failed, release, version, unit and the health of that attempt.
  returned: when a gate failed
  type: dict
migration:
  description: The migration run, command, rc and the tails of its stdout and stderr.
  returned: when a migration ran
  type: dict
timings:
  description:
    - Seconds per phase, keyed as the tradeops_summary callback's phases, C(lock), C(unpack) and C(venv) (the
      release create, split as the callback splits it), C(migrate), C(switch), C(restart) (systemctl),
      C(health) (gates and checks), C(prune), C(other); they add up to RV(elapsed).
  returned: always
  type: dict
  sample: {lock: 0.002, unpack: 0.031, venv: 0.09, migrate: 0.4, switch: 0.004, restart: 0.12, health: 0.6,
           prune: 0.003, other: 0.01}
create_timings:
  description: The create's own timings (wheelhouse_s, inspect_s, deps_s, venv_s, install_s, compile_s, finalize_s,
    total_s), as M(app_release) returns them.
  returned: deploy
  type: dict
elapsed:
  description: Seconds of the whole run.
  returned: always
  type: float
ledger_entries:
  description: The lines this run appended to C(ledger.jsonl), in order (empty for a no-op).
  returned: always
  type: list
  elements: dict
lock:
  description: The lock taken (owner, host, pid, time, epoch, reason), or the holder that refused it.
  returned: when a lock was taken or refused
  type: dict
stale:
  description: On a refused lock, whether it is stale (O(force_unlock) breaks it).
  returned: on a refused lock
  type: bool
candidates:
  description: Releases to choose from when a rollback cannot proceed.
  returned: failure of rollback
  type: list
metrics:
  description: The metrics written (path of the file, app label, outcome), with O(metrics_dir).
  returned: when metrics were written
  type: dict
  sample: {path: /var/lib/prometheus/node-exporter/tradeops_deploy.prom, app: refapp, outcome: success}
soak:
  description: C(soak), how long the release was watched and what failed (null when nothing did).
  returned: after a soak ran
  type: dict
  sample:
    seconds: 20
    watched_s: 20.1
    passes: 18
    failing: null
    memory_horizon_s: 300
    memory:
      refapp-web.service: {start_mib: 41.2, end_mib: 41.9, max_mib: 512.0, mib_per_s: 0.01, reaches_max_in_s: null}
msg:
  description: What happened, in one sentence (on failure, the failing checks and what serves now).
  returned: always
  type: str
missing_accounts:
  description: The owner or group that does not exist yet, e.g. C(owner 'refapp' does not exist yet) (a first deploy).
  returned: deploy in check mode, when the owner or group does not exist on the host
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tradeops_deploy import ACTIONS, run_deploy
from ansible.module_utils.tradeops_health import service_probe_argument_spec
from ansible.module_utils.tradeops_release import DEFAULT_SHARED_LINKS, ReleaseError, ReleaseStore, lock_argument_spec


def argument_spec() -> dict:
    return dict(
        path=dict(type="path", required=True),
        action=dict(type="str", default="deploy", choices=list(ACTIONS)),
        version=dict(type="str"),
        release=dict(type="str"),
        reason=dict(type="str"),
        wheelhouse=dict(type="path"),
        wheelhouse_name=dict(type="str"),
        wheelhouse_src=dict(type="path"),
        wheelhouse_build=dict(type="dict", options=dict(
            source=dict(type="path", required=True), version=dict(type="str", required=True),
            out=dict(type="path", required=True), python_version=dict(type="str"),
            requirements=dict(type="list", elements="str"))),
        package=dict(type="str"),
        python=dict(type="path", default="/usr/bin/python3"),
        shared_links=dict(type="dict", default=dict(DEFAULT_SHARED_LINKS)),
        requirements=dict(type="list", elements="str", default=[]),
        owner=dict(type="str"),
        group=dict(type="str"),
        min_free_mb=dict(type="int", default=0),
        keep=dict(type="int", default=5),
        console_scripts=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            setting=dict(type="str", required=True),
        )),
        migrate=dict(type="dict", options=dict(
            argv=dict(type="list", elements="str", required=True),
            user=dict(type="str"),
            group=dict(type="str"),
            env_file=dict(type="path"),
            timeout=dict(type="int", default=600),
        )),
        services=dict(type="list", elements="dict", default=[], options=dict(
            unit=dict(type="str", required=True),
            deadline=dict(type="float"),
            probes=dict(type="list", elements="dict", default=[], options=service_probe_argument_spec()),
        )),
        gate=dict(type="list", elements="dict", default=[], options=service_probe_argument_spec()),
        version_field=dict(type="str", default="version"),
        deadline=dict(type="float", default=60.0),
        retries=dict(type="int", default=1000),
        delay=dict(type="float", default=0.5),
        max_delay=dict(type="float", default=2.0),
        soak=dict(type="float"),
        soak_memory_horizon=dict(type="float", default=300.0),
        metrics_dir=dict(type="path"),
        metrics_app=dict(type="str"),
        app_name=dict(type="str"),
        **lock_argument_spec(),
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[("action", "deploy", ("version", "wheelhouse")), ("action", "soak", ("soak",))],
        mutually_exclusive=[("wheelhouse", "wheelhouse_src", "wheelhouse_build")],
        supports_check_mode=True,
    )
    params = module.params
    try:
        store = ReleaseStore(params["path"], actor=params["actor"])
    except ReleaseError as exc:
        module.fail_json(msg=str(exc), action=params["action"])
    try:
        result = run_deploy(store, params, check_mode=module.check_mode)
    except Exception as exc:  # a bug, not a health result: the lock was released, say what broke
        module.fail_json(msg=f"app_deploy {params['action']}: internal error: {type(exc).__name__}: {exc}",
                         exception=traceback.format_exc())
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if not module._diff:
        result.pop("diff", None)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
