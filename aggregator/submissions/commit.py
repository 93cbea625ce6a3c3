"""Group commit: verified submissions are written in batches, one transaction per batch.

Verification (envelope, signature, canonical form, schema, business rules, disclosure) runs in
each request's own thread, in parallel. What must be serial is the write under the log's
sequencer. Instead of one transaction per submission, the requests waiting for the sequencer at
the same moment share one: the first to arrive leads, takes every waiting submission (up to
``max_batch``), and the rest wait for its commit. A lone submission is a batch of one, so no
submission ever waits for others to arrive.

Inside the transaction each submission is checked again against the state it will be written on
(active key, replay, ``seq``, corrections), including the submissions before it in the same
batch; one that fails gets its own error and nothing of it is written. Every accepted
submission's envelope, submission row, cells, log leaf, ``last_seq`` and superseded flag are in
that one transaction: all of them or none. The log gets one signed checkpoint per batch, at the
batch's last leaf, and every receipt proves its leaf's inclusion in that checkpoint. No receipt
is returned before the commit. If the transaction itself fails, each submission of the batch is
retried in a transaction of its own, so one submission's fault is never another's answer.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from sqlalchemy import bindparam, or_, select, tuple_, update
from sqlalchemy.orm import Session

from protocol.submission import Submission

from ..benchmarks.service import on_submissions_stored
from ..db import counts
from ..db.bulk import insert_rows, update_rows
from ..db.cells import COLUMNS as CELL_COLUMNS
from ..db.cells import cell_rows
from ..db.models import Cell as CellRow
from ..db.models import Envelope as EnvelopeRow
from ..db.models import Practice, PracticeKey, table_of
from ..db.models import Submission as SubmissionRow
from ..db.session import lock_sequencer
from ..errors import AggregatorError, ConflictError, UnprocessableError
from ..log import verdict
from ..log.service import (
    LogSigner,
    append_leaves,
    make_leaf_data,
    receipt_for,
    sign_and_store_checkpoint,
)
from .checks import check_key_active

_log = logging.getLogger("fedqi.aggregator.visibility")

SessionFactory = Callable[[], AbstractContextManager[Session]]

SUBMISSION_COLUMNS = (
    "submission_id",
    "practice_ods",
    "kid",
    "seq",
    "iat",
    "period_start",
    "period_end",
    "catalogue_id",
    "catalogue_version",
    "catalogue_sha256",
    "supersedes",
    "reason",
    "envelope_sha256",
    "payload_sha256",
    "leaf_index",
    "received_at",
    "effective",
    "superseded_by",
    "counts",
    "counts_verdict",
)


@dataclass(frozen=True)
class Verified:
    """A submission that passed every stateless check, with what the write needs: its
    ``cells`` rows are built here, outside the sequencer (a batch's writes are serial across
    processes, so what can be done before them is done before them)."""

    sub: Submission
    body: bytes
    sha: str  # of the envelope bytes
    payload_sha: str
    when: dt.datetime  # received at
    cells: list[tuple[str | int | bytes | None, ...]]  # the cells rows and their verdicts
    counts: bytes  # the whole-practice counts value (aggregator.db.counts)
    counts_verdict: bytes  # its seal

    @classmethod
    def of(
        cls,
        sub: Submission,
        body: bytes,
        sha: str,
        payload_sha: str,
        when: dt.datetime,
        verdict_key: bytes,
    ) -> Verified:
        """``verdict_key`` seals each row (:mod:`aggregator.log.verdict`): it has passed every
        check, so the benchmark refresh need not read its envelope again."""
        binding = (
            sub.submission_id,
            sub.practice,
            sub.kid,
            sha,
            sub.period.start.isoformat(),
            sub.period.end.isoformat(),
        )
        sealer = verdict.Sealer(verdict_key, binding)
        plain = cell_rows(sub.submission_id, sub.cells)
        rows = [(*r, sealer.seal(r[1:])) for r in plain]
        value = counts.encode_rows(plain)
        return cls(sub, body, sha, payload_sha, when, rows, value, sealer.seal_counts(value))


@dataclass(frozen=True)
class Ingested:
    receipt: bytes
    created: bool  # False: an identical retry answered with the stored receipt
    submission_id: str


Outcome = Ingested | AggregatorError


@dataclass
class _Known:
    """What the batch's checks need of one stored (or earlier-in-batch) submission."""

    practice: str
    period: tuple[dt.date, dt.date]
    effective: bool
    superseded_by: str | None
    sha: str
    position: int | None = None  # index in the batch, for one accepted in this batch


@dataclass
class _State:
    keys: dict[str, Any]  # kid -> row (kid, status, last_seq)
    last_seq: dict[str, int]
    known: dict[str, _Known]
    effective: dict[tuple[str, dt.date, dt.date], str] = field(default_factory=dict)


def _load_state(session: Session, items: Sequence[Verified]) -> _State:
    # Core statements on the session's connection (no ORM objects): this runs under the
    # sequencer, once per batch.
    conn = session.connection()
    k = PracticeKey.__table__.c
    kids = {v.sub.kid for v in items}
    keys = {
        r.kid: r for r in conn.execute(select(k.kid, k.status, k.last_seq).where(k.kid.in_(kids)))
    }
    ids = {v.sub.submission_id for v in items} | {
        v.sub.supersedes for v in items if v.sub.supersedes is not None
    }
    periods = {(v.sub.practice, v.sub.period.start, v.sub.period.end) for v in items}
    s = SubmissionRow.__table__.c
    rows = conn.execute(
        select(
            s.submission_id,
            s.practice_ods,
            s.period_start,
            s.period_end,
            s.effective,
            s.superseded_by,
            s.envelope_sha256,
        ).where(
            or_(
                s.submission_id.in_(ids),
                (tuple_(s.practice_ods, s.period_start, s.period_end).in_(periods))
                & s.effective.is_(True),
            )
        )
    ).all()
    state = _State(keys, {kid: r.last_seq for kid, r in keys.items()}, {})
    for sid, ods, start, end, eff, by, sha in rows:
        state.known[sid] = _Known(ods, (start, end), bool(eff), by, sha)
        if eff:
            state.effective[(ods, start, end)] = sid
    return state


def id_reused(submission_id: str, stored_sha: str, *, own: bool) -> ConflictError:
    """Check 8: this id was accepted with other envelope bytes. ``own``: the stored submission
    is the submitting practice's; only then is its envelope's hash the ``envelope_sha256``
    member, and named in the detail: another practice's envelope is not the submitter's to look
    up, nor its hash to learn."""
    named = f" (envelope sha256 {stored_sha})" if own else ""
    return ConflictError(
        f"replay: submission_id {submission_id} was already accepted with other bytes{named}",
        code="submission-id-reused",
        extensions={"envelope_sha256": stored_sha} if own else None,
    )


def check_seq(seq: int, last_seq: int, kid: str) -> None:
    """Check 8: ``seq`` must be above the key's last accepted one (the signing key's own
    ``kid`` and ``last_seq`` are the refusal's members)."""
    if seq <= last_seq:
        raise ConflictError(
            f"replay: seq {seq} is not above the last accepted seq {last_seq} for kid {kid}",
            code="seq-not-increasing",
            extensions={"kid": kid, "last_seq": last_seq},
        )


def _check(state: _State, v: Verified, position: int) -> int | None:
    """Raise the error ``v`` meets on this state; or return the batch position of an identical
    submission accepted earlier (an idempotent retry); or ``None``: accept it."""
    sub = v.sub
    key = check_key_active(state.keys.get(sub.kid), sub.kid)  # a row of PracticeKey's columns
    seen = state.known.get(sub.submission_id)
    if seen is not None:
        if seen.sha == v.sha:
            return -1 if seen.position is None else seen.position
        raise id_reused(sub.submission_id, seen.sha, own=seen.practice == sub.practice)
    check_seq(sub.seq, state.last_seq[key.kid], key.kid)
    period = (sub.period.start, sub.period.end)
    if sub.supersedes is None:
        clash = state.effective.get((sub.practice, *period))
        if clash is not None:
            raise ConflictError(
                f"corrections: practice {sub.practice} already submitted {sub.period.label} "
                f"({clash}); send a correction with supersedes={clash} and a reason",
                code="period-already-submitted",
                extensions={"current_submission_id": clash},
            )
        return None
    target = state.known.get(sub.supersedes)
    if target is None:
        raise UnprocessableError(
            f"corrections: supersedes {sub.supersedes} is not an accepted submission",
            code="unknown-supersedes",
        )
    if target.practice != sub.practice or target.period != period:
        raise UnprocessableError(
            f"corrections: supersedes {sub.supersedes} is not a submission of practice "
            f"{sub.practice} for {sub.period.label}",
            code="supersedes-mismatch",
        )
    if not target.effective:
        # The target is this practice's submission for this period (checked above), so both
        # members are the practice's own submissions.
        current = state.effective.get((sub.practice, *period))
        members = {"superseded_by": target.superseded_by, "current_submission_id": current}
        raise ConflictError(
            f"corrections: {sub.supersedes} was already superseded by {target.superseded_by}; "
            "supersede the current version",
            code="already-superseded",
            extensions={k: v for k, v in members.items() if v is not None},
        )
    return None


def _accept(state: _State, v: Verified, position: int) -> None:
    sub = v.sub
    state.last_seq[sub.kid] = sub.seq
    period = (sub.period.start, sub.period.end)
    if sub.supersedes is not None:
        target = state.known[sub.supersedes]
        target.effective, target.superseded_by = False, sub.submission_id
    state.known[sub.submission_id] = _Known(sub.practice, period, True, None, v.sha, position)
    state.effective[(sub.practice, *period)] = sub.submission_id


def store_batch(session: Session, signer: LogSigner, items: Sequence[Verified]) -> list[Outcome]:
    """Check ``items`` in order against the stored state and write the accepted ones in the
    caller's transaction (the caller commits); the outcome of each, in order."""
    lock_sequencer(session)
    state = _load_state(session, items)
    outcomes: list[Outcome | int | None] = []
    accepted: list[int] = []
    for i, v in enumerate(items):
        try:
            same = _check(state, v, i)
        except AggregatorError as exc:
            outcomes.append(exc)
            continue
        if same is None:
            _accept(state, v, i)
            accepted.append(i)
        outcomes.append(same)
    receipts = _write(session, signer, [items[i] for i in accepted]) if accepted else []
    if accepted:
        _record_visibility(session, [items[i].sub for i in accepted])
    by_position = dict(zip(accepted, receipts, strict=True))
    done: list[Outcome] = []
    for i, (v, out) in enumerate(zip(items, outcomes, strict=True)):
        if isinstance(out, (AggregatorError, Ingested)):
            done.append(out)
        elif out is None:
            done.append(Ingested(by_position[i], True, v.sub.submission_id))
        elif out == -1:  # stored before this batch: its receipt as stored
            env = session.get(EnvelopeRow, v.sha)
            assert env is not None
            done.append(Ingested(bytes(env.receipt), False, v.sub.submission_id))
        else:  # the same bytes twice in one batch
            done.append(Ingested(by_position[out], False, v.sub.submission_id))
    return done


def _record_visibility(session: Session, subs: Sequence[Any]) -> None:
    """Each practice's visibility as its latest accepted submission states it (absent: named),
    from that submission on; a change is logged (the signed submission that made it is in the
    transparency log)."""
    latest: dict[str, Any] = {}
    for sub in subs:  # in acceptance order: the last one of a practice wins
        latest[sub.practice] = sub
    rows = session.execute(
        select(Practice.ods, Practice.visibility).where(Practice.ods.in_(list(latest)))
    ).all()
    for ods, current in rows:
        sub = latest[ods]
        wanted = sub.visibility or "named"
        if wanted != current:
            session.execute(
                update(Practice)
                .where(Practice.ods == ods)
                .values(visibility=wanted, visibility_since=sub.submission_id)
            )
            _log.info(
                "practice %s visibility %s -> %s from submission %s",
                ods, current, wanted, sub.submission_id,
            )  # fmt: skip


def _write(session: Session, signer: LogSigner, items: Sequence[Verified]) -> list[bytes]:
    appended = append_leaves(
        session,
        [
            (
                make_leaf_data(
                    type="submission",
                    ts_ms=int(v.when.timestamp() * 1000),
                    practice=v.sub.practice,
                    kid=v.sub.kid,
                    submission_id=v.sub.submission_id,
                    seq=v.sub.seq,
                    envelope_sha256=v.sha,
                    payload_sha256=v.payload_sha,
                    status="accepted",
                    supersedes=v.sub.supersedes,
                ),
                "submission",
                v.sub.practice,
                v.when,
            )
            for v in items
        ],
    )
    last = appended[-1]
    note = sign_and_store_checkpoint(
        session, signer, last.size, max(v.when for v in items), last.root
    )
    receipts = [
        receipt_for(
            signer,
            message_type="submission",
            envelope_sha256=v.sha,
            submission_id=v.sub.submission_id,
            leaf_index=a.index,
            leaf_hash=a.leaf_hash,
            tree_size=a.size,
            proof=a.proof,
            checkpoint=note,
            now=v.when,
        )
        for v, a in zip(items, appended, strict=True)
    ]
    insert_rows(
        session,
        table_of(EnvelopeRow),
        ("sha256", "kind", "practice_ods", "body", "received_at", "receipt", "leaf_index"),
        [
            (v.sha, "submission", v.sub.practice, v.body, v.when, r, a.index)
            for v, r, a in zip(items, receipts, appended, strict=True)
        ],
    )
    insert_rows(
        session,
        table_of(SubmissionRow),
        SUBMISSION_COLUMNS,
        [
            (
                v.sub.submission_id,
                v.sub.practice,
                v.sub.kid,
                v.sub.seq,
                v.sub.iat,
                v.sub.period.start,
                v.sub.period.end,
                v.sub.catalogue.id,
                v.sub.catalogue.version,
                v.sub.catalogue.sha256,
                v.sub.supersedes,
                v.sub.reason,
                v.sha,
                v.payload_sha,
                a.index,
                v.when,
                True,
                None,
                v.counts,
                v.counts_verdict,
            )
            for v, a in zip(items, appended, strict=True)
        ],
    )
    # After the insert: a correction may supersede a submission of this same batch.
    superseded = [
        {"target": v.sub.supersedes, "by": v.sub.submission_id}
        for v in items
        if v.sub.supersedes is not None
    ]
    if superseded:
        t = table_of(SubmissionRow)
        session.connection().execute(
            t.update()
            .where(t.c.submission_id == bindparam("target"))
            .values(effective=False, superseded_by=bindparam("by")),
            superseded,
        )
    insert_rows(
        session,
        table_of(CellRow),
        (*CELL_COLUMNS, "verdict"),
        [row for v in items for row in v.cells],
    )
    last_seq: dict[str, int] = {}
    for v in items:
        last_seq[v.sub.kid] = v.sub.seq
    update_rows(session, table_of(PracticeKey), "kid", "last_seq", list(last_seq.items()))
    # The benchmarks of every group these cells touch are stale from this transaction on.
    on_submissions_stored(session, [v.sub for v in items])
    return receipts


@dataclass
class _Slot:
    item: Verified
    outcome: Outcome | BaseException | None = None
    done: bool = False


class Committer:
    """Leader/follower group commit of verified submissions (see the module docstring).

    One per process (the server's runtime holds it); several processes share the database's
    sequencer lock, so their batches are serial too."""

    def __init__(
        self,
        write_session: SessionFactory,
        signer: LogSigner,
        max_batch: int = 64,
        lock_path: str | None = None,
    ):
        self.write_session = write_session
        self.signer = signer
        self.max_batch = max_batch
        # SQLite: processes queue for the database's write lock on this file (see _turn).
        self.lock_path = lock_path
        self._lock_file: IO[bytes] | None = None
        self._cond = threading.Condition()
        self._pending: list[_Slot] = []
        self._busy = False
        self.last_commit = float("-inf")  # time.monotonic() of the last commit
        self.batches = 0  # committed transactions, for tests and benchmarks
        self.committed = 0  # submissions written

    def commit(self, item: Verified) -> Ingested:
        slot = _Slot(item)
        with self._cond:
            self._pending.append(slot)
            while not slot.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        out = slot.outcome
        if isinstance(out, BaseException):
            raise out
        assert out is not None
        return out

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """On SQLite, wait for this process's turn at the write lock on a file lock first.

        SQLite itself makes a writer that finds the database locked sleep and retry (1, 2, 5,
        10, 15, 20, 25 ms...), so with several server processes a batch could sleep well past
        the other process's commit while that process took the lock again. A blocking
        ``flock`` wakes the next process as soon as the lock is released. Where there is no
        ``fcntl`` (Windows) the busy-retry remains."""
        if self.lock_path is None or fcntl is None:
            yield
            return
        if self._lock_file is None:
            self._lock_file = open(self.lock_path, "ab")  # noqa: SIM115 - held for the process
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)

    def _run(self, batch: list[_Slot]) -> None:
        try:
            with self._turn(), self.write_session() as session:
                outcomes = store_batch(session, self.signer, [s.item for s in batch])
        except Exception as exc:
            if len(batch) > 1:
                for slot in batch:  # each on its own: its own answer
                    self._run([slot])
                return
            batch[0].outcome, batch[0].done = exc, True
            return
        except BaseException as exc:
            for slot in batch:
                slot.outcome, slot.done = exc, True
            raise
        self.last_commit = time.monotonic()
        self.batches += 1
        self.committed += sum(isinstance(o, Ingested) and o.created for o in outcomes)
        for slot, out in zip(batch, outcomes, strict=True):
            slot.outcome, slot.done = out, True
