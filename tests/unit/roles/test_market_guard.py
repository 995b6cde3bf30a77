"""The deploy window guard (roles/market_guard), run by ansible-playbook on the controller.

The clock is injected (``market_guard_now`` or ``$TRADEOPS_MARKET_NOW``); no host's clock is
touched. Hosts are two inventory names with the local connection: the guard runs once, on
the controller, and nothing after it may run when it refuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))

IN_SESSION = "2026-11-25T15:00:00Z"  # Wednesday 10:00 New York (EST)
THANKSGIVING = "2026-11-26T15:00:00Z"

# The guard as deploy.yml and rollback.yml include it, then a play that only reports what the
# later plays would see (the facts the app role passes to app_deploy's reason).
PLAY = """
- name: Deploy window guard
  hosts: app
  gather_facts: false
  any_errors_fatal: true
  tasks:
    - name: Guard
      ansible.builtin.import_role:
        name: market_guard
- name: What the deploy would see
  hosts: app
  gather_facts: false
  tasks:
    - name: Write the facts
      ansible.builtin.copy:
        content: "{{ {'result': market_guard_result, 'reason': market_guard_ledger_reason,
                      'hosts': ansible_play_hosts} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      delegate_to: localhost
      run_once: true
"""


def inventory(tmp_path: Path, **group_vars: Any) -> Path:
    path = tmp_path / "hosts.yml"
    app_vars = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **group_vars}
    path.write_text(json.dumps({"all": {"children": {"app": {"hosts": {"app-a": {}, "app-b": {}},
                                                             "vars": app_vars}}}}))
    return path


def run(tmp_path: Path, *extra: str, playbook: Path | None = None, env: dict[str, str] | None = None,
        **group_vars: Any) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    if playbook is None:
        playbook = tmp_path / "guard.yml"
        playbook.write_text(PLAY)
    out = tmp_path / "seen.json"
    out.unlink(missing_ok=True)
    environ = {k: v for k, v in os.environ.items() if k != "TRADEOPS_MARKET_NOW"}
    environ.update(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", **(env or {}))
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(inventory(tmp_path, **group_vars)), str(playbook),
                           "-e", f"out={out}", *extra],
                          capture_output=True, text=True, cwd=ROOT, env=environ, check=False, timeout=300)
    seen = json.loads(out.read_text()) if out.exists() else None
    return proc, seen


def flat(text: str) -> str:
    """Ansible wraps long messages in its YAML output: compare with whitespace collapsed."""
    return " ".join(text.split())


def test_refused_in_session_with_the_session_the_local_time_and_the_next_window(tmp_path: Path) -> None:
    proc, seen = run(tmp_path, "-e", f"market_guard_now={IN_SESSION}", market_exchange="NYSE")
    output = flat(proc.stdout + proc.stderr)
    assert proc.returncode == 2, output[-3000:]
    assert seen is None  # nothing after the guard ran
    assert ("deploy refused: NYSE is in its regular session; the time there is 2026-11-25T10:00:00-05:00 "
            "(America/New_York), 2026-11-25T15:00:00+00:00 in UTC. Next window: from 2026-11-25T16:00:00-05:00 "
            "until 2026-11-27T09:30:00-05:00.") in output  # Thanksgiving: the window lasts to Friday
    assert 'To run now anyway: -e deploy_window_override=true -e override_reason="why"' in output
    # evaluated once, on the controller; the failure stops every host
    assert output.count("TASK [market_guard : Refuse the play during the session]") == 1
    assert "app-a : ok=" in output and "app-b : ok=" in output
    assert "failed=1" in output


def test_outside_the_session_the_play_goes_on(tmp_path: Path) -> None:
    proc, seen = run(tmp_path, "-e", f"market_guard_now={THANKSGIVING}", market_exchange="NYSE")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert seen is not None and seen["reason"] == "" and sorted(seen["hosts"]) == ["app-a", "app-b"]
    assert (seen["result"]["phase"], seen["result"]["reason"], seen["result"]["refused"]) == (
        "closed", "Thanksgiving Day", False)
    assert "deploy: NYSE closed (Thanksgiving Day) at 2026-11-26T10:00:00-05:00 America/New_York; outside the " \
           "refused phases, allowed" in flat(proc.stdout)


def test_override_with_a_reason_passes_and_the_reason_goes_to_the_ledger(tmp_path: Path) -> None:
    proc, seen = run(tmp_path, "-e", f"market_guard_now={IN_SESSION}", "-e", "deploy_window_override=true",
                     "-e", json.dumps({"override_reason": "hotfix for the order router, approved by ops"}),
                     market_exchange="XNYS")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert seen is not None
    assert seen["reason"] == ("deploy during the NYSE regular session (2026-11-25T10:00:00-05:00 America/New_York), "
                              "override: hotfix for the order router, approved by ops")
    assert "IN SESSION, allowed by override (hotfix for the order router, approved by ops)" in flat(proc.stdout)


def test_override_without_a_reason_is_refused(tmp_path: Path) -> None:
    proc, seen = run(tmp_path, "-e", f"market_guard_now={IN_SESSION}", "-e", "deploy_window_override=true",
                     market_exchange="NYSE")
    assert proc.returncode == 2 and seen is None
    assert 'deploy_window_override=true needs a reason for the ledger: add -e override_reason="why this deploy ' \
           'cannot wait"' in flat(proc.stdout + proc.stderr)


def test_report_mode_never_refuses_and_records_the_session(tmp_path: Path) -> None:
    """rollback.yml's use: always allowed, logged."""
    proc, seen = run(tmp_path, "-e", "market_guard_mode=report",
                     "-e", json.dumps({"market_guard_action": "manual rollback"}),
                     env={"TRADEOPS_MARKET_NOW": "2026-11-26T05:00:00Z"}, market_exchange="NSE")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert seen is not None
    assert seen["reason"] == ("manual rollback during the NSE regular session "
                              "(2026-11-26T10:30:00+05:30 Asia/Kolkata)")
    assert "IN SESSION, allowed (manual rollback is the emergency path), recorded in the ledger" in flat(proc.stdout)


def test_clock_from_the_environment_and_declared_closures(tmp_path: Path) -> None:
    closures = tmp_path / "closures.yml"
    closures.write_text("closures:\n  - exchange: NYSE\n    date: 2026-11-25\n    name: Exchange outage\n")
    env = {"TRADEOPS_MARKET_NOW": IN_SESSION}
    proc, seen = run(tmp_path, env=env, market_exchange="NYSE")
    assert proc.returncode == 2 and "deploy refused: NYSE is in its regular session" in flat(proc.stdout)
    proc, seen = run(tmp_path, env=env, market_exchange="NYSE", market_closures_file=str(closures))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert seen is not None and seen["result"]["reason"] == f"Exchange outage (declared closure, {closures}:2)"


def test_no_exchange_no_guard(tmp_path: Path) -> None:
    proc, seen = run(tmp_path, "-e", f"market_guard_now={IN_SESSION}")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert seen == {"result": {}, "reason": "", "hosts": seen["hosts"]}
    assert "no market_exchange configured, no deploy window guard" in flat(proc.stdout)


@pytest.mark.parametrize(("group_vars", "extra", "message"), [
    ({"market_exchange": "LSE"}, [], "market_exchange (market_guard_exchange) 'LSE' is not an exchange of the "
                                     "market calendar: set NYSE (XNYS), NASDAQ (XNAS) or NSE (XNSE)"),
    ({"market_exchange": "NYSE"}, ["-e", "market_guard_now=2026-11-25T10:00:00"],
     "market_guard_now '2026-11-25T10:00:00' must be empty (the clock) or an ISO 8601 time with its offset"),
    ({"market_exchange": "NSE"}, ["-e", "market_guard_now=2027-01-04T05:00:00Z"],
     "market calendar: NSE: 2027-01-04 is outside the years its calendar covers (2011-2026"),
    ({"market_exchange": "NYSE", "market_closures_file": "/nonexistent/closures.yml"}, [],
     "market calendar: closures file /nonexistent/closures.yml: cannot be read"),
])
def test_bad_input_fails_before_anything_runs(tmp_path: Path, group_vars: dict[str, str], extra: list[str],
                                              message: str) -> None:
    proc, seen = run(tmp_path, *extra, **group_vars)
    assert proc.returncode == 2 and seen is None
    assert message in flat(proc.stdout + proc.stderr)


def test_deploy_playbook_is_refused_before_its_deploy_play(tmp_path: Path) -> None:
    """playbooks/deploy.yml itself, in check mode: the guard play refuses, the deploy play never starts."""
    proc, _ = run(tmp_path, "--check", "-e", "app_version=1.0.0", "-e", f"market_guard_now={IN_SESSION}",
                  playbook=ROOT / "playbooks" / "deploy.yml", market_exchange="NYSE")
    output = flat(proc.stdout + proc.stderr)
    assert proc.returncode == 2, output[-3000:]
    assert "PLAY [Deploy window guard]" in output and "deploy refused: NYSE is in its regular session" in output
    assert "PLAY [Deploy the application]" not in output
