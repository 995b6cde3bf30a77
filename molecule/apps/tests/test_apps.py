"""apps scenario: unmodified applications from PyPI, deployed with role app's documented variables only.

- httpbin (Flask) under gunicorn on app1 + app2 behind lb1 (converge: 0.10.1): rolling upgrade under load with
  no failed request; a release that crashes at start (its dependencies unpinned: the newest Flask) is rolled
  back on app1 and never reaches app2; rollback.yml brings both back.
- datasette (ASGI, served by uvicorn) on app1: gated on its own JSON field; a wrong field fails the deploy,
  naming the service and the setting, and the previous release keeps serving.
- an rq worker on app1 (no port): gated on systemd state and `rq info`; it runs a real job from Redis.
- sqlite-utils, batch-only on app1: gated by `--version` before the switch; rollback.yml.

Each deploy's time and each app's wheelhouse build time (cold and reused) are printed. The tests run in file
order and build on each other.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "molecule" / ".testinfra"))
from testinfra_helpers import INVENTORY, PROJECT, Load, playbook

WHEELS = PROJECT / ".cache" / "pypi-apps"
APP_VARS = Path(__file__).resolve().parents[1] / "apps"
DIST = {"httpbin": "httpbin", "datasette": "datasette", "rq": "rq", "sqlite-utils": "sqlite_utils"}
ROOT = {"httpbin": "/opt/httpbin", "datasette": "/opt/datasette", "rq": "/opt/rqworker",
        "sqlite-utils": "/opt/sqlutils"}
# The tradeops_summary callback's records of every playbook run here (one JSON line per host): each deploy's
# phases, the wheelhouse's among them (built cold, or reused for the same inputs).
SUMMARY = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "apps-summary.jsonl"
os.environ["TRADEOPS_SUMMARY_LOG"] = str(SUMMARY)
TIMES: list[str] = []

testinfra_hosts = ["ansible://app1"]


@pytest.fixture(scope="module")
def hosts():
    return {n: testinfra.get_host(f"ansible://{n}?ansible_inventory={INVENTORY}") for n in ("lb1", "app1", "app2")}


def wheel(app: str, version: str) -> Path:
    return next(WHEELS.glob(f"{DIST[app]}-{version}-*.whl"))


def deploy(app: str, version: str, *extra: str, playbook_name: str = "deploy.yml") -> subprocess.CompletedProcess:
    """deploy.yml (or another playbook) for one app: httpbin on the app group, the others on app1 with their
    variables file. The wall time is kept for the summary."""
    args = ["-e", f"app_version={version}", "-e", f"app_source={wheel(app, version)}"] if version else []
    if app != "httpbin":
        args = ["--limit", "app1", "-e", f"@{APP_VARS / app}.yml", *args]
    seen = len(SUMMARY.read_text().splitlines()) if SUMMARY.exists() else 0
    started = time.monotonic()
    proc = playbook(playbook_name, *args, *extra)
    took = time.monotonic() - started
    records = [json.loads(x) for x in SUMMARY.read_text().splitlines()[seen:]] if SUMMARY.exists() else []
    wheelhouse = max((r.get("phases", {}).get("wheelhouse", 0.0) for r in records), default=0.0)
    TIMES.append(f"{app:<13} {playbook_name:<12} {version or '-':<8} rc {proc.returncode}  {took:6.1f} s"
                 f"  wheelhouse {wheelhouse:5.1f} s  {', '.join(sorted({str(r.get('outcome')) for r in records}))}")
    return proc


def get(host, url: str) -> tuple[int, str]:
    """GET from the host itself (https: the lab's self-signed certificate, not verified)."""
    code = ("import ssl,urllib.request,urllib.error\n"
            "c=ssl._create_unverified_context()\n"
            f"try: r=urllib.request.urlopen({url!r},timeout=5,context=c)\n"
            "except urllib.error.HTTPError as e: r=e\n"
            "print(r.status); print(r.read().decode())")
    out = host.check_output(f"python3 -c {shlex.quote(code)}")
    status, _, body = out.partition("\n")
    return int(status), body


def current(host, app: str) -> str:
    """The version of the release `current` points at."""
    return json.loads(host.file(f"{ROOT[app]}/current/release.json").content_string)["version"]


def ledger(host, app: str) -> list[dict]:
    return [json.loads(line) for line in host.file(f"{ROOT[app]}/ledger.jsonl").content_string.splitlines()]


# -- httpbin: Flask under gunicorn, behind lb1 ------------------------------------------------------------------

def test_httpbin_serves_through_the_load_balancer_from_gunicorn_with_compiled_dependencies(hosts):
    for name in ("app1", "app2"):
        host = hosts[name]
        assert current(host, "httpbin") == "0.10.1"
        status, body = get(host, "http://127.0.0.1:8000/spec.json")
        assert status == 200 and json.loads(body)["info"]["version"] == "0.10.1"
        exec_start = host.check_output("systemctl show -p ExecStart --value httpbin-web.service")
        assert "/opt/httpbin/current/venv/bin/gunicorn" in exec_start
        # The dependency layer holds the compiled extensions built for the host's Python (C: greenlet, cffi,
        # markupsafe, pyyaml; Rust: rpds-py), from wheels fetched on the controller.
        sos = host.check_output("find /opt/httpbin/deps -name '*.so' -printf '%f\\n'")
        for ext in ("greenlet", "_cffi_backend", "rpds", "_brotlicffi"):
            assert ext in sos, sos
        assert "cpython-311-x86_64-linux-gnu" in sos
    status, body = get(hosts["lb1"], "https://127.0.0.1/get?via=lb1")
    assert status == 200 and json.loads(body)["args"] == {"via": "lb1"}  # httpbin's own answer, through nginx


def test_verify_playbook_probes_httpbin_by_its_own_contract_through_the_load_balancer(hosts):
    """verify.yml asks lb1 for what httpbin's contract says (GET /spec.json with info.version), not the reference
    app's /api/health/readiness (404 here); a readiness that fails through nginx fails the play, naming it."""
    proc = playbook("verify.yml")
    assert proc.returncode == 0, proc.text[-3000:]
    broken = {"app_services": [{"name": "web", "args": [], "port": 8000, "readiness": {"path": "/status/503"}}]}
    proc = playbook("verify.yml", "--limit", "lb1", "-e", json.dumps(broken))
    assert proc.returncode != 0
    assert "readiness through the load balancer" in proc.text and "got 503" in proc.text, proc.text[-3000:]


def test_httpbin_rolling_upgrade_under_load_loses_no_request(hosts):
    with Load("lb1", "https://127.0.0.1/get", rate=20, log="apps-load") as load:
        proc = deploy("httpbin", "0.10.2")
    assert proc.returncode == 0, proc.text
    assert load.result["failed"] == 0 and load.result["ok"] >= 40, load.result
    for name in ("app1", "app2"):
        assert current(hosts[name], "httpbin") == "0.10.2"


def test_httpbin_release_that_crashes_at_start_is_rolled_back_on_the_first_host_only(hosts):
    """0.10.3 with its dependencies as resolved today (no Flask pin): flasgger fails to import under Flask 3,
    gunicorn's worker exits, the unit never gets ready. app1 goes back to 0.10.2; app2 never sees 0.10.3."""
    with Load("lb1", "https://127.0.0.1/get", rate=20, log="apps-load") as load:
        proc = deploy("httpbin", "0.10.3", "-e", '{"app_requirements": ["gunicorn>=22,<24"]}')
    assert proc.returncode != 0
    assert "rolled back" in proc.text or "rolled-back" in proc.text, proc.text[-3000:]
    assert "httpbin-web.service" in proc.text
    assert load.result["failed"] == 0, load.result
    assert current(hosts["app1"], "httpbin") == "0.10.2" and current(hosts["app2"], "httpbin") == "0.10.2"
    bad = [e for e in ledger(hosts["app1"], "httpbin") if e.get("version") == "0.10.3" and e.get("outcome") == "bad"]
    assert bad, "0.10.3 is not marked bad on app1"
    assert not [e for e in ledger(hosts["app2"], "httpbin") if e.get("version") == "0.10.3"]
    journal = hosts["app1"].check_output("journalctl -u httpbin-web.service --no-pager -o cat -n 400")
    assert "ImportError" in journal  # the crash was real, and its cause is in the journal


def test_httpbin_rollback_playbook_brings_every_host_back(hosts):
    with Load("lb1", "https://127.0.0.1/get", rate=20, log="apps-load") as load:
        proc = deploy("httpbin", "", playbook_name="rollback.yml")
    assert proc.returncode == 0, proc.text
    assert load.result["failed"] == 0, load.result
    for name in ("app1", "app2"):
        assert current(hosts[name], "httpbin") == "0.10.1"
        _, body = get(hosts[name], "http://127.0.0.1:8000/spec.json")
        assert json.loads(body)["info"]["version"] == "0.10.1"


# -- datasette: ASGI under uvicorn, its own JSON shape ----------------------------------------------------------

def test_datasette_is_gated_on_its_own_json_version_field(hosts):
    proc = deploy("datasette", "0.65.4")
    assert proc.returncode == 0, proc.text
    status, body = get(hosts["app1"], "http://127.0.0.1:8001/-/versions.json")
    assert status == 200 and json.loads(body)["datasette"]["version"] == "0.65.4"
    assert "uvicorn" in json.loads(body)  # served by uvicorn, one of its dependencies


def test_datasette_wrong_health_setting_fails_naming_it_and_the_previous_release_serves(hosts):
    wrong = json.dumps({"app_services": [{"name": "web", "args": ["serve", "--host", "127.0.0.1", "--port", "8001"],
                                          "port": 8001, "readiness": {"path": "/-/versions.json",
                                                                      "json_field": "datasette.build",
                                                                      "expect_version": True}}]})
    proc = deploy("datasette", "0.65.5", "-e", wrong)
    assert proc.returncode != 0
    assert "datasette-web.service" in proc.text and "datasette.build" in proc.text, proc.text[-3000:]
    assert current(hosts["app1"], "datasette") == "0.65.4"
    _, body = get(hosts["app1"], "http://127.0.0.1:8001/-/versions.json")
    assert json.loads(body)["datasette"]["version"] == "0.65.4"


def test_datasette_upgrade(hosts):
    proc = deploy("datasette", "0.65.5")
    assert proc.returncode == 0, proc.text
    assert current(hosts["app1"], "datasette") == "0.65.5"


# -- rq: a worker with no port ----------------------------------------------------------------------------------

def rq(host, *argv: str) -> str:
    """The release's own rq CLI, as the app user, with the worker's environment file (its Redis URL)."""
    cmd = " ".join(shlex.quote(a) for a in argv)
    return host.check_output(f"runuser -u rqworker -- sh -c 'set -a; . /opt/rqworker/shared/config/.env; "
                             f"exec /opt/rqworker/current/venv/bin/rq {cmd}'")


def test_rq_worker_is_gated_and_runs_a_real_job(hosts):
    proc = deploy("rq", "2.12.0")
    assert proc.returncode == 0, proc.text
    host = hosts["app1"]
    assert host.service("rqworker-worker.service").is_running
    assert "RQ_REDIS_URL" not in host.check_output("systemctl show -p ExecStart --value rqworker-worker.service")
    rq(host, "enqueue", "-q", "jobs", "--job-id", "probe-1", "math.factorial", "%5")
    for _ in range(30):
        if "1 finished" in rq(host, "info", "--only-queues", "jobs"):
            break
        time.sleep(1)
    assert "1 finished" in rq(host, "info", "--only-queues", "jobs")


def test_rq_worker_failing_its_probe_is_rolled_back(hosts):
    wrong = json.dumps({"app_services": [{"name": "worker", "args": ["worker", "jobs"], "readiness": {
        "kind": "command", "argv": ["rq", "info", "--only-queues", "--url", "redis://127.0.0.1:1/0", "jobs"],
        "timeout": 5}}]})
    proc = deploy("rq", "3.0.0", "-e", wrong)
    assert proc.returncode != 0
    assert "rqworker-worker.service" in proc.text and "exited 1" in proc.text, proc.text[-3000:]
    assert current(hosts["app1"], "rq") == "2.12.0"
    assert hosts["app1"].service("rqworker-worker.service").is_running


def test_rq_worker_upgrade(hosts):
    proc = deploy("rq", "3.0.0")
    assert proc.returncode == 0, proc.text
    assert current(hosts["app1"], "rq") == "3.0.0"
    assert "3.0.0" in rq(hosts["app1"], "--version")


# -- sqlite-utils: batch-only ------------------------------------------------------------------------------------

def test_batch_only_app_is_gated_before_the_switch_refused_and_rolled_back(hosts):
    host = hosts["app1"]
    proc = deploy("sqlite-utils", "4.1.1")
    assert proc.returncode == 0, proc.text
    assert current(host, "sqlite-utils") == "4.1.1"
    refused = deploy("sqlite-utils", "4.2.1", "-e",
                     json.dumps({"app_gate": {"argv": ["sqlite-utils", "--version"], "expect_output": "version 9",
                                              "timeout": 20}}))
    assert refused.returncode != 0 and "expect_output" in refused.text, refused.text[-3000:]
    assert current(host, "sqlite-utils") == "4.1.1"  # never switched
    assert deploy("sqlite-utils", "4.2.1").returncode == 0
    assert current(host, "sqlite-utils") == "4.2.1"
    assert "4.2.1" in host.check_output("/opt/sqlutils/current/venv/bin/sqlite-utils --version")
    proc = deploy("sqlite-utils", "", playbook_name="rollback.yml")
    assert proc.returncode == 0, proc.text
    assert current(host, "sqlite-utils") == "4.1.1"


# -- the figures -------------------------------------------------------------------------------------------------

def test_print_each_deploy_and_its_wheelhouse_time(capsys):
    """Each playbook run of this file: wall time, the wheelhouse phase (a new version's build, cold; the same inputs
    again, reused: datasette/rq/sqlite-utils' second deploy of one version, httpbin's idempotence step in molecule's
    own output) and the outcomes."""
    with capsys.disabled():  # shown in molecule's output, passed or not
        print("\n=== apps: playbook runs (wall s, wheelhouse phase s, outcomes)\n" + "\n".join(TIMES))
    assert len(TIMES) >= 12
