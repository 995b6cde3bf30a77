"""multiservice scenario: seven services, dependency order, kill -9, stop propagation."""
from __future__ import annotations

import shlex
import time

import pytest

ORDER_DEPS = {  # service -> what it requires/wants (molecule.yml)
    "orchestration": [], "news": ["orchestration"], "scanner": ["orchestration", "news"],
    "pattern": ["scanner"], "technical": ["pattern"], "trading": ["technical"],
    "reporting": ["orchestration", "trading"],
}
PORTS = {"orchestration": 5000, "news": 5008, "scanner": 5001, "pattern": 5002, "technical": 5003,
         "trading": 5005, "reporting": 5009}


def unit(name):
    return f"catalyst-{name}.service"


def prop(host, name, p):
    return host.check_output(f"systemctl show -P {p} {unit(name)}")


def ready(host, name, timeout=20.0) -> bool:
    code = ("import urllib.request,sys;"
            f"r=urllib.request.urlopen('http://127.0.0.1:{PORTS[name]}/api/health/readiness',timeout=2);"
            "sys.exit(0 if b'\"service\":\"" + name + "\"' in r.read() else 1)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.run(f"python3 -c {shlex.quote(code)}").rc == 0:
            return True
        time.sleep(0.5)
    return False


def test_every_service_serves_as_itself(host):
    for name in PORTS:
        assert host.service(unit(name)).is_running, host.run(f"journalctl -u {unit(name)} -n 20").stdout
        assert ready(host, name, timeout=5), name


def test_units_carry_the_graph(host):
    assert "catalyst-scanner.service" in prop(host, "pattern", "Requires").split()
    assert "catalyst-news.service" in prop(host, "scanner", "Wants").split()
    assert "catalyst-news.service" in prop(host, "scanner", "After").split()
    assert "catalyst-trading.service" not in prop(host, "reporting", "Requires").split()


def test_started_in_dependency_order(host):
    # the role stopped everything and started each after its dependencies were healthy
    started = {n: int(prop(host, n, "ActiveEnterTimestampMonotonic")) for n in ORDER_DEPS}
    for name, deps in ORDER_DEPS.items():
        for dep in deps:
            assert started[dep] < started[name], (dep, name, started)


def test_kill_9_restarts_only_that_service(host):
    before = {n: prop(host, n, "MainPID") for n in ORDER_DEPS}
    host.run_expect([0], f"kill -9 {before['news']}")
    assert ready(host, "news"), host.run(f"journalctl -u {unit('news')} -n 20").stdout
    assert prop(host, "news", "MainPID") != before["news"]
    assert int(prop(host, "news", "NRestarts")) >= 1
    # a crash restarted by systemd is not an explicit stop: dependents keep running
    assert prop(host, "scanner", "MainPID") == before["scanner"]


def test_stop_propagates_to_requirers_not_to_wanters(host):
    host.run_expect([0], f"systemctl stop {unit('pattern')}")
    try:
        assert not host.service(unit("technical")).is_running  # Requires=pattern, transitively
        assert not host.service(unit("trading")).is_running
        assert host.service(unit("reporting")).is_running  # only Wants=trading
        assert host.service(unit("scanner")).is_running  # pattern's own dependency is untouched
    finally:
        host.run_expect([0], f"systemctl start {unit('trading')}")  # pulls pattern and technical back
    for name in ("pattern", "technical", "trading"):
        assert ready(host, name), name


@pytest.mark.parametrize("name", list(PORTS))
def test_each_unit_is_hardened(host, name):
    assert prop(host, name, "ProtectSystem") == "strict"
    assert prop(host, name, "User") == "catalyst"
