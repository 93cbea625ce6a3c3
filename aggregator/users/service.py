"""Users and their API tokens (stored as SHA-256 only), roles, and peer pseudonyms.

Roles: ``admin`` manages; ``network_lead`` sees the practices of their group (PCN) identified;
``practice`` sees its own practice identified and peers pseudonymised; ``ig_officer`` sees the
log, proofs and raw envelopes of their practice.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from typing import Literal, get_args

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..db.models import DashboardSession, Practice, User
from ..errors import AuthenticationError, BadRequestError

Role = Literal["admin", "network_lead", "practice", "ig_officer"]
ROLES: tuple[str, ...] = get_args(Role)
# How a message names a user of each role ("not visible to an IG officer").
ROLE_NOUNS: dict[str, str] = {
    "admin": "an admin",
    "network_lead": "a network lead",
    "practice": "a practice user",
    "ig_officer": "an IG officer",
}
TOKEN_PREFIX = "fqa_"


def _token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_user(
    session: Session,
    name: str,
    role: str,
    *,
    practice: str | None,
    group: str | None,
    now: dt.datetime,
    expires_at: dt.datetime | None = None,
) -> tuple[User, str]:
    """Create a user; returns the row and its API token (shown once, stored hashed), which
    is refused from ``expires_at`` on when given."""
    if expires_at is not None and expires_at <= now:
        raise BadRequestError(f"--expires {expires_at.isoformat()} is not in the future")
    if role not in ROLES:
        raise BadRequestError(f"--role {role!r} is not one of {', '.join(ROLES)}")
    if not name.strip() or len(name) > 200:
        raise BadRequestError("user name must be 1-200 characters")
    if role in ("practice", "ig_officer"):
        if practice is None:
            raise BadRequestError(f"--role {role} needs --practice ODS")
        if session.get(Practice, practice) is None:
            raise BadRequestError(f"--practice {practice} is not a registered practice")
        if group is not None:
            raise BadRequestError(f"--role {role} takes --practice, not --group")
    elif role == "network_lead":
        if group is None:
            raise BadRequestError("--role network_lead needs --group PCN")
        if practice is not None:
            raise BadRequestError("a network_lead user takes --group, not --practice")
        groups = known_groups(session)
        if group not in groups:
            known = ", ".join(groups) if groups else "none yet: add a practice first"
            raise BadRequestError(
                f"--group {group!r} is not the group of any registered practice (known: {known})"
            )
    elif practice is not None or group is not None:
        raise BadRequestError("an admin user takes neither --practice nor --group")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    user = User(
        name=name,
        role=role,
        practice_ods=practice,
        group=group,
        token_sha256=_token_sha256(token),
        created_at=now,
        expires_at=expires_at,
    )
    session.add(user)
    session.flush()
    return user, token


def known_groups(session: Session) -> list[str]:
    """The peer groups (PCNs) of the registered practices, sorted."""
    return sorted(set(session.scalars(select(Practice.group).distinct())))


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def revoke_user(session: Session, user_id: int) -> User:
    """Disable a user: their API token and their dashboard sessions stop working at once. The
    row stays, so the access audit still names who read what. Revoking a revoked user is an
    error, not a silent success."""
    user = session.get(User, user_id)
    if user is None:
        raise BadRequestError(f"user {user_id}: no such user (see `fedqi-aggregator user list`)")
    if user.disabled:
        raise BadRequestError(f"user {user_id} ({user.name!r}) is already revoked")
    user.disabled = True
    # Their dashboard sign-ins end now (session_user refuses a disabled user's anyway).
    session.execute(delete(DashboardSession).where(DashboardSession.user_id == user.id))
    session.flush()
    return user


def _aware(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when  # SQLite: naive UTC


#: What a request with a revoked user's token is told. The server knows that token, so naming
#: the revocation tells its holder nothing new; an unknown token is only "not valid".
REVOKED_TOKEN = "authorization: the API token was revoked; ask an administrator for a new one"


def _check_user(user: User | None, now: dt.datetime) -> User:
    if user is None:
        raise AuthenticationError("authorization: the API token is not valid", code="bad-token")
    if user.disabled:
        raise AuthenticationError(REVOKED_TOKEN, code="bad-token")
    if user.expires_at is not None and _aware(user.expires_at) <= now:
        raise AuthenticationError(
            "authorization: the API token expired; ask an administrator for a new one",
            code="bad-token",
        )
    return user


def authenticate(session: Session, token: str, now: dt.datetime | None = None) -> User:
    user = session.scalars(select(User).where(User.token_sha256 == _token_sha256(token))).first()
    return _check_user(user, now or dt.datetime.now(dt.UTC))


# --- dashboard sessions -----------------------------------------------------------------------


def start_session(session: Session, user: User, now: dt.datetime, hours: int) -> str:
    """A dashboard sign-in for ``user``: returns the random id for the cookie (stored as SHA-256
    only), valid for ``hours`` but never beyond the user's token expiry. Sessions already
    expired are swept away here."""
    session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
    expires = now + dt.timedelta(hours=hours)
    if user.expires_at is not None:
        expires = min(expires, _aware(user.expires_at))
    sid = secrets.token_urlsafe(32)
    session.add(
        DashboardSession(
            id_sha256=_token_sha256(sid), user_id=user.id, created_at=now, expires_at=expires
        )
    )
    session.flush()
    return sid


def session_user(session: Session, sid: str, now: dt.datetime) -> User:
    """The user signed in by dashboard session ``sid``; refused when the session is unknown,
    ended or expired, or the user is revoked or their token expired."""
    row = session.get(DashboardSession, _token_sha256(sid))
    if row is None or _aware(row.expires_at) <= now:
        raise AuthenticationError("the dashboard session ended; sign in again", code="bad-session")
    return _check_user(session.get(User, row.user_id), now)


def end_session(session: Session, sid: str) -> None:
    """Sign out: the session's row goes, so its cookie stops working everywhere."""
    session.execute(
        delete(DashboardSession).where(DashboardSession.id_sha256 == _token_sha256(sid))
    )


def pseudonym_for(secret: bytes, viewer: User, practice_ods: str) -> str:
    """A peer's name as ``viewer`` sees it: stable for that viewer, different for another viewer,
    not reversible without the server secret (HMAC-SHA256 over viewer id and ODS code)."""
    mac = hmac.new(secret, f"{viewer.id}\x00{practice_ods}".encode(), hashlib.sha256).digest()
    return "P-" + base64.b32encode(mac[:5]).decode("ascii")


def can_read_practice(user: User, practice: Practice) -> bool:
    """Identified access to a practice's data. The practice's own users always; anyone else
    only when the practice's chosen visibility is ``named`` (see :func:`shows_individually`)."""
    if user.role in ("practice", "ig_officer"):
        return user.practice_ods == practice.ods
    if getattr(practice, "visibility", "named") != "named":
        return False
    if user.role == "admin":
        return True
    if user.role == "network_lead":
        return user.group == practice.group
    return user.practice_ods == practice.ods


def shows_individually(user: User, practice: Practice) -> bool:
    """Whether ``practice`` appears to ``user`` as a practice of its own (identified or under a
    pseudonym): not when the practice chose ``totals_only``, except to its own users."""
    return getattr(practice, "visibility", "named") != "totals_only" or (
        user.role in ("practice", "ig_officer") and user.practice_ods == practice.ods
    )


def can_read_envelope(user: User, practice_ods: str) -> bool:
    """Raw envelopes: admin, or the practice's own practice or IG user. Never a peer's."""
    return user.role == "admin" or (
        user.role in ("practice", "ig_officer") and user.practice_ods == practice_ods
    )
