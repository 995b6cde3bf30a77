"""The shipped Grafana dashboard (roles/prometheus/files/grafana/tradeops-overview.json), without Grafana or a
Prometheus: every panel's PromQL is valid (``promtool check rules`` on the expressions as recording rules, as
test_rules.py checks the alert rules) and names only metrics and labels that the project's scrapes really carry,
each metric listed below with where it comes from. The monitoring molecule scenario runs the same queries against
a real Prometheus (molecule/monitoring/tests/test_dashboard.py).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible.module_utils import tradeops_backup, tradeops_deploy

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "roles" / "prometheus" / "files" / "grafana" / "tradeops-overview.json"
REFAPP = ROOT / "files" / "reference_app" / "refapp" / "metrics.py"
# Grafana's "All" of a multi-value variable: a regex that matches every value.
VARIABLES = {"instance": ".*"}
# Every scrape's target labels (templates/prometheus.yml.j2); the blackbox job's add probe and target.
SCRAPE = {"job", "instance"}
BLACKBOX = {"probe", "target"}
NODE = "node_exporter (role monitoring, Debian's prometheus-node-exporter)"
BACKUP = "tradeops-backup's textfile tradeops_backup.prom (plugins/module_utils/tradeops_backup.py _METRICS)"
DEPLOY = "app_deploy's textfile tradeops_deploy.prom (plugins/module_utils/tradeops_deploy.py METRICS)"
REF = "the reference app's /metrics, job app (files/reference_app/refapp/metrics.py)"
# metric -> (its own labels, where it comes from). A panel may use only these.
KNOWN: dict[str, tuple[set[str], str]] = {
    "up": (BLACKBOX, "Prometheus, one per target of every job"),
    "node_cpu_seconds_total": ({"cpu", "mode"}, NODE),
    "node_memory_MemAvailable_bytes": (set(), NODE),
    "node_memory_MemTotal_bytes": (set(), NODE),
    "node_filesystem_avail_bytes": ({"device", "fstype", "mountpoint"}, NODE),
    "node_filesystem_size_bytes": ({"device", "fstype", "mountpoint"}, NODE),
    "refapp_http_requests_total": ({"service", "method", "path", "status"}, REF),
    "refapp_http_request_errors_total": ({"service"}, REF),
    "refapp_http_request_duration_seconds_bucket": ({"service", "path", "le"}, REF),
    "probe_success": (BLACKBOX, "blackbox exporter on mon1 (role prometheus), job blackbox"),
    "tradeops_backup_last_success_timestamp_seconds": ({"set"}, BACKUP),
    "tradeops_backup_last_verified": ({"set"}, BACKUP),
    "tradeops_backup_last_verify_timestamp_seconds": ({"set"}, BACKUP),
    "tradeops_backup_last_size_bytes": ({"set"}, BACKUP),
    "tradeops_deploy_last_outcome": ({"app", "outcome"}, DEPLOY),
    "tradeops_deploy_last_duration_seconds": ({"app"}, DEPLOY),
    "tradeops_deploy_last_timestamp_seconds": ({"app"}, DEPLOY),
}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
            "inf", "nan"}
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def substitute(expr: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: VARIABLES[m.group(1)], expr)


def targets() -> list[tuple[str, str, str]]:
    """(panel title and refId, expr with the variables substituted, legendFormat) of every panel's targets."""
    return [(f"{p['title']} {t['refId']}", substitute(t["expr"]), t.get("legendFormat", ""))
            for p in dashboard()["panels"] for t in p["targets"]]


def metrics_and_labels(expr: str) -> tuple[set[str], dict[str, set[str]], set[str]]:
    """The metric names of an expression, the label names each selector matches on, and the labels of its
    by/without/on/ignoring/group_* clauses. A lexer for the PromQL the dashboard uses, not a parser."""
    matched: dict[str, set[str]] = {}
    for name, body in SELECTOR.findall(expr):
        matched.setdefault(name, set()).update(MATCHER.findall(body))
    grouping = {label.strip() for _kw, labels in GROUPING.findall(expr) for label in labels.split(",") if label.strip()}
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = GROUPING.sub(" ", re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare))
    names = {m.group(1) for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()", bare)
             if m.group(1).lower() not in KEYWORDS}
    return names, matched, grouping


def test_every_target_has_an_expression():
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    assert all(p["targets"] and all(t.get("expr") for t in p["targets"]) for p in panels)
    assert {v["name"] for v in dashboard()["templating"]["list"]} == set(VARIABLES)


def test_expressions_are_valid_promql(tmp_path):
    """promtool parses each expression (as a recording rule); a typo or an unbalanced brace fails here."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is missing: apt-get install prometheus (scripts/bootstrap.sh servers)")
    rules = [{"record": f"dashboard:target_{i}", "expr": expr} for i, (_title, expr, _legend) in enumerate(targets())]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules)} rules found" in check.stdout, check.stdout


@pytest.mark.parametrize(("title", "expr", "legend"), targets(), ids=[t[0] for t in targets()])
def test_metrics_and_labels_exist(title, expr, legend):
    names, matched, grouping = metrics_and_labels(expr)
    assert names, f"{title}: no metric found in {expr}"
    unknown = names - set(KNOWN)
    assert not unknown, f"{title}: {sorted(unknown)} is produced by nothing in the project (KNOWN lists what is)"
    labels = set().union(*(KNOWN[n][0] for n in names)) | SCRAPE
    for name, used in matched.items():
        own = (KNOWN[name][0] | SCRAPE) if name else labels
        assert used <= own, f"{title}: {name} has no label {sorted(used - own)}"
    legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    assert grouping | legend_labels <= labels, f"{title}: no label {sorted((grouping | legend_labels) - labels)}"


def test_variable_query_uses_known_labels():
    for variable in dashboard()["templating"]["list"]:
        selector, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]).groups()
        names, matched, _grouping = metrics_and_labels(selector)
        assert names <= set(KNOWN) and label in SCRAPE, variable
        assert all(used <= KNOWN[name][0] | SCRAPE for name, used in matched.items()), variable


def test_known_metrics_are_written_by_their_source():
    """The list above stays true: the project's own metrics are still named so where they are produced."""
    # write_metrics() writes the backup set's metrics under the stem tradeops_backup.
    textfile = {f"tradeops_backup_{m}" for m in tradeops_backup._METRICS} | \
        {f"{tradeops_deploy.METRICS_STEM}_{m}" for m in tradeops_deploy.METRICS}
    refapp = REFAPP.read_text()
    for name, (_labels, source) in KNOWN.items():
        if source in (BACKUP, DEPLOY):
            assert name in textfile, f"{name}: not in {source}"
        elif source == REF:
            assert name in refapp, f"{name}: not in {REFAPP}"
    assert set(tradeops_deploy.METRIC_OUTCOMES) == {"success", "failed", "rolled_back"}


def test_lexer_finds_metrics_and_labels():
    names, matched, grouping = metrics_and_labels(
        'histogram_quantile(0.95, sum by (instance, le) (rate(a_bucket{path=~"/api/.*"}[5m]))) / on(app) b == 1')
    assert names == {"a_bucket", "b"} and matched == {"a_bucket": {"path"}} and grouping == {"instance", "le", "app"}
