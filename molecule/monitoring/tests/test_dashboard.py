"""monitoring scenario: the shipped Grafana dashboard (roles/prometheus/files/grafana/tradeops-overview.json)
against the scenario's real Prometheus. Every panel's PromQL (targets[].expr, its template variables given the
value of Grafana's "All") runs as an instant query on mon1's /api/v1/query: it must be valid and return at least
one series, and each label its legend names must be on them.

The deploy panel's series come from converge's deploy of 1.0.0 (app1's tradeops_deploy.prom); no step of the
scenario backs up, so this test runs playbooks/backup.yml first (db1's set "db": backup, offsite to the lab S3,
verification) for the backup panel's series, and checks the panel shows that backup (minutes old, verified).

Sorted before test_monitoring.py: it runs on the converged hosts, before the alert tests stop and fill things.
"""
from __future__ import annotations

import json
import os
import re
import sys
import urllib.parse
from pathlib import Path

from test_monitoring import wait_for

sys.path.insert(0, str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "molecule" / ".testinfra"))
from testinfra_helpers import PROJECT, playbook

DASHBOARD = PROJECT / "roles" / "prometheus" / "files" / "grafana" / "tradeops-overview.json"
# Grafana's "All" of a multi-value variable is a regex that matches every value.
VARIABLES = {"instance": ".*"}

testinfra_hosts = ["ansible://mon1"]


def panel_queries() -> list[tuple[str, str, str]]:
    """(panel title, expr with the variables substituted, legendFormat) of every target of every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    declared = {v["name"] for v in dashboard["templating"]["list"]}
    assert declared == set(VARIABLES), f"template variables {declared}: give each a test value in VARIABLES"
    out = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\$\{?(\w+)\}?", lambda m: VARIABLES[m.group(1)], target["expr"])
            out.append((panel["title"], expr, target.get("legendFormat", "")))
    return out


def instant(host, expr: str) -> dict:
    """The API's answer to an instant query, an error's too (HTTP 400 carries errorType and error)."""
    url = "http://127.0.0.1:9090/api/v1/query?query=" + urllib.parse.quote(expr)
    code = ("import sys, urllib.error, urllib.request\n"
            f"try:\n    r = urllib.request.urlopen({url!r}, timeout=10)\n"
            "except urllib.error.HTTPError as e:\n    r = e\n"
            "sys.stdout.write(r.read().decode())")
    return json.loads(host.check_output("python3 -c %s", code))


def test_backup_recorded_for_the_backup_panel(host):
    proc = playbook("backup.yml")
    assert proc.returncode == 0, "playbooks/backup.yml failed"

    def scraped():
        got = {e: instant(host, e)["data"]["result"] for e in (
            'time() - tradeops_backup_last_success_timestamp_seconds{instance="db1",set="db"}',
            'tradeops_backup_last_verified{instance="db1",set="db"}')}
        return got if all(got.values()) else None
    got = wait_for("db1's backup metrics scraped", scraped, 60)
    print(got)
    age, verified = (float(r[0]["value"][1]) for r in got.values())
    assert 0 <= age < 900 and verified == 1.0, got


def test_every_panel_query_returns_series(host):
    queries = panel_queries()
    assert len(queries) >= 10, queries
    for title, expr, legend in queries:
        answer = instant(host, expr)
        assert answer["status"] == "success", f"{title}: {expr}: {answer}"
        series = answer["data"]["result"]
        print(f"{title}: {len(series)} series: {expr}")
        assert series, f"panel {title!r}: no series for {expr}"
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            assert all(label in s["metric"] for s in series), f"panel {title!r}: legend label {label} missing: {series}"


def test_deploy_panel_shows_converges_deploy(host):
    """Converge deployed 1.0.0 on app1: the deploy panel's outcome is success, with a duration."""
    outcome = instant(host, 'tradeops_deploy_last_outcome{instance="app1",app="refapp"} == 1')["data"]["result"]
    assert [s["metric"]["outcome"] for s in outcome] == ["success"], outcome
    duration = instant(host, 'tradeops_deploy_last_duration_seconds{instance="app1",app="refapp"}')["data"]["result"]
    assert 0 < float(duration[0]["value"][1]) < 600, duration

