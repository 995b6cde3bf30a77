# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Application job schedules on a host: is today a trading day, the job metric, one cron run.

Standard library only. Shipped to hosts as ``tradeops_agent/schedule.py`` in the ops agent wheel
(``scripts/build_agent.py``); role ``schedule``'s units call it as ``python -m tradeops_agent.schedule``:

    ... check-calendar FILE                  (validate; role schedule's copy validate=)
    ... check-day --calendar /etc/tradeops/market-calendar.json [--date 2026-11-26 | --at ISO]
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
except ImportError:  # in the ops agent wheel: tradeops_agent/maintenance.py (scripts/build_agent.py)
    from tradeops_agent.maintenance import record_job  # type: ignore[no-redef]

TOOL = "tradeops-schedule"
CALENDAR_FORMAT = 1
EXIT_TRADING, EXIT_NOT_TRADING, EXIT_CONDITION_ERROR = 0, 1, 255
EXIT_OK, EXIT_ERROR, EXIT_CANNOT_RECORD, EXIT_TIMEOUT = 0, 2, 3, 124
SKIPPED_RESULT = "exec-condition"  # $SERVICE_RESULT of a run the ExecCondition= refused
_TIME = re.compile(r"^\d{2}:\d{2}$")
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
    j = sub.add_parser("run", help="run a job once (cron): lock, trading day, command, metric")
    j.add_argument("--task", required=True)
    j.add_argument("--lock", required=True, help="lock file; a run while it is held is skipped")
    j.add_argument("--calendar", help="only on trading days of this calendar file")
    j.add_argument("--user", help="run the command as this user (when started as root)")
    j.add_argument("--timeout", type=float, help="seconds before the command is killed")
    j.add_argument("--metrics-dir", help="node_exporter textfile directory (none: no metric)")
    j.add_argument("argv", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    return parser


def _check_day(args: argparse.Namespace) -> int:
    doc = load_calendar(args.calendar)
    if args.date:
        day = _date(args.date, "--date")
    elif args.at:
        try:
            instant = dt.datetime.fromisoformat(args.at.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ScheduleError(f"--at {args.at!r} is not an ISO 8601 time") from exc
        if instant.tzinfo is None:
            raise ScheduleError(f"--at {args.at!r} has no offset: add one (e.g. Z or -05:00)")
        day = exchange_today(doc, instant)
    else:
        day = exchange_today(doc)
    trading, why = trading_day(doc, day)
    what = "a" if trading else "not a"
    print(f"{day.isoformat()} is {what} {doc['exchange']} trading day" + (f" ({why})" if why else ""))
    return EXIT_TRADING if trading else EXIT_NOT_TRADING


def main_cli(argv: Sequence[str] | None = None) -> int:
    """``python -m tradeops_agent.schedule``; returns the exit code (see the module's docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    is_check = bool(args_list) and args_list[0] == "check-day"
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as exc:
        if not exc.code:
            return EXIT_OK
        return EXIT_CONDITION_ERROR if is_check else EXIT_ERROR
    try:
        if args.command == "check-day":
            return _check_day(args)
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
        return EXIT_CONDITION_ERROR if args.command == "check-day" else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main_cli())
