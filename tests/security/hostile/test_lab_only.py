"""The lab's unauthenticated S3 stand-in (role s3_lab: moto, any credentials accepted) never reaches a
production inventory (issue 20): no playbook but playbooks/lab.yml applies it (nor the lab's CA, role
lab_pki), and the role's first task refuses an inventory whose tradeops_environment is not 'lab',
before anything changes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "roles"))
from play_report import check_case, failures_by_play, preflight_play, run_plays  # noqa: E402 - after the path set-up

REFUSED = "runs only on an inventory that sets tradeops_environment: lab"


def roles_applied(node: Any) -> set[str]:
    """Names of the roles a playbook's YAML applies (roles lists, include_role/import_role)."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= roles_applied(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "roles" and isinstance(value, list):
                found |= {r if isinstance(r, str) else str(r.get("role", r.get("name"))) for r in value}
            elif key.rsplit(".", 1)[-1] in ("include_role", "import_role") and isinstance(value, dict):
                found.add(str(value.get("name")))
            found |= roles_applied(value)
    return found


@pytest.mark.parametrize("role", ["s3_lab", "lab_pki"])
def test_no_playbook_but_lab_yml_applies_a_lab_role(role):
    applying = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "playbooks").rglob("*.yml")
                      if role in roles_applied(yaml.safe_load(p.read_text())))
    assert applying == ["playbooks/lab.yml"]


def case_play(name: str, environment: str | None) -> dict[str, Any]:
    env = {} if environment is None else {"tradeops_environment": environment}
    return preflight_play(name, "s3_lab", env, "Passed", ["passed"])


CASES = {"production": ("production", REFUSED), "no environment set": (None, REFUSED),
         "the lab": ("lab", ["passed"])}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[list[str], object]]:
    stdout = run_plays(tmp_path_factory.mktemp("s3-lab-guard"), [case_play(n, e) for n, (e, _) in CASES.items()])
    return failures_by_play(stdout, "Passed")


@pytest.mark.parametrize("case", list(CASES))
def test_s3_lab_refuses_every_inventory_but_the_lab(results, case):
    check_case(*results[case], CASES[case][1])
