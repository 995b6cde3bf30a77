# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Market calendar filters: trading sessions of NYSE / NASDAQ / NSE at an instant.

Thin adapters over ``plugins/module_utils/tradeops_market.py`` (holidays and early closes
from the pinned ``holidays`` library, extra closures from a YAML file). A time is an ISO 8601
string with an offset, an aware datetime, epoch seconds, or ``now`` / empty: the injected
clock (``$TRADEOPS_MARKET_NOW``) or the real one. Returned times are ISO 8601 strings in the
exchange's local time with their offset. Any bad input (unknown exchange or zone, naive
time without ``tz``, malformed closures file, a year the calendar does not cover) fails
the task with a message saying what to change: never a guessed answer.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ansible.errors import AnsibleFilterError

try:  # the unit tests register plugins/module_utils as ansible.module_utils (tests/unit/conftest.py)
    from ansible.module_utils import tradeops_market as market
except ImportError:  # Ansible loads controller plugins without its module_utils path: load it beside us
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils"))
    import tradeops_market as market  # type: ignore[no-redef]

DOCUMENTATION = """
name: market_session
short_description: trading session of an exchange at an instant
description:
  - C(t | market_session('NYSE')) returns a dict with C(exchange), C(zone), C(phase)
    (closed, pre_market, pre_open, regular, after_hours), C(open) (regular session),
    C(reason) (weekend, the holiday's name, early close, outside trading hours),
    C(local_time), C(phase_start), C(phase_end).
  - Other filters of this file - C(market_next_open), C(market_next_close),
    C(market_boundaries) (the next N phase changes), C(market_window) (session, next open and
    close, C(refused) and the next window outside the C(refuse) phases, C(window_opens) and
    C(window_closes)), C(market_calendar_document) (C(exchange | market_calendar_document(years)),
    the non-trading weekdays and early closes of the years as the JSON document hosts read,
    role schedule's trading-day calendar).
  - Exchanges NYSE (XNYS), NASDAQ (XNAS), NSE (XNSE).
positional: _input, exchange
options:
  _input:
    description: ISO 8601 time with offset, aware datetime, epoch seconds, or C(now) / empty for the clock
    required: true
  exchange:
    description: exchange name
    type: str
    required: true
  tz:
    description: IANA zone to read a naive time in (naive times are refused without it)
    type: str
  closures_file:
    description: YAML file of user-declared extra closures
    type: path
"""


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except market.MarketCalendarError as exc:
        raise AnsibleFilterError(f"market calendar: {exc}") from None


def market_session(t: Any, exchange: str, tz: str | None = None, closures_file: str | None = None) -> dict[str, Any]:
    return _run(lambda: market.calendar(exchange, closures_file).session(market.resolve_when(t), tz).as_dict())


def market_next_open(t: Any, exchange: str, tz: str | None = None, closures_file: str | None = None) -> str:
    return _run(lambda: market.calendar(exchange, closures_file).next_open(market.resolve_when(t), tz).isoformat())


def market_next_close(t: Any, exchange: str, tz: str | None = None, closures_file: str | None = None) -> str:
    return _run(lambda: market.calendar(exchange, closures_file).next_close(market.resolve_when(t), tz).isoformat())


def market_boundaries(t: Any, exchange: str, count: int = 10, tz: str | None = None,
                      closures_file: str | None = None) -> list[dict[str, Any]]:
    return _run(lambda: [b.as_dict() for b in
                         market.calendar(exchange, closures_file).boundaries(market.resolve_when(t), int(count), tz)])


def market_window(t: Any, exchange: str, tz: str | None = None, closures_file: str | None = None,
                  refuse: Any = ("regular",)) -> dict[str, Any]:
    return _run(market.window_report, exchange, market.resolve_when(t), closures_file, tz, refuse)


def market_calendar_document(exchange: str, years: Any = None, closures_file: str | None = None,
                             now: Any = None) -> dict[str, Any]:
    return _run(market.calendar_document, exchange, years, closures_file or None, market.resolve_when(now))


class FilterModule:
    """Market calendar filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "market_session": market_session,
            "market_next_open": market_next_open,
            "market_next_close": market_next_close,
            "market_boundaries": market_boundaries,
            "market_window": market_window,
            "market_calendar_document": market_calendar_document,
        }
