"""Role app's health contract under ansible-playbook: what `__app_deploy_services` gives app_deploy (the gate,
the soak, rollback, verify and the restart handler all pass it), and the preflight that refuses a bad contract
before anything changes, with a message naming the service, the option and the fix.

Runs on localhost only (the preflight only asserts and computes); ONE ansible-playbook run for every case.
"""
from __future__ import annotations

import pytest
from play_report import check_case, failures_by_play, run_plays

FACTS = {"os_family": "Debian", "service_mgr": "systemd", "distribution": "Debian"}
WEB = {"name": "web", "args": ["serve"], "port": 8000}

# What app_deploy received for the default app_services before services declared their own contract
# (roles/app/vars/main.yml, 5dd02d6): liveness 200, readiness with the JSON version of the release.
TODAY = [{"unit": "refapp-web.service", "probes": [
    {"url": "http://127.0.0.1:8000/api/health/liveness", "name": "liveness"},
    {"url": "http://127.0.0.1:8000/api/health/readiness", "name": "readiness", "json_field": "version"}]}]
ENV_FILE = "/opt/shop/shared/config/.env"
SHOP = {"app_name": "shop", "app_services": [
    {"name": "web", "args": ["serve"], "port": 8080,
     "liveness": {"kind": "tcp"},
     "readiness": {"path": "/healthz", "status": "200-299", "header": "X-Version", "expect_version": True}},
    {"name": "worker", "args": ["work"], "requires": ["web"],
     "readiness": {"kind": "command", "argv": ["shop", "--version"], "expect_version": True, "timeout": 10}},
    {"name": "beat", "args": ["beat"]},
    {"name": "admin", "args": ["admin"], "port": 8081, "liveness": {"kind": "none"},
     "readiness": {"url": "http://localhost:8081/status", "json_field": "db.ok", "json_value": True}},
]}
SHOP_EXPECTED = [
    {"unit": "shop-web.service", "probes": [
        {"kind": "tcp", "name": "liveness", "port": 8080},
        {"kind": "http", "name": "readiness", "expect_version": True, "url": "http://127.0.0.1:8080/healthz",
         "header": "X-Version", "status": ["200-299"]}]},
    {"unit": "shop-worker.service", "probes": [
        {"kind": "command", "name": "readiness", "timeout": 10.0, "expect_version": True, "argv": ["shop", "--version"],
         "user": "shop", "group": "shop", "env_file": ENV_FILE}]},
    {"unit": "shop-beat.service", "probes": []},
    {"unit": "shop-admin.service", "probes": [
        {"kind": "http", "name": "readiness", "expect_version": False, "url": "http://localhost:8081/status",
         "json_field": "db.ok", "json_value": True}]},
]


BATCH = {"app_name": "screener", "app_services": [],
         "app_gate": {"argv": ["refapp", "check"], "expect_version": True, "expect_output": '"status":"ready"',
                      "timeout": 20}}
BATCH_GATE = [{"kind": "command", "name": "app_gate", "timeout": 20.0, "expect_version": True,
               "argv": ["refapp", "check"], "user": "screener", "group": "screener",
               "env_file": "/opt/screener/shared/config/.env", "expect_output": '"status":"ready"'}]


def service(**probes) -> dict:
    return {"app_services": [{**WEB, **probes}]}


CASES = {
    "default app_services": ({}, TODAY),
    "legacy health paths": (service(health={"readiness": "/ready"}),
                            [{"unit": "refapp-web.service", "probes": [
                                TODAY[0]["probes"][0],
                                {"url": "http://127.0.0.1:8000/ready", "name": "readiness",
                                 "json_field": "version"}]}]),
    "every kind": (SHOP, SHOP_EXPECTED),
    "unknown kind": (service(readiness={"kind": "grpc"}), "kind"),
    "http probe without a port": ({"app_services": [{"name": "worker", "args": ["work"],
                                                     "liveness": {"path": "/health"}}]},
                                  "app_services 'worker': liveness is a http probe but service 'worker' has no port"),
    "expect_version with nothing to read it from": (
        service(readiness={"path": "/ready", "expect_version": True}),
        "app_services 'web': readiness.expect_version needs json_field or header"),
    "nonsense header": (service(readiness={"path": "/ready", "header": "X Version: 1"}),
                        "app_services 'web': readiness.header is 'X Version: 1': give the name of a response header"),
    "negative timeout": (service(liveness={"kind": "tcp", "timeout": -1}),
                         "app_services 'web': liveness.timeout is -1: give the seconds"),
    "command as a string": (service(readiness={"kind": "command", "argv": "shop --version"}),
                            "app_services 'web': readiness.argv must be a non-empty list of strings"),
    "argv on an http probe": (service(readiness={"path": "/r", "argv": ["x"]}),
                              "app_services 'web': readiness.argv is not an option of a http probe: remove it, or "
                              "use kind: command"),
    "remote url": (service(readiness={"url": "http://example.com/health"}),
                   "app_services 'web': readiness.url is 'http://example.com/health'"),
    # A batch-only application: no services, its own gate (app_gate) from the release.
    "batch-only with its gate": (BATCH, []),
    "services and a gate": ({"app_gate": {"argv": ["refapp", "--version"]}}, TODAY),
    "batch-only without a gate": ({"app_services": []},
                                  "app_services is empty (a batch-only application: no service runs, its jobs run "
                                  "current) and app_gate is not set"),
    # the argument specs refuse these two first (the filter, for a caller without them: tests/unit/tools)
    "gate of kind http": ({"app_services": [], "app_gate": {"kind": "http"}},
                          "value of kind must be one of: command, got: http found in app_gate"),
    "gate without argv": ({"app_services": [], "app_gate": {"timeout": 5}},
                          "app_gate.argv must be a non-empty list of strings"),
    "gate with an http option": ({"app_services": [], "app_gate": {"argv": ["x"], "path": "/h"}},
                                 "app_gate.path. Supported parameters include: argv, expect_output, "
                                 "expect_version, kind, name, timeout"),
    "gate longer than the deadline": ({"app_services": [], "app_gate": {"argv": ["x"], "timeout": 90}},
                                      "app_gate.timeout is 90 but app_health_deadline is 60"),
    "gate with an empty expected output": ({"app_services": [], "app_gate": {"argv": ["x"], "expect_output": ""}},
                                           "app_gate.expect_output is '': give the text its output must contain"),
    # The preflight's other checks (one task: each failing check adds its message).
    "relative app_metrics_dir": ({"app_metrics_dir": "var/lib/metrics"},
                                 "app_metrics_dir is 'var/lib/metrics': give node_exporter's textfile collector "
                                 "directory as an absolute path"),
    "two services on one port": ({"app_services": [WEB, {"name": "api", "args": ["api"], "port": 8000}]},
                                 "when it listens, a unique TCP 'port' (1-65535)"),
    "no systemd and a negative soak horizon": (
        {"ansible_facts": {**FACTS, "service_mgr": "sysvinit"}, "app_soak_memory_horizon": -5},
        "needs a Debian-family host with systemd; this host is Debian with sysvinit. app_soak_seconds is 20 and "
        "app_soak_memory_horizon is -5: both are seconds, 0 or more"),
}
# What app_deploy's gate receives (every other good case: [], no gate).
GATES = {
    "batch-only with its gate": BATCH_GATE,
    "services and a gate": [{"kind": "command", "name": "app_gate", "expect_version": False,
                             "argv": ["refapp", "--version"], "user": "refapp", "group": "refapp",
                             "env_file": "/opt/refapp/shared/config/.env"}],
}


def case_play(name: str, extra: dict) -> dict:
    include = {"name": "Preflight of the role",
               "ansible.builtin.include_role": {"name": "app", "tasks_from": "preflight", "public": True}}
    show = {"name": "Services", "ansible.builtin.debug": {"msg": "{{ __app_deploy_services }}"}}
    gate = {"name": "Gate", "ansible.builtin.debug": {"msg": "{{ __app_deploy_gate }}"}}
    return {"name": name, "hosts": "localhost", "gather_facts": False,
            "vars": {"ansible_facts": FACTS, **extra},
            "tasks": [{"name": "Preflight", "block": [include, show, gate],
                       "rescue": [{"name": "Rescued", "ansible.builtin.meta": "noop"}]}]}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[list[str], object, object]]:
    """{case: (failure messages, services shown or None, gate shown or None)} from ONE ansible-playbook run."""
    stdout = run_plays(tmp_path_factory.mktemp("app-contract"), [case_play(n, x) for n, (x, _) in CASES.items()])
    gates = failures_by_play(stdout, "Gate")
    return {case: (messages, shown, gates[case][1])
            for case, (messages, shown) in failures_by_play(stdout, "Services").items()}


@pytest.mark.parametrize("case", list(CASES))
def test_contract(results, case):
    messages, shown, gate = results[case]
    check_case(messages, shown, CASES[case][1])
    assert gate is None if isinstance(CASES[case][1], str) else gate == GATES.get(case, [])
