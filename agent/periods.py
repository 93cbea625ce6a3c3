"""Reporting periods: calendar months named ``YYYY-MM``."""

from __future__ import annotations

import datetime as dt

from agent.errors import AgentUserError
from agent.home.settings import PERIOD_RE
from protocol.submission import Period


def parse_period(text: str) -> Period:
    """``YYYY-MM`` -> the calendar month as a :class:`Period`."""
    if not PERIOD_RE.match(text or ""):
        raise AgentUserError(f"bad period {text!r}: expected YYYY-MM, e.g. 2026-03")
    year, month = (int(p) for p in text.split("-"))
    return Period.month(year, month)


def next_period(period: Period) -> Period:
    return Period.month(period.start.year + (period.start.month == 12), period.start.month % 12 + 1)


def last_complete_period(today: dt.date) -> Period:
    first = today.replace(day=1)
    prev = first - dt.timedelta(days=1)
    return Period.month(prev.year, prev.month)


def require_ended(period: Period, today: dt.date) -> Period:
    """A period is computed for sending only once it has ended: its last day is before
    ``today`` (the agent's own local date). The aggregator refuses it too
    (``period-not-ended``)."""
    if period.end >= today:
        latest = last_complete_period(today)
        raise AgentUserError(
            f"period {period.label} has not ended (its last day is {period.end.isoformat()}, "
            f"today is {today.isoformat()}): the latest complete period is {latest.label}"
        )
    return period
