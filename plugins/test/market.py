# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Market calendar tests: ``t is market_open('NYSE')``, ``day is market_trading_day('NSE')``.

Over ``plugins/module_utils/tradeops_market.py``; the same inputs and errors as the filters of
``plugins/filter/market.py`` (``now`` or empty = the injected clock, then the real one).
"""

from __future__ import annotations

import datetime as dt
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
name: market_open
short_description: is an exchange's regular session open at an instant
description:
  - C(t is market_open('NYSE')) is true during the regular session (09:30-16:00 New York,
    13:00 on early-close days; NSE 09:15-15:30 Kolkata), false on weekends, holidays and
    outside the regular hours. Also C(d is market_trading_day('NSE')) for a local date
    (YYYY-MM-DD) or an instant's local date, and C(name is market_exchange) for a known
    exchange name.
positional: _input, exchange
options:
  _input:
    description: ISO 8601 time with offset, aware datetime, epoch seconds, or C(now) / empty for the clock
    required: true
  exchange:
    description: exchange name, NYSE (XNYS), NASDAQ (XNAS) or NSE (XNSE)
    type: str
    required: true
  tz:
    description: IANA zone to read a naive time in
    type: str
  closures_file:
    description: YAML file of user-declared extra closures
    type: path
"""


def market_open(t: Any, exchange: str, tz: str | None = None, closures_file: str | None = None) -> bool:
    when = market.resolve_when(t)
    try:
        return market.calendar(exchange, closures_file).is_open(when, tz)
    except market.MarketCalendarError as exc:
        raise AnsibleFilterError(f"market calendar: {exc}") from None


def market_trading_day(day: Any, exchange: str, tz: str | None = None, closures_file: str | None = None) -> bool:
    """A local date of the exchange (YYYY-MM-DD or a date) has a regular session."""
    try:
        cal = market.calendar(exchange, closures_file)
        if isinstance(day, dt.date) and not isinstance(day, dt.datetime):
            local_day = day
        elif isinstance(day, str) and len(day.strip()) == 10:
            try:
                local_day = dt.date.fromisoformat(day.strip())
            except ValueError as exc:
                raise market.MarketCalendarError(f"date {day!r} is not YYYY-MM-DD") from exc
        else:
            local_day = cal.local(market.resolve_when(day), tz).date()
        return cal.day(local_day).regular is not None
    except market.MarketCalendarError as exc:
        raise AnsibleFilterError(f"market calendar: {exc}") from None


def market_exchange(name: Any) -> bool:
    """A known exchange name or MIC alias (NYSE/XNYS, NASDAQ/XNAS, NSE/XNSE), case-insensitive."""
    try:
        market.get_exchange(name)
    except market.MarketCalendarError:
        return False
    return True


class TestModule:
    """Market calendar tests."""

    def tests(self) -> dict[str, Any]:
        return {"market_open": market_open, "market_trading_day": market_trading_day,
                "market_exchange": market_exchange}
