"""h. PostgreSQL stopped during the health gate (not before the deploy: d does that).

The stop is triggered by the module's own state: once app1's `current` link has switched to
the new release (the migration is over, the old units are being stopped and the new ones
started behind the gate), PostgreSQL on db1 is stopped; it is started again once app1's
ledger marks the new release bad (the gate decided), so the rollback's gate can pass.

Pass: the play fails, app1's gate failed on readiness (the database check), the release is
marked bad with that reason, app1 is rolled back to the release that served and serves it
again with PostgreSQL back, the rollout stopped at app1 (app2 untouched), no backend left
drained at lb1. Nothing lost.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from chaoslab import (
    APP_ROOT,
    PREFIX,
    ROOT,
    State,
    ansible_env,
    ledger,
    ledger_has,
    out,
    playbook_cmd,
    record,
    sh,
    wait_on,
)

VERSION = "3.5.1"
PG_PID = "/var/run/postgresql/15-main.pid"  # Debian 12's cluster 15/main (roles/postgresql)
PG_UNIT = "postgresql@15-main.service"


def wait_switch(host: str, before: str, timeout: float) -> float:
    """Seconds until host's `current` no longer points at `before`. Read through the container's root
    from this machine (/proc/PID/root, every 5 ms: no docker exec in the loop) when allowed, else
    polled on the host by wait_on."""
    pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", PREFIX + host], capture_output=True,
                         text=True, check=True).stdout.strip()
    link = Path(f"/proc/{pid}/root{APP_ROOT}/current")
    try:
        first = os.readlink(link)
    except OSError:
        return wait_on(host, f'[ "$(readlink -f {APP_ROOT}/current)" != "{before}" ]', timeout=timeout, poll=0.02)
    assert first.rsplit("/", 1)[-1] == before.rsplit("/", 1)[-1], f"{host}: current -> {first}, want {before}"
    t0 = time.monotonic()
    while os.readlink(link) == first:
        assert time.monotonic() - t0 < timeout, f"{host}: current did not switch within {timeout:.0f} s"
        time.sleep(0.005)
    return time.monotonic() - t0


def test_postgresql_stopped_during_gate_rolled_back(state: State, wheels: dict[str, str]) -> None:
    serving = state.served["app1"]
    seen = len(state.ledgers["app1"])
    before = state.releases["app1"]
    cmd = playbook_cmd("deploy.yml", f"app_version={VERSION}", f"app_source={wheels[VERSION]}",
                       "app_health_deadline=20")
    # Ready before the deploy starts, so the stop follows the switch by a pipe write, not by a docker
    # exec's start-up: on db1 a shell waits for one line, then sends the postmaster SIGINT (PostgreSQL's
    # fast shutdown, what `systemctl stop` asks pg_ctl for: new connections refused at once) and
    # `systemctl stop postgresql` (systemd's view follows). The first run here, a docker exec per step,
    # stopped it after the new release's gate had passed (2 s after the switch at load 14).
    stopper = subprocess.Popen(["docker", "exec", "-i", PREFIX + "db1", "sh", "-c",
                                f"read go && kill -INT $(head -1 {PG_PID}); systemctl stop postgresql; "
                                f"echo stopped $(systemctl is-active {PG_UNIT})"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t_start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ansible_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    stopped = False
    try:
        # the switch: current no longer points at the release that served (the migration is over,
        # the old units stop and the new ones start behind the gate)
        switched_s = wait_switch("app1", before, timeout=600)
        stopped = True
        said, _ = stopper.communicate("go\n", timeout=120)
        assert "stopped" in said and "stopped active" not in said, f"stopping PostgreSQL on db1: {said}"
        pg_stop_s = time.monotonic() - t_start - switched_s
        t_stopped = time.monotonic()
        # the gate's decision: the new release marked (bad, or good if the stop came too late)
        decided = " || ".join(ledger_has(after=seen, action="mark", outcome=o, version=VERSION)
                              for o in ("bad", "good"))
        wait_on("app1", f"{{ {decided}; }}", timeout=300, poll=0.2)
        gate_failed_after_stop_s = time.monotonic() - t_stopped
    finally:
        if stopper.poll() is None:
            stopper.kill()
        if stopped:
            sh("db1", f"systemctl start {PG_UNIT} postgresql")
        text, _ = proc.communicate(timeout=900)
    playbook_s = time.monotonic() - t_start
    print(text[-5000:])
    flat = " ".join(text.split())
    assert proc.returncode != 0, "a deploy whose gate fails must fail the play"
    assert f"Rolled back to {serving}-" in flat, flat[-3000:]
    new = ledger("app1")[seen:]
    bad = [e for e in new if e["action"] == "mark" and e["version"] == VERSION]
    assert bad and bad[-1]["outcome"] == "bad", \
        f"PostgreSQL stopped {pg_stop_s:.2f} s after the switch, after the gate had passed (too late): {new}"
    reason = bad[-1]["reason"] or ""
    assert "health gate failed" in reason and "readiness" in reason, reason
    # the rollout stopped at app1
    assert not [r for r in out("app2", f"ls {APP_ROOT}/releases").split() if r.startswith(VERSION + "-")]
    assert len(ledger("app2")) == len(state.ledgers["app2"]), "app2's ledger moved: the rollout went on"
    summary = [e for e in new if e.get("duration_s") is not None]
    record("h_postgresql_during_gate", playbook_s=round(playbook_s, 1),
           switched_after_start_s=round(switched_s, 1),
           pg_stop_done_after_switch_s=round(pg_stop_s, 2),
           gate_failed_after_pg_stop_s=round(gate_failed_after_stop_s, 1), reason=reason[:300],
           ledger=[{k: e.get(k) for k in ("action", "outcome", "duration_s")} for e in new],
           rollback_total_s=summary[-1]["duration_s"] if summary else None)
    state.check()  # previous release current and serving on both, nothing drained, rows, backups
