"""Preflight tests of the roles under ansible-playbook: one play per case, ALL run in one ansible-playbook
(a second or more each otherwise) with the json callback, then read per play."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]


# The facts a role's preflight reads of the host it runs on: a Debian host with systemd.
FACTS = {"os_family": "Debian", "service_mgr": "systemd", "distribution": "Debian"}


def preflight_play(name: str, role: str, variables: dict[str, Any], shown_task: str, shown_msg: Any) -> dict[str, Any]:
    """One case of a role's preflight, as one play on localhost (FACTS and ``variables``): the role's
    ``preflight`` tasks, then, when they pass, the task ``shown_task`` shows ``shown_msg`` (read back by
    ``failures_by_play``). A failure is rescued, so the next case's play runs in the same ansible-playbook."""
    include = {"name": "Preflight of the role",
               "ansible.builtin.include_role": {"name": role, "tasks_from": "preflight"}}
    show = {"name": shown_task, "ansible.builtin.debug": {"msg": shown_msg}}
    return {"name": name, "hosts": "localhost", "gather_facts": False,
            "vars": {"ansible_facts": FACTS, "ansible_python_interpreter": sys.executable, **variables},
            "tasks": [{"name": "Preflight", "block": [include, show],
                       "rescue": [{"name": "Rescued", "ansible.builtin.meta": "noop"}]}]}


def run_plays(directory: Path, plays: list[dict[str, Any]], inventory: str = "localhost,") -> str:
    """Write ``plays`` to ``directory``/play.yml and run them with the project's ansible.cfg and the json callback
    (``inventory``: a file or ``localhost,``, then run locally); the stdout, once the run itself did not fail."""
    (directory / "play.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_INJECT_FACT_VARS": "false",
           "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOCALHOST_WARNING": "false"}
    local = ["-c", "local"] if inventory == "localhost," else []
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", inventory, *local,
                           str(directory / "play.yml")], capture_output=True, text=True, env=env, cwd=directory,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def failures_by_play(stdout: str, shown_task: str) -> dict[str, tuple[list[str], Any]]:
    """Per play name: the messages of its failed tasks (loop items included, whitespace folded) and
    the ``msg`` of the task named ``shown_task`` when it ran (None when it was skipped or never ran)."""
    report = json.loads(stdout[stdout.index("{"):])
    out = {}
    for played in report["plays"]:
        messages, shown = [], None
        for task in played["tasks"]:
            result = task["hosts"].get("localhost", {})
            if task["task"]["name"] == shown_task and not result.get("skipped"):
                shown = result.get("msg")
            for item in result.get("results", [result]):
                if item.get("failed") or item.get("evaluated_to") is False:  # a looped assert's item: no "failed"
                    messages.append(" ".join(str(item.get("msg", "")).split()))
        out[played["play"]["name"]] = (messages, shown)
    return out


def check_case(messages: list[str], shown: Any, expected: Any) -> None:
    """One case's outcome: ``expected`` a string is (part of) a failure message, and nothing was shown; anything
    else is what the shown task showed, with no failure."""
    if isinstance(expected, str):
        assert shown is None and any(expected in m for m in messages), messages
    else:
        assert messages == [] and shown == expected, messages
