"""The raw-envelope access audit as its readers filter it: one query for the API
(``GET /v1/audit/access``) and the dashboard's page and CSV, so a filter means the same in both
and a filter that is not understood is an error, never silently ignored."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from ..db.models import AccessAudit, User
from ..errors import BadRequestError

#: The filters, by query parameter: who (a user's name), role (the reader's role), practice (the
#: envelope's practice; admin only), granted (yes or no), start and end (days, inclusive).
FILTERS = ("who", "role", "practice", "granted", "start", "end")


def utc_iso(at: dt.datetime, timespec: str = "auto") -> str:
    """``at`` in UTC with its offset (``2026-12-07T20:09:17+00:00``): a time of the audit as its
    readers get it (API, dashboard page and CSV). The database stores UTC; SQLite gives it back
    without a zone, PostgreSQL in the session's zone, so both are made UTC here."""
    at = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
    return at.isoformat(timespec=timespec)


def parse_day(value: str | None, name: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadRequestError(f"{name} {value!r} is not a date (YYYY-MM-DD)") from None


def access_query(role: str, practice_ods: str | None, f: Mapping[str, str | None]) -> Any:
    """Reads of raw envelopes, newest first, as (AccessAudit, user name) rows, that a reader of
    ``role`` may see (admin: all; IG officer: those of ``practice_ods``'s envelopes), filtered
    by ``f`` (:data:`FILTERS`)."""
    start = parse_day(f.get("start"), "from")
    end = parse_day(f.get("end"), "to")
    if start is not None and end is not None and start > end:  # "no reads match" would mislead
        raise BadRequestError(f"from {start} is after to {end}: no day is in between")
    q = select(AccessAudit, User.name).join(User, User.id == AccessAudit.user_id)
    if role == "ig_officer":
        q = q.where(AccessAudit.practice_ods == practice_ods)
    if f.get("role"):
        q = q.where(AccessAudit.user_role == f["role"])
    if f.get("who"):
        q = q.where(User.name == f["who"])
    if f.get("practice") and role == "admin":
        q = q.where(AccessAudit.practice_ods == f["practice"])
    if f.get("granted") not in (None, "", "yes", "no"):  # a filter ignored would mislead
        raise BadRequestError(f"granted {f['granted']!r}: yes, no, or empty for both")
    if f.get("granted") in ("yes", "no"):
        q = q.where(AccessAudit.granted.is_(f["granted"] == "yes"))
    if start is not None:
        q = q.where(AccessAudit.at >= dt.datetime.combine(start, dt.time(), dt.UTC))
    if end is not None:
        q = q.where(
            AccessAudit.at < dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
        )
    return q.order_by(AccessAudit.id.desc())
