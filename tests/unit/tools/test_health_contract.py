"""plugins/filter/health_contract.py: every mistake in a service's health contract is named with the service,
the option and the fix (role app's preflight fails on them); a good contract renders app_deploy's services."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

_spec = importlib.util.spec_from_file_location(
    "health_contract", Path(__file__).resolve().parents[3] / "plugins" / "filter" / "health_contract.py")
health_contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(health_contract)
errors_of = health_contract.health_contract_errors
SETTINGS = {"app_name": "shop", "user": "shop", "group": "shop", "env_file": "/opt/shop/shared/config/.env",
            "liveness_path": "/live", "readiness_path": "/ready"}


def web(**probes) -> list[dict]:
    return [{"name": "web", "args": [], "port": 8000, **probes}]


@pytest.mark.parametrize(("services", "message"), [
    (web(readiness="none"), "readiness is 'none': give a probe such as {kind: http, path: /health}, or {kind: none}"),
    (web(readiness={"kind": "grpc"}), "readiness.kind is 'grpc': use http, tcp, command or none"),
    (web(liveness={"kind": "none", "path": "/x"}), "liveness.path is not an option of a none probe: remove it, or use "
                                                   "kind: http"),
    (web(liveness={"kind": "tcp", "argv": ["x"]}), "liveness.argv is not an option of a tcp probe: remove it, or use "
                                                   "kind: command"),
    (web(liveness={"path": "/x", "retries": 3}), "liveness.retries is not an option of a http probe: remove it (not a "
                                                 "probe option)"),
    ([{"name": "worker", "liveness": {"kind": "tcp"}}], "app_services 'worker': liveness is a tcp probe but service "
                                                        "'worker' has no port: give the service a port (or "
                                                        "liveness.port), or use kind: command or none"),
    (web(liveness={"kind": "tcp", "port": 0}), "liveness.port is 0: give a TCP port between 1 and 65535"),
    (web(readiness={"path": "/a", "url": "http://127.0.0.1:8000/a"}), "readiness has both path and url"),
    (web(readiness={"status": 200}), "readiness.path is missing: give the path to request"),
    (web(readiness={"path": "health"}), "readiness.path is 'health': give a path that starts with /"),
    (web(readiness={"url": "http://10.0.0.5:8000/health"}), "readiness.url is 'http://10.0.0.5:8000/health': probes "
                                                            "check the service on this host"),
    (web(readiness={"path": "/r", "status": "2xx"}), "readiness.status '2xx': give an HTTP status (200), a range"),
    (web(readiness={"path": "/r", "json_field": "a..b"}), "readiness.json_field is 'a..b': give a dotted path"),
    (web(readiness={"path": "/r", "json_value": "1"}), "readiness.json_value needs json_field"),
    (web(readiness={"path": "/r", "header": "X-Version:"}), "readiness.header is 'X-Version:': give the name of a "
                                                            "response header"),
    (web(readiness={"path": "/r", "header_value": "1"}), "readiness.header_value needs header"),
    (web(readiness={"path": "/r", "expect_version": True}), "readiness.expect_version needs json_field or header"),
    (web(readiness={"path": "/r", "json_field": "v", "json_value": "1", "expect_version": True}),
     "readiness.expect_version leaves nothing to compare with the version"),
    (web(readiness={"path": "/r", "expect_version": "yes"}), "readiness.expect_version is 'yes': give true or false"),
    (web(readiness={"kind": "tcp", "timeout": -2}), "readiness.timeout is -2: give the seconds the probe may take, "
                                                    "more than 0"),
    (web(readiness={"kind": "tcp", "timeout": True}), "readiness.timeout is True"),
    (web(readiness={"kind": "command"}), "readiness.argv must be a non-empty list of strings, e.g. [myapp, --version]"),
    (web(readiness={"kind": "command", "argv": "myapp --version"}), "readiness.argv must be a non-empty list"),
    (web(readiness={"kind": "command", "argv": ["myapp", 2]}), "readiness.argv[1] is 2 (int): every item must be a "
                                                               "string (quote it: '2')"),
    (web(health={"readiness": "/r"}, readiness={"path": "/r"}), "health.readiness (a path) and readiness (a probe) "
                                                                "are both set"),
])  # fmt: skip
def test_each_mistake_names_the_service_the_option_and_the_fix(services, message):
    errors = errors_of(services)
    assert len(errors) == 1 and message in errors[0], errors
    assert errors[0].startswith(f"app_services '{services[0]['name']}': ")
    with pytest.raises(AnsibleFilterError, match="app_services"):
        health_contract.app_deploy_services(services, [s["name"] for s in services], **SETTINGS)


@pytest.mark.parametrize("probe", [
    {"kind": "none"}, {"kind": "tcp"}, {"kind": "tcp", "port": 9000, "timeout": 2},
    {"path": "/h", "status": [200, "300-399"], "json_field": "a.b.0", "json_value": {"x": 1}, "header": "X-V",
     "header_value": "1", "body_contains": "ok", "name": "deep", "timeout": 1.5},
    {"url": "https://[::1]:8443/h", "header": "X-Version", "expect_version": True},
    {"path": "/h", "json_field": "version", "header": "X-Build", "header_value": "7", "expect_version": True},
    {"kind": "command", "argv": ["myapp", "check"], "expect_version": False, "timeout": 30},
])  # fmt: skip
def test_good_contracts_pass(probe):
    assert errors_of(web(readiness=probe, liveness=probe)) == []


def test_services_without_a_contract_keep_the_reference_apps_or_none_without_a_port():
    services = [{"name": "web", "port": 8000}, {"name": "worker"}]
    rendered = health_contract.app_deploy_services(services, ["worker", "web"], **SETTINGS)
    assert rendered == [
        {"unit": "shop-worker.service", "probes": []},
        {"unit": "shop-web.service", "probes": [
            {"url": "http://127.0.0.1:8000/live", "name": "liveness"},
            {"url": "http://127.0.0.1:8000/ready", "name": "readiness", "json_field": "version"}]},
    ]  # fmt: skip


def test_declared_probes_say_expect_version_explicitly():
    """app_deploy gates a probe whose json_field is `version` on the version unless told otherwise: a
    declared probe always says, so `json_field: version` without expect_version is not version-gated."""
    rendered = health_contract.app_deploy_services(
        web(readiness={"path": "/r", "json_field": "version", "status": "200-204"}), ["web"], **SETTINGS)
    readiness = rendered[0]["probes"][1]
    assert readiness == {"kind": "http", "name": "readiness", "expect_version": False, "json_field": "version",
                         "url": "http://127.0.0.1:8000/r", "status": ["200-204"]}


# -- app_gate: the application's own gate (a batch-only application's whole gate) ----------------

GATE_SETTINGS = {"user": "shop", "group": "shop", "env_file": "/opt/shop/shared/config/.env"}
gate_errors_of = health_contract.app_gate_errors


@pytest.mark.parametrize(("gate", "services", "message"), [
    ({}, [], "app_services is empty (a batch-only application: no service runs, its jobs run current) and app_gate "
             "is not set, so nothing would check a release before it becomes current: give app_gate a command run "
             "from the release, e.g. app_gate: {argv: [myapp, --version], expect_version: true}"),
    (None, [], "app_gate is not set"),
    ("myapp --version", [], "app_gate is 'myapp --version': give a command probe such as {argv: [myapp, --version]"),
    ({"kind": "http", "path": "/h"}, [], "app_gate.kind is 'http': the application's gate is a command run from the "
                                         "release; use kind: command (or leave kind out)"),
    ({"kind": "none"}, web(), "app_gate.kind is 'none'"),
    ({"timeout": 5}, [], "app_gate.argv must be a non-empty list of strings, e.g. [myapp, --version]"),
    ({"argv": "myapp --version"}, [], "app_gate.argv must be a non-empty list of strings"),
    ({"argv": ["myapp", 1]}, [], "app_gate.argv[1] is 1 (int): every item must be a string"),
    ({"argv": ["myapp"], "path": "/h"}, [], "app_gate.path is not an option of a command probe: remove it (the only "
                                            "options of app_gate are argv, expect_output, expect_version, kind, name, "
                                            "timeout)"),
    ({"argv": ["myapp"], "retries": 3}, [], "app_gate.retries is not an option of a command probe: remove it (not a "
                                            "probe option)"),
    ({"argv": ["myapp"], "timeout": 0}, [], "app_gate.timeout is 0: give the seconds the probe may take, more than 0"),
    ({"argv": ["myapp"], "timeout": 90}, [], "app_gate.timeout is 90 but app_health_deadline is 60: the gate would "
                                             "be cut at 60 s; raise app_health_deadline to at least 90, or lower "
                                             "app_gate.timeout"),
    ({"argv": ["myapp"], "expect_output": 3}, [], "app_gate.expect_output is 3: give the text its output must contain"),
    ({"argv": ["myapp"], "expect_version": "yes"}, web(), "app_gate.expect_version is 'yes': give true or false"),
])  # fmt: skip
def test_each_mistake_of_app_gate_names_the_variable_and_the_fix(gate, services, message):
    errors = gate_errors_of(gate, services, 60)
    assert len(errors) == 1 and message in errors[0], errors
    assert errors[0].startswith(("app_gate", "app_services is empty"))
    if gate and "app_health_deadline" not in message:  # the deadline is preflight's alone
        with pytest.raises(AnsibleFilterError, match="app_gate"):
            health_contract.app_deploy_gate(gate, **GATE_SETTINGS)


@pytest.mark.parametrize(("gate", "services"), [
    ({}, web()),  # services without a gate of their own: as before
    ({"argv": ["myapp", "--version"]}, []),
    ({"kind": "command", "argv": ["myapp", "scan", "--dry-run"], "expect_output": "dry run ok", "expect_version": True,
      "timeout": 60, "name": "dry-run"}, []),
    ({"argv": ["myapp", "check"], "timeout": 10}, web()),
])  # fmt: skip
def test_good_gates_pass(gate, services):
    assert gate_errors_of(gate, services, 60) == []


def test_app_gate_renders_one_command_probe_from_the_release_or_none():
    assert health_contract.app_deploy_gate({}, **GATE_SETTINGS) == []
    rendered = health_contract.app_deploy_gate({"argv": ["shop", "scan", "--dry-run"], "expect_output": "ok",
                                                "timeout": 30}, **GATE_SETTINGS)
    assert rendered == [{"kind": "command", "name": "app_gate", "timeout": 30.0, "expect_version": False,
                         "argv": ["shop", "scan", "--dry-run"], "user": "shop", "group": "shop",
                         "env_file": "/opt/shop/shared/config/.env", "expect_output": "ok"}]


def test_a_service_command_probe_takes_expect_output_too():
    assert errors_of(web(readiness={"kind": "command", "argv": ["shop", "check"], "expect_output": "ready"})) == []
    rendered = health_contract.app_deploy_services(
        web(readiness={"kind": "command", "argv": ["shop", "check"], "expect_output": "ready"}), ["web"], **SETTINGS)
    assert rendered[0]["probes"][1]["expect_output"] == "ready"
    assert "expect_output is not an option of a tcp probe: remove it, or use kind: command" in errors_of(
        web(readiness={"kind": "tcp", "expect_output": "x"}))[0]


@pytest.mark.parametrize(("scripts", "requirements", "words"), [
    ([{"name": "gunicorn", "setting": "app_services[web].console_script"}], ["gunicorn>=22,<24", "uvicorn[standard]"],
     []),
    ([{"name": "/usr/bin/gunicorn", "setting": "app_services[web].console_script"}], [],
     ["app_services[web].console_script = '/usr/bin/gunicorn': give the name of a program"]),
    ([{"name": "../x", "setting": "app_console_script"}], ["ok", "--extra-index-url=http://evil.invalid"],
     ["app_console_script = '../x'", "app_requirements: '--extra-index-url=http://evil.invalid' is not a requirement"]),
    ([], ["pkg @ file:///tmp/pkg.whl"], ["app_requirements: 'pkg @ file:///tmp/pkg.whl' is not a requirement"]),
])
def test_install_errors_name_the_setting(scripts, requirements, words):
    errors = health_contract.app_install_errors(scripts, requirements)
    assert len(errors) == len(words)
    for error, word in zip(errors, words, strict=True):
        assert word in error


# -- the probe through the load balancer (verify.yml) ----------------------------------------------

LB_PATHS = {"liveness_path": "/live", "readiness_path": "/ready"}


@pytest.mark.parametrize(("services", "expected"), [
    (None, {"path": "/ready", "status": [200], "json_field": "version"}),  # role app's default: the reference app
    (web(), {"path": "/ready", "status": [200], "json_field": "version"}),
    (web(readiness={"path": "/status?full=1", "status": "200-299", "json_field": "db.ok", "json_value": True}),
     {"path": "/status?full=1", "status": ["200-299"], "json_field": "db.ok", "json_value": True}),
    (web(readiness={"path": "/v", "json_field": "version", "expect_version": True}),  # two versions mid-deploy
     {"path": "/v", "status": [200], "json_field": "version"}),
    (web(liveness={"path": "/get", "body_contains": "url"}, readiness={"kind": "tcp"}),
     {"path": "/get", "status": [200], "body_contains": "url"}),
    (web(liveness={"kind": "tcp"}, readiness={"kind": "none"}), {"path": "/", "status": ["200-499"]}),
    ([{"name": "api", "port": 9000, "readiness": {"path": "/other"}}], {"path": "/", "status": ["200-499"]}),
    ([], {"path": "/", "status": ["200-499"]}),
])
def test_lb_probe_is_the_readiness_of_the_service_on_the_upstream_port(services, expected):
    assert health_contract.lb_probe(services, 8000, **LB_PATHS) == expected


def test_lb_probe_with_the_load_balancers_url_is_an_app_health_probe():
    probe = health_contract.lb_probe(web(readiness={"path": "/status"}), 8000, **LB_PATHS,
                                     base_url="https://127.0.0.1:443/")
    assert probe == {"url": "https://127.0.0.1:443/status", "status": [200]}
