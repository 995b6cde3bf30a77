"""rollback scenario: bad releases roll back and stop the rollout; manual rollback; the lock.

The tests run in file order and build on each other, like an operator's day:
three bad releases (unready, crashing, hanging), a good one, rollbacks, a lock.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import testinfra

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
ROOT = "/opt/refapp"
GATE = "app_health_deadline=15"

testinfra_hosts = ["ansible://app1", "ansible://app2"]


def hosts():
    return {n: testinfra.get_host(f"ansible://{n}?ansible_inventory={INVENTORY}") for n in ("app1", "app2")}


def playbook(name: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(INVENTORY),
           str(PROJECT / "playbooks" / name)]
    for e in extra:
        cmd += ["-e", e]
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, check=False, env=env)
    print(proc.stdout[-6000:], proc.stderr[-2000:])
    # Messages are folded over lines by the result callback: compare on one line.
    proc.text = " ".join((proc.stdout + proc.stderr).split())
    return proc


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheels")
    built = {}
    for version, fault in [("2.0.0", "unready"), ("2.1.0", "crash"), ("2.2.0", "hang"), ("2.3.0", "leak"),
                           ("2.4.0", "leak"), ("3.0.0", None), ("3.1.0", None), ("3.2.0", None)]:
        args = [sys.executable, str(PROJECT / "scripts" / "build_refapp.py"), "--version", version, "--out", str(out)]
        if fault:
            args += ["--fault", fault]
        built[version] = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    return built


def served_version(host) -> str:
    code = ("import json,urllib.request;"
            "print(json.load(urllib.request.urlopen('http://127.0.0.1:8000/api/health/readiness',timeout=5))['version'])")
    return host.check_output(f"python3 -c {shlex.quote(code)}")


def ledger(host):
    return [json.loads(x) for x in host.file(f"{ROOT}/ledger.jsonl").content_string.splitlines()]


def releases(host):
    return host.check_output(f"ls {ROOT}/releases").split()


@pytest.mark.parametrize("version, why", [
    ("2.0.0", "readiness"),          # passes liveness, fails readiness
    ("2.1.0", "refapp-web.service"),  # crashes on start: the unit fails
    ("2.2.0", "liveness"),            # hangs on start: never listens
])
def test_bad_release_is_rolled_back_and_stops_the_rollout(wheels, version, why):
    proc = playbook("deploy.yml", f"app_version={version}", f"app_source={wheels[version]}", GATE)
    assert proc.returncode != 0, "a deploy whose health gate fails must fail the play"
    assert "Rolled back to 1.0.0-" in proc.text
    h = hosts()
    assert served_version(h["app1"]) == "1.0.0"
    bad = [e for e in ledger(h["app1"]) if e["action"] == "mark" and e["version"] == version]
    assert bad and bad[-1]["outcome"] == "bad" and why in bad[-1]["reason"]
    # serial: 1 with max_fail_percentage: 0 -> app2 never received the release
    assert served_version(h["app2"]) == "1.0.0"
    assert not [r for r in releases(h["app2"]) if r.startswith(version + "-")]


# Bounded traffic on app1 itself (no load balancer in this scenario): 20 requests/s to a route
# the leak fault makes keep 4 MiB each, for at most 120 s; the previous release does not leak.
TRAFFIC = """import time, urllib.request
end = time.time() + 120
while time.time() < end:
    try:
        urllib.request.urlopen('http://127.0.0.1:8000/api/version', timeout=2).read()
    except Exception:
        pass
    time.sleep(0.05)
"""


def test_release_over_memory_max_under_traffic_is_rolled_back_by_the_soak(wheels):
    """--fault leak passes the gate (a few requests), then under traffic reaches MemoryMax: the kernel
    kills it, systemd restarts it (NRestarts 1) and it answers again. The soak after the gate sees the
    restart: marked bad, rolled back, the rollout stopped at app1."""
    h = hosts()
    h["app1"].run(f"python3 -c {shlex.quote(TRAFFIC)} >/dev/null 2>&1 & echo started")
    try:
        proc = playbook("deploy.yml", "app_version=2.3.0", f"app_source={wheels['2.3.0']}", GATE,
                        "app_soak_seconds=90")
    finally:
        h["app1"].run("pkill -f 'api/versio[n]' || true")
    assert proc.returncode != 0, "a release killed under traffic must fail the deploy"
    assert "soak under traffic" in proc.text and "Rolled back to 1.0.0-" in proc.text
    assert served_version(h["app1"]) == "1.0.0"
    bad = [e for e in ledger(h["app1"]) if e["action"] == "mark" and e["version"] == "2.3.0"]
    assert [e["outcome"] for e in bad] == ["good", "bad"], bad  # passed the gate, failed the soak
    # seen as the unit restarting: "activating/auto-restart, result signal" or "restarted 1 time(s)"
    assert "soak under traffic" in bad[-1]["reason"] and "unit:refapp-web.service" in bad[-1]["reason"]
    memory = h["app1"].check_output("journalctl -u refapp-web.service --no-pager -o cat -n 200")
    assert "status=9/KILL" in memory or "oom" in memory.lower(), "the release was not killed at MemoryMax"
    assert served_version(h["app2"]) == "1.0.0"
    assert not [r for r in releases(h["app2"]) if r.startswith("2.3.0-")]


# One request a second to the same route: 4 MiB/s, so the release would reach MemoryMax (512M) about two
# minutes after it starts, long after a 20 s soak ends.
SLOW_TRAFFIC = TRAFFIC.replace("time.time() + 120", "time.time() + 180").replace("time.sleep(0.05)", "time.sleep(1)")


def test_a_leak_slower_than_the_soak_is_caught_by_its_memory_trend_before_the_oom_kill(wheels):
    """The default soak (20 s, app_soak_memory_horizon 300 s) under 1 request/s: no OOM kill within the soak,
    but MemoryCurrent's trend over its second half reaches MemoryMax within the horizon. Marked bad, rolled
    back before the kernel killed anything, the rollout stopped at app1."""
    h = hosts()
    since = h["app1"].check_output("date +%s")
    h["app1"].run(f"python3 -c {shlex.quote(SLOW_TRAFFIC)} >/dev/null 2>&1 & echo started")
    try:
        proc = playbook("deploy.yml", "app_version=2.4.0", f"app_source={wheels['2.4.0']}", GATE,
                        "app_soak_seconds=20")  # the role's default (the lab's molecule runs soak 5 s)
    finally:
        h["app1"].run("pkill -f 'api/versio[n]' || true")
    assert proc.returncode != 0, "a release leaking toward MemoryMax must fail the deploy"
    assert "memory grows" in proc.text and "reaches MemoryMax 512 MiB in about" in proc.text, proc.text[-3000:]
    assert "Rolled back to 1.0.0-" in proc.text and served_version(h["app1"]) == "1.0.0"
    bad = [e for e in ledger(h["app1"]) if e["action"] == "mark" and e["version"] == "2.4.0"]
    assert [e["outcome"] for e in bad] == ["good", "bad"], bad
    assert "refapp-web.service: memory grows" in bad[-1]["reason"]
    journal = h["app1"].check_output(f"journalctl -u refapp-web.service --no-pager -o cat --since @{since}")
    assert "status=9/KILL" not in journal and "oom" not in journal.lower(), "caught before the OOM kill"
    assert served_version(h["app2"]) == "1.0.0"
    assert not [r for r in releases(h["app2"]) if r.startswith("2.4.0-")]


def test_good_release_reaches_every_host(wheels):
    proc = playbook("deploy.yml", "app_version=3.0.0", f"app_source={wheels['3.0.0']}")
    assert proc.returncode == 0
    assert {n: served_version(h) for n, h in hosts().items()} == {"app1": "3.0.0", "app2": "3.0.0"}


def test_rollback_goes_to_previous_good_skipping_bad_ones():
    proc = playbook("rollback.yml")
    assert proc.returncode == 0
    for h in hosts().values():
        assert served_version(h) == "1.0.0"  # 2.x are bad on app1; app2 never had them
        rb = [e for e in ledger(h) if e["action"] == "rollback"]
        assert rb[-1]["version"] == "1.0.0" and rb[-1]["reason"] == "manual rollback"


def test_rollback_to_a_named_release():
    proc = playbook("rollback.yml", "rollback_to=3.0.0")
    assert proc.returncode == 0
    for h in hosts().values():
        assert served_version(h) == "3.0.0"
        rb = [e for e in ledger(h) if e["action"] == "rollback"]
        assert rb[-1]["version"] == "3.0.0"


def test_rollback_to_an_unknown_release_changes_nothing():
    proc = playbook("rollback.yml", "rollback_to=9.9.9")
    assert proc.returncode != 0
    assert "9.9.9" in proc.text
    assert served_version(hosts()["app1"]) == "3.0.0"


def test_second_deploy_is_refused_by_the_lock_with_holder_details():
    h = hosts()["app1"]
    held = h.ansible("app_release", f"path={ROOT} action=lock lock_owner=alice@desk lock_host=desk "
                     "lock_pid=4242 lock_reason='deploy 4.0.0'", check=False)
    assert held["changed"], held
    proc = playbook("deploy.yml", "app_version=3.0.0")
    assert proc.returncode != 0
    assert "alice@desk" in proc.text and "4242" in proc.text and "deploy 4.0.0" in proc.text
    assert served_version(h) == "3.0.0"
    proc = playbook("deploy.yml", "app_version=3.0.0", "force_unlock=true")
    assert proc.returncode == 0, "force_unlock breaks the lock and the deploy goes on"
    assert not h.file(f"{ROOT}/deploy.lock").exists


@pytest.mark.parametrize("version, after_lock_s", [("3.1.0", 0.0), ("3.2.0", 2.5)])
def test_killed_deploy_leaves_a_complete_release_and_a_recoverable_lock(wheels, version, after_lock_s):
    """SIGKILL of ansible-playbook (the whole process group) while app1 holds the lock:
    current is always a complete release, the next run reports the lock stale, and
    force_unlock converges."""
    h = hosts()["app1"]
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(INVENTORY),
           str(PROJECT / "playbooks" / "deploy.yml"), "-e", f"app_version={version}",
           "-e", f"app_source={wheels[version]}"]
    proc = subprocess.Popen(cmd, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not h.file(f"{ROOT}/deploy.lock").exists:
        assert proc.poll() is None and time.monotonic() < deadline, "the deploy never took the lock"
        time.sleep(0.2)
    time.sleep(after_lock_s)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # A controller that dies loses every process: Mitogen's connection multiplexer (make molecule) runs
    # in a session of its own, out of reach of killpg, with the same command line.
    for other in psutil.process_iter(["cmdline"]):
        if (other.info["cmdline"] or [])[-len(cmd):] == cmd:
            other.kill()
    # The module the killed run started on app1 goes on (docker exec outlives its client) and may
    # still finish and release the lock: look at the lock once it has stopped. With pipelining a
    # module runs as a bare "/usr/bin/python3" reading its payload from stdin (the app never does);
    # under Mitogen, in "/usr/bin/python3(mitogen:...)".
    deadline = time.monotonic() + 120
    while h.run("pgrep -f '^/usr/bin/python3(\\(mitogen:.*)?$'").rc == 0:
        assert time.monotonic() < deadline, "the killed run's module never ended on app1"
        time.sleep(0.5)
    release = h.file(f"{ROOT}/current").linked_to
    assert h.run(f"{release}/venv/bin/refapp --version").rc == 0, f"current {release} is not a complete release"
    if h.file(f"{ROOT}/deploy.lock").exists:
        again = playbook("deploy.yml", f"app_version={version}", f"app_source={wheels[version]}")
        assert again.returncode != 0
        assert "stale" in again.text and "force_unlock" in again.text
    done = playbook("deploy.yml", f"app_version={version}", f"app_source={wheels[version]}", "force_unlock=true")
    assert done.returncode == 0
    assert {n: served_version(x) for n, x in hosts().items()} == {"app1": version, "app2": version}

