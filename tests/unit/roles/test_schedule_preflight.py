"""Role schedule's preflight under ansible-playbook: a job must run its application's `current` release (role app
switches it only to a release that passed its gate), never one release's own path; ONE ansible-playbook run."""
from __future__ import annotations

import shutil

import pytest
from play_report import check_case, failures_by_play, preflight_play, run_plays

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
    job = {"name": "scan", "command": command, "on_calendar": "Mon..Fri *-*-* 06:30:00", "user": "root"}
    return preflight_play(name, "schedule", {"schedule_jobs": [job]}, "Commands",
                          "{{ schedule_jobs | map(attribute='command') }}")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[list[str], object]]:
    if not shutil.which("systemd-analyze"):
        pytest.skip("the preflight checks calendars with systemd-analyze")
    stdout = run_plays(tmp_path_factory.mktemp("schedule-preflight"), [case_play(n, c) for n, (c, _) in CASES.items()])
    return failures_by_play(stdout, "Commands")


@pytest.mark.parametrize("case", list(CASES))
def test_jobs_run_the_current_release(results, case):
    check_case(*results[case], CASES[case][1])
