"""maintenance scenario: tradeops-maintenance's timers on app1 (reference app on SQLite), Prometheus on mon1.

Each job is started as the timer would (``systemctl start <service>``) and what it did is checked on the host:
WAL on the live database (still the app's, app still healthy), only old cache files removed, report files with
real Prometheus figures; the job metric reaches Prometheus; a corrupted database fails the job (metric 0, the
ScheduledJobFailed alert fires). The tests run in file order and build on each other.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from pathlib import Path

import pytest
import testinfra

INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
TOOL = "/usr/local/bin/tradeops-maintenance"
PREFIX = "tradeops-maintenance"
DB = "/opt/refapp/shared/data/refapp.db"
SCRATCH = "/var/lib/tradeops-test/scratch.db"
CACHE = "/opt/refapp/shared/data/cache"
REPORTS = "/var/log/tradeops/reports"
TIMERS = {"sqlite": "Sun *-*-* 03:30:00", "cleanup": "Sun *-*-* 04:15:00",
          "report-daily": "*-*-* 00:20:00", "report-monthly": "*-*-01 00:40:00"}
RANDOMIZED_DELAY = 600
APP_UNIT = "refapp-web"
OUTSIDE = "/var/tmp/outside"  # noqa: S108 - on the lab host: a directory the cleanup must never touch

testinfra_hosts = ["ansible://app1"]


@pytest.fixture(scope="module")
def hosts():
    return {n: testinfra.get_host(f"ansible://{n}?ansible_inventory={INVENTORY}") for n in ("mon1", "app1")}


def py(host, code: str) -> str:
    return host.check_output("python3 -c %s", code)


def sql(host, path: str, statement: str) -> str:
    return py(host, f"import sqlite3; c = sqlite3.connect({path!r}); r = c.execute({statement!r}).fetchall(); "
                    "c.commit(); print(r[0][0] if r else '')").strip()


def prom_query(hosts, query: str) -> list[dict]:
    code = ("import urllib.request, urllib.parse, sys; sys.stdout.write(urllib.request.urlopen("
            f"'http://127.0.0.1:9090/api/v1/query?' + urllib.parse.urlencode({{'query': {query!r}}}), timeout=5)"
            ".read().decode())")
    return json.loads(py(hosts["mon1"], code))["data"]["result"]


def wait_for(what: str, check, timeout: float, every: float = 3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def start(host, job: str, expect_ok: bool = True):
    """Run a job the way its timer does; on an unexpected outcome show its journal."""
    result = host.run(f"systemctl start {PREFIX}-{job}.service")
    journal = host.run(f"journalctl -u {PREFIX}-{job}.service -n 40 --no-pager").stdout
    assert (result.rc == 0) == expect_ok, f"rc {result.rc}: {result.stderr}\n{journal}"
    return journal


def test_timers_installed_with_the_right_next_elapse(hosts):
    host = hosts["app1"]
    for job, calendar in TIMERS.items():
        timer = host.service(f"{PREFIX}-{job}.timer")
        assert timer.is_enabled and timer.is_running, job
        props = host.check_output(f"systemctl show -p Persistent -p RandomizedDelayUSec {PREFIX}-{job}.timer")
        assert "Persistent=yes" in props and "RandomizedDelayUSec=10min" in props, props
        nxt_text = host.check_output(f"systemctl show -P NextElapseUSecRealtime {PREFIX}-{job}.timer")
        nxt = int(host.check_output(f"date -d '{nxt_text.strip()}' +%s"))
        expected_text = re.search(r"Next elapse: (.+)", host.check_output(f"systemd-analyze calendar '{calendar}'"))
        expected = int(host.check_output(f"date -d '{expected_text.group(1).strip()}' +%s"))
        print(job, "calendar", expected, "timer", nxt, "delay", nxt - expected)
        assert 0 <= nxt - expected <= RANDOMIZED_DELAY, (job, expected, nxt)
    for job in TIMERS:
        out = host.check_output(f"systemd-analyze security {PREFIX}-{job}.service")
        score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
        print(job, "exposure", score)
        assert score <= 3.0, out


def test_sqlite_job_turns_wal_on_in_the_live_database(hosts):
    host = hosts["app1"]
    owner = host.file(DB).user
    if sql(host, DB, "PRAGMA journal_mode") != "delete":  # a verify run again: back to the app's own mode
        host.run_expect([0], f"systemctl stop {APP_UNIT}")
        sql(host, DB, "PRAGMA journal_mode = DELETE")
        host.run_expect([0], f"systemctl start {APP_UNIT}")
    assert sql(host, DB, "PRAGMA journal_mode") == "delete"  # the reference app leaves SQLite's default
    host.run_expect([0], f"rm -f {SCRATCH} {SCRATCH}-wal {SCRATCH}-shm; mkdir -p {os.path.dirname(SCRATCH)}")
    py(host, f"import sqlite3; c = sqlite3.connect({SCRATCH!r}); c.execute('CREATE TABLE t (x)'); "  # noqa: S608
             "c.executemany('INSERT INTO t VALUES (?)', [(i,) for i in range(5000)]); c.commit()")
    journal = start(host, "sqlite")
    assert "refapp: ok WAL on, integrity ok, analyzed, vacuumed" in journal, journal
    assert sql(host, DB, "PRAGMA journal_mode") == "wal"
    assert sql(host, SCRATCH, "PRAGMA journal_mode") == "wal"
    for suffix in ("", "-wal", "-shm"):  # created as the database's owner: the app can still write
        if host.file(DB + suffix).exists:
            assert host.file(DB + suffix).user == owner, suffix
    def ready():
        return host.run("curl -fsS http://127.0.0.1:8000/api/health/readiness").rc == 0
    wait_for("the app ready on its WAL database", ready, 30, every=1)
    prom = host.file("/var/lib/prometheus/node-exporter/tradeops_job.prom").content_string
    assert 'tradeops_job_last_success{task="maintenance-sqlite"} 1' in prom


def test_cleanup_job_removes_only_old_files(hosts):
    host = hosts["app1"]
    host.run_expect([0], f"rm -rf {CACHE} {OUTSIDE} && mkdir -p {CACHE}/sub {OUTSIDE} && "
                         f"echo old > {CACHE}/old.bin && echo old > {CACHE}/sub/old.txt && echo new > {CACHE}/new.bin "
                         f"&& echo keep > {OUTSIDE}/precious && ln -s {OUTSIDE}/precious {CACHE}/link && "
                         f"touch -d '10 days ago' {CACHE}/old.bin {CACHE}/sub/old.txt {OUTSIDE}/precious && "
                         f"touch -h -d '10 days ago' {CACHE}/link && chown -R refapp:refapp {CACHE}")
    start(host, "cleanup")
    assert not host.file(f"{CACHE}/old.bin").exists and not host.file(f"{CACHE}/sub/old.txt").exists
    assert not host.file(f"{CACHE}/link").exists  # the old link, never what it points to
    assert host.file(f"{CACHE}/new.bin").exists and host.file(OUTSIDE + "/precious").content_string == "keep\n"
    assert host.file(CACHE).is_directory


def test_report_jobs_write_reports_with_real_prometheus_figures(hosts):
    host = hosts["app1"]
    today = dt.datetime.now(dt.UTC)
    start(host, "report-daily")
    start(host, "report-monthly")
    for period, stamp in (("daily", today.strftime("%Y-%m-%d")), ("monthly", today.strftime("%Y-%m"))):
        base = f"{REPORTS}/app1-{period}-{stamp}"
        report = json.loads(host.file(f"{base}.json").content_string)
        markdown = host.file(f"{base}.md").content_string
        prom = report["prometheus"]
        print(period, json.dumps({k: prom.get(k) for k in ("cpu_percent", "memory_percent", "disk_percent",
                                                             "availability_percent", "alerts_fired", "error")}))
        assert "error" not in prom, prom
        for figure in ("cpu_percent", "memory_percent"):
            avg, peak = prom[figure]["avg"], prom[figure]["peak"]
            if period == "monthly" and avg is None:
                # a month is sampled every 10 min (aligned): a Prometheus minutes old may have no such point yet
                assert peak is None
                continue
            assert 0 <= avg <= peak <= 100, (figure, prom[figure])
        assert 0 < prom["availability_percent"]["liveness"] <= 100
        assert report["health"]["status"] == "healthy", report["health"]
        assert report["host_facts"]["hostname"] and "## Prometheus" in markdown and "| CPU |" in markdown
        assert host.file(f"{base}.json").mode == 0o640 and host.file(f"{base}.json").group == "adm"


def test_job_metric_is_scraped_by_prometheus(hosts):
    def scraped():
        got = {r["metric"]["task"]: r["value"][1] for r in
               prom_query(hosts, 'tradeops_job_last_success{instance="app1"}')}
        want = {"maintenance-sqlite", "maintenance-cleanup", "maintenance-report-daily", "maintenance-report-monthly"}
        return got if want <= set(got) and all(got[t] == "1" for t in want) else None
    print(wait_for("job metrics scraped", scraped, 60))


def test_a_corrupted_database_fails_the_job_and_the_metric_says_0(hosts):
    host = hosts["app1"]
    host.run_expect([0], f"dd if=/dev/urandom of={SCRATCH} bs=4096 seek=3 count=8 conv=notrunc status=none")
    journal = start(host, "sqlite", expect_ok=False)
    assert re.search(r"scratch: failed .*(malformed|integrity_check)", journal), journal
    assert "refapp: ok" in journal  # the healthy database is still maintained
    assert host.service(f"{PREFIX}-sqlite.service").systemd_properties["Result"] == "exit-code"

    def failed():
        got = prom_query(hosts, 'tradeops_job_last_success{instance="app1",task="maintenance-sqlite"}')
        return got if got and got[0]["value"][1] == "0" else None
    wait_for("metric 0 in Prometheus", failed, 60)

    def alert():
        got = prom_query(hosts, 'ALERTS{alertname="ScheduledJobFailed",instance="app1",task="maintenance-sqlite"}')
        return got or None
    print(wait_for("ScheduledJobFailed alert", alert, 60))


def test_app_logs_are_under_commons_logrotate_policy(hosts):
    host = hosts["app1"]
    assert host.file("/var/log/tradeops/refapp").linked_to == "/opt/refapp/shared/logs"
    assert host.service("logrotate.timer").is_enabled
    host.run_expect([0], "echo line > /opt/refapp/shared/logs/test.log && chown refapp:refapp "
                         "/opt/refapp/shared/logs/test.log")
    rotated = host.run("logrotate --force --state /var/tmp/logrotate-test.state /etc/logrotate.d/tradeops")
    assert rotated.rc == 0, rotated.stderr
    assert host.file("/opt/refapp/shared/logs/test.log.1").exists
