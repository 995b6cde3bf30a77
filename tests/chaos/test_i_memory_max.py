"""i. A release that exceeds the unit's MemoryMax under load (scripts/build_refapp.py --fault leak:
every request outside health/metrics keeps 4 MiB), deployed with deploy.yml while bounded load
runs through lb1 (tests/lab/loadgen.py on db1, fixed rate, time limit).

Pass: the kernel OOM-kills the release for real (the journal's oom_kill of cgroup v2's
memory.events, or the kernel log's oom-kill line naming the unit's cgroup on cgroup v1 as
here), the deploy's soak under traffic notices (app_deploy action=soak, after the gate of a
drained host passed), rolls app1 back to the release that served, the ledger says why, the
rollout stops at app1.

The soak is a window (app_soak_seconds): the first run of this experiment used the default
20 s, and at 10 req/s through lb1 (5 per host, 20 MiB/s kept) the release reached
MemoryMax=512M after ~25 s, after the soak passed: marked good on every host, play rc 0, the
OOM kills came later. The soak has since got a memory trend (app_soak_memory_horizon: a unit
whose MemoryCurrent would reach MemoryMax within 300 s at the rate of the soak's second half
fails it, molecule rollback proves it on a 4 MiB/s leak), which judges at the end of the window;
this experiment is about the kernel's kill itself, so its window is 90 s, longer than the ~25 s
the release takes to reach MemoryMax here. If the soak misses it anyway, the lab is put right
(rollback.yml to the release that served) and the test fails (GateMissedOOM).
"""
from __future__ import annotations

import subprocess
import time

from chaoslab import APPS, PREFIX, Load, State, current_release, ledger, out, playbook, record, sh

VERSION = "3.6.0"
UNIT = "refapp-web.service"
SOAK_S = 90
GAP = (f"the deploy passed a release that fails only under load: its gate ran on a drained host and its soak "
       f"({SOAK_S} s under traffic, app_deploy action=soak) did not see the OOM kill")


class GateMissedOOM(AssertionError):
    """The release was OOM-killed under load but the deploy marked it good (the gap above)."""


def container_id(host: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.Id}}", PREFIX + host], capture_output=True, text=True,
                          check=True).stdout.strip()


def oom_kills(host: str) -> int:
    """The kernel's OOM kills in this host's refapp-web cgroup. cgroup v2: oom_kill of system.slice's
    memory.events (hierarchical, survives the unit's restarts). cgroup v1 (this machine: its oom_kill
    counter is per cgroup and the unit's is removed with it): the kernel log's
    "oom-kill:...oom_memcg=/docker/<id>/system.slice/refapp-web.service" lines (dmesg on the
    controller, which runs the containers); -1 if neither can be read."""
    text = out(host, "cat /sys/fs/cgroup/system.slice/memory.events 2>/dev/null || true")
    if text:
        return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("oom_kill ")), 0)
    kernel = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
    if kernel.returncode != 0:
        return -1
    memcg = f"oom_memcg=/docker/{container_id(host)}/system.slice/{UNIT}"
    return sum(1 for line in kernel.stdout.splitlines() if "oom-kill:" in line and memcg in line)


def oom_journal(host: str, since: int) -> list[str]:
    """The unit's journal lines of a kill: systemd names the OOM killer on cgroup v2, a SIGKILL on v1."""
    text = sh(host, f"journalctl -u {UNIT} --since @{since} --no-pager -o cat", check=False).stdout
    return [line for line in text.splitlines() if "oom" in line.lower() or "status=9/KILL" in line]


def test_release_over_memory_max_under_load_rolled_back(state: State, wheels: dict[str, str]) -> None:
    serving = state.served["app1"]
    seen = {h: len(state.ledgers[h]) for h in APPS}
    memory_max = out("app1", f"systemctl show {UNIT} -p MemoryMax --value")
    before = {h: oom_kills(h) for h in APPS}
    since = int(out("app1", "date +%s"))
    with Load(rate=10, max_seconds=420) as load:
        proc = playbook("deploy.yml", f"app_version={VERSION}", f"app_source={wheels[VERSION]}",
                        "app_health_deadline=20", f"app_soak_seconds={SOAK_S}")
        t_end = time.monotonic()
        while time.monotonic() - t_end < 120 and not any(oom_kills(h) > before[h] for h in APPS):
            time.sleep(1)
        oom_wait_s = time.monotonic() - t_end
        time.sleep(3)
    kills = {h: oom_kills(h) - before[h] for h in APPS}
    journal = {h: oom_journal(h, since) for h in APPS}
    print("oom kills:", kills, "journal:", journal)
    switched = [h for h in APPS if current_release(h).rsplit("/", 1)[-1].startswith(VERSION + "-")]
    new = {h: ledger(h)[seen[h]:] for h in APPS}
    bad = [e for e in new["app1"] if e["action"] == "mark" and e["version"] == VERSION and e["outcome"] == "bad"]
    gate_caught = proc.returncode != 0 and f"Rolled back to {serving}-" in proc.text and bool(bad)
    record("i_memory_max", memory_max=memory_max, playbook_rc=proc.returncode, playbook_s=round(proc.seconds, 1),
           oom_kills=kills, oom_journal={h: j[:3] for h, j in journal.items()},
           oom_seen_after_play_s=round(oom_wait_s, 1), switched_to_leak=switched, gate_caught=gate_caught,
           lb_requests=load.result.get("sent"), lb_ok=load.result.get("ok"), lb_failures=load.result.get("failures"),
           marks={h: [(e["version"], e["outcome"]) for e in n if e["action"] == "mark"] for h, n in new.items()})
    # The fault is real: the kernel killed the release at MemoryMax.
    readable = [h for h in APPS if before[h] >= 0]
    assert any(kills[h] > 0 for h in readable) if readable else any(journal.values()), \
        f"no OOM kill seen (kernel/cgroup {kills}, journal {journal}): the fault did not happen"
    if not gate_caught:
        # Put the lab right first: the release that served, back on every host that switched.
        if switched:
            back = playbook("rollback.yml", f"rollback_to={serving}", args=("--limit", ",".join(switched)))
            assert back.returncode == 0, f"rollback.yml to {serving} failed: {back.text[-3000:]}"
        state.check()
        raise GateMissedOOM(f"deploy of {VERSION} rc {proc.returncode}, hosts switched to it {switched}, "
                            f"OOM kills {kills}: {GAP}")
    assert "readiness" in (bad[-1]["reason"] or "") or "refapp-web" in (bad[-1]["reason"] or ""), bad
    assert "app2" not in switched and len(ledger("app2")) == seen["app2"], "the rollout went on to app2"
    state.check()
