"""tradeops_schedule (role schedule's host-side tool) and tradeops_market.calendar_document: the calendar file the
controller renders and the host checks, the calendar-event evaluator against systemd-analyze, the job metric
written through the shared writer, and one cron run with a real lock and real commands."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import re
import shutil
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from ansible.module_utils import tradeops_market as market
from ansible.module_utils import tradeops_schedule as ts

NY = "America/New_York"


@pytest.fixture(scope="module")
def nyse_doc() -> dict:
    return market.calendar_document("NYSE", [2026, 2027])


@pytest.fixture
def calendar_file(tmp_path: Path, nyse_doc: dict) -> Path:
    path = tmp_path / "calendar.json"
    path.write_text(json.dumps(nyse_doc))
    return path


# --------------------------------------------------------------------------- calendar document


def test_document_lists_holidays_and_early_closes(nyse_doc):
    assert nyse_doc["exchange"] == "NYSE" and nyse_doc["zone"] == NY and nyse_doc["years"] == [2026, 2027]
    assert nyse_doc["closed"]["2026-11-26"] == "Thanksgiving Day"
    assert nyse_doc["closed"]["2026-07-03"].startswith("Independence Day")
    assert nyse_doc["early_close"] == {"2026-11-27": "13:00", "2026-12-24": "13:00", "2027-11-26": "13:00"}
    assert not any(dt.date.fromisoformat(d).weekday() >= 5 for d in nyse_doc["closed"])


def test_document_agrees_with_the_calendar_every_day(nyse_doc):
    cal = market.calendar("NYSE")
    day = dt.date(2026, 1, 1)
    while day.year < 2028:
        trading, _ = ts.trading_day(nyse_doc, day)
        assert trading == (cal.day(day).regular is not None), day
        day += dt.timedelta(days=1)


def test_document_default_years_follow_the_injected_clock():
    doc = market.calendar_document("NSE", now="2025-12-31T20:00:00Z")  # already 2026 in Kolkata
    assert doc["years"][0] == 2026 and doc["zone"] == "Asia/Kolkata"


@pytest.mark.parametrize(("exchange", "years", "message"), [
    ("LSE", [2026, 2026], "unknown exchange 'LSE'"),
    ("NYSE", [1990, 1991], "outside the years its calendar covers"),
    ("NYSE", [2027, 2026], "must be [first, last]"),
    ("NYSE", "2026", "must be [first, last]"),
])
def test_document_bad_input(exchange, years, message):
    with pytest.raises(market.MarketCalendarError, match=re.escape(message)):
        market.calendar_document(exchange, years)


def test_document_includes_declared_closures(tmp_path):
    closures = tmp_path / "closures.yml"
    closures.write_text("closures:\n- exchange: NYSE\n  date: 2026-03-11\n  name: outage\n"
                        "- exchange: NYSE\n  date: 2026-03-12\n  name: short day\n  close: '12:00'\n")
    doc = market.calendar_document("NYSE", [2026, 2026], str(closures))
    assert doc["closed"]["2026-03-11"].startswith("outage")
    assert doc["early_close"]["2026-03-12"] == "12:00"


# --------------------------------------------------------------------------- check-day / check-calendar


@pytest.mark.parametrize(("day", "code", "why"), [
    ("2026-11-26", 1, "Thanksgiving Day"), ("2026-11-27", 0, "early close 13:00"), ("2026-11-28", 1, "weekend"),
    ("2026-11-30", 0, ""), ("2026-12-25", 1, "Christmas Day"),
])
def test_check_day(calendar_file, capsys, day, code, why):
    assert ts.main_cli(["check-day", "--calendar", str(calendar_file), "--date", day]) == code
    out = capsys.readouterr().out
    assert ("is a NYSE trading day" if code == 0 else "is not a NYSE trading day") in out
    assert why in out


def test_check_day_at_an_instant_uses_the_exchange_zone(calendar_file):
    # 03:00 UTC on Friday the 27th is still Thanksgiving (Thursday) in New York.
    assert ts.main_cli(["check-day", "--calendar", str(calendar_file), "--at", "2026-11-27T03:00:00Z"]) == 1
    assert ts.main_cli(["check-day", "--calendar", str(calendar_file), "--at", "2026-11-27T06:00:00Z"]) == 0


@pytest.mark.parametrize("args", [
    ["--date", "2031-01-02"],          # outside the years: an error, never a guess
    ["--date", "26-11-2026"],
    ["--at", "2026-11-27T03:00:00"],   # no offset
    ["--bogus"],
])
def test_check_day_errors_exit_255(calendar_file, capsys, args):
    assert ts.main_cli(["check-day", "--calendar", str(calendar_file), *args]) == 255


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.pop("zone"), "missing key(s) zone"),
    (lambda d: d.update(zone="Mars/Olympus"), "is not an IANA time zone"),
    (lambda d: d.update(years=[2027, 2026]), "years [2027, 2026] must be"),
    (lambda d: d["closed"].update({"2026-13-01": "x"}), "is not a date"),
    (lambda d: d["closed"].update({"2030-01-02": "x"}), "outside the years"),
    (lambda d: d["early_close"].update({"2026-11-27": "1pm"}), "is not a local time HH:MM"),
    (lambda d: d.update(format=2), "format 2 is not 1"),
])
def test_malformed_calendar_names_the_file_and_key(tmp_path, nyse_doc, capsys, mutate, message):
    doc = json.loads(json.dumps(nyse_doc))
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    assert ts.main_cli(["check-calendar", str(path)]) == 2
    assert ts.main_cli(["check-day", "--calendar", str(path), "--date", "2026-11-30"]) == 255
    err = capsys.readouterr().err
    assert str(path) in err and message in err


def test_calendar_not_json_or_missing(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert ts.main_cli(["check-calendar", str(bad)]) == 2
    assert ts.main_cli(["check-calendar", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert "not JSON (line 1" in err and "cannot be read" in err


# --------------------------------------------------------------------------- calendar events


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("spec", [
    "Mon..Fri *-*-* 06:30:00 America/New_York", "Sun *-*-* 10:00:00 America/New_York",
    "*-*-* *:0/15:00 America/New_York", "*-*-* 02:00:00 America/New_York", "Mon..Fri *-*-* 21:05:00 UTC",
    "Mon,Wed *-*-* 09:15,15:30 Asia/Kolkata", "daily UTC", "Sat,Sun *-*-* 04:00 America/New_York",
])
@pytest.mark.parametrize("base", ["2026-03-07T12:00:00Z", "2026-03-08T06:59:00Z", "2026-11-01T05:30:00Z",
                                  "2026-11-26T05:40:00Z", "2026-12-31T23:59:59Z"])
def test_next_elapse_equals_systemd(spec, base):
    """The evaluator against systemd's own: ``systemd-analyze calendar --base-time`` (systemd >= 252)."""
    after = dt.datetime.fromisoformat(base.replace("Z", "+00:00"))
    run = subprocess.run(["systemd-analyze", "calendar", f"--base-time=@{int(after.timestamp())}", spec],
                         capture_output=True, text=True, check=False, env={"TZ": "UTC", "LC_ALL": "C"})
    if run.returncode != 0 and "base-time" in run.stderr:
        pytest.skip("this systemd-analyze has no --base-time")
    assert run.returncode == 0, run.stderr
    utc = re.search(r"Next elapse: \w+ (\S+ \S+) UTC", run.stdout).group(1)
    expected = dt.datetime.fromisoformat(utc).replace(tzinfo=dt.UTC)
    assert ts.next_elapse(spec, after) == expected


def test_next_elapse_keeps_new_york_time_across_dst():
    winter = ts.next_elapse("Mon..Fri *-*-* 06:30:00", dt.datetime(2026, 3, 5, 12, tzinfo=dt.UTC), NY)
    summer = ts.next_elapse("Mon..Fri *-*-* 06:30:00", dt.datetime(2026, 3, 7, 12, tzinfo=dt.UTC), NY)
    assert winter == dt.datetime(2026, 3, 6, 11, 30, tzinfo=dt.UTC)
    assert summer == dt.datetime(2026, 3, 9, 10, 30, tzinfo=dt.UTC)
    # 02:30 does not exist on 2026-03-08 in New York: the next one is on the 9th.
    gap = ts.next_elapse("*-*-* 02:30:00", dt.datetime(2026, 3, 8, 6, tzinfo=dt.UTC), NY)
    assert gap.date() == dt.date(2026, 3, 9)


@pytest.mark.parametrize("spec", ["*-01-01 00:00:00", "Funday *-*-* 06:00", "*-*-* 25:00", "*-*-* 06:61",
                                  "Sat..Mon *-*-* 04:00",
                                  "monthly"])
def test_next_elapse_refuses_what_it_does_not_understand(spec):
    with pytest.raises(ts.ScheduleError, match="calendar event"):
        ts.next_elapse(spec, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


# --------------------------------------------------------------------------- metric


def _metric(path: Path, task: str) -> tuple[str, str]:
    text = (path / "tradeops_job.prom").read_text()
    success = re.search(rf'tradeops_job_last_success{{task="{task}"}} (\S+)', text).group(1)
    stamp = re.search(rf'tradeops_job_last_run_timestamp_seconds{{task="{task}"}} (\S+)', text).group(1)
    return success, stamp


@pytest.mark.parametrize(("result", "status", "value"), [
    ("success", "0", "1"), ("exit-code", "1", "0"), ("timeout", "", "0"), ("signal", "KILL", "0"),
    ("success", "3", "0"),
])
def test_record_from_service_result(tmp_path, monkeypatch, result, status, value):
    monkeypatch.setenv("SERVICE_RESULT", result)
    monkeypatch.setenv("EXIT_STATUS", status)
    assert ts.main_cli(["record", "--task", "scan", "--metrics-dir", str(tmp_path), "--unit", "none.service"]) == 0
    success, stamp = _metric(tmp_path, "scan")
    assert success == value and float(stamp) > 0


def test_record_skipped_run_writes_nothing(tmp_path):
    assert ts.main_cli(["record", "--task", "scan", "--metrics-dir", str(tmp_path), "--result", "exec-condition"]) == 0
    assert not (tmp_path / "tradeops_job.prom").exists()


def test_record_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SERVICE_RESULT", raising=False)
    assert ts.main_cli(["record", "--task", "scan", "--metrics-dir", str(tmp_path), "--result", ""]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert ts.main_cli(["record", "--task", "scan", "--metrics-dir", str(blocker), "--result", "success"]) == 3
    assert "could not write the job metric" in capsys.readouterr().err


# --------------------------------------------------------------------------- cron run


def test_run_succeeds_and_fails_with_metric(tmp_path):
    lock = str(tmp_path / "lock")
    out = tmp_path / "out"
    assert ts.main_cli(["run", "--task", "ok", "--lock", lock, "--metrics-dir", str(tmp_path), "--",
                        "/bin/sh", "-c", f"echo ran > {out}"]) == 0
    assert out.read_text() == "ran\n" and _metric(tmp_path, "ok")[0] == "1"
    assert ts.main_cli(["run", "--task", "bad", "--lock", lock, "--metrics-dir", str(tmp_path), "--",
                        "/bin/false"]) == 1
    assert _metric(tmp_path, "bad")[0] == "0"
    assert ts.main_cli(["run", "--task", "slow", "--lock", lock, "--timeout", "0.3", "--metrics-dir",
                        str(tmp_path), "--", "/bin/sleep", "5"]) == 124
    assert _metric(tmp_path, "slow")[0] == "0"


def test_run_is_skipped_while_the_lock_is_held(tmp_path, capsys):
    lock = tmp_path / "lock"
    out = tmp_path / "out"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert ts.main_cli(["run", "--task", "x", "--lock", str(lock), "--metrics-dir", str(tmp_path), "--",
                            "/bin/touch", str(out)]) == 0
    assert not out.exists() and not (tmp_path / "tradeops_job.prom").exists()
    assert "skipped: the previous run still holds" in capsys.readouterr().out


def test_run_skips_non_trading_days(tmp_path, calendar_file, capsys):
    out = tmp_path / "out"
    code = ts.run_job("scan", ["/bin/touch", str(out)], str(tmp_path / "lock"), str(calendar_file),
                      metrics_dir=str(tmp_path), now=lambda: dt.datetime(2026, 11, 26, 15, tzinfo=dt.UTC))
    assert code == 0 and not out.exists()
    assert "not a NYSE trading day (Thanksgiving Day)" in capsys.readouterr().out
    code = ts.run_job("scan", ["/bin/touch", str(out)], str(tmp_path / "lock"), str(calendar_file),
                      metrics_dir=str(tmp_path), now=lambda: dt.datetime(2026, 11, 27, 15, tzinfo=dt.UTC))
    assert code == 0 and out.exists()


def test_run_bad_input(tmp_path, capsys):
    assert ts.main_cli(["run", "--task", "x", "--lock", str(tmp_path / "l"), "--"]) == 2
    assert ts.main_cli(["run", "--task", "x", "--lock", str(tmp_path / "l"), "--user", "no-such-user-xyz", "--",
                        "/bin/true"]) == 2
    assert ts.main_cli(["run", "--task", "x", "--lock", str(tmp_path / "l"), "--", "/no/such/cmd"]) == 127
    err = capsys.readouterr()
    assert "no command given" in err.err and "does not exist" in err.err


# --------------------------------------------------------------------------- session events and policy

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def test_document_session_events_and_early_close_exceptions(nyse_doc):
    assert nyse_doc["events"] == {"session_start": "04:00", "market_open": "09:30", "market_close": "16:00",
                                  "session_end": "20:00"}
    assert nyse_doc["event_exceptions"]["2026-11-27"] == {"market_close": "13:00", "session_end": "17:00"}
    assert nyse_doc["event_times"]["market_close"] == ["13:00", "16:00"]
    assert nyse_doc["event_times"]["market_open"] == ["09:30"]
    nse = market.calendar_document("NSE", [2026, 2026])
    assert nse["events"] == {"session_start": "09:00", "market_open": "09:15", "market_close": "15:30",
                             "session_end": "15:30"}


_instants = st.datetimes(min_value=dt.datetime(2026, 1, 1, 6), max_value=dt.datetime(2027, 12, 30),
                         timezones=st.just(dt.UTC))


@settings(max_examples=300, deadline=None)
@given(when=_instants)
def test_host_regular_session_equals_the_controller_library(nyse_doc, when):
    """The host decides from the calendar file alone what the market library decides on the controller."""
    inside, _ = ts.in_regular_session(nyse_doc, when)
    assert inside == market.calendar("NYSE").session(when).is_open


@settings(max_examples=200, deadline=None)
@given(day=st.dates(min_value=dt.date(2026, 1, 1), max_value=dt.date(2027, 12, 31)),
       event=st.sampled_from(ts.EVENTS))
def test_exactly_one_timer_firing_is_the_event(nyse_doc, day, event):
    """Of the times a job's timer fires on a day (every time the event can have), check-event lets the one
    at the library's event time through and no other; on a non-trading day none."""
    tz = ZoneInfo(NY)
    expected = market.calendar("NYSE").events(day).get(event)
    passed = []
    for hhmm in nyse_doc["event_times"][event]:
        firing = dt.datetime.combine(day, dt.time.fromisoformat(hhmm), tzinfo=tz)
        if firing.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None) != firing.replace(tzinfo=None):
            continue  # no such local time (a DST gap)
        if ts.check_event(nyse_doc, event, firing.astimezone(dt.UTC))[0]:
            passed.append(firing)
    assert passed == ([expected] if expected else [])


@pytest.mark.parametrize(("at", "code", "text"), [
    ("2026-11-27T18:00:30Z", 0, "market_close of 2026-11-27 at 13:00"),  # early close, 13:00:30 New York
    ("2026-11-27T21:00:00Z", 1, "not the market_close of 2026-11-27: it is at 13:00"),
    ("2026-11-26T21:00:00Z", 1, "not a NYSE trading day (Thanksgiving Day)"),
    ("2026-07-06T20:04:00Z", 0, "market_close of 2026-07-06 at 16:00"),  # summer: 16:04 EDT, within 300 s
    ("2026-07-06T20:06:00Z", 1, "not the market_close"),
])
def test_check_event_cli(calendar_file, capsys, at, code, text):
    rc = ts.main_cli(["check-event", "--calendar", str(calendar_file), "--event", "market_close", "--at", at])
    assert rc == code and text in capsys.readouterr().out


def test_check_event_errors_exit_255(calendar_file, tmp_path, nyse_doc, capsys):
    assert ts.main_cli(["check-event", "--calendar", str(calendar_file), "--event", "lunch"]) == 255
    old = {k: v for k, v in nyse_doc.items() if k not in ("events", "event_exceptions", "event_times")}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert ts.main_cli(["check-event", "--calendar", str(path), "--event", "market_open"]) == 255
    assert "no session events" in capsys.readouterr().err
    bad = dict(nyse_doc, events={**nyse_doc["events"], "market_open": "9h30"})
    path.write_text(json.dumps(bad))
    assert ts.main_cli(["check-event", "--calendar", str(path), "--event", "market_open"]) == 255
    assert "events must give HH:MM" in capsys.readouterr().err


class FakeSystemd:
    """systemctl as the policy calls it: daemon-reload, show -P ActiveState, start."""

    def __init__(self, states: dict[str, str]):
        self.states = states
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        out = self.states.get(args[-1], "") if args[0] == "show" else ""
        if args[0] == "start":
            self.states[args[-1]] = "active"
        return subprocess.CompletedProcess(["systemctl", *args], 0, out + "\n", "")


def test_session_policy_holds_in_session_and_releases_after(tmp_path, nyse_doc):
    units = ["refapp-engine.service"]
    systemd = FakeSystemd({"refapp-engine.service": "active"})
    run = lambda at: ts.session_policy(nyse_doc, units, ts._instant(at), tmp_path / "run", "TOOL",  # noqa: E731
                                       str(tmp_path / "metrics"), systemctl=systemd, log=lambda _m: None)
    dropin = tmp_path / "run" / "refapp-engine.service.d" / ts.DROPIN_NAME

    held = run("2026-11-25T15:00:00Z")  # 10:00 New York
    assert held["action"] == "held" and held["changed"] == units and ("daemon-reload",) in systemd.calls
    text = dropin.read_text()
    assert "Restart=no" in text and "ExecStopPost=+TOOL held-metric --unit refapp-engine.service" in text
    systemd.calls.clear()
    assert run("2026-11-25T16:00:00Z")["changed"] == [] and systemd.calls == []  # idempotent, no reload

    systemd.states["refapp-engine.service"] = "failed"  # crashed in session: stays down
    released = run("2026-11-25T21:00:01Z")  # 16:00:01, after the close
    assert released["action"] == "released" and not dropin.exists()
    assert released["started"] == units and ("start", "--no-block", "refapp-engine.service") in systemd.calls
    prom = (tmp_path / "metrics" / "tradeops_trading.prom").read_text()
    assert 'tradeops_trading_restart_held{unit="refapp-engine.service"} 0' in prom

    # An early-close day: still held at 12:59, released at 13:00; a holiday: never held.
    assert run("2026-11-27T17:59:00Z")["action"] == "held"
    assert run("2026-11-27T18:00:00Z")["action"] == "released"
    assert run("2026-11-26T15:00:00Z")["action"] == "released"

    # A unit no longer listed loses its hold at the next run, in session too.
    assert run("2026-11-25T15:00:00Z")["changed"] == units and dropin.exists()
    gone = ts.session_policy(nyse_doc, [], ts._instant("2026-11-25T15:00:01Z"), tmp_path / "run", "TOOL",
                             None, systemctl=systemd, log=lambda _m: None)
    assert gone["changed"] == units and not dropin.exists()


@pytest.mark.parametrize(("args", "value"), [
    (["--result", "signal"], 1), (["--result", "exit-code"], 1), (["--result", "success"], 0), (["--started"], 0),
])
def test_held_metric_cli(tmp_path, args, value):
    assert ts.main_cli(["held-metric", "--unit", "e.service", "--metrics-dir", str(tmp_path), *args]) == 0
    prom = (tmp_path / "tradeops_trading.prom").read_text()
    assert f'tradeops_trading_restart_held{{unit="e.service"}} {value}' in prom


def test_session_policy_cli_bad_calendar(tmp_path, capsys):
    rc = ts.main_cli(["session-policy", "--calendar", str(tmp_path / "missing.json"), "--unit", "x.service"])
    assert rc == 2 and "cannot be read" in capsys.readouterr().err
