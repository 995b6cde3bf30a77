"""Role schedule's preflight under ansible-playbook: a job must run its application's `current` release (role app
switches it only to a release that passed its gate), never one release's own path; ONE ansible-playbook run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from play_report import failures_by_play

ROOT = Path(__file__).resolve().parents[3]
FACTS = {"os_family": "Debian", "service_mgr": "systemd", "distribution": "Debian"}
PINNED = "/opt/screener/releases/1.1.0-20261207T101500Z/venv/bin/refapp check"
CASES = {
    "a job of the current release": ("/opt/screener/current/venv/bin/refapp check", None),
    "a job pinned to one release": (PINNED, "schedule_jobs entry scan: its command \"" + PINNED + "\" runs one fixed "
                                            "release, which a later deploy does not update and a prune removes: run "
                                            "the application's current release instead, e.g. \"/opt/screener/current/"
                                            "venv/bin/refapp check\""),
}


def case_play(name: str, command: str) -> dict:
    include = {"name": "Preflight of the role",
               "ansible.builtin.include_role": {"name": "schedule", "tasks_from": "preflight"}}
    show = {"name": "Passed", "ansible.builtin.debug": {"msg": "passed"}}
    job = {"name": "scan", "command": command, "on_calendar": "Mon..Fri *-*-* 06:30:00", "user": "root"}
    return {"name": name, "hosts": "localhost", "gather_facts": False,
            "vars": {"ansible_facts": FACTS, "schedule_jobs": [job], "ansible_python_interpreter": sys.executable},
            "tasks": [{"name": "Preflight", "block": [include, show],
                       "rescue": [{"name": "Rescued", "ansible.builtin.meta": "noop"}]}]}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[list[str], object]]:
    if not shutil.which("systemd-analyze"):
        pytest.skip("the preflight checks calendars with systemd-analyze")
    d = tmp_path_factory.mktemp("schedule-preflight")
    (d / "play.yml").write_text(yaml.safe_dump([case_play(n, c) for n, (c, _) in CASES.items()], sort_keys=False))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_INJECT_FACT_VARS": "false",
           "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOCALHOST_WARNING": "false"}
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,",
                           "-c", "local", str(d / "play.yml")], capture_output=True, text=True, env=env, cwd=d,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return failures_by_play(proc.stdout, "Passed")


@pytest.mark.parametrize("case", list(CASES))
def test_jobs_run_the_current_release(results, case):
    messages, shown = results[case]
    expected = CASES[case][1]
    if expected is None:
        assert messages == [] and shown == "passed", messages
    else:
        assert shown is None and any(expected in m for m in messages), messages
