"""module_utils/tradeops_health.py against real things: an HTTP server on 127.0.0.1, real
sockets, real PostgreSQL and Redis servers, tiny servers for the protocol corner cases,
psutil on this machine, and captured ``systemctl show`` output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible.module_utils import tradeops_health as th
from ansible.module_utils.tradeops_health import DEGRADED, HEALTHY, UNHEALTHY, CheckError, HealthSpec, evaluate
from plugin_testlib import HOST_PYTHON, free_port, start_http_server

# -- aggregation -------------------------------------------------------------------------


@pytest.mark.parametrize(("statuses", "expected"), [
    ([], HEALTHY),
    ([HEALTHY], HEALTHY),
    ([HEALTHY, DEGRADED], DEGRADED),
    ([DEGRADED, HEALTHY, DEGRADED], DEGRADED),
    ([HEALTHY, UNHEALTHY, DEGRADED], UNHEALTHY),
    ([UNHEALTHY], UNHEALTHY),
])  # fmt: skip
def test_worst_status_wins(statuses, expected):
    assert th.worst(statuses) == expected


@pytest.mark.parametrize(("status", "minimum", "ok"), [
    (HEALTHY, HEALTHY, True), (DEGRADED, HEALTHY, False), (DEGRADED, DEGRADED, True),
    (UNHEALTHY, DEGRADED, False), (UNHEALTHY, UNHEALTHY, True), (HEALTHY, DEGRADED, True),
])  # fmt: skip
def test_min_status(status, minimum, ok):
    assert th.at_least(status, minimum) is ok


@pytest.mark.parametrize(("value", "status"), [(10, HEALTHY), (80, HEALTHY), (80.1, DEGRADED), (95.1, UNHEALTHY)])
def test_threshold_status_is_strictly_greater(value, status):
    assert th.threshold_status(value, 80, 95) == status


# -- HTTP --------------------------------------------------------------------------------


def test_http_status_body_and_json_field(http_server):
    url = http_server.route("/ready", body=json.dumps({"version": "1.4.2", "checks": {"db": "ok"}, "n": 3}))
    assert th.check_http(url).status == HEALTHY
    assert th.check_http(url, body_contains='"db"').status == HEALTHY
    ok = th.check_http(url, json_field="version", json_value="1.4.2")
    assert ok.status == HEALTHY and ok.data["json_value"] == "1.4.2" and ok.kind == "http"
    assert th.check_http(url, json_field="checks.db", json_value="ok").status == HEALTHY
    assert th.check_http(url, json_field="n", json_value="3").status == HEALTHY
    wrong = th.check_http(url, json_field="version", json_value="1.5.0")
    assert wrong.status == UNHEALTHY and "'1.4.2', expected '1.5.0'" in wrong.detail
    missing = th.check_http(url, json_field="build.sha")
    assert missing.status == UNHEALTHY and "no JSON field 'build.sha'" in missing.detail
    body = th.check_http(url, body_contains="nope")
    assert body.status == UNHEALTHY and "does not contain 'nope'" in body.detail


def test_http_unexpected_status_and_accepted_list(http_server):
    url = http_server.route("/ready", status=503, body="starting")
    result = th.check_http(url)
    assert result.status == UNHEALTHY and "expected HTTP 200, got 503: starting" in result.detail
    assert result.data["status"] == 503
    assert th.check_http(url, status=[200, 503]).status == HEALTHY


def test_http_timeout_and_refused(http_server):
    slow = http_server.route("/slow", delay=5.0)
    started = time.monotonic()
    result = th.check_http(slow, timeout=0.2)
    assert result.status == UNHEALTHY and "timed out" in result.detail
    assert time.monotonic() - started < 2.5, "the 0.2 s timeout, not the 5 s answer (room for a loaded machine)"
    refused = th.check_http(f"http://127.0.0.1:{free_port()}/")
    assert refused.status == UNHEALTHY and "connection refused" in refused.detail


def test_http_headers_are_sent_never_shown_and_credentials_redacted(http_server):
    url = http_server.route("/private", require_header=("Authorization", "Bearer s3cret"))
    assert th.check_http(url).status == UNHEALTHY
    result = th.check_http(url, headers={"Authorization": "Bearer s3cret"})
    assert result.status == HEALTHY and "s3cret" not in json.dumps(result.as_dict())
    with_userinfo = url.replace("http://", "http://user:pw@")
    named = th.check_http(with_userinfo)
    assert named.name == url and "pw" not in named.detail


def test_http_redirects(http_server):
    target = http_server.route("/new", body="here")
    http_server.route("/old", status=302, headers={"Location": target})
    assert th.check_http(http_server.url("/old")).status == HEALTHY
    no_follow = th.check_http(http_server.url("/old"), follow_redirects=False, status=302)
    assert no_follow.status == HEALTHY and no_follow.data["status"] == 302


def test_http_url_must_be_http():
    with pytest.raises(CheckError, match="http:// or https://"):
        th.check_http("file:///etc/passwd")


# -- retries and the deadline ------------------------------------------------------------


def test_retries_until_a_server_comes_up_within_the_deadline():
    """The server starts only once the first attempt was refused (at evaluate's first wait between
    attempts), not after a fixed delay: on a loaded machine the first attempt can begin after it."""
    port = free_port()
    servers = []

    def sleep_then_start(seconds: float) -> None:
        if not servers:
            server = start_http_server(port)
            server.route("/health", body="ok")
            servers.append(server)
        time.sleep(seconds)

    try:
        spec = HealthSpec(http=[{"url": f"http://127.0.0.1:{port}/health"}])
        report = evaluate(spec, retries=50, delay=0.05, max_delay=0.2, deadline=5, sleep=sleep_then_start)
    finally:
        for server in servers:
            server.stop()
    assert servers, "evaluate never waited between attempts: the first attempt cannot have failed"
    assert report.status == HEALTHY and report.attempts > 1 and report.elapsed < 4, report


def test_stops_at_the_first_healthy_attempt(http_server):
    spec = HealthSpec(http=[{"url": http_server.route("/health")}])
    report = evaluate(spec, retries=10, delay=5, deadline=30)
    assert report.status == HEALTHY and report.attempts == 1 and report.elapsed < 2.5, "no 5 s pause"


def test_the_deadline_bounds_retries_and_timeouts():
    spec = HealthSpec(tcp=[f"127.0.0.1:{free_port()}"])
    started = time.monotonic()
    report = evaluate(spec, retries=1000, delay=0.1, max_delay=0.4, deadline=0.8)
    elapsed = time.monotonic() - started
    # unbounded, 1000 retries at up to 0.4 s would take 400 s
    assert report.status == UNHEALTHY and 2 <= report.attempts <= 8 and 0.7 <= elapsed < 2.5
    assert report.failing[0].name.startswith("tcp:127.0.0.1:")
    assert "connection refused" in report.summary()


def test_backoff_doubles_up_to_max_delay():
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    spec = HealthSpec(tcp=[f"127.0.0.1:{free_port()}"])
    report = evaluate(spec, retries=6, delay=0.5, max_delay=3, deadline=100, sleep=sleep, clock=lambda: now[0])
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0] and report.attempts == 7


def test_an_attempt_the_deadline_cuts_short_does_not_hide_why_the_checks_fail(monkeypatch):
    """The last attempt's probes get only the time left: a command that exits 1 in 0.3 s is killed at 0.2 s.
    The report then keeps the last whole attempt's result ("exited 1"), not the cut one's."""
    now = [0.0]

    def run_checks(spec, budget=None, unit_runner=None):
        took = min(0.3, budget)
        now[0] += took
        detail = "exited 1: 2.0" if took >= 0.3 else f"did not finish within {took:.1f} s (killed)"
        return [th.CheckResult("readiness", "command", UNHEALTHY, detail)]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(th, "run_checks", run_checks)
    spec = HealthSpec(commands=[{"argv": ["python"], "timeout": 1}])
    report = evaluate(spec, retries=100, delay=0.5, max_delay=0.5, deadline=2.6, sleep=sleep, clock=lambda: now[0])
    assert report.status == UNHEALTHY and report.attempts >= 4
    assert report.checks[0].detail == "exited 1: 2.0"


def test_min_status_degraded_stops_when_degraded(http_server):
    spec = HealthSpec(http=[{"url": http_server.route("/")}], thresholds={"memory": {"warning": 0, "critical": 100}})
    report = evaluate(spec, retries=5, delay=0.5, min_status="degraded")
    assert report.status == DEGRADED and report.attempts == 1
    assert report.as_dict()["failed_checks"] == ["memory"]


@pytest.mark.parametrize(("params", "message"), [
    ({}, "nothing to check"),
    ({"tcp": ["localhost"]}, "host:port"),
    ({"tcp": ["127.0.0.1:99999"]}, "between 1 and 65535"),
    ({"thresholds": {"memory": {"warning": 90, "critical": 80}}}, "warning"),
    ({"thresholds": {"swap": {}}}, "unknown resource"),
    ({"redis": [{"port": 1}]}, "needs a host"),
])  # fmt: skip
def test_bad_specs_cannot_be_checked(params, message):
    with pytest.raises(CheckError, match=message):
        evaluate(HealthSpec.from_params(params))


# -- TCP ---------------------------------------------------------------------------------


def test_tcp_open_and_closed_ports():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert th.check_tcp("127.0.0.1", port).status == HEALTHY
    closed = th.check_tcp("127.0.0.1", port, timeout=1)
    assert closed.status == UNHEALTHY and "connection refused" in closed.detail


@pytest.mark.parametrize(("text", "default", "expected"), [
    ("db1:5432", None, ("db1", 5432)),
    ("[::1]:6379", None, ("::1", 6379)),
    ("db1", 5432, ("db1", 5432)),
])  # fmt: skip
def test_parse_host_port(text, default, expected):
    assert th.parse_host_port(text, default) == expected


# -- PostgreSQL and Redis: protocol corner cases with tiny servers -------------------------


@pytest.mark.parametrize(("reply", "status", "detail"), [
    (b"N", HEALTHY, "answers (no TLS)"),
    (b"S", HEALTHY, "answers (TLS offered)"),
    (b"E", UNHEALTHY, "does not speak the PostgreSQL protocol"),
    (b"", UNHEALTHY, "without answering"),
])  # fmt: skip
def test_postgresql_sslrequest_answers(tiny_server, reply, status, detail):
    server = tiny_server(reply, 8)
    result = th.check_postgresql("127.0.0.1", server.port, timeout=2)
    assert result.status == status and detail in result.detail
    assert server.received[0] == th.PG_SSL_REQUEST


@pytest.mark.parametrize(("reply", "status"), [
    (b"+PONG\r\n", HEALTHY),
    (b"-NOAUTH Authentication required.\r\n", HEALTHY),
    (b"-WRONGPASS invalid username-password pair or user is disabled.\r\n", HEALTHY),
    (b"-LOADING Redis is loading the dataset in memory\r\n", DEGRADED),
    (b"HTTP/1.1 400 Bad Request\r\n", UNHEALTHY),
    (b"", UNHEALTHY),
])  # fmt: skip
def test_redis_ping_answers(tiny_server, reply, status):
    server = tiny_server(reply, len(th.REDIS_PING))
    assert th.check_redis("127.0.0.1", server.port, timeout=2).status == status
    assert server.received[0] == th.REDIS_PING


def test_database_probes_on_closed_ports():
    port = free_port()
    assert th.check_postgresql("127.0.0.1", port).status == UNHEALTHY
    assert th.check_redis("127.0.0.1", port).status == UNHEALTHY


# -- real Redis and PostgreSQL -----------------------------------------------------------

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"server did not listen on {port}: {log.read_text(errors='replace')}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[callable]:
    if not os.path.exists(REDIS):
        pytest.fail("redis-server not installed: apt-get install redis-server (make servers)")
    procs: list[subprocess.Popen] = []

    def start(*extra: str) -> int:
        port = free_port()
        log = tmp_path / f"redis-{port}.log"
        argv = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(tmp_path), *extra]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
        procs.append(proc)
        _wait_port(port, proc, log)
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_real_redis_answers_with_and_without_password(redis_server):
    open_port = redis_server()
    result = th.check_redis("127.0.0.1", open_port)
    assert result.status == HEALTHY and result.data["reply"] == "+PONG"
    locked_port = redis_server("--requirepass", "s3cret")
    locked = th.check_redis("127.0.0.1", locked_port)
    assert locked.status == HEALTHY and locked.data["reply"].startswith("-NOAUTH")


@pytest.fixture(scope="module")
def postgres_tls() -> Iterator[tuple[int, Path]]:
    """A real PostgreSQL 15 with TLS on (self-signed certificate), run as the postgres user."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL 15 not installed: apt-get install postgresql (make servers)")
    root = Path(tempfile.mkdtemp(prefix="tradeops-pg-"))
    user = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
    proc = None
    try:
        if user:
            shutil.chown(root, user)
        subprocess.run([str(PG_BIN / "initdb"), "-D", str(root / "data"), "-A", "trust", "--no-sync",
                        "-U", "postgres"], check=True, capture_output=True, user=user, cwd=root)  # fmt: skip
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"), "-days", "1",
                        "-subj", "/CN=localhost"], check=True, capture_output=True, user=user)  # fmt: skip
        port = free_port()
        log = root / "postgres.log"
        proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(root / "data"), "-p", str(port), "-k", str(root),
             "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on", "-c", f"ssl_cert_file={root / 'cert.pem'}",
             "-c", f"ssl_key_file={root / 'key.pem'}", "-c", "fsync=off", "-c", "log_connections=on"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, user=user, cwd=root,
        )  # fmt: skip
        _wait_port(port, proc, log)
        yield port, log
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            proc.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_real_postgresql_answers_the_sslrequest_and_logs_nothing(postgres_tls):
    port, log = postgres_tls
    time.sleep(0.1)
    before = log.read_text(errors="replace")
    for _ in range(3):
        result = th.check_postgresql("127.0.0.1", port)
        assert result.status == HEALTHY and result.data["ssl"] is True, result.detail
    time.sleep(0.3)
    new = log.read_text(errors="replace")[len(before):]
    # connections are logged (log_connections) and nothing else: no "could not accept SSL
    # connection", no "connection reset by peer", no "incomplete startup packet"
    lines = [line for line in new.splitlines() if line.strip()]
    assert len(lines) == 3 and all("connection received" in line for line in lines), new


# -- systemd -----------------------------------------------------------------------------

# `systemctl show --property=Id,LoadState,ActiveState,SubState,NRestarts,Result,MemoryCurrent,MemoryMax -- ...`
# on Debian 12 (systemd 252): one block per unit, in the order asked (refapp's memory as the lab's
# refapp-web.service printed it, MemoryMax=512M; the others cut to the properties a test reads).
SYSTEMCTL_SAMPLE = """\
NRestarts=0
Result=success
MemoryCurrent=14336000
MemoryMax=536870912
Id=refapp.service
LoadState=loaded
ActiveState=active
SubState=running

NRestarts=3
Result=success
MemoryCurrent=[not set]
MemoryMax=infinity
Id=screener.service
LoadState=loaded
ActiveState=active
SubState=running

NRestarts=5
Result=exit-code
Id=engine.service
LoadState=loaded
ActiveState=failed
SubState=failed

NRestarts=0
Result=success
Id=nothere.service
LoadState=not-found
ActiveState=inactive
SubState=dead

NRestarts=0
Result=success
Id=migrate.service
LoadState=loaded
ActiveState=active
SubState=exited

NRestarts=0
Result=success
Id=worker.service
LoadState=loaded
ActiveState=activating
SubState=start
"""


def test_parse_systemctl_show():
    blocks = th.parse_systemctl_show(SYSTEMCTL_SAMPLE)
    assert len(blocks) == 6
    assert blocks[0] == {"NRestarts": "0", "Result": "success", "MemoryCurrent": "14336000", "MemoryMax": "536870912",
                         "Id": "refapp.service", "LoadState": "loaded", "ActiveState": "active",
                         "SubState": "running"}  # fmt: skip
    assert blocks[3]["LoadState"] == "not-found"
    assert th.parse_systemctl_show("") == []


@pytest.mark.parametrize(("index", "status", "detail"), [
    (0, HEALTHY, "active/running"),
    (1, DEGRADED, "restarted 3 time(s)"),
    (2, UNHEALTHY, "failed/failed, result exit-code, 5 restart(s)"),
    (3, UNHEALTHY, "not found"),
    (4, HEALTHY, "active/exited"),
    (5, UNHEALTHY, "activating/start"),
])  # fmt: skip
def test_unit_status(index, status, detail):
    props = th.parse_systemctl_show(SYSTEMCTL_SAMPLE)[index]
    got, text, data = th.unit_status(props["Id"], props)
    assert got == status and detail in text and data["active_state"] == props["ActiveState"]


def test_unit_memory_in_bytes_or_none():
    blocks = th.parse_systemctl_show(SYSTEMCTL_SAMPLE)
    data = [th.unit_status(b["Id"], b)[2] for b in blocks[:3]]
    assert (data[0]["memory_current"], data[0]["memory_max"]) == (14336000, 512 * 1024 * 1024)
    assert (data[1]["memory_current"], data[1]["memory_max"]) == (None, None)  # [not set], infinity
    assert (data[2]["memory_current"], data[2]["memory_max"]) == (None, None)  # not shown at all
    assert th.memory_bytes(str(2**64 - 1)) is None and th.memory_bytes("0") == 0 and th.memory_bytes("-1") is None


def test_check_units_runs_one_systemctl_show_for_all_units():
    calls = []

    def runner(cmd: list[str], timeout: float) -> str:
        calls.append(cmd)
        return SYSTEMCTL_SAMPLE

    units = ["refapp.service", "screener.service", "engine.service", "nothere.service", "migrate.service",
             "worker.service"]  # fmt: skip
    results = th.check_units(units, runner=runner)
    properties = "--property=Id,LoadState,ActiveState,SubState,NRestarts,Result,MemoryCurrent,MemoryMax"
    assert len(calls) == 1 and calls[0][:3] == ["systemctl", "show", properties]
    assert calls[0][-6:] == units
    assert [r.status for r in results] == [HEALTHY, DEGRADED, UNHEALTHY, UNHEALTHY, HEALTHY, UNHEALTHY]
    assert [r.name for r in results] == [f"unit:{u}" for u in units]


def test_units_on_a_host_without_a_running_systemd_are_unhealthy_not_an_error():
    if Path("/run/systemd/system").is_dir():
        pytest.skip("this machine runs systemd")
    result = th.check_units(["refapp.service"])[0]
    assert result.status == UNHEALTHY and "cannot read the unit state" in result.detail


# -- thresholds with psutil on this machine -------------------------------------------------


FORCED = [(0, 100, DEGRADED), (0, 0, UNHEALTHY), (100, 100, HEALTHY)]


@pytest.mark.parametrize(("warning", "critical", "status"), FORCED)
def test_memory_and_disk_thresholds(warning, critical, status):
    results = th.check_thresholds({"memory": {"warning": warning, "critical": critical},
                                   "disk": {"paths": ["/", "/tmp"], "warning": warning, "critical": critical}})
    assert [r.name for r in results] == ["memory", "disk:/", "disk:/tmp"]
    assert {r.status for r in results} == {status}
    assert 0 < results[0].data["percent"] <= 100 and "% used" in results[0].detail


@pytest.mark.parametrize(("warning", "critical", "status"), FORCED)
def test_cpu_threshold_under_load(warning, critical, status):
    stop = threading.Event()

    def burn() -> None:
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=burn)
    thread.start()
    try:
        result = th.check_thresholds({"cpu": {"warning": warning, "critical": critical, "interval": 0.2}})[0]
    finally:
        stop.set()
        thread.join()
    assert result.name == "cpu" and result.status == status and result.data["percent"] > 0


def test_default_thresholds_are_the_seeds():
    results = th.check_thresholds({"memory": {}, "disk": {}})
    assert results[0].data["warning"] == 85 and results[0].data["critical"] == 95
    assert results[1].name == "disk:/" and results[1].data["warning"] == 85


def test_proc_fallbacks_agree_with_psutil(monkeypatch):
    import psutil

    monkeypatch.setattr(th, "_psutil", lambda: None)
    assert abs(th.memory_percent() - psutil.virtual_memory().percent) < 5
    assert abs(th.disk_percent("/") - psutil.disk_usage("/").percent) < 1
    assert 0 <= th.cpu_percent(0.1) <= 100


def test_disk_without_statvfs_or_psutil(monkeypatch):
    """Windows without psutil (the ops agent's maintenance report there): shutil.disk_usage."""
    import types

    import psutil

    monkeypatch.setattr(th, "_psutil", lambda: None)
    no_statvfs = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if k != "statvfs" and k[:2] != "__"})
    monkeypatch.setattr(th, "os", no_statvfs)  # the module's view of os only (shutil keeps the real one)
    usage = shutil.disk_usage("/")
    assert th.disk_percent("/") == round(100.0 * usage.used / (usage.used + usage.free), 1)
    assert abs(th.disk_percent("/") - psutil.disk_usage("/").percent) < 5


# -- the command line --------------------------------------------------------------------


def test_cli_exit_codes(http_server, capsys):
    url = http_server.route("/health", body='{"version": "2.0"}')
    assert th.main_cli(["--url", url, "--json-field", "version", "--json-value", "2.0"]) == 0
    assert "HEALTHY" in capsys.readouterr().out
    assert th.main_cli(["--url", url, "--memory", "0:100"]) == 1
    assert th.main_cli(["--url", url, "--tcp", f"127.0.0.1:{free_port()}"]) == 2
    assert th.main_cli(["--tcp", "no-port"]) == 3
    assert "could not check" in capsys.readouterr().err
    assert th.main_cli(["--no-such-option"]) == 3
    assert th.main_cli([]) == 3
    assert th.main_cli(["--help"]) == 0
    assert "exit codes: 0 healthy" in capsys.readouterr().out


def test_cli_json_and_config_file(http_server, tmp_path, capsys):
    config = tmp_path / "health.json"
    config.write_text(json.dumps({"http": [{"url": http_server.route("/ready"), "name": "ready"}], "retries": 0}))
    assert th.main_cli(["--config", str(config), "--disk", "/", "--disk-limits", "100:100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "healthy" and [c["name"] for c in report["checks"]] == ["ready", "disk:/"]
    assert {"status", "checks", "attempts", "elapsed", "failed_checks"} <= set(report)


def test_cli_runs_on_the_hosts_python_without_ansible(http_server):
    """Shipped to hosts as a plain file: Debian's python3, no Ansible, no psutil needed."""
    if not os.path.exists(HOST_PYTHON):
        pytest.skip("no /usr/bin/python3")
    url = http_server.route("/health")
    proc = subprocess.run([HOST_PYTHON, "-I", th.__file__, "--url", url, "--memory", "--disk", "/", "--json"],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    assert report["checks"][0]["status"] == "healthy"
    proc = subprocess.run([HOST_PYTHON, "-I", th.__file__, "--tcp", f"127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert proc.returncode == 2 and "UNHEALTHY" in proc.stdout
