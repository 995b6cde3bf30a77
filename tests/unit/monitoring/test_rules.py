"""The alert rules of role prometheus under `promtool test rules`.

The rules template is rendered with the role's defaults (as Ansible would, for the
plain-valued defaults it uses); every alert gets at least one case where it fires
and one where it does not. promtool comes from Debian's `prometheus` package
(scripts/bootstrap.sh servers).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "prometheus"
EVAL = "15s"

# Each case: name, input series [(series, values)], series interval, eval_time, alertname,
# the label sets expected to fire (empty: must not fire). Interval 15s and the defaults'
# 3 consecutive breaches give for: 30s.
CPU = 'node_cpu_seconds_total{instance="h1",job="node",cpu="0",mode="idle"}'
MEM = ('node_memory_MemAvailable_bytes{instance="h1",job="node"}',
       'node_memory_MemTotal_bytes{instance="h1",job="node"}')
FS = '{instance="h1",job="node",device="/dev/sda1",fstype="ext4",mountpoint="/"}'
REQ = 'refapp_http_requests_total{instance="app1",job="app",service="web",method="GET",path="/",status="200"}'
ERR = 'refapp_http_request_errors_total{instance="app1",job="app",service="web"}'
LE = 'refapp_http_request_duration_seconds_bucket{instance="app1",job="app",service="web",path="/",le="%s"}'
H1 = {"instance": "h1"}


def latency(seconds_bucket: str) -> list[tuple[str, str]]:
    """100 requests/15 s, all slower than every bucket below `seconds_bucket`."""
    bounds = ["0.5", "1", "2.5", "5", "10", "+Inf"]
    return [(LE % b, "0+100x60" if bounds.index(b) >= bounds.index(seconds_bucket) else "0x60") for b in bounds]


def disk(avail: int) -> list[tuple[str, str]]:
    return [("node_filesystem_avail_bytes" + FS, f"{avail}x60"), ("node_filesystem_size_bytes" + FS, "1000x60")]


FSL = {"instance": "h1", "job": "node", "device": "/dev/sda1", "fstype": "ext4", "mountpoint": "/"}
CASES = [
    ("cpu 90 % warns", [(CPU, "0+1.5x60")], "15s", "10m", "HostCpuHigh", [H1 | {"severity": "warning"}]),
    ("cpu 99 % warns and pages", [(CPU, "0+0.15x60")], "15s", "10m", "HostCpuHigh",
     [H1 | {"severity": "warning"}, H1 | {"severity": "critical"}]),
    ("cpu 70 % is fine", [(CPU, "0+4.5x60")], "15s", "10m", "HostCpuHigh", []),
    ("cpu 90 % for one evaluation is not an alert", [(CPU, "0+15x40 400+1.5x2 430+15x20")], "15s", "10m15s",
     "HostCpuHigh", []),
    ("memory 90 %", [(MEM[0], "100x60"), (MEM[1], "1000x60")], "15s", "5m", "HostMemoryHigh",
     [{"instance": "h1", "job": "node", "severity": "warning"}]),
    ("memory 80 % is fine", [(MEM[0], "200x60"), (MEM[1], "1000x60")], "15s", "5m", "HostMemoryHigh", []),
    ("disk 87 %", disk(130), "15s", "5m", "HostDiskFull", [FSL | {"severity": "warning", "threshold": "85"}]),
    ("disk 92 %", disk(80), "15s", "5m", "HostDiskFull",
     [FSL | {"severity": "warning", "threshold": "85"}, FSL | {"severity": "warning", "threshold": "90"}]),
    ("disk 97 %", disk(30), "15s", "5m", "HostDiskFull",
     [FSL | {"severity": "warning", "threshold": t} for t in ("85", "90")]
     + [FSL | {"severity": "critical", "threshold": "95"}]),
    ("disk 80 % is fine", disk(200), "15s", "5m", "HostDiskFull", []),
    ("tmpfs full is ignored", [("node_filesystem_avail_bytes" + FS.replace("ext4", "tmpfs"), "0x60"),
                               ("node_filesystem_size_bytes" + FS.replace("ext4", "tmpfs"), "1000x60")],
     "15s", "5m", "HostDiskFull", []),
    ("node down", [('up{instance="h1",job="node"}', "0x60")], "15s", "5m", "InstanceDown",
     [{"instance": "h1", "job": "node", "severity": "critical"}]),
    ("node up", [('up{instance="h1",job="node"}', "1x60")], "15s", "5m", "InstanceDown", []),
    ("node down for one scrape only", [('up{instance="h1",job="node"}', "1x20 0 1x20")], "15s", "5m15s",
     "InstanceDown", []),
    ("app down", [('up{instance="app1",job="app"}', "0x60"), ('up{instance="h1",job="node"}', "0x60")],
     "15s", "5m", "ServiceDown", [{"instance": "app1", "job": "app", "severity": "critical"}]),
    ("app up", [('up{instance="app1",job="app"}', "1x60")], "15s", "5m", "ServiceDown", []),
    ("probe failed", [('probe_success{instance="app1",job="blackbox",probe="liveness",target="http://x/"}', "0x60")],
     "15s", "5m", "ProbeFailed",
     [{"instance": "app1", "job": "blackbox", "probe": "liveness", "target": "http://x/", "severity": "critical"}]),
    ("probe ok", [('probe_success{instance="app1",job="blackbox",probe="liveness",target="http://x/"}', "1x60")],
     "15s", "5m", "ProbeFailed", []),
    ("postgresql down behind its exporter", [('pg_up{instance="db1",job="postgres"}', "0x60"),
                                             ('redis_up{instance="db1",job="redis"}', "1x60")],
     "15s", "5m", "DataServiceDown", [{"instance": "db1", "job": "postgres", "service": "postgresql",
                                       "severity": "critical"}]),
    ("nginx down behind its exporter", [('nginx_up{instance="lb1",job="nginx"}', "0x60")], "15s", "5m",
     "DataServiceDown", [{"instance": "lb1", "job": "nginx", "service": "nginx", "severity": "critical"}]),
    ("data services up", [('pg_up{instance="db1",job="postgres"}', "1x60"), ('redis_up{instance="db1",job="redis"}',
                                                                              "1x60"),
                          ('nginx_up{instance="lb1",job="nginx"}', "1x60")], "15s", "5m", "DataServiceDown", []),
    ("redis down for one scrape only", [('redis_up{instance="db1",job="redis"}', "1x20 0 1x20")], "15s", "5m15s",
     "DataServiceDown", []),
    ("error rate 10 %", [(REQ, "0+100x60"), (ERR, "0+10x60")], "15s", "10m", "AppErrorRateHigh",
     [{"instance": "app1", "severity": "warning"}]),
    ("error rate 2 %", [(REQ, "0+100x60"), (ERR, "0+2x60")], "15s", "10m", "AppErrorRateHigh", []),
    ("no traffic, no error-rate alert", [(REQ, "0x60"), (ERR, "0x60")], "15s", "10m", "AppErrorRateHigh", []),
    ("p95 above 1 s", latency("2.5"), "15s", "10m", "AppLatencyHigh", [{"instance": "app1", "severity": "warning"}]),
    ("p95 above 5 s", latency("10"), "15s", "10m", "AppLatencyHigh",
     [{"instance": "app1", "severity": "warning"}, {"instance": "app1", "severity": "critical"}]),
    ("p95 under 0.5 s", latency("0.5"), "15s", "10m", "AppLatencyHigh", []),
    ("backup 27.8 h old", [('tradeops_backup_last_success_timestamp_seconds{instance="db1",job="node",set="db"}',
                          "-100000x60")], "15s", "5m", "BackupTooOld",
     [{"instance": "db1", "job": "node", "set": "db", "severity": "critical"}]),
    ("backup 2 h old", [('tradeops_backup_last_success_timestamp_seconds{instance="db1",job="node",set="db"}',
                         "-7200x60")], "15s", "5m", "BackupTooOld", []),
    ("verification failed", [('tradeops_backup_last_verified{instance="db1",job="node",set="db"}', "0x60")],
     "15s", "5m", "BackupVerificationFailed",
     [{"instance": "db1", "job": "node", "set": "db", "severity": "critical"}]),
    ("verification passed", [('tradeops_backup_last_verified{instance="db1",job="node",set="db"}', "1x60")],
     "15s", "5m", "BackupVerificationFailed", []),
    ("deploy rolled back",
     [('tradeops_deploy_last_outcome{instance="app1",job="node",app="refapp",outcome="rolled_back"}',
       "1x60")], "15s", "5m", "DeployFailed",
     [{"instance": "app1", "job": "node", "app": "refapp", "outcome": "rolled_back", "severity": "warning"}]),
    ("deploy succeeded", [('tradeops_deploy_last_outcome{instance="app1",job="node",app="refapp",outcome="success"}',
                           "1x60"),
                          ('tradeops_deploy_last_outcome{instance="app1",job="node",app="refapp",outcome="failed"}',
                           "0x60")], "15s", "5m", "DeployFailed", []),
    ("job failed", [('tradeops_job_last_success{instance="app1",job="node",task="screener"}', "0x60")], "15s", "5m",
     "ScheduledJobFailed", [{"instance": "app1", "job": "node", "task": "screener", "severity": "warning"}]),
    ("job succeeded", [('tradeops_job_last_success{instance="app1",job="node",task="screener"}', "1x60")], "15s", "5m",
     "ScheduledJobFailed", []),
    ("trading service held", [('tradeops_trading_restart_held{instance="app1",job="node",unit="refapp-engine.service"}',
                               "0 1x60")], "15s", "1m", "TradingServiceHeld",
     [{"instance": "app1", "job": "node", "unit": "refapp-engine.service", "severity": "critical"}]),
    ("trading service not held", [('tradeops_trading_restart_held{instance="app1",job="node",unit="e.service"}',
                                   "1 0x60")], "15s", "5m", "TradingServiceHeld", []),
]


def render_rules(**overrides: object) -> dict:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    values = {k: v for k, v in defaults.items() if not (isinstance(v, str) and "{{" in v)} | overrides
    breaches = values["prometheus_alert_consecutive_breaches"]
    interval = values["prometheus_evaluation_interval_seconds"]
    values["__prometheus_for"] = f"{(breaches - 1) * interval}s"
    # YAML, not HTML: no autoescape (as Ansible's templating).
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)  # noqa: S701
    text = env.from_string((ROLE / "templates" / "tradeops.rules.yml.j2").read_text()).render(values)
    return yaml.safe_load(text)


def expand(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


def annotations(rules: dict, labels: dict[str, str]) -> dict[str, str]:
    """The annotations promtool will report for an alert with these labels (label-only templates)."""
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == labels["alertname"] and all(
                    labels.get(k) == str(v) for k, v in rule.get("labels", {}).items()):
                return {k: expand(v, labels) for k, v in rule.get("annotations", {}).items()}
    raise AssertionError(f"no rule for {labels}")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install prometheus (scripts/bootstrap.sh servers)")
    return path


@pytest.fixture(scope="module")
def rules() -> dict:
    return render_rules()


def test_every_alert_has_a_firing_and_a_quiet_case(rules):
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    fires = {c[4] for c in CASES if c[5]}
    quiet = {c[4] for c in CASES if not c[5]}
    assert alerts - fires == set() and alerts - quiet == set()


def test_for_is_consecutive_breaches(rules):
    fors = {r["alert"]: r.get("for") for g in rules["groups"] for r in g["rules"]}
    assert fors["HostCpuHigh"] == "30s"
    assert render_rules(prometheus_alert_consecutive_breaches=5)["groups"][0]["rules"][0]["for"] == "60s"


def test_rules_pass_promtool(tmp_path, rules):
    rule_file = tmp_path / "tradeops.rules.yml"
    rule_file.write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool(), "check", "rules", str(rule_file)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = []
    for name, series, interval, eval_time, alertname, expected in CASES:
        exp = [{"exp_labels": labels, "exp_annotations": annotations(rules, labels | {"alertname": alertname})}
               for labels in expected]
        tests.append({"name": name, "interval": interval,
                      "input_series": [{"series": s, "values": v} for s, v in series],
                      "alert_rule_test": [{"eval_time": eval_time, "alertname": alertname, "exp_alerts": exp}]})
    test_file = tmp_path / "tests.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rule_file)], "evaluation_interval": EVAL, "tests": tests}))
    proc = subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]


def test_bad_extra_rule_is_refused_by_promtool(tmp_path):
    rule_file = tmp_path / "bad.yml"
    rule_file.write_text(yaml.safe_dump(render_rules(prometheus_extra_rules=[{"alert": "Bad", "expr": "up ==== 1"}])))
    check = subprocess.run([promtool(), "check", "rules", str(rule_file)], capture_output=True, text=True, check=False)
    assert check.returncode != 0
