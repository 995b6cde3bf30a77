"""Every alert rule has a runbook, and every runbook an alert rule.

The rules are rendered as test_rules.py renders them (its ``render_rules``), with the role's defaults and
with the ``prometheus_extra_rules`` of every inventory under ``inventory/`` (seed 004's backend rules).
Each alert must carry a ``runbook_url`` annotation equal to ``<prometheus_runbook_url_base>/<alert>.md``,
the page ``docs/runbooks/<alert>.md`` must exist with its three sections, the index
``docs/runbooks/README.md`` must link it, and a page whose alert no rule defines (an orphan) fails.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from test_rules import ROLE, render_rules

ROOT = Path(__file__).resolve().parents[3]
RUNBOOKS = ROOT / "docs" / "runbooks"
BASE = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["prometheus_runbook_url_base"]
SECTIONS = ("## What it means", "## Confirm", "## Fix")


def alert_rules(rules: dict) -> list[dict]:
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def inventory_extra_rules() -> dict[str, list[dict]]:
    """Inventory file (relative path) -> the prometheus_extra_rules it sets."""
    found = {}
    for path in sorted((ROOT / "inventory").rglob("*.yml")):
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and data.get("prometheus_extra_rules"):
            found[str(path.relative_to(ROOT))] = data["prometheus_extra_rules"]
    return found


EXTRA = inventory_extra_rules()


def missing_runbooks(rules: dict, base: str = BASE) -> list[str]:
    """What is wrong with the rules' runbook_url annotations and pages, one line each."""
    out = []
    for rule in alert_rules(rules):
        name = rule["alert"]
        url = (rule.get("annotations") or {}).get("runbook_url")
        if url is None:
            out.append(f"{name}: no runbook_url annotation")
        elif url != f"{base.rstrip('/')}/{name}.md":
            out.append(f"{name}: runbook_url {url!r} is not {base.rstrip('/')}/{name}.md")
        if not (RUNBOOKS / f"{name}.md").is_file():
            out.append(f"{name}: docs/runbooks/{name}.md is missing")
    return out


def test_every_default_alert_links_its_runbook():
    assert missing_runbooks(render_rules()) == []


@pytest.mark.parametrize("inventory", sorted(EXTRA))
def test_every_inventory_extra_rule_links_its_runbook(inventory):
    rules = render_rules(prometheus_extra_rules=EXTRA[inventory])
    assert missing_runbooks(rules) == []


def test_the_base_is_the_variable_and_a_rule_keeps_its_own_url():
    base = "https://git.example.com/ops/tradeops/-/blob/main/docs/runbooks/"
    own = {"alert": "ScheduledJobFailed", "expr": "up == 2", "annotations": {"runbook_url": "https://wiki/x"}}
    rules = render_rules(prometheus_runbook_url_base=base, prometheus_extra_rules=[own])
    urls = [r["annotations"]["runbook_url"] for r in alert_rules(rules)]
    assert urls[0] == "https://git.example.com/ops/tradeops/-/blob/main/docs/runbooks/HostCpuHigh.md"
    assert urls[-1] == "https://wiki/x"
    assert missing_runbooks({"groups": rules["groups"][:-1]}, base) == []


def test_a_rule_without_runbook_fails():
    """The check itself can fail: an annotation removed, a page that does not exist."""
    rules = render_rules(prometheus_extra_rules=[{"alert": "NoSuchRunbook", "expr": "up == 2"}])
    del alert_rules(rules)[0]["annotations"]["runbook_url"]
    assert missing_runbooks(rules) == ["HostCpuHigh: no runbook_url annotation",
                                       "NoSuchRunbook: docs/runbooks/NoSuchRunbook.md is missing"]


def test_no_orphan_runbook():
    alerts = {r["alert"] for r in alert_rules(render_rules())}
    alerts |= {r["alert"] for rules in EXTRA.values() for r in rules}
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages - alerts == set(), "runbook pages whose alert no rule defines"


def test_every_runbook_has_its_sections_and_is_in_the_index():
    index = (RUNBOOKS / "README.md").read_text()
    linked = set(re.findall(r"\]\(([A-Za-z0-9_]+)\.md\)", index))
    pages = sorted(p for p in RUNBOOKS.glob("*.md") if p.name != "README.md")
    assert pages
    for page in pages:
        text = page.read_text()
        assert text.startswith(f"# {page.stem}\n"), page.name
        assert [s for s in SECTIONS if f"\n{s}\n" not in text] == [], page.name
    assert linked == {p.stem for p in pages}
