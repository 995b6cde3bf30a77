"""monitoring scenario: node exporter on every host, the PostgreSQL and Redis exporters on db1, the
nginx exporter on lb1, Prometheus + Alertmanager + blackbox on mon1. Every target is up with real
values; a stopped app fires critical alerts that reach Alertmanager, the webhook receiver and the
SMTP sink (and resolve); a tmpfs on app1 filled past the threshold fires HostDiskFull while the
webhook receiver is down: Alertmanager retries (its failure counters rise, it does not crash) and
delivers once the receiver is back; a failed deploy publishes rolled_back and fires DeployFailed; a
broken rule leaves the running configuration alone.

The tests run in file order and build on each other.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import testinfra

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
SCENARIO = Path(__file__).resolve().parents[1]
HOOK_LOG = "/var/tmp/tradeops-hook.jsonl"  # noqa: S108 - on the lab host, written by the test's receiver
RULES = "/etc/prometheus/rules/tradeops.rules.yml"
APP_UNIT = "refapp-web"
SMTP_LOG = "/var/tmp/tradeops-smtp.jsonl"  # noqa: S108 - on the lab host, written by the test's SMTP sink
HOOK_PY = "/var/tmp/tradeops-hook.py"  # noqa: S108 - on the lab host
SMTP_PY = "/var/tmp/tradeops-smtp-sink.py"  # noqa: S108 - on the lab host
# Not under /mnt, /media, /run...: Debian's node_exporter excludes those mount points.
FILL_DIR = "/srv/tradeops-disk-test"
ROOT = "/opt/refapp"
# An SMTP server that keeps every message as a JSON line (Debian 12's Python 3.11 still has smtpd).
SMTP_SINK = r'''
import asyncore, email, email.policy, json, smtpd, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        msg = email.message_from_bytes(data, policy=email.policy.default)
        parts = [p.get_content() for p in msg.walk() if p.get_content_maintype() == "text"]
        with open(sys.argv[1], "a") as f:
            f.write(json.dumps({"from": mailfrom, "to": rcpttos, "subject": str(msg["Subject"]),
                                "body": "\n".join(parts)}) + "\n")
Sink(("127.0.0.1", 2525), None, decode_data=False)
asyncore.loop()
'''
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
    return {n: testinfra.get_host(f"ansible://{n}?ansible_inventory={INVENTORY}")
            for n in ("mon1", "app1", "db1", "lb1")}


def get_json(host, url: str):
    code = f"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    out = host.check_output("python3 -c %s", code)
    return json.loads(out)


def query(host, promql: str) -> dict[str, float]:
    """Prometheus instant query: {"label=value,...": value} of every series."""
    url = "http://127.0.0.1:9090/api/v1/query?query=" + urllib.parse.quote(promql)
    result = get_json(host, url)["data"]["result"]
    return {",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k != "__name__"): float(r["value"][1])
            for r in result}


def counter(host, name: str, **labels: str) -> float:
    """Sum of an Alertmanager counter's series that carry these labels (its own /metrics)."""
    text = host.check_output("python3 -c %s", "import urllib.request; "
                             "print(urllib.request.urlopen('http://127.0.0.1:9093/metrics').read().decode())")
    total = 0.0
    for line in text.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_unit(host, unit: str, script: str, code: str, log: str) -> None:
    host.run(f"systemctl stop {unit}; systemctl reset-failed {unit}")
    host.run_expect([0], f"cat > {script} <<'EOF'\n{code}\nEOF")
    host.run_expect([0], f"systemd-run --unit={unit} python3 {script} {log}")


def log_lines(host, path: str) -> list[dict]:
    return [json.loads(line) for line in host.run(f"cat {path}").stdout.splitlines() if line.strip()]


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
    for name, units in (("app1", ["prometheus-node-exporter"]),
                        ("db1", ["prometheus-node-exporter", "prometheus-postgres-exporter",
                                 "prometheus-redis-exporter"]),
                        ("lb1", ["prometheus-node-exporter", "prometheus-nginx-exporter"])):
        for unit in units:
            journal = hosts[name].run(f"journalctl -u {unit} -n 30 --no-pager").stdout
            assert hosts[name].service(unit).is_running, f"{name} {unit}: {journal}"
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
        want = {("node", "mon1", ""), ("node", "app1", ""), ("node", "db1", ""), ("node", "lb1", ""),
                ("app", "app1", ""), ("postgres", "db1", ""), ("redis", "db1", ""), ("nginx", "lb1", ""),
                ("blackbox", "app1", "liveness"), ("blackbox", "app1", "readiness"), ("blackbox", "lb1", "lb")}
        return got if want <= set(got) and all(got[w] == "up" for w in want) else None
    got = wait_for("every target up", up, 90)
    print(got)
    probes = get_json(hosts["mon1"], "http://127.0.0.1:9090/api/v1/query?query=probe_success")["data"]["result"]
    assert {r["metric"]["probe"]: r["value"][1] for r in probes} == {"liveness": "1", "readiness": "1", "lb": "1"}


def test_exporters_report_real_values(hosts):
    """The exporters reach their services: pg_up, redis_up, nginx_up 1, and figures that only a live
    service has (PostgreSQL's databases, Redis' clients, nginx's accepted connections)."""
    mon = hosts["mon1"]
    for promql, instance in (("pg_up", "db1"), ("redis_up", "db1"), ("nginx_up", "lb1")):
        values = wait_for(f"{promql} == 1", lambda q=promql: query(mon, q) or None, 60)
        print(promql, values)
        assert list(values.values()) == [1.0] and f"instance={instance}" in next(iter(values)), values
    databases = query(mon, 'pg_database_size_bytes{instance="db1"}')
    assert any("datname=postgres" in k for k in databases) and all(v > 0 for v in databases.values()), databases
    assert query(mon, 'redis_connected_clients{instance="db1"}') and query(mon, 'redis_uptime_in_seconds > 0')
    # the blackbox probe of the LB goes through nginx: its accepted connections count up
    assert max(query(mon, 'nginx_connections_accepted{instance="lb1"}').values()) > 0


def test_rules_loaded(hosts):
    groups = get_json(hosts["mon1"], "http://127.0.0.1:9090/api/v1/rules")["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"HostCpuHigh", "HostDiskFull", "ProbeFailed", "ServiceDown", "BackupTooOld", "DeployFailed"} <= names


def test_stopped_app_alerts_reach_alertmanager_and_webhook(hosts):
    mon, app = hosts["mon1"], hosts["app1"]
    mon.run(f"rm -f {HOOK_LOG} {SMTP_LOG}")
    start_unit(mon, "tradeops-test-hook", HOOK_PY, HOOK, HOOK_LOG)
    start_unit(mon, "tradeops-test-smtp", SMTP_PY, SMTP_SINK, SMTP_LOG)
    wait_for("the SMTP sink listening", lambda: mon.socket("tcp://127.0.0.1:2525").is_listening, 20, 1)
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

        def mailed(status: str):
            def check():
                return [m for m in log_lines(mon, SMTP_LOG) if m["subject"].startswith(f"[{status}")
                        and re.search(r"\b(ProbeFailed|ServiceDown) app1\b", m["subject"])] or None
            return check
        mails = wait_for("the critical alert's e-mail at the SMTP sink", mailed("FIRING"), 60)
        print(mails[0]["subject"])
        mail = mails[0]
        assert mail["from"] == "alertmanager@mon1.tradeops.test" and mail["to"] == ["oncall@tradeops.test"]
        assert "critical" in mail["subject"]
        for label in ("severity", "critical", "instance", "app1"):
            assert label in mail["body"], mail["body"][:2000]
    finally:
        app.run_expect([0], f"systemctl start {APP_UNIT}")
    wait_for("resolved notification at the webhook", notified("RESOLVED"), 120)
    wait_for("resolved e-mail at the SMTP sink", mailed("RESOLVED"), 60)
    # warnings go to the webhook only: no warning alert was mailed
    assert not [m for m in log_lines(mon, SMTP_LOG) if "warning" in m["subject"] and "critical" not in m["subject"]]
    mon.run("systemctl stop tradeops-test-hook")


def test_disk_full_fires_and_a_down_webhook_is_retried_until_it_is_back(hosts):
    """A 16 MB tmpfs on app1 filled to 97 %: HostDiskFull (critical, 95 %) fires for that mount only.
    The webhook receiver is down: Alertmanager's failure counters for the webhook integration rise
    (it retries), the process stays up; once the receiver starts, the notification arrives."""
    mon, app = hosts["mon1"], hosts["app1"]
    mon.run("systemctl stop tradeops-test-hook")
    mon.run(f"rm -f {HOOK_LOG}")
    am_pid = mon.check_output("systemctl show -P MainPID prometheus-alertmanager")
    requests_before = counter(mon, "alertmanager_notification_requests_failed_total", integration="slack")
    failed_before = counter(mon, "alertmanager_notifications_failed_total", integration="slack")
    # node_exporter runs in its own mount namespace (PrivateMounts, ProtectSystem): it sees a disk
    # mounted later only through mount propagation from a shared root, which systemd sets up at boot
    # on a real host and Docker does not give the lab's containers. Make it so, as on a real host.
    if "shared" not in app.check_output("findmnt -no PROPAGATION /"):
        app.run_expect([0], "mount --make-rshared / && systemctl restart prometheus-node-exporter")
        wait_for("node_exporter back", lambda: app.socket("tcp://9100").is_listening, 30, 1)
    app.run_expect([0], f"mkdir -p {FILL_DIR} && mount -t tmpfs -o size=16m tradeops-disk-test {FILL_DIR}")
    try:
        app.run_expect([0], f"fallocate -l 15900k {FILL_DIR}/fill")

        def firing():
            alerts = get_json(mon, "http://127.0.0.1:9090/api/v1/alerts")["data"]["alerts"]
            return [a["labels"] for a in alerts if a["labels"]["alertname"] == "HostDiskFull"
                    and a["state"] == "firing" and a["labels"].get("mountpoint") == FILL_DIR] or None
        labels = wait_for("HostDiskFull firing for the filled mount", firing, 90)
        print(labels)
        assert {lab["threshold"] for lab in labels} == {"85", "90", "95"}
        assert all(lab["instance"] == "app1" and lab["fstype"] == "tmpfs" for lab in labels)
        # nothing else of app1 is that full: the alert names the filled mount only
        others = [a for a in get_json(mon, "http://127.0.0.1:9090/api/v1/alerts")["data"]["alerts"]
                  if a["labels"]["alertname"] == "HostDiskFull" and a["labels"].get("mountpoint") != FILL_DIR]
        assert not others, others

        def retried():
            requests = counter(mon, "alertmanager_notification_requests_failed_total", integration="slack")
            failed = counter(mon, "alertmanager_notifications_failed_total", integration="slack")
            return (requests, failed) if requests >= requests_before + 2 and failed >= failed_before + 1 else None
        requests, failed = wait_for("Alertmanager's webhook failures rising while it is down", retried, 90)
        print(f"webhook down: failed requests {requests_before:g} -> {requests:g}, "
              f"failed notifications {failed_before:g} -> {failed:g}")
        assert mon.service("prometheus-alertmanager").is_running
        assert mon.check_output("systemctl show -P MainPID prometheus-alertmanager") == am_pid  # no crash, no restart
        journal = mon.check_output("journalctl -u prometheus-alertmanager -n 200 --no-pager")
        assert "Notify attempt failed" in journal or "Notify for alerts failed" in journal, journal[-3000:]

        start_unit(mon, "tradeops-test-hook", HOOK_PY, HOOK, HOOK_LOG)

        def delivered():
            return [json.loads(x["body"]) for x in log_lines(mon, HOOK_LOG)
                    if "HostDiskFull" in x["body"] and "FIRING" in x["body"] and FILL_DIR in x["body"]] or None
        body = wait_for("the HostDiskFull notification once the webhook is back", delivered, 90)[0]
        print(body)
        text = json.dumps(body)
        assert "severity=critical" in text and "instance=app1" in text
        assert mon.check_output("systemctl show -P MainPID prometheus-alertmanager") == am_pid
    finally:
        app.run(f"umount {FILL_DIR}; rmdir {FILL_DIR}")
    wait_for("HostDiskFull resolved at the webhook", lambda: [
        x for x in log_lines(mon, HOOK_LOG) if "HostDiskFull" in x["body"] and "RESOLVED" in x["body"]] or None, 90)
    mon.run("systemctl stop tradeops-test-hook tradeops-test-smtp")


def playbook(name: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(INVENTORY),
           str(PROJECT / "playbooks" / name)]
    for e in extra:
        cmd += ["-e", e]
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT, check=False, env=env)
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    return proc


def test_failed_deploy_publishes_rolled_back_and_fires_deploy_failed(hosts, tmp_path):
    """converge deployed 1.0.0 (success); a release that crashes on start fails its gate and is rolled
    back: app1's textfile metric says rolled_back, Prometheus scrapes it and DeployFailed fires."""
    mon, app = hosts["mon1"], hosts["app1"]
    series = 'tradeops_deploy_last_outcome{instance="app1",app="refapp"}'
    before = wait_for("the deploy metric of converge's deploy", lambda: query(mon, series) or None, 30)
    assert {k.split("outcome=")[1].split(",")[0]: v for k, v in before.items()} == {
        "success": 1.0, "failed": 0.0, "rolled_back": 0.0}
    assert not [a for a in get_json(mon, "http://127.0.0.1:9090/api/v1/alerts")["data"]["alerts"]
                if a["labels"]["alertname"] == "DeployFailed"]
    wheel = subprocess.run([sys.executable, str(PROJECT / "scripts" / "build_refapp.py"), "--version", "2.0.0",
                            "--fault", "crash", "--out", str(tmp_path)], capture_output=True, text=True,
                           check=True).stdout.strip()
    proc = playbook("deploy.yml", "app_version=2.0.0", f"app_source={wheel}", "app_health_deadline=10")
    assert proc.returncode != 0, "a deploy whose health gate fails must fail the play"
    prom = app.file("/var/lib/prometheus/node-exporter/tradeops_deploy.prom")
    assert prom.mode == 0o644
    assert 'tradeops_deploy_last_outcome{app="refapp",outcome="rolled_back"} 1' in prom.content_string
    last = json.loads(app.file(f"{ROOT}/ledger.jsonl").content_string.splitlines()[-1])
    assert last["action"] == "summary" and last["outcome"] == "rolled-back"

    def scraped():
        values = query(mon, series + " == 1")
        return values if any("outcome=rolled_back" in k for k in values) else None
    print(wait_for("rolled_back scraped by Prometheus", scraped, 60))
    duration = query(mon, 'tradeops_deploy_last_duration_seconds{instance="app1",app="refapp"}')
    assert 0 < next(iter(duration.values())) < 600, duration

    def deploy_failed():
        alerts = get_json(mon, "http://127.0.0.1:9093/api/v2/alerts")
        return [a["labels"] for a in alerts if a["labels"]["alertname"] == "DeployFailed"
                and a["labels"]["instance"] == "app1"] or None
    labels = wait_for("DeployFailed in Alertmanager", deploy_failed, 60)
    print(labels)
    assert labels[0]["outcome"] == "rolled_back" and labels[0]["app"] == "refapp"
    assert labels[0]["severity"] == "warning"


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
