"""b. Releases that crash on start, hang on start, or pass liveness but fail readiness
(scripts/build_refapp.py --fault), deployed with deploy.yml on both app hosts (serial: 1).

Pass: the play fails, app1 is rolled back automatically to the release that served, the
ledger marks the new release bad and says why, the rollout stopped at app1 (app2 never got
the release), the previous release serves on both. Nothing lost.
"""
from __future__ import annotations

import pytest
from chaoslab import APP_ROOT, State, ledger, out, playbook, record

GATE = "app_health_deadline=20"


@pytest.mark.parametrize("version, fault, why", [
    ("2.0.0", "unready", "readiness"),          # passes liveness, fails readiness
    ("2.1.0", "crash", "refapp-web.service"),   # crashes on start: the unit fails
    ("2.2.0", "hang", "liveness"),              # hangs on start: never listens
])
def test_bad_release_rolled_back_rollout_stopped(state: State, wheels: dict[str, str], version: str, fault: str,
                                                 why: str) -> None:
    serving = state.served["app1"]
    seen = len(state.ledgers["app1"])
    proc = playbook("deploy.yml", f"app_version={version}", f"app_source={wheels[version]}", GATE)
    assert proc.returncode != 0, "a deploy whose health gate fails must fail the play"
    assert f"Rolled back to {serving}-" in proc.text, proc.text[-3000:]
    new = ledger("app1")[seen:]
    bad = [e for e in new if e["action"] == "mark" and e["version"] == version]
    assert bad and bad[-1]["outcome"] == "bad" and why in (bad[-1]["reason"] or ""), new
    # serial 1 + max_fail_percentage 0: app2 was never touched
    assert not [r for r in out("app2", f"ls {APP_ROOT}/releases").split() if r.startswith(version + "-")]
    assert len(ledger("app2")) == len(state.ledgers["app2"]), "app2's ledger moved: the rollout went on"
    summary = [e for e in new if e.get("duration_s") is not None]
    record(f"b_bad_release_{fault}", version=version, playbook_s=round(proc.seconds, 1),
           ledger=[{k: e.get(k) for k in ("action", "outcome", "duration_s", "reason")} for e in new],
           rollback_total_s=summary[-1]["duration_s"] if summary else None)
    state.check()  # the release that served before serves on both, same current link
