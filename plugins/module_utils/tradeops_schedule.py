# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Application job schedules on a host: is today a trading day, the job metric, one cron run.

Standard library only. Shipped to hosts as ``tradeops_agent/schedule.py`` in the ops agent wheel
(``scripts/build_agent.py``); role ``schedule``'s units call it as ``python -m tradeops_agent.schedule``:

    ... check-calendar FILE                  (validate; role schedule's copy validate=)
    ... check-day --calendar /etc/tradeops/market-calendar.json [--date 2026-11-26 | --at ISO]
    ... check-event --calendar FILE --event market_close [--at ISO]   (ExecCondition= of a job with at:)
    ... session-policy --calendar FILE --unit refapp-engine.service [--at ISO] [--metrics-dir DIR]
    ... held-metric --unit U --metrics-dir DIR [--started]      (the hold drop-in's ExecStartPost=/ExecStopPost=)
    ... record --task daily-scan --metrics-dir DIR      (ExecStopPost=+: reads $SERVICE_RESULT, $EXIT_STATUS)
    ... run --task X --lock FILE [--calendar F] [--user U] [--timeout S] [--metrics-dir D] -- CMD ARGS

The host has no market library: the controller renders the exchange's calendar (holidays, early closes,
declared closures of the covered years) with ``tradeops_market.calendar_document`` into a JSON file, and
``check-day`` reads it. Weekends are never trading days. A date outside the file's years is an error,
never a guess.

``check-day`` exit codes are those systemd's ``ExecCondition=`` understands: 0 a trading day (the job
runs); 1 not a trading day (systemd skips the run, the unit is not failed, the reason is in the journal);
255 error: unreadable or malformed calendar, a date outside its years, bad arguments (systemd marks the
unit failed: a broken calendar never silently skips or runs the jobs).

Session events (the calendar file's ``events``, computed on the controller by ``tradeops_market``):
``session_start`` (pre-market / pre-open begins), ``market_open``, ``market_close`` (early closes included),
``session_end`` (after-hours ends). A job with ``at: market_close`` has a timer at every time the close can
have (13:00 and 16:00 New York); ``check-event`` (exit codes as ``check-day``) lets only the real one run.

The clock of ``check-day``, ``check-event`` and ``session-policy`` is ``--at``, else ``$TRADEOPS_MARKET_NOW``
(tests: ``systemctl set-environment`` reaches the units' conditions), else the real one.

``session-policy`` (seed 003's watchdog rule: never restart a trading service automatically in session) runs
at boot and at every open and close: inside the regular session it writes a runtime drop-in ``Restart=no`` for
each ``trading: true`` unit (``/run/systemd/system/<unit>.d/``, gone at reboot, re-applied by the boot run);
outside, it removes them and starts a unit that failed while held. A unit that stops abnormally while held
sets ``tradeops_trading_restart_held{unit}`` to 1 (alert ``TradingServiceHeld``); its next start sets 0.
Exit 0 applied; 2 bad arguments or calendar.

``record`` (the units' ``ExecStopPost=+``) writes ``tradeops_job_last_success{task=...}`` (1/0),
``tradeops_job_last_run_timestamp_seconds`` and ``tradeops_job_last_duration_seconds`` through the one
shared writer (``tradeops_maintenance.record_job`` -> ``tradeops_metrics.update_textfile``). A run skipped by
the condition (``SERVICE_RESULT=exec-condition``) records nothing. Exit 0 recorded or skipped; 2 bad
arguments; 3 the metric could not be written.

``run`` (role schedule's cron option): takes the job's lock without waiting (flock(2) with LOCK_NB, what
``flock -n`` does: a run while the last one is still going is skipped and says so), checks the trading day
when ``--calendar`` is given, runs the command as ``--user`` with a timeout, records the metric. Exit: the
command's code; 0 skipped (lock held or not a trading day); 124 timed out; 2 bad arguments or calendar.

``next_elapse`` evaluates the subset of systemd.time(7) calendar events the role documents (weekdays,
``*-*-*``, hour/minute/second lists and repetitions, a time zone suffix) so tests can compare systemd's
own next elapse with an independent computation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

try:
    from ansible.module_utils.tradeops_maintenance import record_job
    from ansible.module_utils.tradeops_metrics import atomic_write, update_textfile
except ImportError:  # in the ops agent wheel: tradeops_agent/{maintenance,metrics}.py (scripts/build_agent.py)
    from tradeops_agent.maintenance import record_job  # type: ignore[no-redef]
    from tradeops_agent.metrics import atomic_write, update_textfile  # type: ignore[no-redef]

TOOL = "tradeops-schedule"
CALENDAR_FORMAT = 1
EXIT_TRADING, EXIT_NOT_TRADING, EXIT_CONDITION_ERROR = 0, 1, 255
EXIT_OK, EXIT_ERROR, EXIT_CANNOT_RECORD, EXIT_TIMEOUT = 0, 2, 3, 124
SKIPPED_RESULT = "exec-condition"  # $SERVICE_RESULT of a run the ExecCondition= refused
_TIME = re.compile(r"^\d{2}:\d{2}\Z")
# Session events (tradeops_market.EVENTS; the host has no market library, the calendar file carries their times).
EVENTS = ("session_start", "market_open", "market_close", "session_end")
EVENT_TOLERANCE_SEC = 300  # check-event: how late after the event a timer's run still counts as that event
DROPIN_NAME = "50-tradeops-session.conf"
HELD_STEM = "tradeops_trading"
HELD_METRICS = {"restart_held": "1: this trading: true unit stopped abnormally during the regular session and is "
                                "not restarted automatically (role schedule's session policy); operator action "
                                "needed. 0 otherwise."}
_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


class ScheduleError(Exception):
    """Bad calendar, arguments or calendar event: nothing was done."""


# --------------------------------------------------------------------------- trading-day calendar


def _date(value: Any, where: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ScheduleError(f"{where}: {value!r} is not a date YYYY-MM-DD") from exc


def validate_calendar(doc: Any, source: str = "calendar") -> dict[str, Any]:
    """The calendar document checked (keys, zone, years, dates inside the years); ScheduleError names the key."""
    if not isinstance(doc, dict):
        raise ScheduleError(f"{source}: must be a JSON object rendered by role schedule (tradeops_market."
                            "calendar_document)")
    missing = {"format", "exchange", "zone", "years", "closed", "early_close"} - set(doc)
    if missing:
        raise ScheduleError(f"{source}: missing key(s) {', '.join(sorted(missing))}; re-run role schedule")
    if doc["format"] != CALENDAR_FORMAT:
        raise ScheduleError(f"{source}: format {doc['format']!r} is not {CALENDAR_FORMAT}; re-run role schedule")
    try:
        ZoneInfo(str(doc["zone"]))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"{source}: zone {doc['zone']!r} is not an IANA time zone") from exc
    years = doc["years"]
    if (not isinstance(years, list) or len(years) != 2 or not all(isinstance(y, int) for y in years)
            or years[0] > years[1]):
        raise ScheduleError(f"{source}: years {years!r} must be [first, last] (integers, first <= last)")
    closed, early = doc["closed"], doc["early_close"]
    if not isinstance(closed, dict) or not isinstance(early, dict):
        raise ScheduleError(f"{source}: closed and early_close must be objects keyed by date")
    for key, table in (("closed", closed), ("early_close", early)):
        for day, value in table.items():
            parsed = _date(day, f"{source}: {key}")
            if not years[0] <= parsed.year <= years[1]:
                raise ScheduleError(f"{source}: {key} {day} is outside the years {years[0]}-{years[1]}")
            if key == "closed" and not isinstance(value, str):
                raise ScheduleError(f"{source}: closed {day} must name the holiday (a string)")
            if key == "early_close" and (not isinstance(value, str) or not _TIME.match(value)):
                raise ScheduleError(f"{source}: early_close {day}: {value!r} is not a local time HH:MM")
    if "events" in doc:  # session events (role schedule since its jobs' at:); older files have none
        events, exceptions = doc["events"], doc.get("event_exceptions", {})
        if (not isinstance(events, dict) or set(events) != set(EVENTS)
                or not all(isinstance(v, str) and _TIME.match(v) for v in events.values())):
            raise ScheduleError(f"{source}: events must give HH:MM for each of {', '.join(EVENTS)}")
        if not isinstance(exceptions, dict):
            raise ScheduleError(f"{source}: event_exceptions must be an object keyed by date")
        for day, table in exceptions.items():
            _date(day, f"{source}: event_exceptions")
            if (not isinstance(table, dict) or not set(table) <= set(EVENTS)
                    or not all(isinstance(v, str) and _TIME.match(v) for v in table.values())):
                raise ScheduleError(f"{source}: event_exceptions {day}: must map events to local times HH:MM")
    return doc


def load_calendar(path: str | Path) -> dict[str, Any]:
    """Read and validate the calendar file the role rendered."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScheduleError(f"calendar {path}: cannot be read ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise ScheduleError(f"calendar {path}: not JSON (line {exc.lineno}: {exc.msg})") from exc
    return validate_calendar(doc, f"calendar {path}")


def trading_day(doc: dict[str, Any], day: dt.date) -> tuple[bool, str]:
    """(is a trading day, why): weekend, the holiday's name, 'early close HH:MM' or ''."""
    first, last = doc["years"]
    if not first <= day.year <= last:
        raise ScheduleError(f"{day.isoformat()} is outside the years the {doc['exchange']} calendar file covers "
                            f"({first}-{last}): re-run role schedule (schedule_calendar_years)")
    if day.weekday() >= 5:
        return False, "weekend"
    key = day.isoformat()
    if key in doc["closed"]:
        return False, doc["closed"][key]
    if key in doc["early_close"]:
        return True, f"early close {doc['early_close'][key]}"
    return True, ""


def exchange_today(doc: dict[str, Any], now: dt.datetime | None = None) -> dt.date:
    """The date at the exchange now (its own zone, not the host's)."""
    instant = now or dt.datetime.now(dt.UTC)
    return instant.astimezone(ZoneInfo(doc["zone"])).date()


# --------------------------------------------------------------------------- session events


def day_events(doc: dict[str, Any], day: dt.date) -> dict[str, dt.datetime]:
    """Exchange-local session events of ``day`` ({} when it is not a trading day)."""
    if "events" not in doc:
        raise ScheduleError(f"the {doc['exchange']} calendar file has no session events (written by an older "
                            "role schedule): re-run role schedule")
    if not trading_day(doc, day)[0]:
        return {}
    tz = ZoneInfo(doc["zone"])
    times = {**doc["events"], **doc.get("event_exceptions", {}).get(day.isoformat(), {})}
    return {name: dt.datetime.combine(day, dt.time.fromisoformat(t), tzinfo=tz) for name, t in times.items()}


def check_event(doc: dict[str, Any], event: str, now: dt.datetime,
                tolerance: float = EVENT_TOLERANCE_SEC) -> tuple[bool, str]:
    """(is ``now`` the ``event`` of today's session, give or take ``tolerance`` seconds after it, why).

    A job's timer fires at every time the event can have (16:00 and 13:00 for the NYSE close): this says
    which firing is the real one today (13:00 on an early-close day, 16:00 otherwise)."""
    if event not in EVENTS:
        raise ScheduleError(f"unknown session event {event!r}: use one of {', '.join(EVENTS)}")
    day = exchange_today(doc, now)
    events = day_events(doc, day)
    if not events:
        return False, f"{day.isoformat()} is not a {doc['exchange']} trading day ({trading_day(doc, day)[1]})"
    at = events[event]
    late = (now - at).total_seconds()
    when = at.strftime("%H:%M")
    if -1 <= late <= tolerance:  # a timer may fire a hair early (AccuracySec=1s)
        return True, f"{event} of {day.isoformat()} at {when} {doc['zone']}"
    return False, f"not the {event} of {day.isoformat()}: it is at {when} {doc['zone']}"


def in_regular_session(doc: dict[str, Any], now: dt.datetime) -> tuple[bool, str]:
    """(is ``now`` within today's regular session, a description)."""
    day = exchange_today(doc, now)
    events = day_events(doc, day)
    local = now.astimezone(ZoneInfo(doc["zone"])).strftime("%H:%M:%S")
    if not events:
        return False, f"{day.isoformat()} {local}: no {doc['exchange']} session ({trading_day(doc, day)[1]})"
    inside = events["market_open"] <= now < events["market_close"]
    span = f"{events['market_open']:%H:%M}-{events['market_close']:%H:%M}"
    return inside, (f"{day.isoformat()} {local} {doc['zone']}: "
                    f"{'inside' if inside else 'outside'} the {doc['exchange']} regular session {span}")


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScheduleError(f"systemctl {' '.join(args)}: {exc}") from exc


def dropin_text(unit: str, tool: str, metrics_dir: str | None, exchange: str) -> str:
    """The runtime drop-in that holds a trading unit's automatic restart during the regular session."""
    lines = [f"# Written by {TOOL} session-policy in the {exchange} regular session; removed at the close.",
             "# Restart=no: a crash in session leaves the unit down for an operator (alert TradingServiceHeld)",
             "# instead of restarting a trading process in the middle of the session.",
             "[Service]", "Restart=no"]
    if metrics_dir:
        lines += [f"ExecStartPost=+{tool} held-metric --unit {unit} --metrics-dir {metrics_dir} --started",
                  f"ExecStopPost=+{tool} held-metric --unit {unit} --metrics-dir {metrics_dir}"]
    return "\n".join(lines) + "\n"


def set_held_metric(metrics_dir: str | None, units: Sequence[str], held: bool) -> None:
    if metrics_dir and units:
        update_textfile(metrics_dir, HELD_STEM, HELD_METRICS, [({"unit": u}, {"restart_held": int(held)})
                                                               for u in units])


def session_policy(doc: dict[str, Any], units: Sequence[str], now: dt.datetime, dropin_dir: str | Path,
                   tool: str, metrics_dir: str | None = None,
                   systemctl: Callable[..., subprocess.CompletedProcess[str]] = _systemctl,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Hold (regular session) or release (any other time) the automatic restart of the trading units.

    Hold: a runtime drop-in ``Restart=no`` per unit, then ``daemon-reload`` if a file changed. Release: the
    drop-ins removed, ``daemon-reload``, and a unit that failed while held is started now (the restart
    that was held back), its metric reset. Idempotent: nothing is reloaded when nothing changed."""
    inside, why = in_regular_session(doc, now)
    changed: list[str] = []
    started: list[str] = []
    for unit in units:
        path = Path(dropin_dir) / f"{unit}.d" / DROPIN_NAME
        if inside:
            text = dropin_text(unit, tool, metrics_dir, doc["exchange"])
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, text, 0o644)
                changed.append(unit)
        elif path.exists():
            path.unlink()
            changed.append(unit)
    for stale in sorted(Path(dropin_dir).glob(f"*.d/{DROPIN_NAME}")):
        unit = stale.parent.name[:-2]
        if unit not in units:  # no longer a trading unit: its restart is not held any more
            stale.unlink()
            changed.append(unit)
    if changed:
        result = systemctl("daemon-reload")
        if result.returncode != 0:
            raise ScheduleError(f"systemctl daemon-reload failed: {result.stderr.strip()}")
    if not inside:
        for unit in units:
            state = systemctl("show", "-P", "ActiveState", unit).stdout.strip()
            if state == "failed":
                log(f"{unit}: failed while its restart was held; restarting it now that the session is over")
                # --no-block: at boot this service is ordered before the units; waiting would deadlock.
                result = systemctl("start", "--no-block", unit)
                if result.returncode == 0:
                    started.append(unit)
                else:
                    log(f"{unit}: start failed: {result.stderr.strip()}")
        set_held_metric(metrics_dir, units, False)
    action = "held" if inside else "released"
    log(f"session policy: {why}; automatic restart {action} for {', '.join(units) or 'no unit'}"
        + (f" (changed: {', '.join(changed)})" if changed else " (unchanged)"))
    return {"regular_session": inside, "why": why, "action": action, "changed": changed, "started": started}


# --------------------------------------------------------------------------- calendar events (subset)


def _field(text: str, low: int, high: int, what: str) -> list[int]:
    """'*', 'N', 'N/step', 'a,b' and 'a..b' of one time component."""
    out: set[int] = set()
    for part in text.split(","):
        start_text, _, step_text = part.partition("/")
        if start_text == "*":
            lo, hi = low, high
        elif ".." in start_text:
            a, b = start_text.split("..", 1)
            lo, hi = int(a), int(b)
        else:
            lo = int(start_text)
            hi = high if step_text else lo
        step = int(step_text) if step_text else 1
        if not (low <= lo <= hi <= high) or step < 1:
            raise ScheduleError(f"{what} {part!r} is outside {low}-{high}")
        out.update(range(lo, hi + 1, step))
    return sorted(out)


def parse_calendar_event(spec: str) -> tuple[set[int], list[int], list[int], list[int], str | None]:
    """(weekdays, hours, minutes, seconds, zone) of ``[Weekdays] *-*-* H:M[:S] [Zone]``; ScheduleError else."""
    shortcuts = {"minutely": "*-*-* *:*:00", "hourly": "*-*-* *:00:00", "daily": "*-*-* 00:00:00",
                 "weekly": "Mon *-*-* 00:00:00"}
    tokens = spec.split()
    if tokens and tokens[0] in shortcuts:
        tokens = shortcuts[tokens[0]].split() + tokens[1:]
    zone: str | None = None
    if tokens and (("/" in tokens[-1] and not any(c.isdigit() for c in tokens[-1])) or tokens[-1] == "UTC"):
        zone = tokens.pop()
    weekdays = set(range(7))
    if tokens and tokens[0][:1].isalpha():
        weekdays = set()
        for part in tokens.pop(0).split(","):
            a, _, b = part.partition("..")
            try:
                lo, hi = _WEEKDAYS[a[:3].lower()], _WEEKDAYS[(b or a)[:3].lower()]
            except KeyError as exc:
                raise ScheduleError(f"calendar event {spec!r}: unknown weekday in {part!r}") from exc
            if lo > hi:  # systemd refuses a range that wraps around the week too
                raise ScheduleError(f"calendar event {spec!r}: weekday range {part!r} runs backwards")
            weekdays.update(range(lo, hi + 1))
    if tokens and tokens[0] == "*-*-*":
        tokens.pop(0)
    if len(tokens) != 1 or tokens[0].count(":") not in (1, 2):
        raise ScheduleError(f"calendar event {spec!r}: supported here are '[Weekdays] [*-*-*] H:M[:S] [Zone]' "
                            "and minutely/hourly/daily/weekly")
    parts = tokens[0].split(":")
    try:
        hours = _field(parts[0], 0, 23, "hour")
        minutes = _field(parts[1], 0, 59, "minute")
        seconds = _field(parts[2], 0, 59, "second") if len(parts) == 3 else [0]
    except (ValueError, ScheduleError) as exc:
        raise ScheduleError(f"calendar event {spec!r}: {exc}") from exc
    return weekdays, hours, minutes, seconds, zone


def next_elapse(spec: str, after: dt.datetime, default_zone: str = "UTC") -> dt.datetime:
    """The first instant strictly after ``after`` that the calendar event matches, in UTC (aware datetimes in
    a DST fold do not compare equal across zones). A local time that does not exist (a DST gap) is skipped; an
    ambiguous one (the repeated hour) counts at its first occurrence only."""
    weekdays, hours, minutes, seconds, zone = parse_calendar_event(spec)
    tz = ZoneInfo(zone or default_zone)
    local = after.astimezone(tz)
    for offset in range(0, 15):
        day = local.date() + dt.timedelta(days=offset)
        if day.weekday() not in weekdays:
            continue
        for h in hours:
            for m in minutes:
                for s in seconds:
                    candidate = dt.datetime(day.year, day.month, day.day, h, m, s, tzinfo=tz)
                    back = candidate.astimezone(dt.UTC).astimezone(tz)
                    if back.replace(tzinfo=None) != candidate.replace(tzinfo=None):
                        continue  # in a DST gap: that local time does not exist
                    if candidate > after:
                        return candidate.astimezone(dt.UTC)
    raise ScheduleError(f"calendar event {spec!r}: no elapse within 15 days")  # pragma: no cover


# --------------------------------------------------------------------------- runs and the metric


def service_succeeded(result: str, exit_status: str) -> bool:
    """systemd's $SERVICE_RESULT ('success', 'exit-code', 'timeout', 'signal', ...) of the run."""
    return result == "success" and exit_status in ("", "0")


def _unit_duration(unit: str) -> float:
    """Seconds since the unit's main process started (0 when systemd cannot say)."""
    try:
        out = subprocess.run(["systemctl", "show", "-P", "ExecMainStartTimestampMonotonic", unit],
                             capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        started_us = int(out or 0)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0.0
    if started_us <= 0:
        return 0.0
    return max(0.0, time.clock_gettime(time.CLOCK_MONOTONIC) - started_us / 1e6)


def _user_ids(user: str | None) -> tuple[int, int] | None:
    if not user:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise ScheduleError(f"user {user!r} does not exist on this host") from exc
    return entry.pw_uid, entry.pw_gid


def run_job(task: str, command: Sequence[str], lock: str, calendar: str | None = None,
            user: str | None = None, timeout: float | None = None, metrics_dir: str | None = None,
            now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
            log: Callable[[str], None] = print) -> int:
    """One run of a job without systemd (cron): lock, trading day, command as ``user``, metric."""
    if not command:
        raise ScheduleError("no command given after --")
    ids = _user_ids(user)
    doc = load_calendar(calendar) if calendar else None
    Path(lock).parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{task}: skipped: the previous run still holds {lock}")
            return EXIT_OK
        if doc is not None:
            day = exchange_today(doc, now())
            trading, why = trading_day(doc, day)
            if not trading:
                log(f"{task}: skipped: {day.isoformat()} is not a {doc['exchange']} trading day ({why})")
                return EXIT_OK
        started = time.monotonic()
        kwargs: dict[str, Any] = {}
        if ids is not None and os.geteuid() == 0:
            kwargs = {"user": ids[0], "group": ids[1], "extra_groups": []}
        try:
            code = subprocess.run(list(command), timeout=timeout, check=False, **kwargs).returncode
        except subprocess.TimeoutExpired:
            log(f"{task}: timed out after {timeout} s")
            code = EXIT_TIMEOUT
        except OSError as exc:
            log(f"{task}: cannot run {command[0]!r}: {exc.strerror or exc}")
            code = 127
        record_job(metrics_dir, task, code == 0, time.monotonic() - started)
        log(f"{task}: {'succeeded' if code == 0 else f'failed (exit {code})'}")
        return code


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=TOOL, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Application jobs of role schedule: the trading-day condition, the job metric, one cron run.",
        epilog="exit codes: check-calendar 0 valid, 2 invalid; check-day 0 trading day, 1 not a trading day "
               "(ExecCondition skips the run), 255 error "
               "(bad calendar or date: the unit fails); record 0 recorded or skipped, 2 bad arguments, 3 metric not "
               "written; run: the command's code, 0 skipped, 124 timed out, 2 bad arguments or calendar.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check-day", help="exit 0 on a trading day of the calendar file, 1 otherwise")
    c.add_argument("--calendar", required=True, help="JSON calendar rendered by role schedule")
    when = c.add_mutually_exclusive_group()
    when.add_argument("--date", help="check this exchange-local date (YYYY-MM-DD) instead of today")
    when.add_argument("--at", help="check the exchange-local date at this ISO 8601 instant (with offset)")
    v = sub.add_parser("check-calendar", help="validate a calendar file (exit 0 valid, 2 invalid)")
    v.add_argument("calendar")
    r = sub.add_parser("record", help="write the job metric from systemd's $SERVICE_RESULT/$EXIT_STATUS")
    r.add_argument("--task", required=True)
    r.add_argument("--metrics-dir", required=True, help="node_exporter textfile directory")
    r.add_argument("--unit", help="the service (for the run's duration); default: the task's")
    r.add_argument("--result", default=os.environ.get("SERVICE_RESULT", ""), help="default: $SERVICE_RESULT")
    r.add_argument("--exit-status", default=os.environ.get("EXIT_STATUS", ""), help="default: $EXIT_STATUS")
    e = sub.add_parser("check-event", help="exit 0 when now is the session event of today (a job's at:), 1 not")
    e.add_argument("--calendar", required=True, help="JSON calendar rendered by role schedule")
    e.add_argument("--event", required=True, choices=EVENTS)
    e.add_argument("--at", help="this ISO 8601 instant (with offset) instead of now")
    e.add_argument("--tolerance", type=float, default=EVENT_TOLERANCE_SEC,
                   help=f"seconds after the event that still count as it (default {EVENT_TOLERANCE_SEC})")
    p = sub.add_parser("session-policy", help="hold (regular session) or release the trading units' restart")
    p.add_argument("--calendar", required=True, help="JSON calendar rendered by role schedule")
    p.add_argument("--unit", action="append", default=[], help="a trading: true unit (repeat)")
    p.add_argument("--at", help="this ISO 8601 instant (with offset) instead of now")
    p.add_argument("--dropin-dir", default="/run/systemd/system", help="runtime unit directory")
    p.add_argument("--metrics-dir", help="node_exporter textfile directory (tradeops_trading_restart_held)")
    h = sub.add_parser("held-metric", help="tradeops_trading_restart_held of a unit (its drop-in's ExecStopPost=)")
    h.add_argument("--unit", required=True)
    h.add_argument("--metrics-dir", required=True)
    h.add_argument("--started", action="store_true", help="the unit started: 0")
    h.add_argument("--result", default=os.environ.get("SERVICE_RESULT", ""), help="default: $SERVICE_RESULT")
    j = sub.add_parser("run", help="run a job once (cron): lock, trading day, command, metric")
    j.add_argument("--task", required=True)
    j.add_argument("--lock", required=True, help="lock file; a run while it is held is skipped")
    j.add_argument("--calendar", help="only on trading days of this calendar file")
    j.add_argument("--user", help="run the command as this user (when started as root)")
    j.add_argument("--timeout", type=float, help="seconds before the command is killed")
    j.add_argument("--metrics-dir", help="node_exporter textfile directory (none: no metric)")
    j.add_argument("argv", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    return parser


NOW_ENV = "TRADEOPS_MARKET_NOW"  # as tradeops_market: the injectable clock (tests); never the host's clock


def _instant(at: str | None) -> dt.datetime:
    """``--at`` (an ISO 8601 time with its offset), else ``$TRADEOPS_MARKET_NOW``, else the real clock."""
    at = at or os.environ.get(NOW_ENV, "")
    if not at:
        return dt.datetime.now(dt.UTC)
    try:
        instant = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ScheduleError(f"--at or ${NOW_ENV} {at!r} is not an ISO 8601 time") from exc
    if instant.tzinfo is None:
        raise ScheduleError(f"--at or ${NOW_ENV} {at!r} has no offset: add one (e.g. Z or -05:00)")
    return instant


def _check_day(args: argparse.Namespace) -> int:
    doc = load_calendar(args.calendar)
    day = _date(args.date, "--date") if args.date else exchange_today(doc, _instant(args.at))
    trading, why = trading_day(doc, day)
    what = "a" if trading else "not a"
    print(f"{day.isoformat()} is {what} {doc['exchange']} trading day" + (f" ({why})" if why else ""))
    return EXIT_TRADING if trading else EXIT_NOT_TRADING


def main_cli(argv: Sequence[str] | None = None) -> int:
    """``python -m tradeops_agent.schedule``; returns the exit code (see the module's docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    is_check = bool(args_list) and args_list[0] in ("check-day", "check-event")
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as exc:
        if not exc.code:
            return EXIT_OK
        return EXIT_CONDITION_ERROR if is_check else EXIT_ERROR
    try:
        if args.command == "check-day":
            return _check_day(args)
        if args.command == "check-event":
            ok, why = check_event(load_calendar(args.calendar), args.event, _instant(args.at), args.tolerance)
            print(("" if ok else "skipped: ") + why)
            return EXIT_TRADING if ok else EXIT_NOT_TRADING
        if args.command == "session-policy":
            tool = f"{sys.executable} -m tradeops_agent.schedule"
            session_policy(load_calendar(args.calendar), args.unit, _instant(args.at), args.dropin_dir, tool,
                           args.metrics_dir)
            return EXIT_OK
        if args.command == "held-metric":
            held = not args.started and args.result not in ("", "success")
            try:
                set_held_metric(args.metrics_dir, [args.unit], held)
            except (OSError, ValueError) as exc:
                print(f"{TOOL}: could not write the metric to {args.metrics_dir}: {exc}", file=sys.stderr)
                return EXIT_CANNOT_RECORD
            print(f"{args.unit}: tradeops_trading_restart_held={int(held)}"
                  + (f" ({args.result}: not restarted during the regular session)" if held else ""))
            return EXIT_OK
        if args.command == "check-calendar":
            doc = load_calendar(args.calendar)
            print(f"{args.calendar}: valid, {doc['exchange']} {doc['years'][0]}-{doc['years'][1]}, "
                  f"{len(doc['closed'])} holiday(s), {len(doc['early_close'])} early close(s)")
            return EXIT_OK
        if args.command == "record":
            if args.result == SKIPPED_RESULT:
                print(f"{args.task}: run skipped by its condition, no metric recorded")
                return EXIT_OK
            if not args.result:
                raise ScheduleError("no --result and no $SERVICE_RESULT (run it as a unit's ExecStopPost=)")
            ok = service_succeeded(args.result, args.exit_status)
            duration = _unit_duration(args.unit or f"tradeops-job-{args.task}.service")
            try:
                record_job(args.metrics_dir, args.task, ok, duration)
            except (OSError, ValueError) as exc:
                print(f"{TOOL}: could not write the job metric to {args.metrics_dir}: {exc}", file=sys.stderr)
                return EXIT_CANNOT_RECORD
            print(f"{args.task}: {'succeeded' if ok else 'failed'} ({args.result}, exit status "
                  f"{args.exit_status or '-'}), tradeops_job_last_success={int(ok)}")
            return EXIT_OK
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return run_job(args.task, command, args.lock, args.calendar, args.user, args.timeout, args.metrics_dir)
    except ScheduleError as exc:
        print(f"{TOOL}: error: {exc}", file=sys.stderr)
        return EXIT_CONDITION_ERROR if is_check else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main_cli())
