"""schedule scenario: the application's jobs on app1 as timers in the NYSE's zone (issue 7).

Expectations are computed on the controller with the project's own libraries (tradeops_market for the
exchange's zone and trading days, tradeops_schedule.next_elapse for the calendar events) and compared with what
systemd on the host says. The host's clock is never changed: the trading-day checker takes injected dates.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import ansible.module_utils
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
MODULE_UTILS = str(ROOT / "plugins" / "module_utils")
if MODULE_UTILS not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(MODULE_UTILS)

from ansible.module_utils import tradeops_market as market  # noqa: E402
from ansible.module_utils import tradeops_schedule as schedule  # noqa: E402

INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"])
HOST_VARS = Path(__file__).resolve().parents[1] / "host_vars" / "app1.yml"
PREFIX = "tradeops-job"
TOOL = "/opt/tradeops-agent/venv/bin/python -m tradeops_agent.schedule"
CALENDAR = "/etc/tradeops/market-calendar.json"
METRICS = "/var/lib/prometheus/node-exporter/tradeops_job.prom"
LEDGER = "/opt/refapp/ledger.jsonl"
POLICY = "tradeops-session-policy"
WEB = "refapp-web.service"
HELD = "/var/lib/prometheus/node-exporter/tradeops_trading.prom"

testinfra_hosts = ["ansible://app1"]


def jobs() -> list[dict]:
    return yaml.safe_load(HOST_VARS.read_text())["schedule_jobs"]


def journal(host, unit: str) -> str:
    return host.run(f"journalctl --no-pager -n 40 -u {unit}").stdout


def host_now(host) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(host.check_output("date +%s")), dt.UTC)


def test_timers_installed_enabled_and_waiting(host):
    for job in jobs():
        timer = host.service(f"{PREFIX}-{job['name']}.timer")
        assert timer.is_enabled, journal(host, f"{PREFIX}-{job['name']}.timer")
        assert timer.is_running, journal(host, f"{PREFIX}-{job['name']}.timer")
        props = timer.systemd_properties
        zone = job.get("time_zone") or market.get_exchange("NYSE").zone
        assert props["TimersCalendar"].find(zone) >= 0, props["TimersCalendar"]


def test_next_elapse_equals_the_library(host):
    """systemd's NextElapseUSecRealtime == next_elapse(on_calendar, now) in the exchange's zone."""
    before = host_now(host)
    listed = json.loads(host.check_output("systemctl list-timers --all --output=json"))
    after = host_now(host)
    by_unit = {t["unit"]: t for t in listed}
    nyse_zone = market.get_exchange("NYSE").zone
    for unit, calendars, zone in timer_calendars():
        def first(after: dt.datetime, calendars: list[str] = calendars, zone: str = zone) -> dt.datetime:
            return min(schedule.next_elapse(c, after, zone) for c in calendars)
        expected = first(before)
        if expected <= after:  # it elapsed while we listed: systemd already shows the one after
            expected = first(expected)
        got = dt.datetime.fromtimestamp(by_unit[unit]["next"] / 1e6, dt.UTC)
        assert got == expected, f"{unit}: systemd {got.isoformat()} != library {expected.isoformat()}"
    assert nyse_zone == "America/New_York"


def timer_calendars() -> list[tuple[str, list[str], str]]:
    """(timer, calendar events without zone, zone) of every timer the role installs, from the scenario's
    variables and the market library's session events (not from the host's units)."""
    nyse = market.calendar("NYSE")
    zone = nyse.exchange.zone
    times = market.calendar_document("NYSE")["event_times"]
    window_day, window_time = yaml.safe_load(HOST_VARS.read_text())["schedule_maintenance_window"].split()
    out = []
    session_jobs = [{"name": "session-start", "at": "session_start"}, {"name": "session-stop", "at": "session_end"}]
    for job in [*jobs(), *session_jobs]:
        at = job.get("at")
        if at == "maintenance_window":
            calendars = [f"{window_day} *-*-* {window_time}:00"]
        elif at:
            calendars = [f"Mon..Fri *-*-* {t}:00" for t in times[at]]
        else:
            calendars = [job["on_calendar"]]
        out.append((f"{PREFIX}-{job['name']}.timer", calendars, job.get("time_zone") or zone))
    out.append((f"{POLICY}.timer", [f"Mon..Fri *-*-* {t}:00" for t in times["market_open"] + times["market_close"]],
                zone))
    return out


def test_daily_scan_runs_at_0630_new_york_in_winter_and_summer():
    winter = schedule.next_elapse("Mon..Fri *-*-* 06:30:00", dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
                                  "America/New_York")
    summer = schedule.next_elapse("Mon..Fri *-*-* 06:30:00", dt.datetime(2026, 7, 6, tzinfo=dt.UTC),
                                  "America/New_York")
    assert winter.astimezone(dt.UTC).hour == 11 and summer.astimezone(dt.UTC).hour == 10


def test_calendar_on_the_host_is_the_library_s(host):
    doc = json.loads(host.file(CALENDAR).content_string)
    assert host.file(CALENDAR).mode == 0o644
    expected = market.calendar_document("NYSE", doc["years"])
    assert doc == expected


@pytest.mark.parametrize(("day", "code"), [("2026-11-26", 1), ("2026-11-27", 0), ("2026-11-28", 1),
                                          ("2026-12-25", 1), ("2026-12-24", 0), ("2026-07-03", 1)])
def test_trading_days_only_condition_at_injected_dates(host, day, code):
    """The daily-scan's ExecCondition, as its user, at injected dates: exit 1 refuses, 0 passes."""
    expected = market.calendar("NYSE").day(dt.date.fromisoformat(day)).regular is not None
    assert code == (0 if expected else 1)
    unit = host.file(f"/etc/systemd/system/{PREFIX}-daily-scan.service").content_string
    condition = re.search(r"^ExecCondition=(.*)$", unit, re.MULTILINE).group(1)
    run = host.run(f"runuser -u refapp -- {condition} --date {day}")
    assert run.rc == code, run.stdout + run.stderr
    assert ("is a NYSE trading day" if code == 0 else "is not a NYSE trading day") in run.stdout


def test_condition_errors_fail_never_skip(host):
    assert host.run(f"{TOOL} check-day --calendar {CALENDAR} --date 2031-01-02").rc == 255
    assert host.run(f"{TOOL} check-day --calendar /nonexistent.json").rc == 255


def test_trading_days_only_job_today_follows_the_calendar(host):
    """Started now (the real clock): runs on a NYSE trading day, is skipped (not failed) on any other day."""
    unit = f"{PREFIX}-daily-scan.service"
    before = host.check_output("journalctl -u %s -o cat --no-pager | wc -l", unit)
    host.run_expect([0], f"systemctl start {unit}")
    today = host_now(host).astimezone(market.get_exchange("NYSE").tzinfo).date()
    trading = market.calendar("NYSE").day(today).regular is not None
    props = host.service(unit).systemd_properties
    assert props["ActiveState"] == "inactive", journal(host, unit)
    new = host.check_output("journalctl -u %s -o cat --no-pager | tail -n +%s", unit, str(int(before) + 1))
    if trading:
        assert props["Result"] == "success" and '"job":"daily-scan"' in new, new
    else:
        assert props["Result"] == "exec-condition", new
        assert f"{today.isoformat()} is not a NYSE trading day" in new, new
        assert '"job":"daily-scan"' not in new, new


@pytest.mark.parametrize("name", ["weekly-analysis", "health-check", "log-cleanup"])
def test_application_jobs_run_in_their_sandbox(host, name):
    """The reference app's own jobs succeed as refapp under the hardened unit (SQLite written), metric 1."""
    unit = f"{PREFIX}-{name}.service"
    run = host.run(f"systemctl start {unit}")
    assert run.rc == 0, journal(host, unit)
    assert host.service(unit).systemd_properties["Result"] == "success", journal(host, unit)
    assert f'tradeops_job_last_success{{task="{name}"}} 1' in host.file(METRICS).content_string, journal(host, unit)


def test_two_concurrent_starts_run_once(host):
    host.run_expect([0], "truncate -s 0 /var/lib/schedule-test/runs")
    unit = f"{PREFIX}-slow.service"
    host.run_expect([0], f"systemctl start --no-block {unit}")
    time.sleep(1)
    host.run_expect([0], f"systemctl start --no-block {unit}")
    host.run_expect([0], f"systemctl start --no-block {unit}")
    deadline = time.monotonic() + 30
    while host.service(unit).systemd_properties["ActiveState"] != "inactive" and time.monotonic() < deadline:
        time.sleep(1)
    runs = host.file("/var/lib/schedule-test/runs").content_string.split()
    assert len(runs) == 1, runs
    metric = host.file(METRICS).content_string
    assert 'tradeops_job_last_success{task="slow"} 1' in metric, metric


def test_failing_job_sets_the_metric_to_zero(host):
    unit = f"{PREFIX}-fails.service"
    run = host.run(f"systemctl start {unit}")
    assert run.rc != 0
    metric = host.file(METRICS).content_string
    assert 'tradeops_job_last_success{task="fails"} 0' in metric, metric + journal(host, unit)
    assert re.search(r'tradeops_job_last_run_timestamp_seconds\{task="fails"\} \d', metric), metric
    assert "tradeops_job_last_success=0" in journal(host, unit)


@pytest.mark.parametrize("unit", [f"{PREFIX}-daily-scan.service", f"{PREFIX}-session-stop.service",
                                  f"{POLICY}.service"])
def test_units_are_hardened(host, unit):
    out = host.run(f"systemd-analyze security --offline=yes --threshold=20 {unit}")
    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout).group(1))
    assert score <= 2.0, out.stdout


# --------------------------------------------------------------------------- trading hours (seed 003)


@contextlib.contextmanager
def injected_clock(host, when: str) -> Iterator[None]:
    """TRADEOPS_MARKET_NOW in systemd's manager environment: every unit started meanwhile (the jobs'
    conditions, the session policy) sees this instant. The host's clock is not touched."""
    host.run_expect([0], f"systemctl set-environment TRADEOPS_MARKET_NOW={when}")
    try:
        yield
    finally:
        host.run_expect([0], "systemctl unset-environment TRADEOPS_MARKET_NOW")


def start(host, unit: str) -> dict:
    host.run(f"systemctl start {unit}")
    return host.service(unit).systemd_properties


def test_policy_and_session_units_installed(host):
    assert host.service(f"{POLICY}.service").is_enabled  # at boot: /run's drop-ins do not survive a reboot
    assert host.service(f"{POLICY}.timer").is_running
    for name in ("session-start", "session-stop", "eod-close", "weekly-restart"):
        assert host.service(f"{PREFIX}-{name}.timer").is_running, journal(host, f"{PREFIX}-{name}.timer")


def test_close_job_runs_at_the_real_close_only(host):
    """eod-close's timer fires at 13:00 and 16:00 New York: on the early close of 2026-11-27 the 13:00 firing
    runs it and the 16:00 one is skipped with the reason; on a normal day the other way round."""
    unit = f"{PREFIX}-eod-close.service"
    cases = [("2026-11-27T13:00:02-05:00", "success", "market_close of 2026-11-27 at 13:00"),
             ("2026-11-27T16:00:02-05:00", "exec-condition", "not the market_close of 2026-11-27: it is at 13:00"),
             ("2026-11-25T16:00:02-05:00", "success", "market_close of 2026-11-25 at 16:00"),
             ("2026-11-26T16:00:02-05:00", "exec-condition", "not a NYSE trading day (Thanksgiving Day)")]
    for when, result, said in cases:
        with injected_clock(host, when):
            props = start(host, unit)
        assert props["Result"] == result, (when, journal(host, unit))
        assert said in journal(host, unit), (when, journal(host, unit))


def test_session_units_stop_after_hours_and_start_at_the_pre_market(host):
    stop, begin = f"{PREFIX}-session-stop.service", f"{PREFIX}-session-start.service"
    try:
        with injected_clock(host, "2026-11-25T20:00:03-05:00"):  # after-hours end of a normal day
            assert start(host, stop)["Result"] == "success", journal(host, stop)
        assert not host.service(WEB).is_running
        with injected_clock(host, "2026-11-26T04:00:03-05:00"):  # Thanksgiving: no pre-market
            assert start(host, begin)["Result"] == "exec-condition", journal(host, begin)
        assert not host.service(WEB).is_running
        with injected_clock(host, "2026-11-27T04:00:03-05:00"):  # the next trading day's pre-market
            assert start(host, begin)["Result"] == "success", journal(host, begin)
        assert host.service(WEB).is_running, journal(host, WEB)
    finally:
        host.run("systemctl start refapp-web.service")


def kill_and_wait(host, seconds: float = 10) -> dict:
    """kill -9 of the web service's main process, then its state after systemd's restart delay (2 s) and more."""
    before = host.service(WEB).systemd_properties
    host.run_expect([0], f"kill -9 {before['MainPID']}")
    deadline = time.monotonic() + seconds
    props = host.service(WEB).systemd_properties
    while time.monotonic() < deadline:
        time.sleep(1)
        props = host.service(WEB).systemd_properties
    return {"before": before, "after": props}


def test_trading_service_not_restarted_in_session_but_alerted(host):
    policy = f"{POLICY}.service"
    try:
        with injected_clock(host, "2026-11-25T10:15:00-05:00"):
            assert start(host, policy)["Result"] == "success", journal(host, policy)
        assert host.service(WEB).systemd_properties["Restart"] == "no"
        seen = kill_and_wait(host)
        assert seen["after"]["ActiveState"] == "failed", seen["after"]["ActiveState"]
        assert seen["after"]["NRestarts"] == seen["before"]["NRestarts"]
        assert f'tradeops_trading_restart_held{{unit="{WEB}"}} 1' in host.file(HELD).content_string

        with injected_clock(host, "2026-11-25T16:00:02-05:00"):  # the close: released, the held unit started
            assert start(host, policy)["Result"] == "success", journal(host, policy)
        assert "failed while its restart was held; restarting it" in journal(host, policy)
        deadline = time.monotonic() + 30  # queued by the policy (--no-block), started once it has finished
        while not host.service(WEB).is_running and time.monotonic() < deadline:
            time.sleep(1)
        assert host.service(WEB).is_running, journal(host, WEB)
        assert host.service(WEB).systemd_properties["Restart"] == "on-failure"
        assert f'tradeops_trading_restart_held{{unit="{WEB}"}} 0' in host.file(HELD).content_string

        seen = kill_and_wait(host, 15)  # outside the session systemd restarts it
        assert seen["after"]["ActiveState"] == "active", journal(host, WEB)
        assert int(seen["after"]["NRestarts"]) == int(seen["before"]["NRestarts"]) + 1
    finally:
        host.run("systemctl start refapp-web.service")


def test_override_reason_lands_in_the_ledger(host):
    lines = [json.loads(line) for line in host.file(LEDGER).content_string.splitlines() if line.strip()]
    reasons = [rec["reason"] or "" for rec in lines if rec.get("action") == "summary" and rec.get("version") == "1.0.0"]
    assert any("override: molecule schedule hotfix in session" in r for r in reasons), lines[-3:]
    assert any("during the NYSE regular session" in r for r in reasons), lines[-3:]


def deploy(version: str, now: str) -> subprocess.CompletedProcess:
    cmd = ["ansible-playbook", "-i", str(INVENTORY), str(ROOT / "playbooks" / "deploy.yml"), "-l", "app1",
           "-e", f"app_version={version}", "-e", f"market_guard_now={now}"]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, timeout=600)


def test_guard_refuses_an_in_session_deploy_before_anything_changes(host):
    before = host.file(LEDGER).content_string
    run = deploy("3.0.0", "2026-11-25T11:00:00-05:00")
    assert run.returncode != 0, run.stdout[-2000:]
    said = " ".join((run.stdout + run.stderr).split())
    assert "deploy refused: NYSE is in its regular session" in said, said[-2000:]
    assert "Next window: from 2026-11-25T16:00:00-05:00" in said, said[-2000:]
    assert host.file(LEDGER).content_string == before
    assert "3.0.0" not in host.check_output("readlink /opt/refapp/current")


def test_guard_passes_outside_the_session(host):
    """Saturday noon in New York: the guard lets the deploy through (1.0.0 again: nothing to change)."""
    run = deploy("1.0.0", "2026-11-28T12:00:00-05:00")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "deploy refused" not in run.stdout
    assert "1.0.0-" in host.check_output("readlink /opt/refapp/current")
