"""d. PostgreSQL stopped just before a deploy.

Pass: the deploy fails before anything switches (the new release's migration cannot reach the
database, or the health gate fails and rolls back), `current` is unchanged on both app hosts,
the rollout stopped at app1; once PostgreSQL is back every instance is ready again with the
release that served before, and no host is left drained at lb1. Nothing lost.
"""
from __future__ import annotations

import time

from chaoslab import APP_ROOT, APPS, State, current_release, get_json, lb_drained, ledger, out, playbook, record, sh


def ready(host: str) -> bool:
    return get_json(host, "http://127.0.0.1:8000/api/health/readiness").get("status") == "ready"


def test_postgresql_stopped_before_deploy_nothing_switches(state: State, wheels: dict[str, str]) -> None:
    seen = len(state.ledgers["app1"])
    sh("db1", "systemctl stop postgresql")
    try:
        proc = playbook("deploy.yml", "app_version=3.3.0", f"app_source={wheels['3.3.0']}", "app_health_deadline=20")
        for host in APPS:
            assert current_release(host) == state.releases[host], f"{host} switched"
        assert not [r for r in out("app2", f"ls {APP_ROOT}/releases").split() if r.startswith("3.3.0-")], \
            "the rollout went on to app2"
    finally:
        sh("db1", "systemctl start postgresql")
    assert proc.returncode != 0, "a deploy with the database down must fail"
    new = ledger("app1")[seen:]
    print("ledger:", new)
    t0 = time.monotonic()
    while not all(ready(h) for h in APPS):
        assert time.monotonic() - t0 < 90, {h: get_json(h, "http://127.0.0.1:8000/api/health/readiness")
                                            for h in APPS}
        time.sleep(1)
    recovered = time.monotonic() - t0
    # A failed migration used to leave app1 drained though its release never stopped serving
    # (found here): app_deploy now says not-switched and deploy.yml puts the host back.
    left_drained = lb_drained()
    assert not left_drained, f"{left_drained} left drained at lb1 after a failed migration"
    record("d_postgresql_down", playbook_s=round(proc.seconds, 1), ready_after_restart_s=round(recovered, 1),
           left_drained_at_lb=left_drained,
           failed_at=next((t for t in ("migrat", "readiness", "preflight") if t in proc.text.lower()), "other"),
           ledger=[{k: e.get(k) for k in ("action", "outcome", "reason")} for e in new])
    state.check()
