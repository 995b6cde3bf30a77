# Copyright: tradeops contributors; GNU General Public License v3.0+
"""Market calendar of tradeops: trading sessions of an exchange at an instant.

Used on the controller by the filter and test plugins ``plugins/filter/market.py`` and
``plugins/test/market.py`` (deploy window guard, job schedules).

Exchanges (names are case-insensitive; MIC aliases accepted):

=========  ==================  ===============================================================
NYSE       America/New_York    pre_market 04:00-09:30, regular 09:30-16:00, after_hours -20:00;
(XNYS)                         early-close days: regular to 13:00, after_hours 13:00-17:00
NASDAQ     America/New_York    as NYSE (its own holiday calendar, the same in practice)
(XNAS)
NSE        Asia/Kolkata        pre_open 09:00-09:15, regular 09:15-15:30
(XNSE)
=========  ==================  ===============================================================

Holidays and early closes come from the ``holidays`` library (pinned in pyproject.toml):
``holidays.financial_holidays(code, categories=("public", "half_day"))``. Nothing is guessed
outside the years a calendar covers (``Exchange.years``): a rule-based calendar (NYSE,
NASDAQ) covers the library's stated years from 2000; the NSE's holidays are decided by the
exchange each year, so it covers the years whose circular the library has confirmed
(later years carry "estimated" dates and are refused). A time outside → ``MarketCalendarError``.

Closures the library does not carry are shipped beside this file and loaded by default
(``Exchange.builtin_closures``): for NSE, ``tradeops_market_nse_closures.yml`` (election days in
Mumbai, ad-hoc closures and a moved holiday, 2014-2026, each with its source). User-declared
extra closures (a day of mourning, an exchange outage, a special early close) come from a small
YAML file read on top of them, see ``load_closures``. Not modelled: special sessions on days
the library lists as holidays (NSE's one-hour Diwali Muhurat trading is reported closed, with
the holiday's name) and special trading days on weekends.

Times: an aware ``datetime``, an ISO 8601 string with an offset (``Z`` allowed), or epoch
seconds. A naive time is refused unless a time zone is given to read it in (``tz=``): a
naive time is never silently taken as the host's zone. The clock is injectable: ``now``
arguments, else the environment variable ``TRADEOPS_MARKET_NOW`` (an ISO time), else the
real UTC clock. Nothing here changes a host's clock.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NOW_ENV = "TRADEOPS_MARKET_NOW"

CLOSED = "closed"
PRE_MARKET = "pre_market"
PRE_OPEN = "pre_open"
REGULAR = "regular"
AFTER_HOURS = "after_hours"
PHASES = (CLOSED, PRE_MARKET, PRE_OPEN, REGULAR, AFTER_HOURS)

# Session events of a trading day (role schedule's jobs with ``at:``, the trading-service policy).
SESSION_START = "session_start"  # the first phase begins (pre-market 04:00 ET, NSE pre-open 09:00)
MARKET_OPEN = "market_open"
MARKET_CLOSE = "market_close"  # early closes included
SESSION_END = "session_end"  # the last phase ends (after-hours 20:00 ET, 17:00 on early-close days)
EVENTS = (SESSION_START, MARKET_OPEN, MARKET_CLOSE, SESSION_END)

# Longest run of days without a regular session that next_open/next_close walk through
# before they give up (weekends + holidays + declared closures stay far below it).
MAX_SCAN_DAYS = 370


class MarketCalendarError(ValueError):
    """Bad input (exchange, zone, time, closures file) or a time the calendar does not cover."""


@dataclass(frozen=True)
class Exchange:
    """An exchange's fixed trading day shape; holidays come from ``holidays_code``."""

    name: str
    zone: str
    holidays_code: str
    phases: tuple[tuple[str, dt.time, dt.time], ...]
    early_close: dt.time | None = None
    early_close_after_hours_end: dt.time | None = None
    first_year: int = 2000
    aliases: tuple[str, ...] = ()
    # A closures file (``load_closures`` format) beside this module, always loaded for this exchange.
    builtin_closures: str = ""

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    @property
    def years(self) -> tuple[int, int]:
        """(first, last) year this calendar covers, both included."""
        return _covered_years(self.holidays_code, self.first_year)


def _t(text: str) -> dt.time:
    return dt.time.fromisoformat(text)


_US_PHASES = ((PRE_MARKET, _t("04:00"), _t("09:30")), (REGULAR, _t("09:30"), _t("16:00")),
              (AFTER_HOURS, _t("16:00"), _t("20:00")))

EXCHANGES: dict[str, Exchange] = {
    "NYSE": Exchange("NYSE", "America/New_York", "NYSE", _US_PHASES, _t("13:00"), _t("17:00"), 2000, ("XNYS",)),
    "NASDAQ": Exchange("NASDAQ", "America/New_York", "XNAS", _US_PHASES, _t("13:00"), _t("17:00"), 2000,
                       ("XNAS",)),
    # Regular 09:15 and the pre-open call auction since 2010.
    "NSE": Exchange("NSE", "Asia/Kolkata", "NSE",
                    ((PRE_OPEN, _t("09:00"), _t("09:15")), (REGULAR, _t("09:15"), _t("15:30"))),
                    first_year=2011, aliases=("XNSE",), builtin_closures="tradeops_market_nse_closures.yml"),
}


def exchange_names() -> list[str]:
    return sorted(EXCHANGES)


def get_exchange(name: Any) -> Exchange:
    """The exchange called ``name`` (or one of its MIC aliases), case-insensitive."""
    key = str(name or "").strip().upper()
    for exchange in EXCHANGES.values():
        if key == exchange.name or key in exchange.aliases:
            return exchange
    known = ", ".join(f"{e.name} ({'/'.join(e.aliases)})" for e in EXCHANGES.values())
    raise MarketCalendarError(f"unknown exchange {name!r}: use one of {known}")


def get_zone(name: Any) -> ZoneInfo:
    """An IANA time zone by name (``America/New_York``); a clear error for anything else."""
    if not isinstance(name, str) or not name.strip():
        raise MarketCalendarError(f"time zone {name!r} is not an IANA zone name such as 'America/New_York' or 'UTC'")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise MarketCalendarError(
            f"unknown time zone {name!r}: use an IANA zone name such as 'America/New_York' or 'UTC'") from exc


# --------------------------------------------------------------------------- holidays library


def _holidays_module() -> Any:
    try:
        import holidays
    except ImportError as exc:  # pragma: no cover - the venv always has it
        raise MarketCalendarError(
            "the Python package 'holidays' is missing on the controller: run `make venv` "
            "(pyproject.toml pins it)") from exc
    return holidays


@cache
def _covered_years(code: str, first_year: int) -> tuple[int, int]:
    """From ``first_year`` (or the library's start) up to the year before the first one whose
    holidays the library only estimates (lunar/Islamic dates the exchange decides each year),
    at most the library's ``end_year``."""
    holidays = _holidays_module()
    cls = type(holidays.financial_holidays(code))
    start = max(int(getattr(cls, "start_year", first_year)), first_year)
    end = int(getattr(cls, "end_year", start))
    label = str(getattr(cls, "estimated_label", "%s (estimated)")).replace("%s", "").strip()
    for year in range(start, end + 1):
        names = holidays.financial_holidays(code, years=year, categories=("public",)).values()
        if label and any(label in str(name) for name in names):
            return start, year - 1
    return start, end


@lru_cache(maxsize=64)
def _library_year(code: str, year: int) -> dict[dt.date, tuple[str, bool]]:
    """{date: (name, early_close)} of one year: full closures and half days of the library."""
    holidays = _holidays_module()
    out: dict[dt.date, tuple[str, bool]] = {}
    cls = type(holidays.financial_holidays(code))
    categories = [c for c in ("public", "half_day") if c in getattr(cls, "supported_categories", ("public",))]
    for category in categories:
        days = holidays.financial_holidays(code, years=year, categories=(category,))
        for day, name in days.items():
            if category == "public" or day not in out:
                out[day] = (str(name), category == "half_day")
    return out


# --------------------------------------------------------------------------- closures file


@dataclass(frozen=True)
class Closure:
    """A user-declared closure: the whole day, or an early close at ``close`` (local time)."""

    exchange: str
    date: dt.date
    name: str
    close: dt.time | None = None
    source: str = ""  # file:line
    citation: str = ""  # where the date comes from (the file's ``source`` key)
    moved_from: dt.date | None = None  # a library holiday the exchange moved to ``date``: it trades


CLOSURE_KEYS = {"exchange", "date", "name", "close", "source", "moved_from"}


def load_closures(path: str, label: str | None = None) -> list[Closure]:
    """Extra closures from a YAML file (``label`` names it in reasons and errors; default: the path).
    Format::

        closures:
          - exchange: NYSE          # required, a known exchange
            date: 2025-01-09        # required, YYYY-MM-DD (the exchange's local date)
            name: National Day of Mourning   # required
          - exchange: NSE
            date: 2026-02-02
            name: Exchange outage drill
            close: "13:00"          # optional: closes early at this local time instead
          - exchange: NSE
            date: 2023-06-29
            name: Bakri Id (moved from 2023-06-28)
            moved_from: 2023-06-28  # optional: the holiday the exchange moved here; that day trades
            source: where the date comes from   # optional: free text, kept with the closure

    Anything malformed raises ``MarketCalendarError`` naming the file and the line.
    """
    import yaml

    name = label or path
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise MarketCalendarError(f"closures file {name}: cannot be read ({exc.strerror or exc})") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise MarketCalendarError(f"closures file {name}{where}: not valid YAML: "
                                  f"{getattr(exc, 'problem', None) or exc}") from exc

    def fail(node: Any, what: str) -> MarketCalendarError:
        return MarketCalendarError(f"closures file {name} line {node.start_mark.line + 1}: {what}")

    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise fail(root, "expected a mapping with one key 'closures' (a list)")
    top = {k.value: v for k, v in root.value}
    unknown = set(top) - {"closures"}
    if unknown:
        raise fail(root, f"unknown key(s) {', '.join(sorted(unknown))}: the only key is 'closures'")
    items = top.get("closures")
    if items is None or (isinstance(items, yaml.ScalarNode) and items.value in ("", "null", "~")):
        return []
    if not isinstance(items, yaml.SequenceNode):
        raise fail(items, "'closures' must be a list of {exchange, date, name[, close, moved_from, source]}")
    out: list[Closure] = []
    for item in items.value:
        if not isinstance(item, yaml.MappingNode):
            raise fail(item, "a closure must be a mapping with exchange, date and name")
        fields: dict[str, Any] = {}
        for key, value in item.value:
            if key.value not in CLOSURE_KEYS:
                raise fail(key, f"unknown key '{key.value}' (allowed: {', '.join(sorted(CLOSURE_KEYS))})")
            if not isinstance(value, yaml.ScalarNode) or value.value == "":
                raise fail(value, f"'{key.value}' must be a single value")
            fields[key.value] = value
        missing = sorted({"exchange", "date", "name"} - set(fields))
        if missing:
            raise fail(item, f"missing {', '.join(missing)}")
        try:
            exchange = get_exchange(fields["exchange"].value).name
        except MarketCalendarError as exc:
            raise fail(fields["exchange"], str(exc)) from exc
        try:
            day = dt.date.fromisoformat(fields["date"].value)
        except ValueError as exc:
            raise fail(fields["date"], f"date {fields['date'].value!r} is not YYYY-MM-DD") from exc
        close = None
        if "close" in fields:
            try:
                close = dt.time.fromisoformat(fields["close"].value)
            except ValueError as exc:
                raise fail(fields["close"], f"close {fields['close'].value!r} is not HH:MM (local time)") from exc
        moved_from = None
        if "moved_from" in fields:
            try:
                moved_from = dt.date.fromisoformat(fields["moved_from"].value)
            except ValueError as exc:
                raise fail(fields["moved_from"], f"moved_from {fields['moved_from'].value!r} is not "
                                                 f"YYYY-MM-DD") from exc
            if close is not None or moved_from == day:
                raise fail(fields["moved_from"], "moved_from is for a whole-day closure moved from another date")
        out.append(Closure(exchange, day, fields["name"].value, close,
                           f"{name}:{item.start_mark.line + 1}",
                           fields["source"].value if "source" in fields else "", moved_from))
    return out


# --------------------------------------------------------------------------- times


def parse_time(value: Any, tz: str | None = None) -> dt.datetime:
    """An aware datetime from a datetime, an ISO 8601 string or epoch seconds.

    A naive value is read in ``tz`` (an IANA zone) when given, else refused."""
    if isinstance(value, bool):
        raise MarketCalendarError(f"time {value!r} is not a time: give an ISO 8601 time with an offset")
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError as exc:
            raise MarketCalendarError(
                f"time {value!r} is not ISO 8601: give e.g. '2026-03-09T14:30:00Z' or "
                f"'2026-03-09T10:30:00-04:00'") from exc
    else:
        raise MarketCalendarError(f"time {value!r} ({type(value).__name__}) is not a time: give an ISO 8601 "
                                  f"string with an offset, an aware datetime or epoch seconds")
    if when.tzinfo is None or when.utcoffset() is None:
        if tz is None:
            raise MarketCalendarError(
                f"time {value!r} has no UTC offset: add one ('...Z', '...-05:00') or give the time zone "
                f"to read it in (tz='America/New_York')")
        when = when.replace(tzinfo=get_zone(tz))
    return when


def resolve_now(now: Any = None) -> dt.datetime:
    """The injected clock: ``now`` when given, else $TRADEOPS_MARKET_NOW, else the real clock (UTC)."""
    if now not in (None, ""):
        return parse_time(now)
    injected = os.environ.get(NOW_ENV, "").strip()
    if injected:
        try:
            return parse_time(injected)
        except MarketCalendarError as exc:
            raise MarketCalendarError(f"environment variable {NOW_ENV}: {exc}") from exc
    return dt.datetime.now(dt.UTC)


def resolve_when(value: Any) -> Any:
    """``now``, empty or None: the injected clock (``resolve_now``); anything else as given."""
    return resolve_now() if value is None or (isinstance(value, str) and value.strip() in ("", "now")) else value


# --------------------------------------------------------------------------- the calendar


@dataclass(frozen=True)
class Interval:
    phase: str
    start: dt.datetime  # aware, exchange-local
    end: dt.datetime


@dataclass(frozen=True)
class Day:
    """One local date of an exchange: its phases (empty when closed) and why it differs."""

    date: dt.date
    intervals: tuple[Interval, ...]
    reason: str  # '' on an ordinary trading day; 'weekend', a holiday name, 'early close: ...'

    @property
    def regular(self) -> Interval | None:
        return next((i for i in self.intervals if i.phase == REGULAR), None)


@dataclass(frozen=True)
class Session:
    """Where an instant falls: the phase, why, and the exchange-local time."""

    exchange: str
    zone: str
    phase: str
    reason: str
    local_time: dt.datetime
    phase_start: dt.datetime | None = None
    phase_end: dt.datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.phase == REGULAR

    def as_dict(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "zone": self.zone,
            "phase": self.phase,
            "open": self.is_open,
            "reason": self.reason,
            "local_time": self.local_time.isoformat(),
            "phase_start": self.phase_start.isoformat() if self.phase_start else None,
            "phase_end": self.phase_end.isoformat() if self.phase_end else None,
        }


@dataclass(frozen=True)
class Boundary:
    """A change of phase at ``time`` (exchange-local)."""

    time: dt.datetime
    before: str
    after: str

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "utc": self.time.astimezone(dt.UTC).isoformat(),
                "before": self.before, "after": self.after}


def _events_of(intervals: tuple[Interval, ...]) -> dict[str, dt.datetime]:
    """Session events of one day's phases ({} without a regular session)."""
    regular = next((i for i in intervals if i.phase == REGULAR), None)
    if regular is None:
        return {}
    return {SESSION_START: intervals[0].start, MARKET_OPEN: regular.start, MARKET_CLOSE: regular.end,
            SESSION_END: intervals[-1].end}


@dataclass
class MarketCalendar:
    """The calendar of one exchange, with optional user-declared closures."""

    exchange: Exchange
    closures: dict[dt.date, Closure] = field(default_factory=dict)
    # Library holidays the exchange moved to another date (``Closure.moved_from``): regular sessions.
    reopened: dict[dt.date, Closure] = field(default_factory=dict)

    @classmethod
    def create(cls, exchange: Any, closures_file: str | None = None,
               closures: list[Closure] | None = None, builtin: bool = True) -> MarketCalendar:
        """The calendar with the exchange's built-in closures (unless ``builtin`` is false), then
        ``closures``, then the file's: a later closure of the same date replaces an earlier one."""
        ex = get_exchange(exchange)
        declared = list(builtin_closures(ex.name)) if builtin else []
        declared += closures or []
        if closures_file:
            declared += load_closures(closures_file)
        mine: dict[dt.date, Closure] = {}
        reopened: dict[dt.date, Closure] = {}
        for closure in declared:
            if closure.exchange == ex.name:
                mine[closure.date] = closure
                reopened.pop(closure.date, None)
                if closure.moved_from is not None:
                    reopened[closure.moved_from] = closure
        return cls(ex, mine, {day: c for day, c in reopened.items() if day not in mine})

    @property
    def zone(self) -> ZoneInfo:
        return self.exchange.tzinfo

    def local(self, when: Any, tz: str | None = None) -> dt.datetime:
        return parse_time(when, tz).astimezone(self.zone)

    def _check_year(self, day: dt.date) -> None:
        first, last = self.exchange.years
        if not first <= day.year <= last:
            raise MarketCalendarError(
                f"{self.exchange.name}: {day.isoformat()} is outside the years its calendar covers "
                f"({first}-{last}, from the 'holidays' library pinned in pyproject.toml); a newer "
                f"release of it may cover more: the market calendar never guesses")

    def day(self, day: dt.date) -> Day:
        """The phases of one local date, or why there are none."""
        self._check_year(day)
        if day.weekday() >= 5:
            return Day(day, (), "weekend")
        closure = self.closures.get(day)
        if closure is not None and closure.close is None:
            return Day(day, (), f"{closure.name} (declared closure, {closure.source})")
        name, half = _library_year(self.exchange.holidays_code, day.year).get(day, ("", False))
        if day in self.reopened:  # the exchange moved this holiday to another date: an ordinary day
            name, half = "", False
        if name and not half:
            return Day(day, (), name)
        close: dt.time | None = None
        reason = ""
        if closure is not None:
            close, reason = closure.close, f"early close: {closure.name} (declared closure, {closure.source})"
            regular = next(p for p in self.exchange.phases if p[0] == REGULAR)
            if close is not None and not regular[1] < close < regular[2]:
                raise MarketCalendarError(
                    f"closure {closure.source}: close {close.isoformat('minutes')} is not within "
                    f"{self.exchange.name}'s regular session {regular[1].isoformat('minutes')}-"
                    f"{regular[2].isoformat('minutes')} (local time)")
        elif half:
            close, reason = self.exchange.early_close, f"early close: {name}"
        return Day(day, self._intervals(day, close), reason)

    def events(self, day: dt.date) -> dict[str, dt.datetime]:
        """The session events of a local date ({} when it has no session): ``session_start`` (the first
        phase begins: pre-market, pre-open), ``market_open``, ``market_close`` (early closes included),
        ``session_end`` (the last phase ends: after-hours)."""
        return _events_of(self.day(day).intervals)

    def normal_events(self) -> dict[str, str]:
        """Local HH:MM of the session events of an ordinary trading day."""
        ordinary = self._intervals(dt.date(self.exchange.years[0], 1, 1), None)
        return {name: t.strftime("%H:%M") for name, t in _events_of(ordinary).items()}

    def _intervals(self, day: dt.date, close: dt.time | None) -> tuple[Interval, ...]:
        def at(t: dt.time) -> dt.datetime:
            return dt.datetime.combine(day, t, tzinfo=self.zone)

        out: list[Interval] = []
        for phase, start, end in self.exchange.phases:
            if close is not None:
                if phase == REGULAR:
                    end = min(end, close)
                elif phase == AFTER_HOURS:
                    start = close
                    end = self.exchange.early_close_after_hours_end or end
                elif start >= close:
                    continue
            if start < end:
                out.append(Interval(phase, at(start), at(end)))
        return tuple(out)

    def session(self, when: Any, tz: str | None = None) -> Session:
        """Phase at an instant: closed | pre_market | pre_open | regular | after_hours, and why."""
        local = self.local(when, tz)
        day = self.day(local.date())
        for interval in day.intervals:
            if interval.start <= local < interval.end:
                return Session(self.exchange.name, self.exchange.zone, interval.phase, day.reason, local,
                               interval.start, interval.end)
        reason = day.reason or "outside trading hours"
        return Session(self.exchange.name, self.exchange.zone, CLOSED, reason, local)

    def is_open(self, when: Any, tz: str | None = None) -> bool:
        """True during the regular session."""
        return self.session(when, tz).is_open

    def _days_from(self, start: dt.date) -> Iterator[Day]:
        for offset in range(MAX_SCAN_DAYS):
            yield self.day(start + dt.timedelta(days=offset))
        raise MarketCalendarError(f"{self.exchange.name}: no regular session within {MAX_SCAN_DAYS} days "
                                  f"of {start.isoformat()}: check the declared closures")

    def _next_regular(self, when: Any, tz: str | None, edge: str) -> dt.datetime:
        local = self.local(when, tz)
        for day in self._days_from(local.date()):
            regular = day.regular
            if regular is not None and getattr(regular, edge) > local:
                return getattr(regular, edge)
        raise AssertionError("unreachable")  # pragma: no cover

    def next_open(self, when: Any, tz: str | None = None) -> dt.datetime:
        """Start of the first regular session that begins strictly after ``when``."""
        return self._next_regular(when, tz, "start")

    def next_close(self, when: Any, tz: str | None = None) -> dt.datetime:
        """End of the regular session in progress at ``when``, else of the next one."""
        return self._next_regular(when, tz, "end")

    def boundaries(self, when: Any, count: int = 10, tz: str | None = None) -> list[Boundary]:
        """The next ``count`` phase changes strictly after ``when`` (for timers and hooks)."""
        if count < 0:
            raise MarketCalendarError(f"count {count} must be 0 or more")
        local = self.local(when, tz)
        out: list[Boundary] = []
        if count == 0:
            return out
        for day in self._days_from(local.date()):
            edges: list[Boundary] = []
            previous_end: dt.datetime | None = None
            previous_phase = CLOSED
            for interval in day.intervals:
                if previous_end is None or interval.start != previous_end:
                    if previous_end is not None:
                        edges.append(Boundary(previous_end, previous_phase, CLOSED))
                    edges.append(Boundary(interval.start, CLOSED, interval.phase))
                else:
                    edges.append(Boundary(interval.start, previous_phase, interval.phase))
                previous_end, previous_phase = interval.end, interval.phase
            if previous_end is not None:
                edges.append(Boundary(previous_end, previous_phase, CLOSED))
            out.extend(b for b in edges if b.time > local)
            if len(out) >= count:
                return out[:count]
        raise AssertionError("unreachable")  # pragma: no cover


@cache
def builtin_closures(exchange: str) -> tuple[Closure, ...]:
    """The closures shipped beside this module for ``exchange`` (a name of ``EXCHANGES``)."""
    filename = EXCHANGES[exchange].builtin_closures
    if not filename:
        return ()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), filename)
    return tuple(c for c in load_closures(path, label=filename) if c.exchange == exchange)


def calendar(exchange: Any, closures_file: str | None = None) -> MarketCalendar:
    """A cached calendar (closures files are re-read when their mtime changes)."""
    mtime = None
    if closures_file:
        try:
            mtime = os.stat(closures_file).st_mtime_ns
        except OSError as exc:
            raise MarketCalendarError(f"closures file {closures_file}: cannot be read "
                                      f"({exc.strerror or exc})") from exc
    return _calendar(get_exchange(exchange).name, closures_file or None, mtime)


@lru_cache(maxsize=16)
def _calendar(exchange: str, closures_file: str | None, _mtime: int | None) -> MarketCalendar:
    return MarketCalendar.create(exchange, closures_file)


def window_report(exchange: Any, when: Any = None, closures_file: str | None = None,
                  tz: str | None = None, refuse: Any = (REGULAR,)) -> dict[str, Any]:
    """Everything a deploy window guard says: the session now, its local time, the next open and
    close, and the next window outside the ``refuse`` phases (``window_opens`` is the instant
    itself when it is already outside them; ``window_closes`` when a refused phase starts again)."""
    refused = set(refuse or ())
    unknown = refused - set(PHASES)
    if unknown:
        raise MarketCalendarError(f"refused phase(s) {', '.join(sorted(unknown))}: use {', '.join(PHASES)}")
    if refused >= set(PHASES):
        raise MarketCalendarError("every phase is refused: there is never a window")
    cal = calendar(exchange, closures_file)
    instant = parse_time(resolve_when(when), tz)
    session = cal.session(instant)
    report = session.as_dict()
    report["utc"] = instant.astimezone(dt.UTC).isoformat()
    report["next_open"] = cal.next_open(instant).isoformat()
    report["next_close"] = cal.next_close(instant).isoformat()
    report["refused"] = session.phase in refused
    opens = instant.astimezone(cal.zone) if not report["refused"] else None
    closes = None
    at = instant
    for _ in range(64):  # phase changes of several weeks, far more than any refused stretch
        edge = cal.boundaries(at, 1)[0]
        if opens is None and edge.after not in refused:
            opens = edge.time
        elif opens is not None and edge.after in refused:
            closes = edge.time
            break
        at = edge.time
    if opens is None or closes is None:  # pragma: no cover - only with refused phases covering weeks
        raise MarketCalendarError(f"{cal.exchange.name}: no window outside {', '.join(sorted(refused))} "
                                  f"within 64 phase changes of {report['utc']}")
    report["window_opens"] = opens.isoformat()
    report["window_closes"] = closes.isoformat()
    report["years"] = list(cal.exchange.years)
    return report


CALENDAR_DOCUMENT_FORMAT = 1


def calendar_document(exchange: Any, years: Any = None, closures_file: str | None = None,
                      now: Any = None) -> dict[str, Any]:
    """The exchange's non-trading weekdays and early closes of ``years`` ([first, last]; default: this
    year and the next one the calendar covers) as the JSON document hosts read without a market library
    (``tradeops_schedule.load_calendar``; role schedule renders it)."""
    cal = calendar(exchange, closures_file)
    first_covered, last_covered = cal.exchange.years
    if years in (None, "", []):
        this_year = resolve_now(now).astimezone(cal.zone).year
        years = [this_year, min(this_year + 1, last_covered)]
    if (not isinstance(years, (list, tuple)) or len(years) != 2
            or not all(isinstance(y, int) and not isinstance(y, bool) for y in years) or years[0] > years[1]):
        raise MarketCalendarError(f"years {years!r} must be [first, last] (integers, first <= last)")
    closed: dict[str, str] = {}
    early: dict[str, str] = {}
    events = cal.normal_events()
    exceptions: dict[str, dict[str, str]] = {}
    day = dt.date(years[0], 1, 1)
    cal._check_year(day)
    cal._check_year(dt.date(years[1], 12, 31))
    while day.year <= years[1]:
        if day.weekday() < 5:
            info = cal.day(day)
            regular = info.regular
            if regular is None:
                closed[day.isoformat()] = info.reason
            elif info.reason:
                early[day.isoformat()] = regular.end.strftime("%H:%M")
                exceptions[day.isoformat()] = {
                    name: local for name, t in _events_of(info.intervals).items()
                    if (local := t.strftime("%H:%M")) != events[name]}
        day += dt.timedelta(days=1)
    times = {name: sorted({events[name]} | {e[name] for e in exceptions.values() if name in e}) for name in EVENTS}
    return {"format": CALENDAR_DOCUMENT_FORMAT, "exchange": cal.exchange.name, "zone": cal.exchange.zone,
            "years": [years[0], years[1]], "covered": [first_covered, last_covered],
            "closed": closed, "early_close": early,
            "events": events, "event_exceptions": exceptions, "event_times": times}
