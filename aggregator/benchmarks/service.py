"""Incremental benchmarks: the ingest hook marks groups stale; a refresh recomputes only those.

A group is one (indicator, period). Storing a submission marks every indicator it carries (and,
for a correction, every indicator of the submission it supersedes) stale for its period, inside
the ingest transaction: a cheap upsert. :func:`refresh_group` recomputes one group from the
effective cells and rewrites its rows; :func:`refresh_stale` drains the queue; the read paths call
:func:`ensure_fresh` for the groups they are about to read, so a query never recomputes more than
the groups it shows, never the whole history.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import (
    Date,
    String,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
)
from sqlalchemy.orm import Session

from ..db import counts as counts_value
from ..db.bulk import update_rows
from ..db.models import TZ, Cell, Envelope, PracticeKey, Submission, table_of
from ..db.models import Catalogue as CatalogueRow
from ..log import checks, verdict
from . import entries_store, stats
from .models import BenchEntries, BenchStale, BenchSummary


@dataclass(frozen=True, slots=True)
class Group:
    indicator: str
    period_start: dt.date
    period_end: dt.date


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- the ingest hook ------------------------------------------------------------------------------


def mark_stale(session: Session, groups: Iterable[Group]) -> None:
    """Mark groups stale (insert, or bump ``mark`` when already there). Runs inside the caller's
    transaction, so it commits or rolls back with the submission."""
    # In lock order (group_key), as refresh takes its groups: two transactions that both
    # write several of these rows meet them in the same order.
    unique = sorted(set(groups), key=lock_order)
    if not unique:
        return
    now = _now()
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # One statement over arrays (unnest): a batch's ~40 groups as an executemany were ~40
        # statements, most of the ingest transaction's client CPU after the cells.
        session.connection().execute(
            _stale_upsert(dialect),
            {
                "indicators": [g.indicator for g in unique],
                "starts": [g.period_start for g in unique],
                "ends": [g.period_end for g in unique],
                "now": now,
            },
        )
        return
    # One cached statement run as an executemany: a multi-row VALUES built per call was
    # recompiled every time (~10 ms of a submission's ingest CPU).
    session.execute(
        _stale_upsert(dialect),
        [
            {
                "indicator": g.indicator,
                "period_start": g.period_start,
                "period_end": g.period_end,
                "mark": 1,
                "marked_at": now,
            }
            for g in unique
        ],
    )


@lru_cache(maxsize=4)
def _stale_upsert(dialect: str) -> Any:
    columns = ["indicator", "period_start", "period_end", "mark", "marked_at"]
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        groups = (
            func.unnest(
                bindparam("indicators", type_=ARRAY(String)),
                bindparam("starts", type_=ARRAY(Date)),
                bindparam("ends", type_=ARRAY(Date)),
            )
            .table_valued("indicator", "period_start", "period_end")
            .render_derived(name="g")
        )
        stmt: Any = pg_insert(table_of(BenchStale)).from_select(
            columns,
            select(
                groups.c.indicator,
                groups.c.period_start,
                groups.c.period_end,
                literal(1),
                bindparam("now", type_=TZ),
            ),
        )
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(BenchStale)
    return stmt.on_conflict_do_update(
        index_elements=["indicator", "period_start", "period_end"],
        set_={"mark": BenchStale.mark + 1, "marked_at": stmt.excluded.marked_at},
    )


def on_submission_stored(session: Session, submission: object) -> None:
    """Mark stale every group a newly stored submission touches: its indicators for its
    period and, for a correction, those of the submission it supersedes.

    ``submission`` is the stored ``aggregator.db.models.Submission`` row (its cells already
    added to the session) or a ``protocol.submission.Submission``."""
    ids = [str(submission.submission_id)]  # type: ignore[attr-defined]
    superseded = getattr(submission, "supersedes", None)
    if superseded:
        ids.append(str(superseded))
    groups: set[Group] = set()
    if hasattr(submission, "cells"):  # a protocol Submission carries its own cells
        p = submission.period  # type: ignore[attr-defined]
        groups |= {Group(c.indicator, p.start, p.end) for c in submission.cells}
    mark_stale(session, groups | _stored_groups(session, ids))


def on_submissions_stored(session: Session, submissions: Sequence[object]) -> None:
    """The ingest hook for a batch of protocol submissions: one upsert marks every group they
    touch (their own cells, read from the submissions themselves, and for corrections the
    superseded submissions' stored cells)."""
    groups: set[Group] = set()
    superseded: list[str] = []
    for sub in submissions:
        p = sub.period  # type: ignore[attr-defined]
        groups |= {Group(i, p.start, p.end) for i in {c.indicator for c in sub.cells}}  # type: ignore[attr-defined]
        if sub.supersedes is not None:  # type: ignore[attr-defined]
            superseded.append(str(sub.supersedes))  # type: ignore[attr-defined]
    if superseded:
        groups |= _stored_groups(session, superseded)
    mark_stale(session, groups)


def _stored_groups(session: Session, submission_ids: Sequence[str]) -> set[Group]:
    """The (indicator, period) groups the stored cells of these submissions belong to."""
    rows = session.execute(
        select(Cell.indicator, Submission.period_start, Submission.period_end)
        .join(Submission, Submission.submission_id == Cell.submission_id)
        .where(Cell.submission_id.in_(submission_ids))
        .distinct()
    ).all()
    return {Group(*r) for r in rows}


# --- indicator versions ----------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _catalogue_versions(body: bytes) -> dict[str, int]:
    from protocol.catalogue import Catalogue
    from protocol.envelope import Envelope

    env = Envelope.from_bytes(body)
    cat = Catalogue.from_bytes(env.payload_bytes())
    return {i.id: i.version for i in cat.indicators}


def indicator_versions(
    session: Session, catalogues: set[tuple[str, int]]
) -> dict[tuple[str, int], dict[str, int]]:
    """Indicator versions of each published catalogue (id, version) asked for."""
    out: dict[tuple[str, int], dict[str, int]] = {}
    if not catalogues:
        return out
    rows = session.execute(
        select(CatalogueRow.id, CatalogueRow.version, CatalogueRow.envelope).where(
            tuple_(CatalogueRow.id, CatalogueRow.version).in_(list(catalogues))
        )
    ).all()
    for cid, ver, body in rows:
        try:
            out[(cid, ver)] = _catalogue_versions(bytes(body))
        except Exception:  # a catalogue we cannot read leaves versions unknown, not a crash
            out[(cid, ver)] = {}
    return out


# --- refresh ----------------------------------------------------------------------------------------


def _period_submissions(session: Session, start: dt.date, end: dt.date) -> list[Any]:
    """Each practice's latest effective submission of the period, with its counts value and
    seal, in ODS order: one read serves every group of the period."""
    subs, pks = table_of(Submission), table_of(PracticeKey)
    sub = subs.c
    result = session.execute(
        select(sub.practice_ods, sub.submission_id, sub.catalogue_id, sub.catalogue_version,
               sub.received_at, sub.seq, sub.kid, sub.envelope_sha256, sub.period_start,
               sub.period_end, sub.counts, sub.counts_verdict, pks.c.compromised_since)
        .outerjoin(pks, pks.c.kid == sub.kid)
        .where(sub.effective.is_(True), sub.period_start == start, sub.period_end == end)
    )  # fmt: skip
    latest: dict[str, Any] = {}
    for r in result:
        cur = latest.get(r.practice_ods)
        if cur is None or (r.received_at, r.seq) > (cur.received_at, cur.seq):
            latest[r.practice_ods] = r
    return [latest[k] for k in sorted(latest)]


#: How a practice's value whose stored cells differ from its signed payload is shown.
UNVERIFIED = entries_store.UNVERIFIED
UNVERIFIED_NOTE = entries_store.UNVERIFIED_NOTE
#: ... and a value signed with a key revoked as compromised, at or after the start of its
#: suspect window (``key revoke --compromised-since``): shown as unverified, pooled nowhere.
SUSPECT_NOTE = entries_store.SUSPECT_NOTE


def suspect(received_at: dt.datetime, compromised_since: dt.datetime | None) -> bool:
    """Whether a submission received at ``received_at`` falls in its key's suspect window."""
    return entries_store._suspect(received_at, compromised_since)


# The counts of a stored row in the order of checks.SignedRow.
_COUNTS = ("denominator", "denominator_status", "numerator", "numerator_status", "exclusions",
           "exclusions_status")  # fmt: skip


def _binding(g: Group, c: dict[str, object]) -> verdict.Binding:
    return (
        str(c["submission_id"]),
        str(c["practice_ods"]),
        str(c["kid"]),
        str(c["envelope_sha256"]),
        g.period_start.isoformat(),
        g.period_end.isoformat(),
    )


def _sealed_values(g: Group, c: dict[str, object]) -> tuple[object, ...]:
    return (g.indicator, *(c[k] for k in _COUNTS), c["strata"])


def _sealed(g: Group, c: dict[str, object], key: bytes) -> bool:
    """Whether the row's verdict holds: it is the row the ingest stored after every check."""
    return verdict.holds(key, c["verdict"], _binding(g, c), _sealed_values(g, c))  # type: ignore[arg-type]


def _reseal(session: Session, g: Group, proven: list[dict[str, object]], key: bytes) -> None:
    """Seal rows the refresh has just proven against their envelopes but whose verdict did not
    hold (stored before verdicts, or sealed under another log key), so that the next refresh
    trusts them instead of reading their envelopes again."""
    if not proven:
        return
    update_rows(
        session,
        table_of(Cell),
        "submission_id",
        "verdict",
        [
            (c["submission_id"], verdict.Sealer(key, _binding(g, c)).seal(_sealed_values(g, c)))
            for c in proven
        ],
        where={"indicator": g.indicator},
    )


def _unverified(session: Session, g: Group, cells: list[dict[str, object]]) -> set[str]:
    """The submissions among ``cells`` whose stored row for ``g.indicator`` (the whole-practice
    counts and every stratum) is not what their signed envelope carries, or whose envelope is
    missing, does not hash to the submission's SHA-256, does not verify with the practice key
    the submission names, or is another submission's: checked with the named checks of ``log
    verify`` (:func:`aggregator.log.checks.signed_cells`, cached by envelope hash and key). A
    row whose verdict holds under the session's verdict key (:mod:`aggregator.log.verdict`;
    ``session.info["verdict_key"]``, set by the runtime) passed those checks when it was stored,
    so its envelope is not read again. A row whose verdict did not hold but which passes the
    checks here is sealed now (:func:`_reseal`). The refresh comes here only for submissions
    whose counts value is missing or not sealed (:func:`refresh_period`)."""
    key = session.info.get("verdict_key")
    if key is not None:
        cells = [c for c in cells if not _sealed(g, c, key)]
        if not cells:
            return set()
    keys: dict[str, bytes] = {}
    kids = sorted({str(c["kid"]) for c in cells})
    for i in range(0, len(kids), 500):
        for kid, pk in session.execute(
            select(PracticeKey.kid, PracticeKey.public_key).where(
                PracticeKey.kid.in_(kids[i : i + 500])
            )
        ):
            keys[kid] = bytes(pk)
    # What the cache already holds (verified on an earlier refresh), then the rest from their
    # stored envelopes.
    found = [
        checks.signed_cells(str(c["envelope_sha256"]), None, str(c["kid"]), keys.get(str(c["kid"])))
        for c in cells
    ]  # fmt: skip
    need = [str(c["envelope_sha256"]) for c, s in zip(cells, found, strict=True) if s is None]
    bodies: dict[str, bytes] = {}
    t = Envelope.__table__.c
    for i in range(0, len(need), 500):
        for sha, body in session.execute(
            select(t.sha256, t.body).where(t.sha256.in_(need[i : i + 500]))
        ):
            bodies[sha] = bytes(body)
    start, end = g.period_start.isoformat(), g.period_end.isoformat()
    bad: set[str] = set()
    for c, signed in zip(cells, found, strict=True):
        sha, kid = str(c["envelope_sha256"]), str(c["kid"])
        if signed is None:
            signed = checks.signed_cells(sha, bodies.get(sha), kid, keys.get(kid))
        if (
            signed is None
            or (signed.submission_id, signed.practice, signed.kid) != (c["submission_id"], c["practice_ods"], kid)
            or (signed.period_start, signed.period_end) != (start, end)
            or not _same_row(signed.rows.get(g.indicator), c)
        ):  # fmt: skip
            bad.add(str(c["submission_id"]))
    if key is not None:
        _reseal(session, g, [c for c in cells if str(c["submission_id"]) not in bad], key)
    return bad


def _same_row(signed: checks.SignedRow | None, c: dict[str, object]) -> bool:
    if signed is None or signed[:6] != tuple(c[k] for k in _COUNTS):
        return False
    stored = str(c["strata"])
    # The writer's compact JSON compares as text; rows written another way (a migration) as JSON.
    return signed[6] == stored or json.loads(signed[6]) == json.loads(stored)


_SERIAL_PLANS = text("SET LOCAL max_parallel_workers_per_gather = 0")
_CODE = counts_value.CODE


def _unsealed_cells(
    session: Session, start: dt.date, end: dt.date, subs: Sequence[Any]
) -> dict[str, list[dict[str, object]]]:
    """The ``cells`` rows of submissions whose counts value could not be taken (every
    indicator, so a submission whose rows all hold can be sealed), by indicator, as the checks
    of :func:`_unverified` read them."""
    by_id = {str(r.submission_id): r for r in subs}
    c = table_of(Cell).c
    out: dict[str, list[dict[str, object]]] = {}
    ids = sorted(by_id)
    for i in range(0, len(ids), 500):
        for row in session.execute(
            select(c.submission_id, c.indicator, c.denominator, c.denominator_status, c.numerator,
                   c.numerator_status, c.exclusions, c.exclusions_status, c.strata, c.verdict)
            .where(c.submission_id.in_(ids[i : i + 500]))
        ):  # fmt: skip
            r = by_id[str(row.submission_id)]
            out.setdefault(row.indicator, []).append(
                {
                    "practice_ods": r.practice_ods, "submission_id": str(row.submission_id),
                    "kid": r.kid, "envelope_sha256": r.envelope_sha256, "strata": row.strata,
                    "verdict": row.verdict, "denominator": row.denominator,
                    "denominator_status": row.denominator_status, "numerator": row.numerator,
                    "numerator_status": row.numerator_status, "exclusions": row.exclusions,
                    "exclusions_status": row.exclusions_status,
                }
            )  # fmt: skip
    return out


def refresh_period(session: Session, start: dt.date, end: dt.date, groups: Sequence[Group]) -> None:
    """Recompute ``groups`` (indicators of one period) from one read of the period's
    submissions: each practice's latest effective one, its whole-practice counts taken from its
    counts value where the ingest's seal on it holds (:mod:`aggregator.db.counts`), else from its
    ``cells`` rows after the checks of :func:`_unverified` (and sealed then, once, if all of
    them pass). A practice whose stored counts are not what it signed, or whose key was
    reported compromised before the submission arrived, enters no statistic and is stored as
    flagged (shown as unverified, no counts, no rate). Stores each group's summary and its
    practices' counts (``bench_entries``); no row per practice."""
    if session.get_bind().dialect.name == "postgresql":
        # One process per query: a parallel plan took about as long in three processes as in
        # one, so it spent about three times the CPU, which two refreshers side by side (and
        # ingestion) need.
        session.execute(_SERIAL_PLANS)
    subs = _period_submissions(session, start, end)
    key = session.info.get("verdict_key")
    position = {str(r.submission_id): i for i, r in enumerate(subs)}
    wanted = {g.indicator for g in groups}
    # Counts by indicator: (positions of the submissions that carry it, their records).
    pieces: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    unsealed: list[Any] = []
    by_header: dict[bytes, tuple[list[int], list[memoryview]]] = {}
    for i, r in enumerate(subs):
        if key is not None and r.counts is not None:
            value = bytes(r.counts)
            if verdict.Sealer(key, _row_binding(r)).holds_counts(r.counts_verdict, value):
                try:
                    header, body = counts_value.split(value)
                except counts_value.CountsError:
                    unsealed.append(r)
                    continue
                idx, bodies = by_header.setdefault(header, ([], []))
                idx.append(i)
                bodies.append(body)
                continue
        unsealed.append(r)
    for header, (idx, bodies) in by_header.items():
        ids = counts_value.indicators(header)
        recs = counts_value.records(bodies, len(ids))
        at = np.asarray(idx, dtype=np.int64)
        for k, ind in enumerate(ids):
            if ind in wanted:
                pieces.setdefault(ind, []).append((at, recs[:, k]))
    # Submissions without a sealed counts value: their cells, checked (slow, once: sealed after).
    flagged: dict[str, dict[str, str]] = {}
    if unsealed:
        cells = _unsealed_cells(session, start, end, unsealed)
        failed: set[str] = set()
        for ind in sorted(cells):
            g = Group(ind, start, end)
            bad = _unverified(session, g, cells[ind])
            failed |= bad
            if ind in wanted:
                flagged[ind] = dict.fromkeys(bad, "unverified")
                recs = np.zeros(len(cells[ind]), dtype=counts_value.RECORD)
                for j, c in enumerate(cells[ind]):
                    recs[j] = (
                        _minus(c["numerator"]), _minus(c["denominator"]), _minus(c["exclusions"]),
                        _CODE[str(c["numerator_status"])], _CODE[str(c["denominator_status"])],
                        _CODE[str(c["exclusions_status"])], 0,
                    )  # fmt: skip
                at = np.array(
                    [position[str(c["submission_id"])] for c in cells[ind]], dtype=np.int64
                )
                pieces.setdefault(ind, []).append((at, recs))
        if key is not None:
            _seal_counts(
                session, key, [r for r in unsealed if str(r.submission_id) not in failed], cells
            )
    versions = indicator_versions(
        session, {(str(r.catalogue_id), int(r.catalogue_version)) for r in subs}
    )
    suspects = np.array(
        [r.compromised_since is not None and suspect(r.received_at, r.compromised_since) for r in subs],
        dtype=bool,
    )  # fmt: skip
    ods = np.array([str(r.practice_ods) for r in subs], dtype=object)
    sub_ids = np.array([str(r.submission_id) for r in subs], dtype=object)
    id_bytes = entries_store.id_bytes(sub_ids.tolist())
    # Each submission's catalogue as an index into ``catalogues``: an indicator's versions are
    # then one array lookup per group, not one dict lookup per practice.
    catalogues = sorted(versions)
    index = {cv: i for i, cv in enumerate(catalogues)}
    catalogue_of = np.array(
        [index.get((str(r.catalogue_id), int(r.catalogue_version)), -1) for r in subs],
        dtype=np.int64,
    )
    for g in groups:
        table = np.array(
            [versions[cv].get(g.indicator, -1) for cv in catalogues] + [-1], dtype=np.int64
        )  # index -1 (a catalogue not found) reads the last: unknown
        _store_group(session, g, len(subs), pieces.get(g.indicator, []), flagged.get(g.indicator, {}),
                     suspects, ods, sub_ids, id_bytes, table[catalogue_of])  # fmt: skip


def _minus(v: object) -> int:
    return -1 if v is None else int(v)  # type: ignore[call-overload]


def _row_binding(r: Any) -> verdict.Binding:
    return (str(r.submission_id), str(r.practice_ods), str(r.kid), str(r.envelope_sha256),
            r.period_start.isoformat(), r.period_end.isoformat())  # fmt: skip


def _seal_counts(
    session: Session, key: bytes, proven: Sequence[Any], cells: dict[str, list[dict[str, object]]]
) -> None:
    """Write and seal the counts value of submissions whose every cells row has just passed the
    checks (stored before counts values, or sealed under another log key)."""
    if not proven:
        return
    totals: dict[str, list[counts_value.Total]] = {str(r.submission_id): [] for r in proven}
    for ind, rows in cells.items():
        for c in rows:
            found = totals.get(str(c["submission_id"]))
            if found is not None:
                found.append(
                    (ind, c["denominator"], c["denominator_status"], c["numerator"],
                     c["numerator_status"], c["exclusions"], c["exclusions_status"])  # type: ignore[arg-type]
                )  # fmt: skip
    t = table_of(Submission)
    for r in proven:
        value = counts_value.encode(totals[str(r.submission_id)])
        seal = verdict.Sealer(key, _row_binding(r)).seal_counts(value)
        session.execute(
            t.update()
            .where(t.c.submission_id == str(r.submission_id))
            .values(counts=value, counts_verdict=seal)
        )


def _store_group(
    session: Session,
    g: Group,
    size: int,
    pieces: Sequence[tuple[np.ndarray, np.ndarray]],
    flagged: dict[str, str],
    suspects: np.ndarray,
    ods: np.ndarray,
    sub_ids: np.ndarray,
    id_bytes: np.ndarray,
    version_of: np.ndarray,
) -> None:
    """One group's summary and entries from the period's counts (``pieces``)."""
    full = np.zeros(size, dtype=counts_value.RECORD)
    present = np.zeros(size, dtype=bool)
    for at, recs in pieces:
        full[at] = recs
        present[at] = True
    where = np.flatnonzero(present)
    recs = full[where]
    flag = np.zeros(where.size, dtype=np.uint8)
    flag[suspects[where]] = 2
    if flagged:
        for j, sid in enumerate(sub_ids[where].tolist()):
            if flag[j] == 0 and sid in flagged:
                flag[j] = 1
    numbers = np.zeros(where.size, dtype=entries_store.NUMBERS)
    for name in ("numerator", "denominator", "exclusions", "numerator_status",
                 "denominator_status", "exclusions_status"):  # fmt: skip
        numbers[name] = recs[name]
    numbers["flag"] = flag
    hidden = flag > 0
    for name in ("numerator", "denominator", "exclusions"):
        numbers[name][hidden] = -1
    for name in ("numerator_status", "denominator_status", "exclusions_status"):
        numbers[name][hidden] = entries_store.UNVERIFIED_CODE
    vers = version_of[where]
    numbers["version"] = vers
    seen_versions = {int(v) for v in np.unique(vers) if v >= 0}
    s = summary_of_records(recs, hidden)
    marked = np.flatnonzero(flag)
    marks = {sub_ids[where[j]]: ("suspect" if flag[j] == 2 else "unverified")
             for j in marked.tolist()}  # fmt: skip
    key = {"indicator": g.indicator, "period_start": g.period_start, "period_end": g.period_end}
    for table in (BenchEntries, BenchSummary):
        session.execute(
            delete(table).where(
                table.indicator == g.indicator,
                table.period_start == g.period_start,
                table.period_end == g.period_end,
            )
        )
    session.execute(
        insert(BenchEntries).values(
            **key,
            **entries_store.pack(ods[where].tolist(), id_bytes[where], numbers),
        )
    )  # fmt: skip
    d = s.dispersion
    session.execute(
        insert(BenchSummary).values(
            **key,
            indicator_version=max(seen_versions) if seen_versions else None,
            versions=",".join(str(v) for v in sorted(seen_versions)),
            practices=s.practices,
            included=s.included,
            suppressed=s.suppressed,
            empty=s.empty,
            rounded=s.rounded,
            numerator=s.numerator,
            denominator=s.denominator,
            pooled=s.pooled,
            pooled_lo95=s.pooled_ci95[0] if s.pooled_ci95 else None,
            pooled_hi95=s.pooled_ci95[1] if s.pooled_ci95 else None,
            median=s.median,
            q1=s.q1,
            q3=s.q3,
            deciles=json.dumps(list(s.deciles)) if s.deciles else None,
            phi=d.phi,
            dispersion_statistic=d.statistic,
            dispersion_p=d.p_value,
            overdispersed=d.overdispersed,
            tau2=d.tau2,
            method=s.method,
            abc=s.abc,
            abc_practices=s.abc_practices,
            computed_at=_now(),
            flagged=json.dumps(marks, sort_keys=True) if marks else None,
        )
    )


def summary_of_records(recs: np.ndarray, hidden: np.ndarray) -> stats.Summary:
    """A group's summary from its practices' count records (:data:`aggregator.db.counts.RECORD`,
    in practice order), a ``hidden`` (flagged) practice taken as suppressed: what
    :func:`.stats.summarise` gives for the same practices as :class:`.stats.Counts`, computed
    over arrays (tests/benchmarks/test_period_refresh.py)."""
    num, den, sup, rounded = entries_store.released_states(recs, hidden)
    usable = ~sup & (den > 0)
    return stats.summary_of_arrays(
        np.minimum(num, den)[usable],
        den[usable],
        practices=int(recs.size),
        suppressed=int(sup.sum()),
        empty=int((~sup & (den == 0)).sum()),
        rounded=int((usable & rounded).sum()),
    )


def refresh_group(session: Session, g: Group) -> None:
    """Recompute one (indicator, period) (:func:`refresh_period` for that group alone)."""
    refresh_period(session, g.period_start, g.period_end, [g])


def stale_groups(
    session: Session,
    indicator: str | None = None,
    period_end: dt.date | None = None,
    *,
    limit: int | None = None,
) -> list[tuple[Group, int]]:
    """The stale groups, newest period first: the background drain takes them in this order,
    so after a backfill or a network-wide resubmission of many months the latest month, which
    the dashboard opens on and a practice's meeting reads, is fresh first, not last."""
    q = select(
        BenchStale.indicator, BenchStale.period_start, BenchStale.period_end, BenchStale.mark
    )
    if indicator is not None:
        q = q.where(BenchStale.indicator == indicator)
    if period_end is not None:
        q = q.where(BenchStale.period_end == period_end)
    q = q.order_by(
        BenchStale.period_end.desc(), BenchStale.period_start.desc(), BenchStale.indicator
    )
    if limit is not None:
        q = q.limit(limit)
    return [(Group(i, s, e), m) for i, s, e, m in session.execute(q).all()]


def _clear(session: Session, g: Group, mark: int) -> None:
    # Only if nobody marked it again while we computed: otherwise it stays stale.
    session.execute(
        delete(BenchStale).where(
            BenchStale.indicator == g.indicator,
            BenchStale.period_start == g.period_start,
            BenchStale.period_end == g.period_end,
            BenchStale.mark == mark,
        )
    )


def _mark_of(session: Session, g: Group) -> int | None:
    """The group's stale mark now (None: fresh, perhaps just refreshed by another refresher)."""
    return session.execute(
        select(BenchStale.mark).where(
            BenchStale.indicator == g.indicator,
            BenchStale.period_start == g.period_start,
            BenchStale.period_end == g.period_end,
        )
    ).scalar()


def refresh(session: Session, groups: Sequence[tuple[Group, int]]) -> int:
    """Refresh ``groups`` in this session's transaction, each only if it is still stale once
    its group lock is held (:func:`_lock_group`): a group another refresher has just recomputed
    is not recomputed again. On PostgreSQL every lock is taken, in key order, before the first
    write, so this transaction never waits for a lock while holding rows another may want.
    Returns how many were recomputed."""
    if not groups:
        return 0
    locking = _locks_groups(session)
    ordered = sorted(groups, key=lambda gm: lock_order(gm[0]))
    if locking:
        _share_refresh(session)
        for g, _ in ordered:  # a key two groups share is taken twice: advisory locks count
            _lock_group(session, g)
    todo: list[tuple[Group, int]] = []
    for g, mark in ordered:
        if locking:
            now = _mark_of(session, g)
            if now is None:
                continue
            mark = now
        todo.append((g, mark))
    return _refresh_batch(session, todo)


def _refresh_batch(session: Session, todo: Sequence[tuple[Group, int]]) -> int:
    """Recompute held groups, one read of each period's counts for all of its groups, and
    clear each one's stale mark (if nobody marked it again meanwhile)."""
    by_period: dict[tuple[dt.date, dt.date], list[tuple[Group, int]]] = {}
    for g, mark in todo:
        by_period.setdefault((g.period_start, g.period_end), []).append((g, mark))
    for (start, end), held in sorted(by_period.items(), key=lambda p: p[0][1], reverse=True):
        refresh_period(session, start, end, [g for g, _ in held])
        for g, mark in held:
            _clear(session, g, mark)
    return len(todo)


def ensure_fresh(
    session: Session, indicator: str | None = None, period_end: dt.date | None = None
) -> int:
    """Refresh the stale groups a read is about to show (in the reader's transaction)."""
    return refresh(session, stale_groups(session, indicator, period_end))


# Refreshers of different groups run at once, one per group: on PostgreSQL each group has a
# transaction-scoped advisory lock (two keys: this constant and the group's hash), so the
# background refreshers of a server's worker processes, `db rebuild-benchmarks --jobs` and the
# read paths recompute different groups side by side, and one that wants a group another is
# recomputing waits for it and then finds it fresh. Each also holds the one-key lock that
# refreshers took before there was a lock per group, shared: one of those (a worker not yet
# upgraded) still excludes them all. SQLite writes one transaction at a time anyway: there, one
# refresher at a time in this process (a lock).
_REFRESH_LOCK = threading.Lock()
REFRESH_LOCK_KEY = 0x66716262
_SHARE = text("SELECT pg_advisory_xact_lock_shared(CAST(:k AS bigint))")
_LOCK = text("SELECT pg_advisory_xact_lock(:k, :g)")
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:k, :g)")


def _locks_groups(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _share_refresh(session: Session) -> None:
    session.execute(_SHARE, {"k": REFRESH_LOCK_KEY})


def group_key(g: Group) -> int:
    """The group's advisory-lock key: a signed 32-bit hash of its indicator and period, the
    same in every process (CRC-32, not Python's salted ``hash``). Two groups may share a key:
    they then share a lock, which costs waiting, never a deadlock (locks are taken in key
    order)."""
    k = zlib.crc32(f"{g.indicator}|{g.period_start}|{g.period_end}".encode())
    return k - (1 << 32) if k >= 1 << 31 else k


def lock_order(g: Group) -> tuple[int, str, dt.date, dt.date]:
    """The order in which a transaction takes (and writes) several groups: by lock key, so
    that two transactions wanting the same groups meet them in the same order."""
    return group_key(g), g.indicator, g.period_start, g.period_end


def _lock_group(session: Session, g: Group) -> None:
    session.execute(_LOCK, {"k": REFRESH_LOCK_KEY, "g": group_key(g)})


def _try_lock_group(session: Session, g: Group) -> bool:
    return bool(session.execute(_TRY_LOCK, {"k": REFRESH_LOCK_KEY, "g": group_key(g)}).scalar())


def _serial(db: object) -> contextlib.AbstractContextManager[object]:
    """The in-process lock where the database takes one refresher at a time (SQLite)."""
    dialect = db.engine.dialect.name  # type: ignore[attr-defined]
    return contextlib.nullcontext() if dialect == "postgresql" else _REFRESH_LOCK


def refresh_for_read(
    db: object, indicator: str | None = None, period_end: dt.date | None = None
) -> int:
    """Before a read: recompute the stale groups it may show (none, usually: one cheap query),
    one period per transaction (newest first), each from one read of its period's counts as a
    drain does (:func:`refresh_period`), each committed before the read opens its own session."""
    with db.read() as session:  # type: ignore[attr-defined]
        pending = stale_groups(session, indicator, period_end)
    by_period: dict[tuple[dt.date, dt.date], list[tuple[Group, int]]] = {}
    for g, mark in pending:
        by_period.setdefault((g.period_start, g.period_end), []).append((g, mark))
    done = 0
    for held in by_period.values():
        with _serial(db), db.session() as session:  # type: ignore[attr-defined]
            done += refresh(session, held)
    return done


def _next_free(session: Session) -> tuple[Group, int] | None:
    """The first stale group (newest period first) that no other refresher holds, locked;
    None when every stale group is fresh or held. Looks at the first 64, and at the rest only
    when all of those are held."""
    if not _locks_groups(session):
        pending = stale_groups(session, limit=1)
        return pending[0] if pending else None
    _share_refresh(session)
    page = stale_groups(session, limit=64)
    found = _first_free(session, page)
    if found is None and len(page) == 64:
        found = _first_free(session, stale_groups(session)[64:])
    return found


def _first_free(session: Session, groups: Sequence[tuple[Group, int]]) -> tuple[Group, int] | None:
    for g, _ in groups:
        if _try_lock_group(session, g):
            mark = _mark_of(session, g)  # read again now that it is held
            if mark is not None:
                return g, mark
    return None


def refresh_stale(
    db: object, limit: int | None = None, *, go_on: Callable[[], bool] | None = None
) -> int:
    """Drain the stale queue, one group per transaction, newest period first
    (:func:`stale_groups`), skipping groups another refresher holds (on PostgreSQL several
    drain at once, each taking the next free group). ``db`` is an
    ``aggregator.db.session.Database``. ``go_on``, when given, is asked after each group; when
    it answers False the drain stops there (the background refresher gives way to ingestion
    this way, between groups). Returns the number of groups recomputed."""
    done = 0
    while limit is None or done < limit:
        if done and go_on is not None and not go_on():
            break
        with _serial(db), db.session() as session:  # type: ignore[attr-defined]
            pending = _next_free(session)
            if pending is None:
                break
            batch = [pending, *_same_period(session, pending[0])]
            done += _refresh_batch(session, batch)
    return done


def _same_period(session: Session, g: Group) -> list[tuple[Group, int]]:
    """The other stale groups of ``g``'s period that no other refresher holds, locked: a drain
    recomputes a period's groups from one read of its counts (:func:`refresh_period`)."""
    others = [
        (o, m)
        for o, m in stale_groups(session, period_end=g.period_end)
        if o.period_start == g.period_start and o != g
    ]
    if not _locks_groups(session):
        return others
    held = []
    for o, _ in sorted(others, key=lambda om: lock_order(om[0])):
        if _try_lock_group(session, o):
            mark = _mark_of(session, o)
            if mark is not None:
                held.append((o, mark))
    return held


def mark_all_stale(session: Session) -> int:
    """Mark every (indicator, period) with effective cells stale; returns how many."""
    rows = session.execute(
        select(Cell.indicator, Submission.period_start, Submission.period_end)
        .join(Submission, Submission.submission_id == Cell.submission_id)
        .where(Submission.effective.is_(True))
        .distinct()
    ).all()
    mark_stale(session, [Group(*r) for r in rows])
    return len(rows)


def rebuild_all(session: Session) -> int:
    """Mark every (indicator, period) with effective cells stale and recompute them all in this
    session's transaction (tests; ``db rebuild-benchmarks`` drains them one group per
    transaction instead)."""
    mark_all_stale(session)
    return ensure_fresh(session)


# --- reads -----------------------------------------------------------------------------------------


def periods(session: Session, indicator: str | None = None) -> list[tuple[dt.date, dt.date]]:
    q = select(BenchSummary.period_start, BenchSummary.period_end).distinct()
    if indicator:
        q = q.where(BenchSummary.indicator == indicator)
    stale = select(BenchStale.period_start, BenchStale.period_end).distinct()
    if indicator:
        stale = stale.where(BenchStale.indicator == indicator)
    found: set[tuple[dt.date, dt.date]] = {(r[0], r[1]) for r in session.execute(q).all()} | {
        (r[0], r[1]) for r in session.execute(stale).all()
    }
    return sorted(found, key=lambda p: p[1])


def indicators(session: Session) -> list[str]:
    a = {r[0] for r in session.execute(select(BenchSummary.indicator).distinct()).all()}
    b = {r[0] for r in session.execute(select(BenchStale.indicator).distinct()).all()}
    return sorted(a | b)


def resolve_period(
    session: Session, text: str | None, indicator: str | None = None
) -> tuple[dt.date, dt.date] | None:
    """A period named by its end date (``2026-03-31``) or its month (``2026-03``, the period
    ending in that month); None (latest) when ``text`` is empty. Raises ValueError if unknown."""
    known = periods(session, indicator)
    if not known:
        return None
    if not text:
        return known[-1]
    for start, end in known:
        if text in (end.isoformat(), end.isoformat()[:7], f"{start.isoformat()}/{end.isoformat()}"):
            return start, end
    if not _PERIOD_TEXT.fullmatch(text) or not _real_dates(text):
        raise PeriodSyntaxError(
            f"period {text!r} is not a month (YYYY-MM), a period end (YYYY-MM-DD) or "
            f"START/END (known: {_listed(known)})"
        )
    raise ValueError(f"period {text!r}: no benchmarks for it (known: {_listed(known)})")


class PeriodSyntaxError(ValueError):
    """A period's text that names no period of any kind (not one merely without benchmarks)."""


_PERIOD_TEXT = re.compile(r"\d{4}-\d{2}(-\d{2}(/\d{4}-\d{2}-\d{2})?)?")


def _real_dates(text: str) -> bool:
    """Whether the dates of a period's text exist (``2026-13`` and ``2026-02-30`` do not)."""
    try:
        for part in text.split("/"):
            dt.date.fromisoformat(part if len(part) > 7 else f"{part}-01")
    except ValueError:
        return False
    return True


def _label(start: dt.date, end: dt.date) -> str:
    """A period as the dashboard names it: ``2026-01`` for a calendar month, else START/END."""
    month = start.day == 1 and (end + dt.timedelta(days=1)).day == 1 and start.month == end.month
    return end.isoformat()[:7] if month else f"{start.isoformat()}/{end.isoformat()}"


def _listed(known: Sequence[tuple[dt.date, dt.date]]) -> str:
    """The known periods as the dashboard names them (``2026-01`` for a month): every one up to
    24, else the first and last three and how many."""
    ends = [_label(s, e) for s, e in known]
    if len(ends) <= 24:
        return ", ".join(ends)
    return f"{', '.join(ends[:3])}, ... {', '.join(ends[-3:])} ({len(ends)} periods)"


def summary_row(session: Session, indicator: str, start: dt.date, end: dt.date) -> Any:
    t = table_of(BenchSummary)
    return session.execute(
        select(t).where(
            t.c.indicator == indicator, t.c.period_start == start, t.c.period_end == end
        )
    ).first()


def practice_rows(
    session: Session, indicator: str, start: dt.date, end: dt.date
) -> list[entries_store.PracticeRow]:
    """One group's practices, in ODS order, computed from its stored counts and summary
    (:mod:`.entries_store`); none for a group never refreshed."""
    summ = summary_row(session, indicator, start, end)
    return [] if summ is None else entries_store.cached_group_rows(session, summ)


def practice_history(
    session: Session, ods: str, indicator: str | None = None
) -> list[entries_store.PracticeRow]:
    """One practice's rows for every refreshed (indicator, period), by indicator and period."""
    return entries_store.practice_rows(session, ods, indicator)


def practice_row(
    session: Session, indicator: str, start: dt.date, end: dt.date, ods: str
) -> entries_store.PracticeRow | None:
    """One practice's row for one group (None: it has none there)."""
    found = entries_store.practice_rows(session, ods, indicator, (start, end))
    return found[0] if found else None


def summaries(
    session: Session, indicator: str | None = None, period_end: dt.date | None = None
) -> list[Any]:
    t = table_of(BenchSummary)
    q = select(t)
    if indicator:
        q = q.where(t.c.indicator == indicator)
    if period_end:
        q = q.where(t.c.period_end == period_end)
    return list(session.execute(q.order_by(t.c.indicator, t.c.period_end)).all())


def unknown_included(
    session: Session, viewer: Any, indicator: str | None = None
) -> Callable[[str, dt.date, int], int]:
    """For a pool of the whole network: given (indicator, period end, practices included), how
    many of the included practices ``viewer`` (a :class:`.viewer.Viewer`) cannot identify. One
    query counts the included rows of the practices it identifies (none for an admin, who
    identifies every practice)."""
    if viewer.identifies_all:
        return lambda ind, end, included: 0
    known = entries_store.included_counts(session, viewer.identified, indicator)
    return lambda ind, end, included: max(0, included - known.get((ind, end), 0))


def counts_of(row: Any) -> stats.Counts:
    return stats.Counts(
        row.practice_ods,
        row.numerator,
        row.denominator,
        row.numerator_status,
        row.denominator_status,
    )


def stale_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(BenchStale)) or 0)


__all__ = [
    "Group",
    "ensure_fresh",
    "mark_all_stale",
    "mark_stale",
    "on_submission_stored",
    "on_submissions_stored",
    "rebuild_all",
    "refresh_group",
    "refresh_stale",
    "resolve_period",
]
