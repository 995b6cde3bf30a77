"""tests/bench/scale.py's logic that does not need a lab: which settings are compared, and what a setting that
failed is reported with."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import scale


def test_forks_20_only_where_forks_10_makes_a_second_batch():
    assert "forks 20" not in scale.settings_for(9)
    assert "forks 20" in scale.settings_for(11)
    first = next(iter(scale.settings_for(9)))
    assert first.startswith("ansible.cfg") and scale.settings_for(9)[first] == ({}, [])


def test_failure_reason_is_the_fatal_line_not_the_empty_tail():
    text = ("ansible-playbook -i inv playbooks/site.yml exited 2:\nPLAY [lb]\nTASK [Gathering Facts]\n"
            "fatal: [lb1]: FAILED! => changed=false\n"
            "  msg: 'Error connecting: Error while fetching server API version'\n"
            "PLAY RECAP\nlb1 : ok=0 failed=1\n\n\n")
    reason = scale.failure_reason(text)
    assert reason.startswith("fatal: [lb1]: FAILED!") and "Error while fetching server API version" in reason
    assert scale.failure_reason("x exited 4:\nERROR! the playbook could not be found\n\n").startswith("ERROR!")
    assert scale.failure_reason("exited 1:\nsomething odd\n\n") == "something odd"
    assert scale.failure_reason("\n\n") == "(no output)"
