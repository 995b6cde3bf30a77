"""Role schedule's preflight under ansible-playbook: a job must run its application's `current` release (role app
switches it only to a release that passed its gate), never one release's own path; ONE ansible-playbook run."""
from __future__ import annotations

import shutil
import sys

import pytest
from play_report import check_case, failures_by_play, run_plays

FACTS = {"os_family": "Debian", "service_mgr": "systemd", "distribution": "Debian"}
PINNED = "/opt/screener/releases/1.1.0-20261207T101500Z/venv/bin/refapp check"
CASES = {
    "a job of the current release": ("/opt/screener/current/venv/bin/refapp check",
                                     ["/opt/screener/current/venv/bin/refapp check"]),
    "a job pinned to one release": (PINNED, "schedule_jobs entry scan: its command \"" + PINNED + "\" runs one fixed "
                                            "release, which a later deploy does not update and a prune removes: run "
                                            "the application's current release instead, e.g. \"/opt/screener/current/"
                                            "venv/bin/refapp check\""),
}


def case_play(name: str, command: str) -> dict:
    include = {"name": "Preflight of the role",
               "ansible.builtin.include_role": {"name": "schedule", "tasks_from": "preflight"}}
    show = {"name": "Commands", "ansible.builtin.debug": {"msg": "{{ schedule_jobs | map(attribute='command') }}"}}
    job = {"name": "scan", "command": command, "on_calendar": "Mon..Fri *-*-* 06:30:00", "user": "root"}
    return {"name": name, "hosts": "localhost", "gather_facts": False,
            "vars": {"ansible_facts": FACTS, "schedule_jobs": [job], "ansible_python_interpreter": sys.executable},
            "tasks": [{"name": "Preflight", "block": [include, show],
                       "rescue": [{"name": "Rescued", "ansible.builtin.meta": "noop"}]}]}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[list[str], object]]:
    if not shutil.which("systemd-analyze"):
        pytest.skip("the preflight checks calendars with systemd-analyze")
    stdout = run_plays(tmp_path_factory.mktemp("schedule-preflight"), [case_play(n, c) for n, (c, _) in CASES.items()])
    return failures_by_play(stdout, "Commands")


@pytest.mark.parametrize("case", list(CASES))
def test_jobs_run_the_current_release(results, case):
    check_case(*results[case], CASES[case][1])
