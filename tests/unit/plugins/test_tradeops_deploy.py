"""module_utils/tradeops_deploy.py (the app_deploy module) against real things: real releases made
from real wheels in tmp trees, and a fake service manager whose ``systemctl start`` really launches
the release's own console script (a tiny HTTP service from the wheel) from ``current``, as the units'
ExecStart does, and whose ``stop`` kills it. The health gates are the real app_health probes over
real sockets; only systemd itself is faked (the controller has none)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ansible.module_utils.tradeops_deploy as deploy_module
import app_deploy
import pytest
import yaml
from ansible.module_utils.tradeops_deploy import (
    MIB,
    PHASES,
    CommandResult,
    Systemd,
    deploy_metric_series,
    memory_trend,
    metric_outcome,
    run_deploy,
)
from ansible.module_utils.tradeops_release import ReleaseStore
from plugin_testlib import HOST_PYTHON, free_port, make_wheel, tree_snapshot

pytestmark = pytest.mark.skipif(not os.path.exists(HOST_PYTHON), reason="needs the host interpreter /usr/bin/python3")

SERVICE_CODE = '''import http.server
import json
import os
import sys
import time

VERSION = {version!r}
MODES = {modes!r}
MIGRATION_FAILS = {migration_fails!r}


def _arg(name):
    return sys.argv[sys.argv.index(name) + 1]


def serve():
    unit, port = _arg("--unit"), int(_arg("--port"))
    mode = MODES.get(unit, "ok")
    if os.environ.get("TINYSVC_BROKEN") == VERSION:  # the host changed under an old release
        mode = "unready"
    if mode == "crash":
        sys.exit(3)
    if mode == "silent":  # runs, never listens
        time.sleep(600)
        return

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/live":
                code, body = 200, {{"status": "alive"}}
            elif self.path == "/ready":
                code = 503 if mode == "unready" else 200
                body = {{"version": VERSION, "unit": unit, "ready": code == 200}}
            else:
                code, body = 404, {{}}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def migrate():
    if MIGRATION_FAILS:
        print("applying 0002_add_orders", flush=True)
        print("migration 0002_add_orders failed: column orders.side already exists", file=sys.stderr)
        sys.exit(2)
    with open(os.path.join(os.environ["TINYSVC_STATE"], "migrations.log"), "a") as log:
        log.write(f"{{VERSION}} {{os.getcwd()}}\\n")
'''


class FakeSystemd(Systemd):
    """systemctl start/stop/reset-failed/show and systemd-run, as systemd would do them for units
    whose ExecStart is ``<root>/current/venv/bin/tinysvc --unit U --port P``."""

    def __init__(self, root: str, ports: dict[str, int], logs: Path) -> None:
        self.root, self.ports, self.logs = root, ports, logs
        self.env: dict[str, str] = {}
        self.calls: list[list[str]] = []
        self.runs: list[dict[str, Any]] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {}  # NRestarts: systemd's own restarts (Restart=on-failure)
        # MemoryCurrent of a running unit in bytes, as a function of the time (a flat 20 MiB unless set), and
        # MemoryMax (512M, the app role's default)
        self.memory: dict[str, Callable[[], int]] = {}
        self.memory_max = 512 * MIB

    def call(self, argv: list[str], timeout: float) -> CommandResult:
        self.calls.append(list(argv))
        if argv[0] == "systemd-run":
            return self.systemd_run(argv, timeout)
        assert argv[0] == "systemctl", argv
        verb, units = argv[1], [a for a in argv[2:] if not a.startswith("-")]
        unknown = [u for u in units if u not in self.ports]
        if unknown:
            return CommandResult(5, "", f"Unit {unknown[0]} not found.")
        if verb == "show":
            return CommandResult(0, "\n".join(self.show(u) for u in units))
        for unit in units:
            if verb == "start":
                self.start(unit)
            elif verb == "stop":
                self.stop(unit)
            elif verb == "reset-failed":  # as systemd: clears the unit's failed state and its NRestarts
                self.restarts.pop(unit, None)
            else:
                raise AssertionError(f"unexpected systemctl {verb}")
        return CommandResult(0)

    def running(self, unit: str) -> bool:
        proc = self.procs.get(unit)
        return proc is not None and proc.poll() is None

    def start(self, unit: str) -> None:
        if self.running(unit):
            return
        program = os.path.join(self.root, "current", "venv", "bin", "tinysvc")
        with open(self.logs / f"{unit}.log", "ab") as log:
            self.procs[unit] = subprocess.Popen(
                [program, "--unit", unit, "--port", str(self.ports[unit])], stdout=log, stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin", **self.env}, start_new_session=True)  # fmt: skip

    def stop(self, unit: str) -> None:
        proc = self.procs.get(unit)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def show(self, unit: str) -> str:
        proc = self.procs.get(unit)
        if proc is not None and proc.poll() is None:
            state = ("active", "running", "success")
        elif proc is not None and proc.returncode not in (0, -signal.SIGTERM):
            state = ("failed", "failed", "exit-code")
        else:
            state = ("inactive", "dead", "success")
        active, sub, result = state
        restarts = self.restarts.get(unit, 0)
        memory = self.memory.get(unit, lambda: 20 * MIB)() if active == "active" else "[not set]"
        return (f"Id={unit}\nLoadState=loaded\nActiveState={active}\nSubState={sub}\nNRestarts={restarts}\n"
                f"Result={result}\nMemoryCurrent={memory}\nMemoryMax={self.memory_max}\n")

    def restart_on_failure(self, unit: str) -> None:
        """What systemd does when the unit's main process is killed (an OOM kill) and Restart= applies."""
        proc = self.procs[unit]
        proc.kill()
        proc.wait()
        self.restarts[unit] = self.restarts.get(unit, 0) + 1
        self.start(unit)

    def systemd_run(self, argv: list[str], timeout: float) -> CommandResult:
        options: dict[str, str] = {}
        index = 1
        while argv[index].startswith("--"):
            key, _, value = argv[index][2:].partition("=")
            if key == "property":
                key, _, value = value.partition("=")
            options[key] = value
            index += 1
        env = {"PATH": "/usr/bin:/bin"}
        if "EnvironmentFile" in options:
            for line in Path(options["EnvironmentFile"]).read_text().splitlines():
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
        self.runs.append({"options": options, "command": argv[index:]})
        proc = subprocess.run(argv[index:], cwd=options["working-directory"], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def kill_all(self) -> None:
        for unit in list(self.procs):
            self.stop(unit)

    def verbs(self) -> list[tuple[str, ...]]:
        """The systemctl calls that change something (not show), as (verb, units...)."""
        return [tuple(c[1:]) for c in self.calls if c[0] == "systemctl" and c[1] != "show"]


class App:
    """One application tree under tmp with its units, wheelhouses and the fake service manager."""

    def __init__(self, tmp: Path, units: tuple[str, ...]) -> None:
        self.tmp = tmp
        self.root = str(tmp / "opt" / "tiny")
        self.units = units
        self.ports = {unit: free_port() for unit in units}
        self.state = tmp / "state"
        self.state.mkdir()
        self.env_file = tmp / "tiny.env"
        self.env_file.write_text(f"TINYSVC_STATE={self.state}\n")
        self.systemd = FakeSystemd(self.root, self.ports, tmp)
        self.store = ReleaseStore(self.root, actor="deployer")
        self.wheelhouses: dict[tuple[Any, ...], str] = {}

    def wheelhouse(self, version: str, modes: dict[str, str] | None = None, migration_fails: bool = False) -> str:
        key = (version, tuple(sorted((modes or {}).items())), migration_fails)
        if key not in self.wheelhouses:
            directory = self.tmp / f"wheelhouse-{len(self.wheelhouses)}"
            directory.mkdir()
            code = SERVICE_CODE.format(version=version, modes=modes or {}, migration_fails=migration_fails)
            make_wheel(directory, "tinysvc", version, {"tinysvc/__init__.py": code},
                       scripts={"tinysvc": "tinysvc:serve", "tinysvc-migrate": "tinysvc:migrate"})  # fmt: skip
            self.wheelhouses[key] = str(directory)
        return self.wheelhouses[key]

    def params(self, **overrides: Any) -> dict[str, Any]:
        services = [{"unit": unit, "probes": [
            {"url": f"http://127.0.0.1:{port}/live", "name": "liveness"},
            {"url": f"http://127.0.0.1:{port}/ready", "name": "readiness", "json_field": "version"},
        ]} for unit, port in self.ports.items()]  # fmt: skip
        params: dict[str, Any] = {
            "path": self.root, "action": "deploy", "version": None, "release": None, "reason": None,
            "wheelhouse": None, "package": "tinysvc", "python": HOST_PYTHON, "shared_links": None, "owner": None,
            "group": None, "min_free_mb": 0, "keep": 5,
            "migrate": {"argv": ["tinysvc-migrate"], "user": "root", "group": "root", "env_file": str(self.env_file),
                        "timeout": 60},
            "services": services, "version_field": "version", "deadline": 1.5, "retries": 1000, "delay": 0.05,
            "max_delay": 0.2, "actor": "deployer", "lock_owner": "deployer", "lock_host": "controller",
            "lock_pid": 4242, "lock_peer_pids": None, "lock_reason": None, "lock_stale_after": 1800,
            "force_unlock": False,
        }  # fmt: skip
        params.update(overrides)
        return params

    def run(self, check_mode: bool = False, **overrides: Any) -> dict[str, Any]:
        return run_deploy(self.store, self.params(**overrides), systemd=self.systemd, check_mode=check_mode)

    def deploy(self, version: str, modes: dict[str, str] | None = None, migration_fails: bool = False,
               check_mode: bool = False, **overrides: Any) -> dict[str, Any]:  # fmt: skip
        wheelhouse = self.wheelhouse(version, modes, migration_fails)
        return self.run(check_mode, version=version, wheelhouse=wheelhouse, **overrides)

    def ready(self, unit: str) -> dict[str, Any]:
        """What the unit's readiness endpoint really answers now."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[unit]}/ready", timeout=2) as response:
            return json.loads(response.read())

    def pids(self) -> dict[str, int]:
        return {unit: proc.pid for unit, proc in self.systemd.procs.items() if proc.poll() is None}

    def ledger(self) -> list[dict[str, Any]]:
        path = Path(self.root, "ledger.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def status(self, release: str) -> str:
        return next(r.status for r in self.store.releases() if r.id == release)

    def lock_file(self) -> Path:
        return Path(self.root, "deploy.lock")


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Any]:
    apps: list[App] = []

    def make(*units: str, batch: bool = False) -> App:
        """``batch``: a batch-only application, no units at all."""
        (tmp_path / f"app{len(apps)}").mkdir()
        app = App(tmp_path / f"app{len(apps)}", () if batch else units or ("tiny-api.service", "tiny-web.service"))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.systemd.kill_all()


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert not result.get("failed"), result.get("msg")
    return result


def actions(entries: list[dict[str, Any]]) -> list[str]:
    return [e["action"] + (f":{e['outcome']}" if e["action"] in ("mark", "summary") else "") for e in entries]


def prom_values(path: Path) -> dict[str, float]:
    """``name{labels}`` -> value of a textfile (comments skipped)."""
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}


def last_outcome(values: dict[str, float], app: str = "tiny") -> dict[str, float]:
    prefix = f'tradeops_deploy_last_outcome{{app="{app}",outcome="'
    return {k[len(prefix):-2]: v for k, v in values.items() if k.startswith(prefix)}


# -- deploy ------------------------------------------------------------------------------


def test_first_deploy_gates_every_unit_in_order_then_a_redeploy_changes_nothing(make_app):
    app = make_app()
    first = ok(app.deploy("1.0"))
    release = first["release"]
    assert first["changed"] and first["outcome"] == "deployed" and first["restarted"]
    assert first["current"] == release and first["previous"] is None and first["version"] == "1.0"
    # stop in reverse order, clear failed state, start in order (each gated before the next)
    assert app.systemd.verbs() == [
        ("stop", "tiny-web.service"), ("stop", "tiny-api.service"),
        ("reset-failed", "tiny-api.service", "tiny-web.service"),
        ("start", "tiny-api.service"), ("start", "tiny-web.service")]  # fmt: skip
    assert app.ready("tiny-web.service")["version"] == "1.0" and app.ready("tiny-api.service")["version"] == "1.0"
    for unit in app.units:
        health = first["health"][unit]
        assert health["status"] == "healthy" and health["version"] == "1.0"
        readiness = next(c for c in health["checks"] if c["name"] == "readiness")
        assert readiness["data"]["json_value"] == "1.0"
        assert f"unit:{unit}" in [c["name"] for c in health["checks"]]
    # the migration ran from the new release, through systemd-run, as the app user, with the env file
    run = app.systemd.runs[0]
    assert run["options"]["uid"] == "root" and run["options"]["EnvironmentFile"] == str(app.env_file)
    assert run["options"]["RuntimeMaxSec"] == "60" and {"wait", "pipe", "collect"} <= set(run["options"])
    assert run["command"] == [os.path.join(first["release_path"], "venv", "bin", "tinysvc-migrate")]
    assert (app.state / "migrations.log").read_text() == f"1.0 {first['release_path']}\n"
    # ledger: the store's lines and one summary; the lock left none
    assert actions(app.ledger()) == ["create", "activate", "mark:good", "summary:deployed"]
    assert app.ledger() == first["ledger_entries"]
    summary = app.ledger()[-1]
    assert summary["run"] == "deploy" and summary["lock_owner"] == "deployer" and summary["lock_pid"] == 4242
    assert app.status(release) == "good" and not app.lock_file().exists()
    assert set(first["timings"]) == set(PHASES)
    assert abs(sum(first["timings"].values()) - first["elapsed"]) < 0.02
    assert first["timings"]["venv"] > 0 and first["timings"]["health"] > 0 and first["timings"]["migrate"] > 0
    assert set(first["create_timings"]) >= {"venv_s", "install_s", "total_s"}

    ledger_before = Path(app.root, "ledger.jsonl").read_bytes()
    pids = app.pids()
    app.systemd.calls.clear()
    again = ok(app.deploy("1.0"))
    assert again["changed"] is False and again["outcome"] == "unchanged" and again["restarted"] is False
    assert again["ledger_entries"] == [] and Path(app.root, "ledger.jsonl").read_bytes() == ledger_before
    assert app.systemd.verbs() == [] and len(app.systemd.runs) == 1  # no start/stop, no migration
    assert app.pids() == pids and again["health"]["tiny-web.service"]["status"] == "healthy"
    assert not app.lock_file().exists()


def test_deploy_of_a_release_that_fails_readiness_rolls_back_to_the_previous_good_one(make_app):
    app = make_app("tiny-db.service", "tiny-api.service", "tiny-web.service")
    one = ok(app.deploy("1.0"))["release"]
    app.systemd.calls.clear()
    result = app.deploy("2.0", modes={"tiny-api.service": "unready"})
    assert result["failed"] and result["outcome"] == "rolled-back" and result["changed"]
    two = result["release"]
    assert result["rolled_back_to"] == one and result["current"] == one and result["previous"] == one
    msg = result["msg"]
    assert "tiny-api.service" in msg and "readiness [unhealthy] expected HTTP 200, got 503" in msg
    assert f"Rolled back to {one} (1.0), which is healthy" in msg
    # the api's gate failed: the web unit after it was never started for 2.0; then 1.0 restarted in order
    down = [("stop", "tiny-web.service"), ("stop", "tiny-api.service"), ("stop", "tiny-db.service"),
            ("reset-failed", "tiny-db.service", "tiny-api.service", "tiny-web.service")]  # fmt: skip
    assert app.systemd.verbs() == [
        *down, ("start", "tiny-db.service"), ("start", "tiny-api.service"),
        *down, ("start", "tiny-db.service"), ("start", "tiny-api.service"), ("start", "tiny-web.service")]  # fmt: skip
    gate = result["failed_gate"]
    assert gate["release"] == two and gate["unit"] == "tiny-api.service"
    assert gate["health"]["tiny-web.service"]["status"] == "not-started"
    assert gate["health"]["tiny-db.service"]["status"] == "healthy"
    first_restart = app.systemd.calls.index(["systemctl", "reset-failed", *app.units])
    second_restart = len(app.systemd.calls) - 1 - app.systemd.calls[::-1].index(["systemctl", "reset-failed",
                                                                                  *app.units])  # fmt: skip
    probed = {u for c in app.systemd.calls[first_restart:second_restart] if c[1] == "show" for u in c[4:]}
    assert probed == {"tiny-db.service", "tiny-api.service"}  # the web's gate was not attempted
    # the previous release serves, every unit gated with ITS version
    assert {u: app.ready(u)["version"] for u in app.units} == dict.fromkeys(app.units, "1.0")
    assert all(h["status"] == "healthy" and h["version"] == "1.0" for h in result["health"].values())
    assert app.status(two) == "bad" and app.status(one) == "good"
    bad_mark = next(e for e in result["ledger_entries"] if e["action"] == "mark")
    assert "readiness" in bad_mark["reason"] and "503" in bad_mark["reason"]
    assert actions(result["ledger_entries"]) == ["create", "activate", "mark:bad", "rollback",
                                                 "summary:rolled-back"]  # fmt: skip
    assert not app.lock_file().exists()


@pytest.mark.parametrize("mode", ["silent", "crash"])
def test_first_deploy_failing_its_gate_stops_the_units_and_says_nothing_serves(make_app, mode):
    app = make_app()
    result = app.deploy("1.0", modes={"tiny-api.service": mode})
    assert result["failed"] and result["outcome"] == "failed" and "NOTHING SERVES" in result["msg"]
    assert "no previous good release" in result["msg"] and result.get("rolled_back_to") is None
    failing = "readiness [unhealthy]" if mode == "silent" else "unit:tiny-api.service [unhealthy] failed/failed"
    assert failing in result["msg"]
    assert ("start", "tiny-web.service") not in app.systemd.verbs()  # never started after the api's failed gate
    assert app.systemd.verbs()[-2:] == [("stop", "tiny-web.service"), ("stop", "tiny-api.service")]
    assert app.pids() == {}
    assert app.status(result["release"]) == "bad" and not app.lock_file().exists()


def test_failed_migration_marks_the_release_bad_and_switches_nothing(make_app):
    app = make_app()
    one = ok(app.deploy("1.0"))["release"]
    pids = app.pids()
    app.systemd.calls.clear()
    result = app.deploy("2.0", migration_fails=True)
    assert result["failed"] and result["outcome"] == "not-switched"
    assert "column orders.side already exists" in result["msg"] and "(exit 2)" in result["msg"]
    assert f"Nothing was switched: {one} still serves" in result["msg"]
    assert result["current"] == one and app.store.current() == one
    assert app.systemd.verbs() == [] and app.pids() == pids  # nothing restarted
    assert app.ready("tiny-web.service")["version"] == "1.0"
    assert app.status(result["release"]) == "bad"
    assert actions(result["ledger_entries"]) == ["create", "mark:bad", "summary:not-switched"]
    assert not app.lock_file().exists()


def test_a_console_script_no_distribution_installs_is_refused_before_the_switch(make_app):
    app = make_app()
    scripts = [{"name": "tinysvc", "setting": "app_console_script"}]
    one = ok(app.deploy("1.0", console_scripts=scripts))["release"]
    pids = app.pids()
    app.systemd.calls.clear()
    gunicorn = {"name": "gunicorn", "setting": "app_services[web].console_script"}
    result = app.deploy("2.0", console_scripts=[*scripts, gunicorn])
    assert result["failed"] and result["outcome"] == "not-switched"
    assert "no console script app_services[web].console_script = 'gunicorn' is installed" in result["msg"]
    assert "tinysvc, tinysvc-migrate" in result["msg"] and "app_requirements" in result["msg"]
    assert f"Nothing was switched: {one} still serves" in result["msg"]
    assert app.store.current() == one and app.systemd.verbs() == [] and app.pids() == pids
    assert app.status(result["release"]) == "bad"
    assert actions(result["ledger_entries"]) == ["create", "mark:bad", "summary:not-switched"]  # no migration ran


@pytest.mark.parametrize("name", ["../../../bin/sh", "/usr/bin/env", "-x", ""])
def test_a_console_script_that_is_a_path_is_refused(make_app, name):
    app = make_app()
    result = app.deploy("1.0", console_scripts=[{"name": name, "setting": "app_console_script"}])
    assert result["failed"] and "give the name of a program in the release's venv/bin" in result["msg"]
    assert app.store.current() is None and not Path(app.root, "releases").exists()  # refused before anything


def test_a_held_lock_refuses_the_deploy_with_the_holder_and_is_left_untouched(make_app):
    app = make_app()
    app.store.lock(owner="alice", host="ctl-2", pid=777, reason="deploy 9.9")
    lock = app.lock_file()
    before = (lock.read_bytes(), lock.stat().st_mtime_ns)
    ledger = app.ledger()
    result = app.deploy("1.0")
    assert result["failed"] and "alice@ctl-2 pid 777" in result["msg"] and "deploy 9.9" in result["msg"]
    assert result["lock"]["owner"] == "alice" and result["stale"] is False
    assert (lock.read_bytes(), lock.stat().st_mtime_ns) == before
    assert app.ledger() == ledger and app.systemd.calls == []
    assert not os.path.isdir(os.path.join(app.root, "releases"))


def test_a_failure_before_any_change_writes_nothing_and_releases_the_lock(make_app, tmp_path):
    app = make_app()
    ok(app.deploy("1.0"))
    ledger = app.ledger()
    result = app.run(version="2.0", wheelhouse=str(tmp_path / "missing"))
    assert result["failed"] and "is not a directory on this host" in result["msg"]
    assert not app.lock_file().exists() and app.ledger() == ledger and result["changed"] is False


@pytest.mark.parametrize(("override", "message"), [
    ({"services": [{"unit": "tiny-a.service"}, {"unit": "tiny-a.service"}]}, "listed twice"),
    ({"services": [{"unit": "tiny-a.service", "probes": [{"name": "x"}]}]}, "every http probe needs a url"),
    ({"migrate": {"argv": ["../bin/sh", "-c", "x"]}}, "must be the name of a program in the release's venv/bin"),
    ({"version": None}, "action=deploy needs version"),
    ({"keep": 0}, "keep at least 1 release"),
])  # fmt: skip
def test_bad_options_fail_before_anything_is_written(make_app, override, message):
    app = make_app()
    result = app.run(**{"version": "1.0", "wheelhouse": app.wheelhouse("1.0"), **override})
    assert result["failed"] and message in result["msg"]
    assert not os.path.exists(app.root) and app.systemd.calls == []


# -- rollback, restart, verify -----------------------------------------------------------


def test_rollback_action_gates_the_target_with_its_version_and_switches_forward_when_it_fails(make_app):
    app = make_app()
    one = ok(app.deploy("1.0"))["release"]
    two = ok(app.deploy("2.0"))["release"]
    back = ok(app.run(action="rollback", reason="errors after 2.0"))
    assert back["outcome"] == "rolled-back" and back["changed"] and back["rolled_back_to"] == one
    assert back["current"] == one and back["previous"] == two and back["version"] == "1.0"
    assert {u: app.ready(u)["version"] for u in app.units} == dict.fromkeys(app.units, "1.0")
    readiness = next(c for c in back["health"]["tiny-web.service"]["checks"] if c["name"] == "readiness")
    assert readiness["data"]["json_value"] == "1.0"
    assert actions(back["ledger_entries"]) == ["rollback", "summary:rolled-back"]
    assert back["ledger_entries"][0]["reason"] == "errors after 2.0"
    assert back["ledger_entries"][1]["reason"] == "errors after 2.0"  # summary too (deploy window override reason)

    # 2.0 no longer works on this host: a rollback to it fails its gate, 1.0 serves again
    app.systemd.env["TINYSVC_BROKEN"] = "2.0"
    result = app.run(action="rollback", release=two)
    assert result["failed"] and result["outcome"] == "switched-forward"
    assert f"rollback to {two} (2.0) failed its health gate" in result["msg"]
    assert f"Switched forward again to {one} (1.0), the release that served before, which is healthy" in result["msg"]
    assert result["current"] == one and app.ready("tiny-web.service")["version"] == "1.0"
    assert actions(result["ledger_entries"]) == ["rollback", "activate", "summary:switched-forward"]
    assert not app.lock_file().exists()


def test_restart_before_any_release_does_nothing(make_app):
    app = make_app()
    quiet = ok(app.run(action="restart"))
    assert quiet["changed"] is False and quiet["outcome"] == "unchanged" and "nothing to restart" in quiet["msg"]
    assert app.systemd.verbs() == [] and not app.lock_file().exists()


def test_restart_and_verify(make_app):
    app = make_app()
    release = ok(app.deploy("1.0"))["release"]
    ledger = app.ledger()
    verified = ok(app.run(action="verify"))
    assert verified["changed"] is False and verified["outcome"] == "healthy" and verified["release"] == release
    assert verified["health"]["tiny-api.service"]["version"] == "1.0" and app.ledger() == ledger

    pids = app.pids()
    restarted = ok(app.run(action="restart"))
    assert restarted["changed"] and restarted["outcome"] == "restarted" and restarted["current"] == release
    assert set(app.pids().values()).isdisjoint(pids.values())
    assert actions(app.ledger()[len(ledger):]) == ["summary:restarted"]

    app.systemd.stop("tiny-web.service")
    ledger = app.ledger()
    broken = app.run(action="verify", deadline=0.3)
    assert broken["failed"] and broken["outcome"] == "unhealthy" and broken["changed"] is False
    assert "tiny-web.service: unhealthy after" in broken["msg"] and "liveness [unhealthy]" in broken["msg"]
    assert "unit:tiny-web.service [unhealthy] inactive/dead" in broken["msg"] and "tiny-api" not in broken["msg"]
    assert broken["health"]["tiny-api.service"]["status"] == "healthy"
    assert app.ledger() == ledger and not app.lock_file().exists()


# -- soak --------------------------------------------------------------------------------


def test_soak_of_a_healthy_release_watches_for_its_time_and_changes_nothing(make_app):
    app = make_app()
    release = ok(app.deploy("1.0"))["release"]
    ledger, pids = app.ledger(), app.pids()
    started = time.monotonic()
    result = ok(app.run(action="soak", version="1.0", soak=3))  # 1.5 s saw one pass only at a load of 10
    assert time.monotonic() - started >= 3
    assert result["outcome"] == "soaked" and result["changed"] is False and result["release"] == release
    assert result["soak"]["failing"] is None and result["soak"]["passes"] >= 2
    assert app.ledger() == ledger and app.pids() == pids and not app.lock_file().exists()


def test_a_unit_restarted_by_systemd_during_the_soak_rolls_the_release_back(make_app):
    """An OOM kill under load: systemd restarts the unit (NRestarts+1), its probes answer again, and yet the
    release is bad: marked so, the previous good release restarted behind the gate."""
    app = make_app()
    one = ok(app.deploy("1.0"))["release"]
    two = ok(app.deploy("2.0"))["release"]
    killer = threading.Timer(0.5, app.systemd.restart_on_failure, ("tiny-web.service",))
    killer.start()
    try:
        result = app.run(action="soak", version="2.0", soak=30)
    finally:
        killer.cancel()
    assert result["failed"] and result["outcome"] == "rolled-back", result["msg"]
    assert result["rolled_back_to"] == one
    assert result["soak"]["watched_s"] < 10, "the restart ends the soak at once, not at its end"
    assert "soak under traffic" in result["msg"] and "tiny-web.service" in result["msg"]
    assert "restarted 1 time(s)" in result["msg"] and f"Rolled back to {one} (1.0)" in result["msg"]
    assert app.status(two) == "bad" and app.status(one) == "good"
    assert {u: app.ready(u)["version"] for u in app.units} == dict.fromkeys(app.units, "1.0")
    assert actions(app.ledger()[-3:]) == ["mark:bad", "rollback", "summary:rolled-back"]
    assert "soak under traffic" in app.ledger()[-3]["reason"] and not app.lock_file().exists()


def test_a_unit_that_stops_during_the_soak_fails_it(make_app):
    app = make_app()
    one = ok(app.deploy("1.0"))["release"]
    ok(app.deploy("2.0"))
    stopper = threading.Timer(0.3, app.systemd.stop, ("tiny-api.service",))
    stopper.start()
    result = app.run(action="soak", version="2.0", soak=30)
    stopper.cancel()
    assert result["outcome"] == "rolled-back" and result["current"] == one
    assert "unit:tiny-api.service" in result["msg"] and "inactive/dead" in result["msg"]


def leak(rate_mib_s: float, base_mib: float = 30) -> Callable[[], int]:
    """MemoryCurrent of a unit that keeps ``rate_mib_s`` more every second from now on."""
    t0 = time.monotonic()
    return lambda: int((base_mib + rate_mib_s * (time.monotonic() - t0)) * MIB)


@pytest.fixture
def fast_soak(monkeypatch):
    """A pass of the soak's checks every 0.1 s (1 s in production). The probes take 0.3 s a pass here and over 1 s
    on a machine at a load of 10 (make check beside molecule runs): 3 samples in a 10 s soak's second half fit
    the tests' exactly linear leaks (production asks for SOAK_TREND_SAMPLES = 5 of real, noisy memory)."""
    monkeypatch.setattr(deploy_module, "SOAK_INTERVAL", 0.1)
    monkeypatch.setattr(deploy_module, "SOAK_TREND_SAMPLES", 3)


def test_a_release_whose_memory_would_reach_memory_max_within_the_horizon_fails_the_soak(make_app, fast_soak):
    """A leak too slow to be OOM-killed within the soak: 40 MiB/s from 30 MiB reaches 512 MiB about 12 s in,
    after a 10 s soak; the trend of the window's second half says so, and the release is rolled back."""
    app = make_app()
    one = ok(app.deploy("1.0"))["release"]
    two = ok(app.deploy("2.0"))["release"]
    app.systemd.memory["tiny-web.service"] = leak(40)
    result = app.run(action="soak", version="2.0", soak=10)
    assert result["failed"] and result["outcome"] == "rolled-back", result["msg"]
    assert result["rolled_back_to"] == one and app.status(two) == "bad" and app.status(one) == "good"
    assert result["soak"]["watched_s"] >= 8, "the trend is judged at the end of the window"
    assert "tiny-web.service: memory grows 40.0 MiB/s" in result["msg"], result["msg"]
    assert "reaches MemoryMax 512 MiB in about" in result["msg"] and "soak_memory_horizon 300 s" in result["msg"]
    web = result["soak"]["memory"]["tiny-web.service"]
    assert web["mib_per_s"] == pytest.approx(40, rel=0.05) and 0 < web["reaches_max_in_s"] < 7
    assert result["soak"]["memory"]["tiny-api.service"]["mib_per_s"] == 0  # the flat one
    assert "memory grows" in app.ledger()[-3]["reason"]
    assert {u: app.ready(u)["version"] for u in app.units} == dict.fromkeys(app.units, "1.0")


def test_the_memory_trend_judges_a_slow_leak_by_the_horizon(make_app, fast_soak):
    """4 MiB/s reaches MemoryMax in about 110 s: inside a 600 s horizon it fails, beyond a 60 s one it passes,
    0 does not judge. (A flat unit: tiny-api in the test above, 0 MiB/s.)"""
    app = make_app()
    ok(app.deploy("1.0"))
    app.systemd.memory["tiny-web.service"] = leak(4)  # 4 MiB/s from 30 MiB: MemoryMax in about 2 minutes
    passed = ok(app.run(action="soak", version="1.0", soak=10, soak_memory_horizon=60))
    web = passed["soak"]["memory"]["tiny-web.service"]
    assert passed["outcome"] == "soaked" and 90 < web["reaches_max_in_s"] < 125, web
    off = ok(app.run(action="soak", version="1.0", soak=2, soak_memory_horizon=0))
    assert off["outcome"] == "soaked", "0: no memory check"
    failed = app.run(action="soak", version="1.0", soak=10, soak_memory_horizon=600)
    assert failed["failed"] and "memory grows 4.0 MiB/s" in failed["msg"], failed["msg"]


@pytest.mark.parametrize(("samples", "limit", "horizon", "expect"), [
    # steady leak, 2 MiB/s from 100 MiB, limit 512 MiB: 140 MiB after 20 s, about 186 s left
    ([(t, (100 + 2 * t) * MIB) for t in range(21)], 512 * MIB, 300, "reaches MemoryMax 512 MiB in about 186 s"),
    ([(t, (100 + 2 * t) * MIB) for t in range(21)], 512 * MIB, 120, ""),  # beyond a 120 s horizon
    ([(t, (100 + 2 * t) * MIB) for t in range(21)], 512 * MIB, 0, ""),  # 0: no memory check
    ([(t, (100 + 2 * t) * MIB) for t in range(21)], None, 300, ""),  # no MemoryMax: nothing to reach
    # already at the limit and still growing: no time left
    ([(t, (480 + 2 * t) * MIB) for t in range(21)], 512 * MIB, 300, "in about 0 s"),
    # warm-up in the first half, flat in the second: not a leak
    ([(t, min(t, 10) * 20 * MIB) for t in range(21)], 512 * MIB, 300, ""),
    # 3 MiB in all over the second half (under SOAK_TREND_MIN_RISE): noise, not a leak
    ([(t, 400 * MIB + t * 300 * 1024) for t in range(21)], 512 * MIB, 300, ""),
    ([(t, (100 + 20 * t) * MIB) for t in range(6)], 512 * MIB, 300, ""),  # 3 samples in the second half: too few
    ([], 512 * MIB, 300, ""),
])  # fmt: skip
def test_memory_trend(samples, limit, horizon, expect):
    trend = memory_trend(samples, limit, horizon)
    assert (expect in trend["failing"]) if expect else trend["failing"] == "", trend


def test_memory_trend_reports_the_rate_and_the_time_left():
    samples = [(float(t), (100 + 4 * t) * MIB) for t in range(21)]  # 4 MiB/s, 180 MiB at 20 s
    trend = memory_trend(samples, 512 * MIB, 300)
    assert trend["mib_per_s"] == 4.0 and trend["reaches_max_in_s"] == 83 and trend["end_mib"] == 180.0
    assert "memory grows 4.0 MiB/s under traffic (140 -> 180 MiB in the last 10 s)" in trend["failing"]
    assert trend["start_mib"] == 100.0 and trend["max_mib"] == 512.0


def test_soak_refuses_bad_input_before_watching(make_app):
    app = make_app()
    assert "nothing is current" in app.run(action="soak", soak=5)["msg"]
    ok(app.deploy("1.0"))
    ledger = app.ledger()
    wrong = app.run(action="soak", version="2.0", soak=5)
    assert wrong["failed"] and "current release" in wrong["msg"] and "is version 1.0" in wrong["msg"]
    assert "soak > 0" in app.run(action="soak", version="1.0", soak=0)["msg"]
    negative = app.run(action="soak", version="1.0", soak=5, soak_memory_horizon=-1)["msg"]
    assert "soak_memory_horizon=-1" in negative and "0 to skip" in negative
    check = app.run(check_mode=True, action="soak", version="1.0", soak=600)
    assert check["outcome"] == "soaked" and "would watch" in check["msg"] and check["changed"] is False
    assert app.ledger() == ledger and not app.lock_file().exists()


# -- check mode and the module -----------------------------------------------------------


def test_check_mode_reports_and_writes_nothing(make_app):
    app = make_app()
    one = ok(app.deploy("1.0"))["release"]
    snapshot = tree_snapshot(app.root)
    app.systemd.calls.clear()
    runs = len(app.systemd.runs)
    predicted = ok(app.deploy("2.0", check_mode=True))
    assert predicted["changed"] and predicted["outcome"] == "deployed" and predicted["current"] == one
    assert "would create release 2.0-" in predicted["msg"] and "run tinysvc-migrate" in predicted["msg"]
    assert f"switch current from {one}" in predicted["msg"]
    assert "restart tiny-api.service, tiny-web.service behind the health gate" in predicted["msg"]
    same = ok(app.deploy("1.0", check_mode=True))
    assert same["changed"] is False and same["outcome"] == "unchanged"
    assert ok(app.run(action="restart", check_mode=True))["changed"]
    assert app.run(action="rollback", check_mode=True)["failed"]  # nothing good before 1.0: refused, as for real
    assert tree_snapshot(app.root) == snapshot and len(app.systemd.runs) == runs
    assert app.systemd.calls == []


def test_module_main_in_check_mode_and_refused_by_a_held_lock(run_module, make_app):
    app = make_app()
    params = {k: v for k, v in app.params(version="1.0", wheelhouse=app.wheelhouse("1.0")).items() if v is not None}
    predicted = run_module(app_deploy, params, check_mode=True, diff=True)
    assert predicted["_rc"] == 0 and predicted["changed"] and predicted["outcome"] == "deployed"
    assert predicted["diff"]["before"] == "current -> absent\n"
    assert predicted["diff"]["after"].startswith("current -> 1.0-")
    assert not os.path.exists(os.path.join(app.root, "releases"))
    app.store.lock(owner="alice", host="ctl-2", pid=777, reason="deploy 9.9")
    refused = run_module(app_deploy, params)
    assert refused["_rc"] == 1 and refused["failed"] and "alice@ctl-2" in refused["msg"]
    assert refused["lock"]["owner"] == "alice" and "diff" not in refused


def test_first_deploy_in_check_mode_names_an_owner_that_does_not_exist_yet(run_module, make_app):
    """deploy.yml --check on a host converged without a release: role app's user and group tasks
    only reported, so the plan names the accounts and writes nothing; a real deploy is refused
    with the clear message before anything is written, and releases the lock."""
    app = make_app()
    accounts = {"owner": "no-such-user-here", "group": "no-such-group-here"}
    params = {k: v for k, v in app.params(version="1.0", wheelhouse=app.wheelhouse("1.0"), **accounts).items()
              if v is not None}
    predicted = run_module(app_deploy, params, check_mode=True)
    assert predicted["_rc"] == 0 and predicted["changed"] and predicted["outcome"] == "deployed"
    assert predicted["missing_accounts"] == ["owner 'no-such-user-here' does not exist yet",
                                             "group 'no-such-group-here' does not exist yet"]
    assert "would create release 1.0-" in predicted["msg"] and "switch current from nothing" in predicted["msg"]
    assert "owner 'no-such-user-here' does not exist yet" in predicted["msg"]
    assert predicted["msg"].endswith("Nothing was changed.")
    assert not os.path.exists(app.root) and app.systemd.calls == []
    refused = run_module(app_deploy, params)
    assert refused["_rc"] == 1 and refused["outcome"] == "failed"
    assert refused["msg"] == "owner 'no-such-user-here' does not exist on this host; create the app user first"
    assert sorted(os.listdir(app.root)) == []  # lock taken and released; no tree, no ledger line
    assert app.systemd.calls == []


def _options(spec: dict, doc: bool) -> dict:
    out = {}
    for name, item in spec.items():
        entry = {key: item.get(key, default) for key, default in
                 (("type", "str"), ("default", None), ("choices", None), ("required", False), ("elements", None))}
        children = item.get("suboptions" if doc else "options")
        if children:
            entry["options"] = _options(children, doc)
        out[name] = entry
    return out


def test_documentation_returns_what_callers_read():
    """(Options against the argument spec, doc fragments included: test_app_modules.py.)"""
    yaml.safe_load(app_deploy.EXAMPLES)
    returned = set(yaml.safe_load(app_deploy.RETURN))
    assert returned >= {"release", "version", "previous", "rolled_back_to", "health", "timings", "ledger_entries"}


def test_module_utils_import_on_the_hosts_python_without_ansible():
    """The orchestration runs on Debian's Python without Ansible: its siblings are found side by side."""
    import ansible.module_utils.tradeops_deploy as td

    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import tradeops_deploy as td; "
        "assert 'ansible' not in sys.modules; "
        "print(td.ReleaseStore.__module__, td.evaluate.__module__, td.update_textfile.__module__)"
    )
    out = subprocess.run([HOST_PYTHON, "-I", "-c", code, os.path.dirname(td.__file__)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.split() == ["tradeops_release", "tradeops_health", "tradeops_metrics"]


# -- metrics -----------------------------------------------------------------------------


def test_every_deploy_and_rollback_publishes_its_outcome_for_the_textfile_collector(make_app, tmp_path):
    """success, a failed gate rolled back, a manual rollback, a failed migration: one outcome at 1 each
    time, with the run's end time and duration; a no-op re-deploy and check mode leave the file alone; the
    file is valid for Prometheus (promtool check metrics) and another app's series in it are kept."""
    app, metrics = make_app(), tmp_path / "textfile"
    prom = metrics / "tradeops_deploy.prom"
    before = time.time()
    first = ok(app.deploy("1.0", metrics_dir=str(metrics)))
    assert first["metrics"] == {"path": str(prom), "app": "tiny", "outcome": "success"}
    values = prom_values(prom)
    assert last_outcome(values) == {"success": 1, "failed": 0, "rolled_back": 0}
    assert before <= values['tradeops_deploy_last_timestamp_seconds{app="tiny"}'] <= time.time()
    assert abs(values['tradeops_deploy_last_duration_seconds{app="tiny"}'] - first["elapsed"]) < 0.01
    promtool = shutil.which("promtool")
    if promtool:  # Debian's prometheus package (the rules tests need it too)
        check = subprocess.run([promtool, "check", "metrics"], input=prom.read_text(), capture_output=True, text=True,
                               check=False)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr

    text = prom.read_bytes()
    assert "metrics" not in ok(app.deploy("1.0", metrics_dir=str(metrics)))  # unchanged: not a new deploy
    assert "metrics" not in ok(app.deploy("1.1", metrics_dir=str(metrics), check_mode=True))
    assert prom.read_bytes() == text

    failed = app.deploy("2.0", modes={"tiny-api.service": "unready"}, metrics_dir=str(metrics))
    assert failed["failed"] and failed["outcome"] == "rolled-back" and failed["metrics"]["outcome"] == "rolled_back"
    assert last_outcome(prom_values(prom)) == {"success": 0, "failed": 0, "rolled_back": 1}

    ok(app.deploy("1.1", metrics_dir=str(metrics)))
    assert last_outcome(prom_values(prom)) == {"success": 1, "failed": 0, "rolled_back": 0}
    back = ok(app.run(action="rollback", reason="errors after 1.1", metrics_dir=str(metrics)))
    assert back["outcome"] == "rolled-back" and back["metrics"]["outcome"] == "rolled_back"
    assert last_outcome(prom_values(prom)) == {"success": 0, "failed": 0, "rolled_back": 1}

    # another application on the host, named explicitly: its series sit beside tiny's
    other = make_app("other-web.service")
    ok(other.deploy("5.0", metrics_dir=str(metrics), metrics_app="other"))
    broken = app.deploy("3.0", migration_fails=True, metrics_dir=str(metrics))
    assert broken["failed"] and broken["metrics"]["outcome"] == "failed"
    values = prom_values(prom)
    assert last_outcome(values) == {"success": 0, "failed": 1, "rolled_back": 0}
    assert last_outcome(values, "other") == {"success": 1, "failed": 0, "rolled_back": 0}
    assert actions(app.ledger())[-1] == "summary:not-switched"


def test_metrics_that_cannot_be_written_are_a_warning_and_the_deploy_succeeds(make_app, tmp_path):
    app = make_app()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = ok(app.deploy("1.0", metrics_dir=str(blocker / "textfile")))
    assert result["outcome"] == "deployed" and "metrics" not in result
    assert any("could not write the deploy metrics under metrics_dir=" in w for w in result["warnings"])
    assert not app.lock_file().exists() and actions(app.ledger())[-1] == "summary:deployed"


@pytest.mark.parametrize(("action", "outcome", "failed", "expected"), [
    ("deploy", "deployed", False, "success"),
    ("deploy", "rolled-back", True, "rolled_back"),
    ("deploy", "rollback-failed", True, "failed"),
    ("deploy", "failed", True, "failed"),
    ("deploy", None, True, "failed"),
    ("rollback", "rolled-back", False, "rolled_back"),
    ("rollback", "switched-forward", True, "failed"),
    ("rollback", "restarted", False, "rolled_back"),
])  # fmt: skip
def test_metric_outcome_of_each_run_outcome(action, outcome, failed, expected):
    assert metric_outcome(action, outcome, failed) == expected


def test_deploy_metric_series_refuses_an_unknown_outcome():
    series = deploy_metric_series("refapp", "success", 1.5, 2.0)
    assert [labels.get("outcome") for labels, _ in series] == ["success", "failed", "rolled_back", None]
    with pytest.raises(ValueError, match="one of success, failed, rolled_back"):
        deploy_metric_series("refapp", "rolled-back", 1.5, 2.0)


# -- health contracts: tcp and command probes --------------------------------------------


def contract(app: Any, command: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every unit: TCP liveness, readiness a command run from the release (``python`` of its venv)."""
    return [{"unit": unit, "probes": [
        {"kind": "tcp", "name": "liveness", "host": "127.0.0.1", "port": port},
        {"kind": "command", "name": "readiness", "argv": ["python", "-c", command], "expect_version": True,
         "env_file": str(app.env_file), "timeout": timeout},
    ]} for unit, port in app.ports.items()]  # fmt: skip


VERSION_AND_ENV = "import os, tinysvc; print(tinysvc.VERSION, 'state', os.environ['TINYSVC_STATE'], os.getcwd())"


def test_a_command_probe_gates_from_the_release_its_venv_and_env_file_and_rolls_back(make_app):
    """The command runs from the current release (its venv's python imports the release's code, in its
    directory, with the env file's entries masked in the result); a release failing it is rolled back and
    the one rolled back to passes it with its own version."""
    app = make_app("tiny-api.service")
    # Each attempt starts the release's python: 1.5 s (the file's default) was too short on a loaded machine,
    # where the last attempt's failure was the TCP probe of a service still starting, not the command.
    first = ok(app.deploy("1.0", services=contract(app, VERSION_AND_ENV), deadline=6))
    checks = first["health"]["tiny-api.service"]["checks"]
    assert [(c["name"], c["kind"], c["status"]) for c in checks] == [
        ("unit:tiny-api.service", "systemd", "healthy"), ("liveness", "tcp", "healthy"),
        ("readiness", "command", "healthy")]  # fmt: skip
    output = checks[2]["data"]["output"]
    assert output == f"1.0 state *** {app.store.release_path(first['release'])}"
    assert str(app.state) not in json.dumps(first)
    failing = "import sys, tinysvc; print(tinysvc.VERSION); sys.exit(tinysvc.VERSION == '2.0')"
    second = app.deploy("2.0", services=contract(app, failing), deadline=6)
    assert second["failed"] and second["outcome"] == "rolled-back"
    assert "readiness [unhealthy] python exited 1: 2.0" in second["msg"], second["msg"]
    assert second["health"]["tiny-api.service"]["status"] == "healthy"
    assert second["health"]["tiny-api.service"]["version"] == "1.0"
    ok(app.run(action="verify", services=contract(app, failing), deadline=6))  # 1.0 serves, and passes it


def test_a_command_probe_that_hangs_is_killed_at_its_timeout_and_fails_the_gate(make_app):
    app = make_app("tiny-api.service")
    started = time.monotonic()
    result = app.deploy("1.0", services=contract(app, "import time; time.sleep(60)", timeout=0.5), deadline=4)
    assert time.monotonic() - started < 20
    assert result["failed"] and result["outcome"] == "failed" and "NOTHING SERVES" in result["msg"]
    # each attempt within the probe's timeout, the last one within what was left of the deadline
    assert re.search(r"readiness \[unhealthy\] python did not finish within 0?\.\d+ s \(killed\)", result["msg"])


def test_a_probe_of_an_unknown_kind_or_without_its_target_fails_before_anything_changes(make_app):
    app = make_app("tiny-api.service")
    for probe, message in [({"kind": "grpc"}, "kind 'grpc' is not one of"), ({"kind": "tcp"}, "port None"),
                           ({"kind": "command", "argv": []}, "argv must be a non-empty list")]:
        result = app.run(action="verify", services=[{"unit": "tiny-api.service", "probes": [probe]}])
        assert result["failed"] and message in result["msg"], result["msg"]
    assert not Path(app.root).exists()


# -- batch-only applications: no services, the application's own gate -------------------

# The gate of the tests' batch application, run from a release by its venv's python: it prints what it checked, the
# release it runs from and where current pointed meanwhile; the env file's GATE_<version> (1_0 for 1.0) makes that
# version exit 3 (exit), hang (hang), print no "scan ok" (output) or another version (version).
GATE_CODE = """import os, sys, time, tinysvc
v = tinysvc.VERSION
mode = os.environ.get("GATE_" + v.replace(".", "_"), "ok")
if mode == "hang":
    time.sleep(60)
if mode == "version":  # not even in a path
    sys.exit(print("scan ok version 0.0"))
current = os.path.join(os.environ["APP_ROOT"], "current")
print("scan", "skipped" if mode == "output" else "ok", "version", v,
      "from", os.getcwd(), "current", os.path.realpath(current) if os.path.exists(current) else "-")
sys.exit(3 if mode == "exit" else 0)
"""


def batch_gate(app: App, timeout: float = 5.0) -> list[dict[str, Any]]:
    """What role app's app_gate renders: one command probe from the release, with the version and a text expected."""
    return [{"kind": "command", "name": "app_gate", "argv": ["python", "-c", GATE_CODE], "expect_version": True,
             "expect_output": "scan ok", "timeout": timeout, "env_file": str(app.env_file)}]


def batch_app(make_app: Any, **env: str) -> App:
    app = make_app(batch=True)
    app.env_file.write_text(app.env_file.read_text() + f"APP_ROOT={app.root}\n"
                            + "".join(f"{k}={v}\n" for k, v in env.items()))
    return app


def gate_output(app: App, result: dict[str, Any]) -> str:
    """The gate's output, the application's root unmasked (APP_ROOT is a value of the env file: masked)."""
    check = result["health"]["gate"]["checks"][0]
    assert check["name"] == "app_gate" and check["kind"] == "command"
    return check["data"]["output"].replace("***", app.root)


def test_a_batch_only_deploy_gates_the_new_release_before_the_switch_and_restarts_nothing(make_app):
    app = batch_app(make_app)
    one = ok(app.deploy("1.0", services=[], gate=batch_gate(app), deadline=30))
    assert one["outcome"] == "deployed" and one["changed"] and one["restarted"] is False
    assert one["current"] == one["release"] and app.status(one["release"]) == "good"
    # first deploy: the gate ran from the new release while nothing was current yet
    path_one = app.store.release_path(one["release"])
    assert gate_output(app, one) == f"scan ok version 1.0 from {path_one} current -"
    assert one["health"] == {"gate": {**one["health"]["gate"], "status": "healthy", "version": "1.0",
                                      "release": one["release"], "attempts": 1}}
    assert actions(app.ledger()) == ["create", "activate", "mark:good", "summary:deployed"]
    assert len(app.systemd.runs) == 1 and app.systemd.verbs() == []  # the migration ran; no systemctl start/stop

    two = ok(app.deploy("1.1", services=[], gate=batch_gate(app), deadline=30))
    path_two = app.store.release_path(two["release"])
    # the upgrade: its gate ran from 1.1 while current still pointed at 1.0 (a job started meanwhile ran 1.0)
    assert gate_output(app, two) == f"scan ok version 1.1 from {path_two} current {os.path.realpath(path_one)}"
    assert two["previous"] == one["release"] and app.store.current() == two["release"]
    assert actions(two["ledger_entries"]) == ["create", "activate", "mark:good", "summary:deployed"]

    ledger = app.ledger()
    again = ok(app.deploy("1.1", services=[], gate=batch_gate(app), deadline=30))
    assert again["outcome"] == "unchanged" and again["changed"] is False and app.ledger() == ledger
    assert gate_output(app, again).startswith("scan ok version 1.1")  # the serving release passed its gate once more
    assert app.systemd.verbs() == [] and not app.lock_file().exists()


@pytest.mark.parametrize(("mode", "failing"), [
    ("exit", r"app_gate \[unhealthy\] python exited 3: scan ok version 2\.0"),
    ("hang", r"app_gate \[unhealthy\] python did not finish within 1 s \(killed\)"),
    ("output", r"app_gate \[unhealthy\] python exited 0 but its output does not contain 'scan ok' \(expect_output\)"),
    ("version", r"app_gate \[unhealthy\] python exited 0 but its output does not contain the version '2\.0' "
                r"\(expect_version\)"),
])  # fmt: skip
def test_a_batch_only_release_failing_its_gate_is_never_switched_to(make_app, mode, failing):
    """Non-zero exit, a hang past the timeout, output without the expected text or version: the release is marked
    bad, the one before stays current, nothing else happens; the message names what failed."""
    app = batch_app(make_app, GATE_2_0=mode)
    one = ok(app.deploy("1.0", services=[], gate=batch_gate(app, timeout=1), deadline=30))["release"]
    started = time.monotonic()
    result = app.deploy("2.0", services=[], gate=batch_gate(app, timeout=1), deadline=30)
    assert time.monotonic() - started < 20
    two = result["release"]
    assert result["failed"] and result["outcome"] == "not-switched" and result["current"] == one
    assert app.store.current() == one and app.status(two) == "bad" and app.status(one) == "good"
    assert re.search(rf"deploy of 2\.0 \({two}\): its gate failed before the switch: gate: unhealthy after 1 "
                     rf"attempt\(s\) in [\d.]+ s; failing: {failing}", result["msg"]), result["msg"]
    assert f"Nothing was switched: {one} is still current. {two} is marked bad" in result["msg"]
    assert result["failed_gate"]["release"] == two and result["health"]["gate"]["release"] == two
    assert actions(result["ledger_entries"]) == ["create", "mark:bad", "summary:not-switched"]
    assert "its gate failed before the switch" in result["ledger_entries"][1]["reason"]
    assert app.systemd.verbs() == [] and not app.lock_file().exists()


def test_a_first_batch_only_deploy_failing_its_gate_leaves_nothing_current(make_app):
    app = batch_app(make_app, GATE_1_0="exit")
    result = app.deploy("1.0", services=[], gate=batch_gate(app), deadline=30)
    assert result["failed"] and result["outcome"] == "failed" and result["current"] is None
    assert "Nothing was switched: nothing was current before either" in result["msg"]
    assert app.store.current() is None and app.status(result["release"]) == "bad"


def test_batch_only_rollback_gates_the_target_before_switching_to_it(make_app):
    app = batch_app(make_app)
    gate = batch_gate(app)
    one = ok(app.deploy("1.0", services=[], gate=gate, deadline=30))["release"]
    two = ok(app.deploy("1.1", services=[], gate=gate, deadline=30))["release"]
    back = ok(app.run(action="rollback", services=[], gate=gate, deadline=30))
    assert back["outcome"] == "rolled-back" and back["current"] == one and back["rolled_back_to"] == one
    # the target's gate ran from it while 1.1 was still current
    assert gate_output(app, back) == (f"scan ok version 1.0 from {app.store.release_path(one)} current "
                                 f"{os.path.realpath(app.store.release_path(two))}")
    assert actions(back["ledger_entries"]) == ["rollback", "summary:rolled-back"]

    # forward again to 1.1, then 1.0 no longer passes its gate on this host: a rollback to it switches nothing
    ok(app.run(action="rollback", release=two, services=[], gate=gate, deadline=30))
    app.env_file.write_text(app.env_file.read_text() + "GATE_1_0=exit\n")
    ledger = app.ledger()
    refused = app.run(action="rollback", services=[], gate=gate, deadline=30)
    assert refused["failed"] and refused["outcome"] == "not-switched" and refused["current"] == two
    assert refused["msg"].startswith(f"rollback to {one} (1.0) failed its gate: gate: unhealthy")
    assert "app_gate [unhealthy] python exited 3" in refused["msg"]
    assert refused["msg"].endswith(f"Nothing was switched: {two} (1.1) is still current.")
    assert app.store.current() == two and app.ledger() == ledger and refused["changed"] is False
    assert app.systemd.verbs() == [] and not app.lock_file().exists()


def test_batch_only_verify_restart_and_soak_run_the_gate_from_current(make_app):
    app = batch_app(make_app)
    gate = batch_gate(app)
    release = ok(app.deploy("1.0", services=[], gate=gate, deadline=30))["release"]
    ledger = app.ledger()
    verified = ok(app.run(action="verify", services=[], gate=gate, deadline=30))
    assert verified["outcome"] == "healthy" and gate_output(app, verified).startswith("scan ok version 1.0")
    soaked = ok(app.run(action="soak", version="1.0", soak=30, services=[], gate=gate))
    assert soaked["outcome"] == "soaked" and "no service to watch" in soaked["msg"] and soaked["elapsed"] < 5
    restarted = ok(app.run(action="restart", services=[], gate=gate, deadline=30))  # the config handler
    assert restarted["outcome"] == "unchanged" and restarted["changed"] is False
    assert "passes its gate" in restarted["msg"]
    assert app.ledger() == ledger and app.systemd.verbs() == []

    app.env_file.write_text(app.env_file.read_text() + "GATE_1_0=output\n")  # a configuration change breaks it
    broken = app.run(action="verify", services=[], gate=gate, deadline=30)
    assert broken["failed"] and broken["outcome"] == "unhealthy"
    assert f"{release} (1.0) is not healthy: gate: unhealthy" in broken["msg"] and "(expect_output)" in broken["msg"]
    handler = app.run(action="restart", services=[], gate=gate, deadline=30)
    assert handler["failed"] and handler["msg"].startswith(f"{release} (1.0) fails its gate now: gate: unhealthy")
    assert "Nothing was restarted (no services)" in handler["msg"]
    assert app.store.current() == release and app.ledger() == ledger and app.systemd.verbs() == []


def test_batch_only_check_mode_reports_the_gate_and_changes_nothing(make_app, run_module):
    app = batch_app(make_app)
    gate = batch_gate(app)
    one = ok(app.deploy("1.0", services=[], gate=gate, deadline=30))["release"]
    two = ok(app.deploy("1.1", services=[], gate=gate, deadline=30))["release"]
    snapshot, runs = tree_snapshot(app.root), len(app.systemd.runs)
    app.systemd.calls.clear()
    predicted = ok(app.deploy("2.0", check_mode=True, services=[], gate=gate, deadline=30))
    assert predicted["changed"] and predicted["outcome"] == "deployed" and predicted["current"] == two
    msg = predicted["msg"]
    assert msg.startswith("check mode: would create release 2.0-") and "run tinysvc-migrate from it" in msg
    assert msg.index("gate it (python -c import os") < msg.index(f"switch current from {two} to it")
    assert "restart" not in msg and msg.endswith("Nothing was changed.") and "gate" not in predicted["health"]
    back = ok(app.run(action="rollback", check_mode=True, services=[], gate=gate))
    assert back["changed"] and back["msg"].startswith(f"check mode: would switch current from {two} to {one} once its "
                                                      "gate (python -c import os")
    handler = ok(app.run(action="restart", check_mode=True, services=[], gate=gate))
    assert handler["changed"] is False and handler["msg"].startswith("check mode: would run the gate (python -c")
    assert handler["msg"].endswith(f"of {two} (1.1); no service to restart")
    # through the module: gate takes the probe options of services[].probes
    params = {k: v for k, v in app.params(version="2.0", wheelhouse=app.wheelhouse("2.0"), services=[],
                                          gate=gate).items() if v is not None}
    module = run_module(app_deploy, params, check_mode=True, diff=True)
    assert module["_rc"] == 0 and module["outcome"] == "deployed" and "gate it (python -c" in module["msg"]
    assert tree_snapshot(app.root) == snapshot and len(app.systemd.runs) == runs and app.systemd.calls == []


def test_an_app_with_services_runs_its_gate_after_theirs_and_a_failure_rolls_back(make_app):
    app = make_app("tiny-api.service")
    app.env_file.write_text(app.env_file.read_text() + f"APP_ROOT={app.root}\nGATE_2_0=exit\n")
    gate = batch_gate(app)
    one = ok(app.deploy("1.0", gate=gate, deadline=30))
    assert one["restarted"] and one["health"]["tiny-api.service"]["status"] == "healthy"
    # after the services' gates, from current (the new release, switched to and started)
    path_one = app.store.release_path(one["release"])
    assert gate_output(app, one) == f"scan ok version 1.0 from {path_one} current {os.path.realpath(path_one)}"
    result = app.deploy("2.0", gate=gate, deadline=30)
    assert result["failed"] and result["outcome"] == "rolled-back" and result["current"] == one["release"]
    assert "failed its health gate: gate: unhealthy" in result["msg"] and "app_gate [unhealthy] python exited 3" in (
        result["msg"])
    assert f"Rolled back to {one['release']} (1.0), which is healthy" in result["msg"]
    assert result["health"]["gate"]["version"] == "1.0" and result["health"]["gate"]["status"] == "healthy"
    assert app.ready("tiny-api.service")["version"] == "1.0" and app.status(result["release"]) == "bad"
