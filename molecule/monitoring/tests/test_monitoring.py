"""monitoring scenario: node exporter on mon1 and app1, Prometheus + Alertmanager + blackbox on
mon1. Targets are up, a stopped app fires an alert that reaches Alertmanager and the webhook
receiver (and resolves), a broken rule leaves the running configuration alone.

The tests run in file order and build on each other.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
SCENARIO = Path(__file__).resolve().parents[1]
HOOK_LOG = "/var/tmp/tradeops-hook.jsonl"  # noqa: S108 - on the lab host, written by the test's receiver
RULES = "/etc/prometheus/rules/tradeops.rules.yml"
APP_UNIT = "refapp-web"
HOOK = r'''
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(sys.argv[1], "a") as f:
            f.write(json.dumps({"path": self.path, "body": body.decode()}) + "\n")
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
http.server.HTTPServer(("127.0.0.1", 9999), H).serve_forever()
'''

testinfra_hosts = ["ansible://mon1"]


@pytest.fixture(scope="module")
def hosts():
    return {n: testinfra.get_host(f"ansible://{n}?ansible_inventory={INVENTORY}") for n in ("mon1", "app1")}


def get_json(host, url: str):
    code = f"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    out = host.check_output("python3 -c %s", code)
    return json.loads(out)


def wait_for(what: str, check, timeout: float, every: float = 3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def test_services_running_and_hardened(hosts):
    for name in ("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter", "prometheus-node-exporter"):
        journal = hosts["mon1"].run(f"journalctl -u {name} -n 30 --no-pager").stdout
        assert hosts["mon1"].service(name).is_running, journal
    assert hosts["app1"].service("prometheus-node-exporter").is_running
    for name in ("prometheus-node-exporter", "prometheus-alertmanager", "prometheus-blackbox-exporter"):
        out = hosts["mon1"].run(f"systemd-analyze security {name}.service").stdout
        score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
        print(name, score)
        assert score < 4.0, out


def test_textfile_collector_dir(hosts):
    host = hosts["app1"]
    host.run_expect([0], "echo 'tradeops_test_marker 1' > /var/lib/prometheus/node-exporter/test.prom")
    try:
        text = host.check_output("python3 -c %s", "import urllib.request; "
                                 "print(urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode())")
        assert "tradeops_test_marker 1" in text
    finally:
        host.run("rm -f /var/lib/prometheus/node-exporter/test.prom")


def test_targets_up(hosts):
    def up():
        targets = get_json(hosts["mon1"], "http://127.0.0.1:9090/api/v1/targets")["data"]["activeTargets"]
        got = {(t["labels"]["job"], t["labels"]["instance"], t["labels"].get("probe", "")): t["health"]
               for t in targets}
        want = {("node", "mon1", ""), ("node", "app1", ""), ("app", "app1", ""),
                ("blackbox", "app1", "liveness"), ("blackbox", "app1", "readiness")}
        return got if want <= set(got) and all(got[w] == "up" for w in want) else None
    got = wait_for("every target up", up, 60)
    print(got)
    probes = get_json(hosts["mon1"], "http://127.0.0.1:9090/api/v1/query?query=probe_success")["data"]["result"]
    assert {r["metric"]["probe"]: r["value"][1] for r in probes} == {"liveness": "1", "readiness": "1"}


def test_rules_loaded(hosts):
    groups = get_json(hosts["mon1"], "http://127.0.0.1:9090/api/v1/rules")["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"HostCpuHigh", "HostDiskFull", "ProbeFailed", "ServiceDown", "BackupTooOld", "DeployFailed"} <= names


def test_stopped_app_alerts_reach_alertmanager_and_webhook(hosts):
    mon, app = hosts["mon1"], hosts["app1"]
    mon.run("systemctl stop tradeops-test-hook; rm -f " + HOOK_LOG)
    mon.run_expect([0], f"cat > /var/tmp/hook.py <<'EOF'\n{HOOK}\nEOF")
    mon.run_expect([0], f"systemd-run --unit=tradeops-test-hook python3 /var/tmp/hook.py {HOOK_LOG}")
    app.run_expect([0], f"systemctl stop {APP_UNIT}")
    try:
        def in_alertmanager():
            alerts = get_json(mon, "http://127.0.0.1:9093/api/v2/alerts")
            return [a["labels"] for a in alerts if a["labels"].get("instance") == "app1"
                    and a["labels"]["alertname"] in ("ProbeFailed", "ServiceDown")] or None
        labels = wait_for("ProbeFailed/ServiceDown in Alertmanager", in_alertmanager, 90)
        assert all(lab["severity"] == "critical" for lab in labels)

        def notified(status: str):
            def check():
                text = mon.run(f"cat {HOOK_LOG}").stdout
                # Other alerts may fire too (a busy machine's CPU): only the stopped app's.
                return [json.loads(line) for line in text.splitlines()
                        if status in line and "app1" in line and re.search(r"ProbeFailed|ServiceDown", line)] or None
            return check
        firing = wait_for("firing notification at the webhook", notified("FIRING"), 60)
        body = json.loads(firing[0]["body"])
        print(body)
        assert firing[0]["path"] == "/hook"
        assert "severity=critical" in json.dumps(body) and "instance=app1" in json.dumps(body)
    finally:
        app.run_expect([0], f"systemctl start {APP_UNIT}")
    wait_for("resolved notification at the webhook", notified("RESOLVED"), 120)
    mon.run("systemctl stop tradeops-test-hook")


def test_broken_rule_fails_and_running_config_stays(hosts):
    mon = hosts["mon1"]
    before = mon.check_output(f"sha256sum {RULES}")
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(INVENTORY),
           str(SCENARIO / "broken_rule.yml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, check=False,
                          env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    print(proc.stdout[-3000:])
    assert proc.returncode != 0
    assert "promtool" in proc.stdout
    assert mon.check_output(f"sha256sum {RULES}") == before
    assert mon.service("prometheus").is_running
    groups = get_json(mon, "http://127.0.0.1:9090/api/v1/rules")["data"]["groups"]
    assert "Broken" not in {r["name"] for g in groups for r in g["rules"]}
    assert get_json(mon, "http://127.0.0.1:9090/api/v1/query?query=up")["status"] == "success"
