"""The deploy window guard (roles/market_guard), run by ansible-playbook on the controller.

The clock is injected (``market_guard_now`` or ``$TRADEOPS_MARKET_NOW``); no host's clock is
touched. Hosts are two inventory names with the local connection: the guard runs once, on
the controller, and nothing after it may run when it refuses.

Every case is one play of ONE ansible-playbook run (a process start is 2-4 s): the guard and
then what the deploy would see, in a block whose rescue keeps both hosts for the next case.
Each case sets the guard's facts to a sentinel first, so no case can pass on the facts of the
one before; allowed and refused cases alternate, so a state leak in either direction fails.
That the refusal stops the whole playbook (any_errors_fatal, no later play) is proven by the
real ``playbooks/deploy.yml`` run at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))

IN_SESSION = "2026-11-25T15:00:00Z"  # Wednesday 10:00 New York (EST)
THANKSGIVING = "2026-11-26T15:00:00Z"
UNSET = "__unset_by_the_previous_case__"
REFUSE_TASK = "Refuse the play during the session, or report the deploy window"

# The batch runs with the controller's clock injected through the environment: cases that set
# market_guard_now also prove it wins over $TRADEOPS_MARKET_NOW.
ENV_NOW = IN_SESSION

BAD_INPUT = {
    "bad-exchange": ({"market_exchange": "LSE"},
                     "market_exchange (market_guard_exchange) 'LSE' is not an exchange of the market calendar: "
                     "set NYSE (XNYS), NASDAQ (XNAS) or NSE (XNSE)"),
    "bad-now": ({"market_exchange": "NYSE", "market_guard_now": "2026-11-25T10:00:00"},
                "market_guard_now '2026-11-25T10:00:00' must be empty (the clock) or an ISO 8601 time with its "
                "offset"),
    "bad-year": ({"market_exchange": "NSE", "market_guard_now": "2027-01-04T05:00:00Z"},
                 "market calendar: NSE: 2027-01-04 is outside the years its calendar covers (2011-2026"),
    "bad-closures": ({"market_exchange": "NYSE", "market_closures_file": "/nonexistent/closures.yml"},
                     "market calendar: closures file /nonexistent/closures.yml: cannot be read"),
}


def cases(closures: Path) -> dict[str, dict[str, Any]]:
    """Case name -> the play's variables (what inventory group vars and -e gave one run each)."""
    return {
        "refused-in-session": {"market_exchange": "NYSE", "market_guard_now": IN_SESSION},
        "thanksgiving": {"market_exchange": "NYSE", "market_guard_now": THANKSGIVING},
        "bad-exchange": BAD_INPUT["bad-exchange"][0],
        "override-with-reason": {"market_exchange": "XNYS", "market_guard_now": IN_SESSION,
                                 "deploy_window_override": "true",
                                 "override_reason": "hotfix for the order router, approved by ops"},
        "override-without-reason": {"market_exchange": "NYSE", "market_guard_now": IN_SESSION,
                                    "deploy_window_override": "true"},
        "report-mode": {"market_exchange": "NSE", "market_guard_mode": "report",
                        "market_guard_action": "manual rollback", "market_guard_now": "2026-11-26T05:00:00Z"},
        "bad-now": BAD_INPUT["bad-now"][0],
        # Monday 10:30 in Mumbai, a Lok Sabha polling day: closed by the NSE closures shipped with the calendar
        "nse-election-day": {"market_exchange": "NSE", "market_guard_now": "2024-05-20T05:00:00Z"},
        "env-clock": {"market_exchange": "NYSE"},
        "bad-year": BAD_INPUT["bad-year"][0],
        "env-clock-declared-closure": {"market_exchange": "NYSE", "market_closures_file": str(closures)},
        "bad-closures": BAD_INPUT["bad-closures"][0],
        "no-exchange": {"market_guard_now": IN_SESSION},
    }


def case_play(name: str, case_vars: dict[str, Any]) -> dict[str, Any]:
    seen = {"name": "What the deploy would see", "run_once": True,
            "ansible.builtin.debug": {"msg": "{{ {'result': market_guard_result, 'reason': market_guard_ledger_reason,"
                                             " 'hosts': ansible_play_hosts} }}"}}
    forget = {"name": "Forget the guard's facts of the previous case",
              "ansible.builtin.set_fact": {"market_guard_result": UNSET, "market_guard_ledger_reason": UNSET}}
    guard = {"name": "Guard", "ansible.builtin.import_role": {"name": "market_guard"}}
    keep = {"name": "Keep both hosts for the next case", "ansible.builtin.meta": "clear_host_errors"}
    return {"name": name, "hosts": "app", "gather_facts": False, "vars": case_vars,
            "tasks": [forget, {"name": "Case", "block": [guard, seen], "rescue": [keep]}]}


def flat(text: str) -> str:
    """Ansible wraps long messages in its YAML output: compare with whitespace collapsed."""
    return " ".join(text.split())


class Case:
    """What one case's play did: the refusal or failure messages, everything it said, what the
    deploy would have seen (None when nothing after the guard ran)."""

    def __init__(self, play: dict[str, Any]) -> None:
        self.failed: list[str] = []
        self.said: list[str] = []
        self.seen: dict[str, Any] | None = None
        self.refusals = 0
        self.refusing_hosts: list[str] = []
        for task in play["tasks"]:
            name = task["task"]["name"]
            for host, result in task["hosts"].items():
                msg = result.get("msg", "")
                if name == "What the deploy would see":
                    self.seen = msg
                    continue
                if name.endswith(REFUSE_TASK) and result.get("failed"):
                    self.refusals += 1
                    self.refusing_hosts.append(host)
                if result.get("failed"):
                    self.failed.append(flat(str(msg)))
                elif isinstance(msg, str) and msg:
                    self.said.append(flat(msg))
        self.text = " ".join(self.failed + self.said)


@dataclass
class Batch:
    cases: dict[str, Case]
    closures: Path

    def __getitem__(self, name: str) -> Case:
        return self.cases[name]


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    tmp = tmp_path_factory.mktemp("guard")
    closures = tmp / "closures.yml"
    closures.write_text("closures:\n  - exchange: NYSE\n    date: 2026-11-25\n    name: Exchange outage\n")
    batch = cases(closures)
    book = tmp / "guard.yml"
    book.write_text(yaml.safe_dump([case_play(name, v) for name, v in batch.items()], sort_keys=False))
    hosts = tmp / "hosts.yml"
    hosts.write_text(json.dumps({"all": {"children": {"app": {
        "hosts": {"app-a": {}, "app-b": {}},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_STDOUT_CALLBACK": "json",
           "TRADEOPS_MARKET_NOW": ENV_NOW}
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(hosts), str(book)], capture_output=True, text=True,
                          cwd=ROOT, env=env, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    played = {play["play"]["name"]: Case(play) for play in report["plays"]}
    assert list(played) == list(batch)  # every case ran, in order
    return Batch(played, closures)


def test_refused_in_session_with_the_session_the_local_time_and_the_next_window(guard: Batch) -> None:
    case = guard["refused-in-session"]
    assert case.seen is None  # nothing after the guard ran
    assert ("deploy refused: NYSE is in its regular session; the time there is 2026-11-25T10:00:00-05:00 "
            "(America/New_York), 2026-11-25T15:00:00+00:00 in UTC. Next window: from 2026-11-25T16:00:00-05:00 "
            "until 2026-11-27T09:30:00-05:00.") in case.failed[0]  # Thanksgiving: the window lasts to Friday
    assert 'To run now anyway: -e deploy_window_override=true -e override_reason="why"' in case.failed[0]
    # evaluated once, on the controller: one refusal for the two hosts
    assert case.refusals == 1 and len(case.failed) == 1, case.failed


def test_outside_the_session_the_play_goes_on(guard: Batch) -> None:
    case = guard["thanksgiving"]
    assert not case.failed, case.failed
    seen = case.seen
    assert seen is not None and seen["reason"] == "" and sorted(seen["hosts"]) == ["app-a", "app-b"]
    assert (seen["result"]["phase"], seen["result"]["reason"], seen["result"]["refused"]) == (
        "closed", "Thanksgiving Day", False)
    assert "deploy: NYSE closed (Thanksgiving Day) at 2026-11-26T10:00:00-05:00 America/New_York; outside the " \
           "refused phases, allowed" in case.text


def test_override_with_a_reason_passes_and_the_reason_goes_to_the_ledger(guard: Batch) -> None:
    case = guard["override-with-reason"]
    assert not case.failed, case.failed
    assert case.seen is not None
    assert case.seen["reason"] == ("deploy during the NYSE regular session (2026-11-25T10:00:00-05:00 "
                                   "America/New_York), override: hotfix for the order router, approved by ops")
    assert "IN SESSION, allowed by override (hotfix for the order router, approved by ops)" in case.text


def test_override_without_a_reason_is_refused(guard: Batch) -> None:
    case = guard["override-without-reason"]
    assert case.seen is None and case.failed
    assert 'deploy_window_override=true needs a reason for the ledger: add -e override_reason="why this deploy ' \
           'cannot wait"' in case.text


def test_report_mode_never_refuses_and_records_the_session(guard: Batch) -> None:
    """rollback.yml's use: always allowed, logged."""
    case = guard["report-mode"]
    assert not case.failed, case.failed
    assert case.seen is not None
    assert case.seen["reason"] == ("manual rollback during the NSE regular session "
                                   "(2026-11-26T10:30:00+05:30 Asia/Kolkata)")
    assert "IN SESSION, allowed (manual rollback is the emergency path), recorded in the ledger" in case.text


def test_clock_from_the_environment_and_declared_closures(guard: Batch) -> None:
    case = guard["env-clock"]  # $TRADEOPS_MARKET_NOW is in session
    assert case.seen is None and "deploy refused: NYSE is in its regular session" in case.text
    case = guard["env-clock-declared-closure"]
    assert not case.failed, case.failed
    assert case.seen is not None
    assert case.seen["result"]["reason"] == f"Exchange outage (declared closure, {guard.closures}:2)"


def test_nse_special_closures_apply_without_a_closures_file(guard: Batch) -> None:
    case = guard["nse-election-day"]
    assert not case.failed, case.failed
    assert case.seen is not None and case.seen["reason"] == ""
    assert (case.seen["result"]["phase"], case.seen["result"]["refused"]) == ("closed", False)
    assert case.seen["result"]["reason"].startswith(
        "General Parliamentary Elections (polling in Mumbai) (declared closure, tradeops_market_nse_closures.yml:")


def test_no_exchange_no_guard(guard: Batch) -> None:
    case = guard["no-exchange"]
    assert not case.failed, case.failed
    assert case.seen == {"result": {}, "reason": "", "hosts": case.seen["hosts"]}
    assert "no market_exchange configured, no deploy window guard" in case.text


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_fails_before_anything_runs(guard: Batch, name: str) -> None:
    case = guard[name]
    assert case.seen is None and case.failed
    assert case.refusals == 0  # failed in preflight, before the session was even judged
    assert BAD_INPUT[name][1] in case.text, case.text


def test_deploy_playbook_is_refused_before_its_deploy_play(tmp_path: Path) -> None:
    """playbooks/deploy.yml itself, in check mode: the guard play refuses, the whole playbook stops
    (exit 2), the deploy play never starts; the refusal is evaluated once for both hosts."""
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(json.dumps({"all": {"children": {"app": {
        "hosts": {"app-a": {}, "app-b": {}},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "market_exchange": "NYSE"}}}}}))
    environ = {k: v for k, v in os.environ.items() if k != "TRADEOPS_MARKET_NOW"}
    environ.update(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", TRADEOPS_SUMMARY_LOG=str(tmp_path / "summary.jsonl"))
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(hosts), str(ROOT / "playbooks" / "deploy.yml"), "--check",
                           "-e", "app_version=1.0.0", "-e", f"market_guard_now={IN_SESSION}"],
                          capture_output=True, text=True, cwd=ROOT, env=environ, check=False, timeout=300)
    output = flat(proc.stdout + proc.stderr)
    assert proc.returncode == 2, output[-3000:]
    assert "PLAY [Deploy window guard]" in output and "deploy refused: NYSE is in its regular session" in output
    assert "PLAY [Deploy the application]" not in output
    assert output.count(f"TASK [market_guard : {REFUSE_TASK}]") == 1
    assert "app-a : ok=" in output and "app-b : ok=" in output
    assert "failed=1" in output
