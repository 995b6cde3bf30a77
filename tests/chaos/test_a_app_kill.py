"""a. kill -9 of the app process on app1 under bounded load through lb1.

Pass: systemd restarts the unit by itself (NRestarts + 1, a new main PID) after RestartSec,
the instance is ready again, and through the load balancer nearly every request succeeds
(app2 serves; nginx passes a failed request to the next upstream). Nothing lost.
"""
from __future__ import annotations

import time

from chaoslab import Load, State, get_json, out, record, sh

UNIT = "refapp-web.service"


def unit_props(host: str, *names: str) -> dict[str, str]:
    text = out(host, f"systemctl show {UNIT} " + " ".join(f"-p {n}" for n in names))
    return dict(line.split("=", 1) for line in text.splitlines())


def test_kill9_app_restarted_by_systemd_lb_keeps_serving(state: State) -> None:
    before = unit_props("app1", "MainPID", "NRestarts", "RestartUSec")
    restart_sec = int(before["RestartUSec"].rstrip("s") or 0) if before["RestartUSec"].endswith("s") \
        and before["RestartUSec"][:-1].isdigit() else None
    pid = int(before["MainPID"])
    assert pid > 0, f"{UNIT} on app1 has no main process: {before}"
    with Load(rate=20, max_seconds=90) as load:
        time.sleep(3)
        killed_at = float(out("app1", f"kill -9 {pid} && date +%s.%N"))
        new_pid, active_at = 0, 0.0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            now = unit_props("app1", "MainPID", "ActiveState", "SubState")
            if int(now["MainPID"]) not in (0, pid) and now["ActiveState"] == "active" and now["SubState"] == "running":
                new_pid, active_at = int(now["MainPID"]), float(out("app1", "date +%s.%N"))
                break
            time.sleep(0.1)
        assert new_pid, f"systemd did not restart {UNIT} within 90 s of kill -9"
        ready_at = 0.0
        while time.monotonic() < deadline:
            ready = sh("app1", "python3 -c \"import urllib.request as u;"
                       "u.urlopen('http://127.0.0.1:8000/api/health/readiness',timeout=2)\"", check=False)
            if ready.returncode == 0:
                ready_at = float(out("app1", "date +%s.%N"))
                break
            time.sleep(0.1)
        assert ready_at, f"{UNIT} restarted (pid {new_pid}) but never became ready"
        time.sleep(5)  # traffic after the instance is back
    after = unit_props("app1", "NRestarts")
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
    # The restart came from systemd's policy: the unit went down and was started again by it.
    journal = out("app1", f"journalctl -u {UNIT} --since @{int(killed_at) - 1} --no-pager -o cat")
    assert "Scheduled restart job" in journal, journal[-2000:]
    restart_s = round(active_at - killed_at, 2)
    ready_s = round(ready_at - killed_at, 2)
    if restart_sec is not None:
        assert restart_s >= restart_sec, f"restarted after {restart_s} s, before RestartSec={restart_sec}"
    ratio = load.ratio
    record("a_kill9_app", restart_sec_setting=restart_sec, restarted_after_s=restart_s, ready_after_s=ready_s,
           lb_requests=load.result["sent"], lb_ok=load.result["ok"], lb_success_ratio=round(ratio, 4),
           lb_failures=load.result.get("failures"), p95_ms=load.result.get("p95_ms"))
    assert ratio >= 0.99, f"through lb1 only {ratio:.2%} succeeded: {load.result}"
    assert get_json("app1", "http://127.0.0.1:8000/api/health/readiness")["status"] == "ready"
    state.check()
