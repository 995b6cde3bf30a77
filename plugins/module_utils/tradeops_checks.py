# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed values: the one place that says what a number, a number of seconds and a list of strings are
for the modules' options and the files the tools read, and that names the option in what it refuses.

A bool is never a number here (``True`` is not 1 second), NaN and the infinities are never accepted,
and a lone string is never taken for a list (``exclude_tables: audit`` would be iterated by
character). Each function raises the caller's own exception class (``error``), so a module's
``fail_json`` or a tool's exit code stays what it was. Standard library only; shipped to hosts as
``ansible.module_utils`` and as ``tradeops_agent/checks.py`` in the ops agent wheel.
"""

from __future__ import annotations

import math
from typing import Any

MAX_SECONDS = 86400  # a timeout, delay or deadline longer than a day is a mistake, not a wish


def number(value: Any, name: str, *, error: type[Exception] = ValueError, minimum: float | None = None,
           above: float | None = None, maximum: float | None = None, integer: bool = False, unit: str = "") -> Any:
    """``value`` when it is a finite int or float (an int with ``integer``) within the bounds: ``minimum``
    and ``maximum`` inclusive, ``above`` exclusive; else ``error`` naming ``name``, the bounds and the value."""
    kind = "an integer" if integer else "a number"
    bounds = " and ".join(text for text, bound in ((f">= {minimum}", minimum), (f"> {above}", above),
                                                   (f"<= {maximum}", maximum)) if bound is not None)
    ok = (not isinstance(value, bool) and isinstance(value, int if integer else int | float)
          and (isinstance(value, int) or math.isfinite(value)))
    if ok and ((minimum is not None and value < minimum) or (above is not None and value <= above)
               or (maximum is not None and value > maximum)):
        ok = False
    if not ok:
        raise error(f"{name} must be {bounds + ' ' if bounds else ''}{unit + ' ' if unit else ''}({kind}), "
                    f"got {value!r}")
    return value


def seconds(value: Any, name: str, *, error: type[Exception] = ValueError, zero: bool = False,
            maximum: float = MAX_SECONDS) -> float:
    """A duration: a finite number of seconds > 0 (>= 0 with ``zero``), at most ``maximum``."""
    return float(number(value, name, error=error, minimum=0 if zero else None, above=None if zero else 0,
                        maximum=maximum, unit="seconds"))


def strings(value: Any, name: str, *, error: type[Exception] = ValueError, example: str = "x") -> list[str]:
    """A list of strings; a lone string is refused (with the fix: a one-item list), never iterated."""
    if isinstance(value, str):
        raise error(f"{name} must be a list of strings: write [{value!r}] for one item, got the string {value!r}")
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise error(f"{name} must be a list of strings, e.g. [{example}], got {value!r}")
    return list(value)


def text(value: Any, name: str, *, error: type[Exception] = ValueError, empty: bool = False) -> str:
    """A string (non-empty unless ``empty``) without NUL, CR or LF: a name, a host, a path."""
    if not isinstance(value, str) or (not value and not empty) or any(c in value for c in "\0\r\n"):
        raise error(f"{name} must be a {'' if empty else 'non-empty '}string on one line, got {value!r}")
    return value
