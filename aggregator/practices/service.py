"""Practices, enrolment tokens and agent keys.

Key lifecycle: ``active`` (may sign) -> ``retired`` (rotated away: verifies history, may not
sign) or ``revoked`` (by an admin, with an optional ``compromised_since``). A practice has at
most one active key. A key is bound to a practice only by an enrolment (a single-use token plus
proof of possession) or a rotation (signed by the old and the new key); there is no
trust-on-first-use and no replacing a key on mismatch. Every key event is a log leaf.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from protocol.canonical import sha256_hex
from protocol.envelope import verify_envelope
from protocol.errors import SchemaError
from protocol.keys import VerifyingKey
from protocol.submission import Enrol, Jwk, Rotate

from ..db.models import Cell, EnrolToken, Envelope, Practice, PracticeKey, Submission, table_of
from ..db.session import lock_sequencer
from ..errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnprocessableError,
)
from ..log.service import LogSigner, append_leaf, issue_receipt, make_leaf_data
from ..submissions.checks import (
    check_audience,
    check_issued_at,
    check_key_active,
    check_kind,
    check_payload,
    check_shape,
    check_signature,
    check_signer_count,
    check_size,
)
from ..submissions.commit import check_seq

ODS = re.compile(r"^[A-Z][0-9]{5}$")
# --- administration ----------------------------------------------------------------------------


def add_practice(
    session: Session,
    ods: str,
    *,
    name: str,
    group: str,
    list_size: int,
    imd_decile: int,
    now: dt.datetime,
) -> Practice:
    if not ODS.fullmatch(ods):
        raise BadRequestError(
            f"ODS code {ods!r} is not a practice code (a letter and 5 digits, e.g. A81001)"
        )
    if not name.strip() or len(name) > 200:
        raise BadRequestError("--name must be 1-200 characters")
    if not group.strip() or len(group) > 100:
        raise BadRequestError("--group must be 1-100 characters")
    if not 0 <= list_size <= 1_000_000:
        raise BadRequestError(f"--list-size {list_size} is not between 0 and 1,000,000")
    if not 1 <= imd_decile <= 10:
        raise BadRequestError(f"--imd-decile {imd_decile} is not between 1 and 10")
    if session.get(Practice, ods) is not None:
        raise ConflictError(f"practice {ods} already exists", code="practice-exists")
    row = Practice(
        ods=ods, name=name, group=group, list_size=list_size, imd_decile=imd_decile, created_at=now
    )
    session.add(row)
    session.flush()
    return row


def get_practice(session: Session, ods: str) -> Practice:
    row = session.get(Practice, ods)
    if row is None:
        raise NotFoundError(
            f"practice {ods} is not registered (fedqi-aggregator practice add)",
            code="unknown-practice",
        )
    return row


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_enrol_token(
    session: Session, ods: str, *, hours: int, now: dt.datetime
) -> tuple[str, dt.datetime]:
    """A new single-use token (128 random bits, base64url); only its hash is stored."""
    get_practice(session, ods)
    token = secrets.token_urlsafe(16)
    expires = now + dt.timedelta(hours=hours)
    session.add(
        EnrolToken(
            token_sha256=token_sha256(token), practice_ods=ods, created_at=now, expires_at=expires
        )
    )
    session.flush()
    return token, expires


def active_key(session: Session, ods: str) -> PracticeKey | None:
    return session.scalars(
        select(PracticeKey).where(PracticeKey.practice_ods == ods, PracticeKey.status == "active")
    ).first()


def revoke_key(
    session: Session,
    signer: LogSigner,
    kid: str,
    *,
    compromised_since: dt.datetime | None,
    now: dt.datetime,
) -> int:
    """Revoke a key (logged as a key_event leaf); returns the leaf index."""
    lock_sequencer(session)
    key = session.get(PracticeKey, kid)
    if key is None:
        raise NotFoundError(f"no key with kid {kid}", code="unknown-key")
    if key.status == "revoked":
        raise ConflictError(f"key {kid} is already revoked", code="key-revoked")
    if compromised_since is not None and compromised_since > now:
        raise BadRequestError("--compromised-since is in the future")
    key.status = "revoked"
    key.revoked_at = now
    key.compromised_since = compromised_since
    if compromised_since is not None:
        # what it signed in the suspect window leaves the benchmarks (benchmarks.service.suspect)
        from ..benchmarks.service import Group, mark_stale

        rows = session.execute(
            select(Cell.indicator, Submission.period_start, Submission.period_end)
            .join(Submission, Submission.submission_id == Cell.submission_id)
            .where(Submission.kid == kid, Submission.received_at >= compromised_since)
            .distinct()
        ).all()
        mark_stale(session, [Group(*r) for r in rows])
    leaf = make_leaf_data(
        type="key_event",
        ts_ms=_ms(now),
        practice=key.practice_ods,
        kid=kid,
        status="revoked",
        seq=key.last_seq or None,
    )
    appended = append_leaf(session, leaf, kind="key_event", practice=key.practice_ods, now=now)
    from ..log.service import sign_and_store_checkpoint

    sign_and_store_checkpoint(session, signer, appended.size, now, appended.root)
    return appended.index


def _ms(now: dt.datetime) -> int:
    return int(now.timestamp() * 1000)


def _stored_receipt(session: Session, sha: str) -> bytes | None:
    row = session.get(Envelope, sha)
    return bytes(row.receipt) if row is not None else None


@dataclass(frozen=True)
class Accepted:
    receipt: bytes
    created: bool  # False: an identical retry, answered with the stored receipt


# --- enrol -------------------------------------------------------------------------------------


def _key_from_jwk(jwk: Jwk) -> VerifyingKey:
    """The public key a message carries (enrol's jwk, rotate's new_jwk); 422 if it is not one."""
    try:
        return VerifyingKey.from_jwk(jwk)
    except SchemaError as exc:
        raise UnprocessableError(f"schema: {exc}", code="schema") from None


def enrol(
    session_factory: Callable[[], AbstractContextManager[Session]],
    signer: LogSigner,
    body: bytes,
    *,
    now: float,
    cap: int,
    iat_future: int,
    iat_past: int,
) -> Accepted:
    """Verify an enrol message and bind its key to the practice (see the module docstring)."""
    check_size(body, cap)
    env = check_shape(body)
    check_kind(env, "enrol")
    check_signer_count(env, 1, "an enrol message carries exactly one signature (the new key's)")
    sha = sha256_hex(body)
    # Proof of possession: the key that signs is the key in the payload.
    payload = env.payload_bytes()
    msg = check_payload(payload, Enrol)
    new_key = _key_from_jwk(msg.jwk)
    if env.keyids[0] != new_key.kid:
        raise AuthenticationError(
            f"signature: enrol must be signed by the key it enrols ({new_key.kid}), not {env.keyids[0]}",
            code="signature",
        )
    check_signature(lambda: verify_envelope(env, [new_key], kind="enrol"))
    check_audience(msg.aud, signer.aud)
    when = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    with session_factory() as session:
        lock_sequencer(session)
        stored = _stored_receipt(session, sha)
        if stored is not None:
            return Accepted(stored, created=False)
        check_issued_at(msg.iat, now, iat_future, iat_past)
        token = session.get(EnrolToken, token_sha256(msg.token))
        if token is None:
            raise AuthenticationError("enrolment token: unknown token", code="enrol-token-unknown")
        if token.used_at is not None:
            raise AuthenticationError(
                "enrolment token: already used (tokens are single use)", code="enrol-token-used"
            )
        if _aware(token.expires_at) <= when:
            raise AuthenticationError(
                f"enrolment token: expired at {_aware(token.expires_at).isoformat()}; ask the network admin for a new one",
                code="enrol-token-expired",
            )
        if token.practice_ods != msg.practice:
            raise ForbiddenError(
                f"binding: this token was issued for another practice, not {msg.practice}",
                code="practice-binding",
            )
        if session.get(PracticeKey, new_key.kid) is not None:
            raise ConflictError(f"key: kid {new_key.kid} is already enrolled", code="key-exists")
        current = active_key(session, msg.practice)
        if current is not None:
            raise ConflictError(
                f"key: practice {msg.practice} already has active key {current.kid}; rotate it "
                "(fedqi-agent rotate-key) or have the admin revoke it before enrolling again",
                code="practice-has-key",
                # shown only to the holder of a valid token issued for this practice (checked
                # above): the kid the admin's `key revoke` names
                extensions={"active_kid": current.kid},
            )
        burnt = session.execute(
            update(EnrolToken)
            .where(EnrolToken.token_sha256 == token.token_sha256, EnrolToken.used_at.is_(None))
            .values(used_at=when, used_by_kid=new_key.kid)
        )
        if cast(CursorResult[Any], burnt).rowcount != 1:
            raise AuthenticationError(
                "enrolment token: already used (tokens are single use)", code="enrol-token-used"
            )
        session.add(
            PracticeKey(
                kid=new_key.kid,
                practice_ods=msg.practice,
                public_key=new_key.public_bytes(),
                status="active",
                last_seq=0,
                created_at=when,
            )
        )
        session.flush()
        leaf = make_leaf_data(
            type="key_event",
            ts_ms=_ms(when),
            practice=msg.practice,
            kid=new_key.kid,
            status="enrolled",
            envelope_sha256=sha,
            payload_sha256=sha256_hex(payload),
        )
        return Accepted(
            _log_message(session, signer, leaf, "enrol", body, sha, msg.practice, when),
            created=True,
        )


def _log_message(
    session: Session,
    signer: LogSigner,
    leaf: bytes,
    kind: Literal["submission", "enrol", "rotate"],
    body: bytes,
    sha: str,
    practice: str,
    when: dt.datetime,
    submission_id: str | None = None,
) -> bytes:
    appended = append_leaf(
        session,
        leaf,
        kind="submission" if kind == "submission" else "key_event",
        practice=practice,
        now=when,
    )
    receipt = issue_receipt(
        session,
        signer,
        appended,
        message_type=kind,
        envelope_sha256=sha,
        submission_id=submission_id,
        now=when,
    )
    session.connection().execute(
        table_of(Envelope).insert(),
        [
            {
                "sha256": sha,
                "kind": kind,
                "practice_ods": practice,
                "body": body,
                "received_at": when,
                "receipt": receipt,
                "leaf_index": appended.index,
            }
        ],
    )
    return receipt


# --- rotate ------------------------------------------------------------------------------------


def rotate(
    session_factory: Callable[[], AbstractContextManager[Session]],
    signer: LogSigner,
    body: bytes,
    *,
    now: float,
    cap: int,
    iat_future: int,
    iat_past: int,
) -> Accepted:
    """Verify a rotate message signed by the old (active) key and the new key."""
    check_size(body, cap)
    env = check_shape(body)
    check_kind(env, "rotate")
    check_signer_count(env, 2, "a rotate message carries two signatures (old and new key)")
    sha = sha256_hex(body)
    payload = env.payload_bytes()
    msg = check_payload(payload, Rotate)
    new_key = _key_from_jwk(msg.new_jwk)
    if set(env.keyids) != {msg.old_kid, new_key.kid}:
        raise AuthenticationError(
            "signature: a rotation must be signed by exactly the old and the new key",
            code="signature",
        )
    when = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    with session_factory() as session:
        lock_sequencer(session)
        stored = _stored_receipt(session, sha)
        if stored is not None:
            return Accepted(stored, created=False)
        old = check_key_active(session.get(PracticeKey, msg.old_kid), msg.old_kid)
        old_vk = VerifyingKey.from_public_bytes(bytes(old.public_key))
        check_signature(lambda: verify_envelope(env, [old_vk, new_key], kind="rotate"))
        if msg.practice != old.practice_ods:
            raise ForbiddenError(
                f"binding: kid {old.kid} belongs to practice {old.practice_ods}, not {msg.practice}",
                code="practice-binding",
            )
        check_audience(msg.aud, signer.aud)
        check_seq(msg.seq, old.last_seq, old.kid)  # the same refusal as a submission's
        check_issued_at(msg.iat, now, iat_future, iat_past)
        if session.get(PracticeKey, new_key.kid) is not None:
            raise ConflictError(f"key: kid {new_key.kid} is already enrolled", code="key-exists")
        old.status = "retired"
        old.retired_at = when
        old.replaced_by = new_key.kid
        old.last_seq = msg.seq
        session.add(
            PracticeKey(
                kid=new_key.kid,
                practice_ods=old.practice_ods,
                public_key=new_key.public_bytes(),
                status="active",
                last_seq=0,
                created_at=when,
            )
        )
        session.flush()
        leaf = make_leaf_data(
            type="key_event",
            ts_ms=_ms(when),
            practice=old.practice_ods,
            kid=new_key.kid,
            status="rotated",
            seq=msg.seq,
            envelope_sha256=sha,
            payload_sha256=sha256_hex(payload),
        )
        return Accepted(
            _log_message(session, signer, leaf, "rotate", body, sha, old.practice_ods, when),
            created=True,
        )


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes for timezone-aware columns; they are stored as UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
