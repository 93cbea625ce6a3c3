"""Verified ingestion: ``POST /v1/submissions``.

Checks run in this order (the named checks of :mod:`.checks`, the key and replay checks of
:mod:`aggregator.practices.service` and :mod:`.commit`), each failure an
:class:`~aggregator.errors.AggregatorError` naming the check, with nothing stored:

 1. size (cap on the body)                      413 body-too-large
 2. envelope shape                              400 envelope-format
 3. payloadType                                 400 payload-type / unsupported-version
 4. active key for the keyid                    401 unknown-key, 403 key-revoked / key-retired
 5. signature                                   401 signature
 6. canonical form (and message schema)         400 canonical-form, 422 schema
 7. kid / practice / aud binding                403 key-binding / practice-binding / wrong-audience
 8. replay: same submission_id and bytes        200 with the stored receipt
           same submission_id, other bytes      409 submission-id-reused
           seq not above the key's last seq     409 seq-not-increasing
    (the stored-id lookup runs here only when the seq or the iat window fails, which every
    retry of a stored submission does; otherwise a reused id is found under the sequencer)
 9. iat window (+5 min / -7 days by default)    422 iat-window
    the period is one calendar month, first to last day      422 period-not-calendar-month
    the period has ended: its last day is before the UTC date of now + 14 h + the iat
    allowance (the earliest time zone, and clock skew)       422 period-not-ended
10. catalogue id + version + sha256 known       422 unknown-catalogue / catalogue-mismatch
11. business rules: indicator and stratum known for that catalogue, numerator <= denominator
                                                422 unknown-indicator / unknown-stratum /
                                                numerator-exceeds-denominator
12. disclosure policy (protocol.disclosure)     422 disclosure
13. correction rules: ``supersedes`` names the practice's effective submission for the same
    period; a second plain submission for a period is refused     422 / 409

Phase 1 (checks 1-12) reads the database only for what it has not seen: the process keeps each
active key it has verified with (:class:`KeyCache`) and each published catalogue. The write
checks the key's status and seq against the database again, so a key revoked or rotated away
since is still refused there, with the same 403 (after the signature check rather than before
it), and dropped from the cache.

Then ONE transaction under the log's sequencer (:mod:`.commit`): the state-dependent checks
(4, 8, 13) again, exact envelope bytes, submission row, cells, log leaf and nodes, checkpoint,
receipt, the key's last_seq, the superseded submission's effective flag, and the benchmarks
marked stale (:func:`aggregator.benchmarks.service.on_submissions_stored`). Submissions that reach the sequencer together share that transaction (group commit); each
is written whole or not at all, and no receipt leaves before the commit.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol.canonical import sha256_hex
from protocol.envelope import Envelope, verify_envelope
from protocol.keys import VerifyingKey
from protocol.submission import Submission

from ..catalogues.service import CatalogueCache
from ..db.models import AccessAudit, PracticeKey, User, table_of
from ..db.models import Envelope as EnvelopeRow
from ..db.models import Submission as SubmissionRow
from ..errors import AggregatorError, BadRequestError, ForbiddenError, NotFoundError
from ..log.service import LogSigner
from ..users.service import can_read_envelope
from . import checks
from .commit import Committer, Ingested, Verified, check_seq, id_reused, store_batch

SessionFactory = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class IngestLimits:
    cap: int
    iat_future: int
    iat_past: int


@dataclass(frozen=True)
class KnownKey:
    """What verification needs of an active key."""

    kid: str
    practice_ods: str
    verifying_key: VerifyingKey
    last_seq: int  # the last seq this process knows accepted: at most the stored one


#: Write-time refusals that mean a key is no longer usable (or never was).
KEY_REFUSALS = frozenset({"unknown-key", "key-revoked", "key-retired"})


class KeyCache:
    """The active keys a process has verified submissions with, so phase 1 needs no database
    read for them (see the module docstring: the write checks the key again)."""

    def __init__(self) -> None:
        self._keys: dict[str, KnownKey] = {}
        self._lock = threading.Lock()

    def get(self, kid: str) -> KnownKey | None:
        return self._keys.get(kid)

    def put(self, key: KnownKey) -> None:
        with self._lock:
            self._keys[key.kid] = key

    def accepted(self, kid: str, seq: int) -> None:
        with self._lock:
            key = self._keys.get(kid)
            if key is not None and seq > key.last_seq:
                self._keys[kid] = replace(key, last_seq=seq)

    def drop(self, kid: str) -> None:
        with self._lock:
            self._keys.pop(kid, None)

    def load_active(self, session: Session) -> int:
        """Hold every key that is active now (one query; a server process does this at start,
        so a month in which each practice submits once reads no key per submission). Returns
        how many. A key revoked or rotated away later is refused at the write as any cached
        key is; a key enrolled later is read when first seen."""
        t = table_of(PracticeKey)
        rows = session.execute(
            select(t.c.kid, t.c.practice_ods, t.c.public_key, t.c.last_seq).where(
                t.c.status == "active"
            )
        ).all()
        loaded = {
            kid: KnownKey(kid, ods, VerifyingKey.from_public_bytes(bytes(public)), last_seq)
            for kid, ods, public, last_seq in rows
        }
        with self._lock:
            for kid, key in loaded.items():
                self._keys.setdefault(kid, key)
        return len(loaded)


def ingest(
    read_session: SessionFactory,
    write_session: SessionFactory,
    signer: LogSigner,
    catalogues: CatalogueCache,
    body: bytes,
    *,
    now: float,
    limits: IngestLimits,
    committer: Committer | None = None,
    keys: KeyCache | None = None,
) -> Ingested:
    """Verify ``body`` (a submission envelope) and store it; see the module docstring.

    With a ``committer`` (the server's), the write joins whatever batch is being formed (see
    :mod:`.commit`); without one it is a transaction of its own. With ``keys`` (the server's),
    verification reads keys it has seen from there."""
    verified = verify(read_session, signer, catalogues, body, now=now, limits=limits, keys=keys)
    if isinstance(verified, Ingested):
        return verified
    kid = verified.sub.kid
    try:
        if committer is not None:
            out = committer.commit(verified)
        else:
            with write_session() as session:
                stored = store_batch(session, signer, [verified])[0]
            if isinstance(stored, AggregatorError):
                raise stored
            out = stored
    except AggregatorError as exc:
        if keys is not None and exc.code in KEY_REFUSALS:
            keys.drop(kid)
        raise
    if keys is not None and out.created:
        keys.accepted(kid, verified.sub.seq)
    return out


# Verification is CPU work in Python: threads of one process only take turns on the GIL, and
# many of them at once cost more in switching than they gain (measured: about 1.3x fewer
# submissions/s with 16 concurrent requests per process, docs/benchmarks.md). So a process
# verifies one submission at a time while its other requests wait (for this, or for the
# database); parallelism comes from worker processes, one per core (`serve --workers`).
_VERIFYING = threading.Lock()


def verify(
    read_session: SessionFactory,
    signer: LogSigner,
    catalogues: CatalogueCache,
    body: bytes,
    *,
    now: float,
    limits: IngestLimits,
    keys: KeyCache | None = None,
) -> Verified | Ingested:
    """Checks 1-12 (phase 1), outside the sequencer, so verification overlaps the writes (one
    at a time per process, see ``_VERIFYING``; in parallel across processes). An identical
    retry of a stored submission is answered here with its stored receipt."""
    with _VERIFYING:
        checks.check_size(body, limits.cap)
        env = checks.check_shape(body)
        checks.check_kind(env, "submission")
        checks.check_signer_count(env, 1, "a submission carries exactly one signature")
        kid = env.keyids[0]
        sha = sha256_hex(body)
        with ExitStack() as stack:
            opened: list[Session] = []

            def session() -> Session:  # opened on first use: a known key and catalogue need none
                if not opened:
                    opened.append(stack.enter_context(read_session()))
                return opened[0]

            key = keys.get(kid) if keys is not None else None
            if key is None:
                table = table_of(PracticeKey)
                row = session().execute(select(table).where(table.c.kid == kid)).first()
                active = checks.check_key_active(row, kid)  # type: ignore[arg-type]
                key = KnownKey(
                    kid,
                    active.practice_ods,
                    VerifyingKey.from_public_bytes(bytes(active.public_key)),
                    active.last_seq,
                )
                if keys is not None:
                    keys.put(key)
            sub, payload = _verify_message(env, key, signer.aud)
            try:
                # Check 8 without a query: a fresh submission has a seq above the key's last one.
                # A retry of a stored one never has, so the lookup runs (here) only when this or
                # the iat window fails: an identical retry, however old, gets its receipt. (A
                # retry that passes both here is answered by the write's own check.)
                check_seq(sub.seq, key.last_seq, key.kid)
                checks.check_issued_at(sub.iat, now, limits.iat_future, limits.iat_past)
                checks.check_period_is_month(sub.period)
                checks.check_period_ended(sub.period.end, sub.period.label, now, limits.iat_future)
            except AggregatorError as exc:
                stored = _stored_receipt(session(), sub, sha)
                if stored is not None:
                    return Ingested(stored, created=False, submission_id=sub.submission_id)
                if exc.code == "seq-not-increasing":
                    # Refused on this process's cached seq, which another worker may have
                    # passed: the refusal names the stored one (its last_seq member is what a
                    # sender goes above), read now.
                    check_seq(sub.seq, _stored_last_seq(session(), key), key.kid)
                raise
            ref = sub.catalogue
            known = checks.check_catalogue(
                sub,
                catalogues.cached(ref.id, ref.version)
                or catalogues.get(session(), ref.id, ref.version),
            )
            checks.check_business_rules(sub, known)
            checks.check_disclosure(sub, known)
        # Check 13 (corrections) needs the stored state and runs under the sequencer only.
        when = dt.datetime.fromtimestamp(now, tz=dt.UTC)
        return Verified.of(sub, body, sha, sha256_hex(payload), when, signer.verdict_key)


def _stored_last_seq(session: Session, key: KnownKey) -> int:
    """The key's last accepted seq as stored (the cached one may be behind it, never ahead)."""
    stored = session.execute(
        select(PracticeKey.last_seq).where(PracticeKey.kid == key.kid)
    ).scalar()
    return key.last_seq if stored is None else max(int(stored), key.last_seq)


def _verify_message(env: Envelope, key: KnownKey, aud: str) -> tuple[Submission, bytes]:
    """Checks 5-7: signature, canonical payload (parsed once), kid / practice / aud binding."""
    payload = checks.check_signature(
        lambda: verify_envelope(env, [key.verifying_key], kind="submission")
    )
    sub = checks.check_payload(payload, Submission)
    checks.check_binding(sub, key.kid, key.practice_ods)
    checks.check_audience(sub.aud, aud)
    return sub, payload


def _stored_receipt(session: Session, sub: Submission, sha: str) -> bytes | None:
    """An identical retry's stored receipt; a reused id with other bytes is refused."""
    existing = session.get(SubmissionRow, sub.submission_id)
    if existing is None:
        return None
    if existing.envelope_sha256 != sha:
        raise id_reused(
            sub.submission_id,
            existing.envelope_sha256,
            own=existing.practice_ods == sub.practice,
        )
    env = session.get(EnvelopeRow, sha)
    assert env is not None
    return bytes(env.receipt)


SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Why a role was refused a raw envelope, in that role's terms (a network lead has no practice).
ENVELOPE_REFUSAL = {
    "network_lead": "role: a network lead may not read raw envelopes; only an admin, the "
    "practice and its IG officer may",
    "practice": "role: a practice user may read only its own practice's envelopes",
    "ig_officer": "role: an IG officer may read only their own practice's envelopes",
}


def read_envelope(
    write_session: SessionFactory, user: User, sha256: str, now: dt.datetime
) -> bytes:
    """The exact bytes of an accepted envelope, for an admin or the practice's own practice or
    IG user (``GET /v1/envelopes/{sha256}`` and the dashboard's IG page). Every attempt is
    recorded in the access audit, granted or not."""
    if not SHA256.fullmatch(sha256):
        raise BadRequestError("sha256 must be 64 lowercase hex characters")
    with write_session() as session:
        row = session.get(EnvelopeRow, sha256)
        practice = row.practice_ods if row is not None else None
        granted = row is not None and can_read_envelope(user, row.practice_ods)
        session.add(
            AccessAudit(
                at=now,
                user_id=user.id,
                user_role=user.role,
                envelope_sha256=sha256,
                practice_ods=practice,
                granted=granted,
            )
        )
        body = bytes(row.body) if granted and row is not None else None
    if row is None:
        raise NotFoundError(f"no envelope with sha256 {sha256}", code="unknown-envelope")
    if body is None:
        raise ForbiddenError(
            ENVELOPE_REFUSAL.get(user.role, ENVELOPE_REFUSAL["practice"]),
            code="envelope-forbidden",
        )
    return body
