"""Reporting periods: calendar months named ``YYYY-MM``."""

from __future__ import annotations

import datetime as dt

from agent.errors import AgentUserError
from agent.home.settings import FIRST_PERIOD_YEAR, PERIOD_RE
from protocol.submission import Period


def parse_period(text: str) -> Period:
    """``YYYY-MM`` -> the calendar month as a :class:`Period`; a year before
    :data:`~agent.home.settings.FIRST_PERIOD_YEAR` is refused as a typo."""
    if not PERIOD_RE.match(text or ""):
        raise AgentUserError(f"bad period {text!r}: expected YYYY-MM, e.g. 2026-03")
    year, month = (int(p) for p in text.split("-"))
    if year < FIRST_PERIOD_YEAR:
        raise AgentUserError(
            f"bad period {text!r}: before {FIRST_PERIOD_YEAR} (a typo?); expected YYYY-MM, "
            "e.g. 2026-03"
        )
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


#: How far back ``submit`` and ``run`` reach when ``first_period`` is not set: the last complete
#: month and the 23 before it, a new practice's backfill of 24 months (docs/agent.md, "How far
#: back"). What is sent stays in the network's append-only log, and a month older than that is
#: far more often a mistyped year than a wish; ``first_period`` set earlier reaches further.
BACKFILL_MONTHS = 24


def months_before(period: Period, months: int) -> Period:
    """The calendar month ``months`` months before ``period``."""
    index = period.start.year * 12 + period.start.month - 1 - months
    return Period.month(index // 12, index % 12 + 1)


def earliest_period(first_period: str | None, today: dt.date) -> Period:
    """The earliest month ``submit`` and ``run`` send: ``first_period`` when it is set, else
    the first of the :data:`BACKFILL_MONTHS` months up to the last complete one."""
    if first_period:
        return parse_period(first_period)
    return months_before(last_complete_period(today), BACKFILL_MONTHS - 1)


def require_in_reach(period: Period, first_period: str | None, today: dt.date) -> Period:
    """Refuse a new submission of a month before :func:`earliest_period` (exit 2), naming
    why and the setting that sends it on purpose: it would stay in the network's log and in
    the practice's list of periods for good, and ``run`` would go on from it."""
    earliest = earliest_period(first_period, today)
    if period.start >= earliest.start:
        return period
    if first_period:
        why = f"is before first_period ({first_period}), the first month this practice sends"
    else:
        why = (
            f"is before {earliest.label}, the first of the last {BACKFILL_MONTHS} complete "
            f"months (to {last_complete_period(today).label}), the earliest sent without "
            "first_period"
        )
    raise AgentUserError(
        f"period {period.label} {why}: nothing was computed, signed or sent for it (a mistyped "
        f'year?). To send it on purpose, set first_period = "{period.label}" (or earlier; in '
        "agent.toml, or FEDQI_AGENT_FIRST_PERIOD)"
    )


#: A period is computed on stale records when it ends more than this many days after the
#: practice's newest dated record (docs/agent.md, "Stale records"): a month and a day, so the
#: month after an extract taken at a month's end is not flagged, any later one is.
STALE_AFTER_DAYS = 31


def stale_source(period: Period, newest: dt.date | None) -> str | None:
    """What is wrong when ``period`` ends more than :data:`STALE_AFTER_DAYS` after ``newest``
    (the date of the practice's newest event or medication issue: a practice-level date, as
    ``check-source`` prints it), else None. None as well when there is no dated record at all
    (``check-source`` says so)."""
    if newest is None or (period.end - newest).days <= STALE_AFTER_DAYS:
        return None
    days = (period.end - newest).days
    return (
        f"period {period.label} ends on {period.end.isoformat()}, {days} days after the newest "
        f"dated record in the practice database ({newest.isoformat()}): its counts would miss "
        "everything recorded since (is the extract still being updated?)"
    )


def month_of(day: dt.date) -> Period:
    """The calendar month ``day`` is in: for the newest record's, the last month the records
    reach (what to preview instead of a month they stop before)."""
    return Period.month(day.year, day.month)
