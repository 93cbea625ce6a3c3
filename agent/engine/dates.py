"""Calendar arithmetic for the catalogue's semantics, done in Python so the SQL sees only
literal date bounds (no dialect-specific date functions)."""

from __future__ import annotations

import calendar
import datetime as dt


def months_before(end: dt.date, months: int) -> dt.date:
    """``end - months`` keeping the day of month, clipped to the target month's last day
    (31 March - 1 month = 28/29 February)."""
    index = end.year * 12 + (end.month - 1) - months
    year, month0 = divmod(index, 12)
    last_day = calendar.monthrange(year, month0 + 1)[1]
    return dt.date(year, month0 + 1, min(end.day, last_day))


def born_on_or_before_for_age(end: dt.date, years: int) -> dt.date:
    """The latest birth date of someone aged at least ``years`` completed years on ``end``.

    ``age >= years`` exactly when ``birth_date <= end - years`` (clipped: a 29 February end
    maps to 28 February in a common year, and a 29 February birthday is reached on 1 March).
    """
    return months_before(end, 12 * years)


# The compiler's bound parameters for date bounds are named END_PARAM_PREFIX + bound name.
END_PARAM_PREFIX = "end__"


def bound_value(name: str, end: dt.date) -> dt.date:
    """The date bound called ``name`` for the period end ``end``: ``period_end`` itself,
    ``m_N`` (N months before it, :func:`months_before`) or ``age_N`` (the latest birth date of
    someone aged N, :func:`born_on_or_before_for_age`). The compiler names every bound this way,
    so a compiled statement can be run for another period end (agent/engine/stored.py)."""
    if name == "period_end":
        return end
    kind, _, number = name.partition("_")
    if number.isdigit():
        if kind == "m":
            return months_before(end, int(number))
        if kind == "age":
            return born_on_or_before_for_age(end, int(number))
    raise ValueError(f"unknown date bound {name!r}")
