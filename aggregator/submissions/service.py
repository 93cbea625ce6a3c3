"""Verified ingestion: ``POST /v1/submissions``.

Checks run in this order, each failure an :class:`~aggregator.errors.AggregatorError` naming the
check, with nothing stored:

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
 9. iat window (+5 min / -7 days by default)    422 iat-window
10. catalogue id + version + sha256 known       422 unknown-catalogue / catalogue-mismatch
11. business rules: indicator and stratum known for that catalogue, numerator <= denominator
                                                422 unknown-indicator / unknown-stratum /
                                                numerator-exceeds-denominator
12. disclosure policy (protocol.disclosure)     422 disclosure
13. correction rules: ``supersedes`` names the practice's effective submission for the same
    period; a second plain submission for a period is refused     422 / 409

Then ONE transaction under the log's sequencer: the state-dependent checks (4, 8, 13) again,
exact envelope bytes, submission row, cells, log leaf and nodes, checkpoint, receipt, the key's
last_seq, the superseded submission's effective flag, and the benchmarks hook.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from protocol.disclosure import check_cells
from protocol.envelope import Envelope, verify_envelope
from protocol.errors import DisclosureError
from protocol.keys import VerifyingKey
from protocol.submission import Submission

from ..catalogues.service import CatalogueCache, KnownCatalogue
from ..common import (
    check_audience,
    check_iat,
    check_kind,
    check_signature,
    check_size,
    open_shape,
    parse_payload,
    sha256_hex,
    submission_hook,
)
from ..db.bulk import insert_rows
from ..db.models import Cell as CellRow
from ..db.models import Envelope as EnvelopeRow
from ..db.models import PracticeKey
from ..db.models import Submission as SubmissionRow
from ..db.session import lock_sequencer
from ..errors import BadRequestError, ConflictError, ForbiddenError, UnprocessableError
from ..log.service import LogSigner, append_leaf, issue_receipt, make_leaf_data
from ..practices.service import check_key_active

SessionFactory = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class Ingested:
    receipt: bytes
    created: bool  # False: an identical retry answered with the stored receipt
    submission_id: str


@dataclass(frozen=True)
class IngestLimits:
    cap: int
    iat_future: int
    iat_past: int


def ingest(
    read_session: SessionFactory,
    write_session: SessionFactory,
    signer: LogSigner,
    catalogues: CatalogueCache,
    body: bytes,
    *,
    now: float,
    limits: IngestLimits,
) -> Ingested:
    """Verify ``body`` (a submission envelope) and store it; see the module docstring."""
    check_size(body, limits.cap)
    env = open_shape(body)
    check_kind(env, "submission")
    if len(env.signatures) != 1:
        raise BadRequestError(
            "envelope: a submission carries exactly one signature", code="envelope-format"
        )
    kid = env.keyids[0]
    sha = sha256_hex(body)

    # Phase 1: every check, outside the sequencer, so verification work runs in parallel.
    with read_session() as session:
        key = check_key_active(session.get(PracticeKey, kid), kid)
        sub, payload = _verify_message(env, key, signer.aud)
        stored = _check_replay(session, sub, sha, key)
        if stored is not None:
            return Ingested(stored, created=False, submission_id=sub.submission_id)
        check_iat(sub.iat, now, limits.iat_future, limits.iat_past)
        known = _check_catalogue(session, catalogues, sub)
        _check_business_rules(sub, known)
        _check_disclosure(sub, known)
        _check_correction(session, sub)

    # Phase 2: one transaction under the sequencer; state-dependent checks once more.
    when = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    with write_session() as session:
        lock_sequencer(session)
        key = check_key_active(session.get(PracticeKey, kid), kid)
        stored = _check_replay(session, sub, sha, key)
        if stored is not None:
            return Ingested(stored, created=False, submission_id=sub.submission_id)
        _check_correction(session, sub)
        receipt = _store(session, signer, sub, body, sha, sha256_hex(payload), key, when)
    return Ingested(receipt, created=True, submission_id=sub.submission_id)


def _verify_message(env: Envelope, key: PracticeKey, aud: str) -> tuple[Submission, bytes]:
    vk = VerifyingKey.from_public_bytes(bytes(key.public_key))
    payload = check_signature(lambda: verify_envelope(env, [vk], kind="submission"))
    sub = parse_payload(payload, Submission)
    if sub.kid != key.kid:
        raise ForbiddenError(
            f"binding: payload kid {sub.kid} is not the signing key {key.kid}", code="key-binding"
        )
    if sub.practice != key.practice_ods:
        raise ForbiddenError(
            f"binding: kid {key.kid} is bound to practice {key.practice_ods}, not {sub.practice}",
            code="practice-binding",
        )
    check_audience(sub.aud, aud)
    return sub, payload


def _check_replay(session: Session, sub: Submission, sha: str, key: PracticeKey) -> bytes | None:
    existing = session.get(SubmissionRow, sub.submission_id)
    if existing is not None:
        if existing.envelope_sha256 == sha:
            env = session.get(EnvelopeRow, sha)
            assert env is not None
            return bytes(env.receipt)
        raise ConflictError(
            f"replay: submission_id {sub.submission_id} was already accepted with other bytes "
            f"(envelope sha256 {existing.envelope_sha256})",
            code="submission-id-reused",
        )
    if sub.seq <= key.last_seq:
        raise ConflictError(
            f"replay: seq {sub.seq} is not above the last accepted seq {key.last_seq} for kid {key.kid}",
            code="seq-not-increasing",
        )
    return None


def _check_catalogue(
    session: Session, catalogues: CatalogueCache, sub: Submission
) -> KnownCatalogue:
    ref = sub.catalogue
    known = catalogues.get(session, ref.id, ref.version)
    if known is None:
        raise UnprocessableError(
            f"catalogue: {ref.id} version {ref.version} is not published by this network",
            code="unknown-catalogue",
        )
    if known.sha256 != ref.sha256:
        raise UnprocessableError(
            f"catalogue: sha256 {ref.sha256} does not match published {ref.id} v{ref.version} ({known.sha256})",
            code="catalogue-mismatch",
        )
    return known


def _check_business_rules(sub: Submission, known: KnownCatalogue) -> None:
    for cell in sub.cells:
        strata = known.strata.get(cell.indicator)
        if strata is None:
            raise UnprocessableError(
                f"business rules: indicator {cell.indicator} is not in catalogue {known.catalogue.id} "
                f"v{known.catalogue.version}",
                code="unknown-indicator",
            )
        if (cell.stratum.age_band, cell.stratum.sex) not in strata:
            raise UnprocessableError(
                f"business rules: indicator {cell.indicator} has no stratum "
                f"age_band={cell.stratum.age_band} sex={cell.stratum.sex}",
                code="unknown-stratum",
            )
        n, d = cell.numerator.value, cell.denominator.value
        if n is not None and d is not None and n > d:
            raise UnprocessableError(
                f"business rules: {cell.indicator} {cell.stratum.age_band}/{cell.stratum.sex}: "
                f"numerator {n} > denominator {d}",
                code="numerator-exceeds-denominator",
            )


def _check_disclosure(sub: Submission, known: KnownCatalogue) -> None:
    try:
        check_cells(sub.cells, known.catalogue.disclosure)
    except DisclosureError as exc:
        raise UnprocessableError(f"disclosure policy: {exc}", code="disclosure") from None


def _check_correction(session: Session, sub: Submission) -> None:
    period = (sub.period.start, sub.period.end)
    if sub.supersedes is None:
        clash = session.scalars(
            select(SubmissionRow.submission_id).where(
                SubmissionRow.practice_ods == sub.practice,
                SubmissionRow.period_start == period[0],
                SubmissionRow.period_end == period[1],
                SubmissionRow.effective.is_(True),
            )
        ).first()
        if clash is not None:
            raise ConflictError(
                f"corrections: practice {sub.practice} already submitted {sub.period.label} "
                f"({clash}); send a correction with supersedes={clash} and a reason",
                code="period-already-submitted",
            )
        return
    target = session.get(SubmissionRow, sub.supersedes)
    if target is None:
        raise UnprocessableError(
            f"corrections: supersedes {sub.supersedes} is not an accepted submission",
            code="unknown-supersedes",
        )
    if target.practice_ods != sub.practice or (target.period_start, target.period_end) != period:
        raise UnprocessableError(
            f"corrections: supersedes {sub.supersedes} is not a submission of practice {sub.practice} "
            f"for {sub.period.label}",
            code="supersedes-mismatch",
        )
    if not target.effective:
        raise ConflictError(
            f"corrections: {sub.supersedes} was already superseded by {target.superseded_by}; "
            "supersede the current version",
            code="already-superseded",
        )


def _store(
    session: Session,
    signer: LogSigner,
    sub: Submission,
    body: bytes,
    sha: str,
    payload_sha: str,
    key: PracticeKey,
    when: dt.datetime,
) -> bytes:
    leaf = make_leaf_data(
        type="submission",
        ts_ms=int(when.timestamp() * 1000),
        practice=sub.practice,
        kid=key.kid,
        submission_id=sub.submission_id,
        seq=sub.seq,
        envelope_sha256=sha,
        payload_sha256=payload_sha,
        status="accepted",
        supersedes=sub.supersedes,
    )
    appended = append_leaf(session, leaf, kind="submission", practice=sub.practice, now=when)
    receipt = issue_receipt(
        session,
        signer,
        appended,
        message_type="submission",
        envelope_sha256=sha,
        submission_id=sub.submission_id,
        now=when,
    )
    session.connection().execute(
        EnvelopeRow.__table__.insert(),
        [
            {
                "sha256": sha,
                "kind": "submission",
                "practice_ods": sub.practice,
                "body": body,
                "received_at": when,
                "receipt": receipt,
                "leaf_index": appended.index,
            }
        ],
    )
    if sub.supersedes is not None:
        session.execute(
            update(SubmissionRow)
            .where(SubmissionRow.submission_id == sub.supersedes)
            .values(effective=False, superseded_by=sub.submission_id)
        )
    values = dict(
        submission_id=sub.submission_id,
        practice_ods=sub.practice,
        kid=key.kid,
        seq=sub.seq,
        iat=sub.iat,
        period_start=sub.period.start,
        period_end=sub.period.end,
        catalogue_id=sub.catalogue.id,
        catalogue_version=sub.catalogue.version,
        catalogue_sha256=sub.catalogue.sha256,
        supersedes=sub.supersedes,
        reason=sub.reason,
        envelope_sha256=sha,
        payload_sha256=payload_sha,
        leaf_index=appended.index,
        received_at=when,
        effective=True,
        superseded_by=None,
    )
    # Core, not the ORM unit of work; the hook gets the same values as a (transient) row.
    session.connection().execute(SubmissionRow.__table__.insert(), [values])
    row = SubmissionRow(**values)
    insert_rows(
        session,
        CellRow.__table__,
        (
            "submission_id",
            "indicator",
            "age_band",
            "sex",
            "denominator",
            "denominator_status",
            "numerator",
            "numerator_status",
            "exclusions",
            "exclusions_status",
        ),
        [
            (
                sub.submission_id,
                c.indicator,
                c.stratum.age_band,
                c.stratum.sex,
                c.denominator.value,
                c.denominator.status,
                c.numerator.value,
                c.numerator.status,
                c.exclusions.value,
                c.exclusions.status,
            )
            for c in sub.cells
        ],
    )
    session.execute(update(PracticeKey).where(PracticeKey.kid == key.kid).values(last_seq=sub.seq))
    hook = submission_hook()
    if hook is not None:
        hook(session, row)
    return receipt
