"""The deploy window guard on the Windows path (playbooks/windows/deploy.yml and rollback.yml).

Windows cannot run here: the real ``playbooks/deploy.yml`` and ``playbooks/rollback.yml`` run on this
Linux controller, in check mode, with seed 002's group vars on two inventory names of the ``windows``
group reached by the local connection (no ``app`` group: the Linux plays match no host). The guard
plays need no Windows host (they run once, on the controller); whatever comes after them cannot work
on Linux and fails at windows_common's "Windows role aimed at a ... host" preflight, which proves that
the deploy play started. The clock is injected (``market_guard_now``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
SEED002 = ROOT / "inventory" / "examples" / "seed002"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))

IN_SESSION = "2026-11-25T15:00:00Z"  # Wednesday 10:00 New York (EST): NYSE regular session
GUARD_PLAY = "Deploy window guard (Windows hosts)"
DEPLOY_PLAY = "Deploy the trading engine on Windows hosts"
REPORT_PLAY = "Deploy window guard, report only (Windows hosts)"
ROLLBACK_PLAY = "Roll the trading engine back on Windows hosts"
REFUSE_TASK = "market_guard : Refuse the play during the session, or report the deploy window"
LEDGER_TASK = "market_guard : What goes into the ledger"
REASON = "hotfix for the order engine, approved by ops"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seed 002's group vars without its connection settings (test values for the vault's), NYSE."""
    group = yaml.safe_load((SEED002 / "group_vars" / "windows" / "vars.yml").read_text())
    group = {k: v for k, v in group.items() if not k.startswith("ansible_")}
    vault = yaml.safe_load((SEED002 / "group_vars" / "windows" / "vault.yml.example").read_text())
    group.update({key: f"test-value-{n}" for n, key in enumerate(vault)})
    group.update(ansible_connection="local", ansible_python_interpreter=sys.executable, market_exchange="NYSE")
    path = tmp_path_factory.mktemp("windows-guard") / "hosts.yml"
    path.write_text(json.dumps({"all": {"children": {"windows": {
        "hosts": {"engine-a": {}, "engine-b": {}}, "vars": group}}}}))
    return path


def play(inventory: Path, playbook: str, *extra: str) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "TRADEOPS_MARKET_NOW"}
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               ANSIBLE_INJECT_FACT_VARS="false",
               # the run summary callback's records go beside the inventory, not into the checkout's .cache
               TRADEOPS_SUMMARY_LOG=str(inventory.with_name("deploy-summary.jsonl")))
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(inventory), str(ROOT / "playbooks" / playbook), "--check",
                           "-e", f"market_guard_now={IN_SESSION}", *extra],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=False, timeout=300)
    assert "{" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    report, _end = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])  # the summary line follows
    return proc.returncode, report


def plays(report: dict[str, Any]) -> list[str]:
    return [p["play"]["name"] for p in report["plays"]]


def task_results(report: dict[str, Any], play_name: str, task_name: str) -> dict[str, Any]:
    (found,) = [p for p in report["plays"] if p["play"]["name"] == play_name]
    return next((t["hosts"] for t in found["tasks"] if t["task"]["name"] == task_name), {})


def test_windows_deploy_in_session_is_refused_before_its_deploy_play(inventory: Path) -> None:
    rc, report = play(inventory, "deploy.yml", "-e", "app_version=1.4.2", "-e", "app_source=/nonexistent")
    assert rc == 2
    assert GUARD_PLAY in plays(report) and DEPLOY_PLAY not in plays(report)  # nothing after the guard ran
    refusals = task_results(report, GUARD_PLAY, REFUSE_TASK)
    assert len(refusals) == 1  # evaluated once, on the controller, for both hosts
    (refusal,) = refusals.values()
    assert refusal["failed"]
    assert " ".join(refusal["msg"].split()).startswith(
        "deploy refused: NYSE is in its regular session; the time there is 2026-11-25T10:00:00-05:00")
    assert set(report["stats"]) == {"engine-a", "engine-b"}
    assert all(s["failures"] + s["unreachable"] == 0 or name in refusals for name, s in report["stats"].items())


def test_windows_deploy_with_an_override_and_reason_goes_on_with_the_reason_for_the_ledger(inventory: Path) -> None:
    rc, report = play(inventory, "deploy.yml", "-e", "app_version=1.4.2", "-e", "app_source=/nonexistent",
                      "-e", json.dumps({"deploy_window_override": True, "override_reason": REASON}))
    assert not any(r.get("failed") for r in task_results(report, GUARD_PLAY, REFUSE_TASK).values())
    (ledger,) = task_results(report, GUARD_PLAY, LEDGER_TASK).values()
    assert ledger["ansible_facts"]["market_guard_ledger_reason"] == (
        "deploy during the NYSE regular session (2026-11-25T10:00:00-05:00 America/New_York), override: " + REASON)
    # the deploy play started; on this Linux controller it stops in the Windows roles' own preflight
    assert DEPLOY_PLAY in plays(report)
    assert rc != 0
    (deploy,) = [p for p in report["plays"] if p["play"]["name"] == DEPLOY_PLAY]
    failed = [t["task"]["name"] for t in deploy["tasks"] if any(r.get("failed") for r in t["hosts"].values())]
    assert failed and failed[0].startswith("windows_common : "), failed


def test_windows_rollback_in_session_is_allowed_and_reported(inventory: Path) -> None:
    rc, report = play(inventory, "rollback.yml")
    # the Linux plays match no host; the Windows ones both run: never refused, the emergency path
    assert [name for name in plays(report) if "Windows hosts" in name] == [REPORT_PLAY, ROLLBACK_PLAY]
    (ledger,) = task_results(report, REPORT_PLAY, LEDGER_TASK).values()
    assert ledger["ansible_facts"]["market_guard_ledger_reason"] == (
        "manual rollback during the NYSE regular session (2026-11-25T10:00:00-05:00 America/New_York)")
    assert rc != 0  # the rollback play itself cannot run on Linux: it stops in windows_app's preflight
    (rollback,) = [p for p in report["plays"] if p["play"]["name"] == ROLLBACK_PLAY]
    assert any(t["task"]["name"] == "windows_app : Assert the host runs Windows" for t in rollback["tasks"])


def ledger_reason(tasks_file: str, task: str, variables: dict[str, Any]) -> str:
    """The ledger reason role windows_app's task gives win_app_release, rendered with these variables."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    def find(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
        for entry in tasks:
            if entry.get("name") == task:
                return entry
            found = find(entry.get("block", []) + entry.get("rescue", []) + entry.get("always", []))
            if found:
                return found
        return None

    entry = find(yaml.safe_load((ROOT / "roles" / "windows_app" / "tasks" / tasks_file).read_text()))
    assert entry is not None, f"no task {task!r} in {tasks_file}"
    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.template(trust_as_template(entry["win_app_release"]["reason"]))


@pytest.mark.parametrize(("tasks_file", "task", "variables", "expected"), [
    ("deploy.yml", "Switch current to the release", {"windows_app_version": "2.1.0"}, "deploy 2.1.0"),
    ("deploy.yml", "Switch current to the release",
     {"windows_app_version": "2.1.0", "market_guard_ledger_reason": f"deploy during the NYSE regular session "
                                                                    f"(...), override: {REASON}"},
     f"deploy 2.1.0; deploy during the NYSE regular session (...), override: {REASON}"),
    ("rollback.yml", "Switch current back", {}, "manual rollback"),
    ("rollback.yml", "Switch current back", {"market_guard_ledger_reason": ""}, "manual rollback"),
    ("rollback.yml", "Switch current back",
     {"market_guard_ledger_reason": "manual rollback during the NYSE regular session (...)"},
     "manual rollback during the NYSE regular session (...)"),
])  # fmt: skip
def test_the_windows_ledger_records_the_guards_reason(tasks_file, task, variables, expected):
    """As on Linux: an override's reason (deploy) and an in-session rollback go into the ledger."""
    assert ledger_reason(tasks_file, task, variables) == expected
