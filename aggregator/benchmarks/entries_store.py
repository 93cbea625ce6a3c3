"""Each practice's benchmark computed when read, from counts and its group's stored summary.

A refresh stores, per (indicator, period), the summary (``bench_summary``) and its practices'
counts as one compact value (``bench_entries``: :data:`NUMBERS`); it writes no row per practice
(a national refresh wrote 6,240,000 of them; docs/benchmarks.md, "Benchmarks from a period's
counts"). A practice's rate, Wilson intervals, z, band and the limits it is judged against depend
on its group only through the pooled rate, the method and the dispersion the summary holds, so
they are computed here, by the same statistics (:func:`.stats.practice_results`,
:func:`.stats.results_many`), into :class:`PracticeRow`: the fields the stored row had, its two
JSON entries rendered when asked for.

Two ways in:

* a group (a funnel, a peer group, a trend's members): :func:`group_rows` from its
  ``bench_entries`` value, as the refresh found its practices;
* one practice (its summary, its pack, its FHIR measure report, who of a viewer's practices is
  included): :func:`practice_rows`, from its own latest effective submission of each period, whose
  counts value is taken only if its seal holds (:mod:`aggregator.log.verdict`), else its cells
  only where their verdicts hold; a submission the refresh flagged (``bench_summary.flagged``) or
  whose key was reported compromised before it arrived is shown as unverified, as the refresh
  shows it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import counts as counts_value
from ..db.models import Cell, PracticeKey, Submission, table_of
from ..log import verdict
from . import render, stats
from .figures import summary_from_row
from .models import BenchEntries, BenchSummary

#: A practice's numbers in ``bench_entries.numbers``: its counts (-1: no value), their statuses
#: (codes of :data:`STATUSES`), a flag (:data:`FLAGS`) and its indicator version (-1: unknown).
NUMBERS = np.dtype(
    [
        ("numerator", "<i4"),
        ("denominator", "<i4"),
        ("exclusions", "<i4"),
        ("numerator_status", "u1"),
        ("denominator_status", "u1"),
        ("exclusions_status", "u1"),
        ("flag", "u1"),
        ("version", "<i4"),
    ]
)
UNVERIFIED = "unverified"
STATUSES = (*counts_value.STATUSES, UNVERIFIED)
UNVERIFIED_CODE = STATUSES.index(UNVERIFIED)
#: Why a practice's value is shown as unverified: 1 its stored counts are not what it signed,
#: 2 its key was reported compromised before the submission arrived.
FLAGS = (None, "unverified", "suspect")
UNVERIFIED_NOTE = "unverified: not the signed counts"  # note is String(40)
SUSPECT_NOTE = "suspect: key reported compromised"


def _r6(x: float | None) -> float | None:
    # Rounded to six decimals, as the stored rows were: far below any difference worth showing,
    # and short floats keep the API's JSON small.
    return None if x is None else round(x, 6)


class PracticeRow:
    """One practice's benchmark for one (indicator, period): the fields of the row a refresh
    used to store, computed when read. ``item_json`` and ``peer_json`` (render.py's two forms,
    JSON object bodies without braces) are rendered on first use."""

    __slots__ = (
        "indicator", "period_start", "period_end", "practice_ods", "_submission_id",
        "indicator_version", "numerator", "numerator_status", "denominator", "denominator_status",
        "exclusions", "exclusions_status", "status", "rate", "lo95", "hi95", "lo998", "hi998",
        "approximate", "z", "band", "limit_low_95", "limit_high_95", "limit_low_998",
        "limit_high_998", "note", "_item", "_peer",
    )  # fmt: skip

    indicator: str
    period_start: dt.date
    period_end: dt.date
    practice_ods: str
    _submission_id: str | bytes  # 16 bytes until first asked for (a group's rows)
    indicator_version: int | None
    numerator: int | None
    numerator_status: str
    denominator: int | None
    denominator_status: str
    exclusions: int | None
    exclusions_status: str
    status: str
    rate: float | None
    lo95: float | None
    hi95: float | None
    lo998: float | None
    hi998: float | None
    approximate: bool
    z: float | None
    band: str | None
    limit_low_95: float | None
    limit_high_95: float | None
    limit_low_998: float | None
    limit_high_998: float | None
    note: str | None
    _item: str | None
    _peer: str | None

    @property
    def submission_id(self) -> str:
        sid = self._submission_id
        if isinstance(sid, bytes):
            sid = self._submission_id = str(uuid.UUID(bytes=sid))
        return sid

    def _flat(self) -> render.Flat:
        return (self.practice_ods, self.numerator, self.numerator_status, self.denominator,
                self.denominator_status, self.status, self.rate, self.lo95, self.hi95, self.lo998,
                self.hi998, self.approximate, self.z, self.band, None, self.note, None, None)  # fmt: skip

    @property
    def item_json(self) -> str:
        if self._item is None:
            self._item = render.as_json(render.identified_fields(self._flat()))
        return self._item

    @property
    def peer_json(self) -> str:
        if self._peer is None:
            self._peer = render.as_json(render.peer_fields(self._flat()))
        return self._peer

    def __repr__(self) -> str:
        return (
            f"PracticeRow({self.indicator}, {self.period_end}, {self.practice_ods}, {self.status})"
        )


def _row(
    indicator: str,
    start: dt.date,
    end: dt.date,
    r: stats.PracticeResult,
    raw: tuple[int | None, str, int | None, str, int | None, str],
    submission_id: str,
    version: int | None,
    flag: str | None,
) -> PracticeRow:
    """A practice's row from its result (``r``) and its counts as stored (``raw``: numerator,
    status, denominator, status, exclusions, status), as the refresh built its stored row."""
    row = PracticeRow.__new__(PracticeRow)
    row.indicator, row.period_start, row.period_end = indicator, start, end
    row.practice_ods, row._submission_id, row.indicator_version = r.practice, submission_id, version
    (row.numerator, row.numerator_status, row.denominator, row.denominator_status,
     row.exclusions, row.exclusions_status) = raw  # fmt: skip
    lim, ci95, ci998 = r.limits, r.ci95, r.ci998
    row.rate, row.z = _r6(r.rate), _r6(r.z)
    row.lo95, row.hi95 = (_r6(ci95[0]), _r6(ci95[1])) if ci95 else (None, None)
    row.lo998, row.hi998 = (_r6(ci998[0]), _r6(ci998[1])) if ci998 else (None, None)
    if lim:
        row.limit_low_95, row.limit_high_95 = _r6(lim.low_95), _r6(lim.high_95)
        row.limit_low_998, row.limit_high_998 = _r6(lim.low_998), _r6(lim.high_998)
    else:
        row.limit_low_95 = row.limit_high_95 = row.limit_low_998 = row.limit_high_998 = None
    row.approximate = r.approximate
    if flag is not None:
        row.note = SUSPECT_NOTE if flag == "suspect" else UNVERIFIED_NOTE
        row.status, row.band = UNVERIFIED, None
    else:
        row.status, row.note, row.band = r.status, r.note, r.band
    row._item = row._peer = None
    return row


def _raw(rec: Any) -> tuple[int | None, str, int | None, str, int | None, str]:
    num, den, exc, ns, ds, es = rec[:6]
    return (None if num < 0 else num, STATUSES[ns], None if den < 0 else den, STATUSES[ds],
            None if exc < 0 else exc, STATUSES[es])  # fmt: skip


def _counts_for_stats(ods: str, raw: tuple[Any, ...], flag: str | None) -> stats.Counts:
    """What the statistics see of a practice: nothing of a flagged one (suppressed)."""
    if flag is not None:
        return stats.Counts(ods, None, None, "suppressed", "suppressed")
    return stats.Counts(ods, raw[0], raw[2], raw[1], raw[3])


# --- a group ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """One group's ``bench_entries`` value, unpacked."""

    practices: list[str]
    ids: bytes  # the submission ids, 16 bytes each
    numbers: np.ndarray  # of NUMBERS, one per practice

    @property
    def submissions(self) -> list[str]:
        ids = self.ids
        return [str(uuid.UUID(bytes=ids[i : i + 16])) for i in range(0, len(ids), 16)]


def id_bytes(submission_ids: Sequence[str]) -> np.ndarray:
    """Submission ids (UUIDs, the protocol's form) as 16-byte values, for :func:`pack`."""
    return np.array([uuid.UUID(s).bytes for s in submission_ids], dtype="S16")


def pack(practices: Sequence[str], ids: np.ndarray, numbers: np.ndarray) -> dict[str, Any]:
    """The ``bench_entries`` columns of a group's practices (sorted by ODS code): ``ids`` their
    submission ids as :func:`id_bytes` gives them."""
    joined = ",".join(practices)
    if joined.count(",") != max(len(practices) - 1, 0):
        raise ValueError("an ODS code holding ','")
    return {
        "practices": joined,
        "submissions": np.ascontiguousarray(ids, dtype="S16").tobytes(),
        "numbers": np.ascontiguousarray(numbers, dtype=NUMBERS).tobytes(),
    }


def unpack(practices: str, submissions: bytes, numbers: bytes) -> Stored:
    ods = practices.split(",") if practices else []
    raw = bytes(submissions)
    nums = np.frombuffer(bytes(numbers), dtype=NUMBERS)
    if not len(ods) == len(raw) // 16 == len(nums) or len(raw) % 16:
        raise ValueError("bench_entries: practices, submissions and numbers differ in length")
    return Stored(ods, raw, nums)


def load(session: Session, indicator: str, start: dt.date, end: dt.date) -> Stored | None:
    t = table_of(BenchEntries)
    found = session.execute(
        select(t.c.practices, t.c.submissions, t.c.numbers).where(
            t.c.indicator == indicator, t.c.period_start == start, t.c.period_end == end
        )
    ).first()
    return None if found is None else unpack(*found)


def released_states(
    recs: np.ndarray, hidden: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(numerators, denominators, suppressed, rounded) of count records (any array with the
    fields of :data:`aggregator.db.counts.RECORD`'s counts and statuses), a ``hidden`` (flagged)
    practice taken as suppressed: :attr:`.stats.Counts.status` over arrays."""
    num = recs["numerator"].astype(np.int64)
    den = recs["denominator"].astype(np.int64)
    ns, ds = recs["numerator_status"], recs["denominator_status"]
    sup = (
        hidden
        | (ns == counts_value.SUPPRESSED)
        | (ds == counts_value.SUPPRESSED)
        | (num < 0)
        | (den < 0)
    )
    rounded = ~sup & ((ns == counts_value.ROUNDED) | (ds == counts_value.ROUNDED))
    return num, den, sup, rounded


def group_rows(
    indicator: str, start: dt.date, end: dt.date, summ: BenchSummary | Any, stored: Stored
) -> list[PracticeRow]:
    """Every practice of one group, in ODS order, judged against its stored summary: the rows
    :func:`_row` builds from :func:`.stats.practice_results`, computed over the group's arrays
    (:func:`.stats.result_columns`; tests/benchmarks/test_period_refresh.py holds the two to
    each other) with no object per practice but its row."""
    recs = stored.numbers
    num, den, sup, rounded = released_states(recs, recs["flag"] > 0)
    cols = stats.result_columns(num, den, sup, rounded, summary_from_row(summ))
    ids = stored.ids
    out: list[PracticeRow] = []
    new = PracticeRow.__new__
    for i, (ods, rec) in enumerate(zip(stored.practices, recs.tolist(), strict=True)):
        row = new(PracticeRow)
        row.indicator, row.period_start, row.period_end = indicator, start, end
        row.practice_ods = ods
        row._submission_id = ids[16 * i : 16 * i + 16]
        row.indicator_version = None if rec[7] < 0 else rec[7]
        (row.numerator, row.numerator_status, row.denominator, row.denominator_status,
         row.exclusions, row.exclusions_status) = _raw(rec)  # fmt: skip
        st = cols.status[i]
        row.approximate = st == "rounded"
        rate, z = cols.rate[i], cols.z[i]
        row.rate = None if rate is None else round(rate, 6)
        row.z = None if z is None else round(z, 6)
        lo = cols.lo95[i]
        if lo is None:
            row.lo95 = row.hi95 = row.lo998 = row.hi998 = None
        else:
            row.lo95, row.hi95 = round(lo, 6), round(cols.hi95[i], 6)  # type: ignore[arg-type]
            row.lo998, row.hi998 = round(cols.lo998[i], 6), round(cols.hi998[i], 6)  # type: ignore[arg-type]
        lim = cols.limits[i]
        if lim is None:
            row.limit_low_95 = row.limit_high_95 = row.limit_low_998 = row.limit_high_998 = None
        else:
            row.limit_low_95, row.limit_high_95 = round(lim[0], 6), round(lim[1], 6)
            row.limit_low_998, row.limit_high_998 = round(lim[2], 6), round(lim[3], 6)
        f = rec[6]
        if f:
            row.note = SUSPECT_NOTE if f == 2 else UNVERIFIED_NOTE
            row.status, row.band = UNVERIFIED, None
        else:
            row.status, row.note, row.band = st, cols.note[i], cols.band[i]
        row._item = row._peer = None
        out.append(row)
    return out


#: Rows held by :func:`cached_group_rows` in each process, at most: ten national groups, about
#: 1.4 kB a row with both its rendered entries, so about 90 MB (docs/benchmarks.md, "A group's
#: rows cached").
CACHED_ROWS = 65_000
_CACHE: OrderedDict[tuple[Any, ...], list[PracticeRow]] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def cached_group_rows(session: Session, summ: BenchSummary | Any) -> list[PracticeRow]:
    """:func:`group_rows` of the group ``summ`` summarises (none if it has no stored value),
    from a per-process cache of recently read groups, whose rows keep their rendered entries: a
    national funnel read again renders none of its thousands of entries. The key is everything
    :func:`group_rows` computes from (the group, its summary and a digest of its stored value as
    read in this session), so a refresh, a correction or a cleared seal is a new key, never a
    stale answer; the least recently read groups leave once :data:`CACHED_ROWS` are held. The
    rows are shared: callers only read them."""
    t = table_of(BenchEntries)
    indicator, start, end = summ.indicator, summ.period_start, summ.period_end
    found = session.execute(
        select(t.c.practices, t.c.submissions, t.c.numbers).where(
            t.c.indicator == indicator, t.c.period_start == start, t.c.period_end == end
        )
    ).first()
    if found is None:
        return []
    practices, submissions, numbers = found[0], bytes(found[1]), bytes(found[2])
    digest = hashlib.blake2b(practices.encode(), digest_size=16)
    digest.update(b"\0" + submissions + b"\0" + numbers)
    key = (indicator, start, end, summary_from_row(summ), digest.digest())
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return list(hit)
    rows = group_rows(indicator, start, end, summ, unpack(practices, submissions, numbers))
    with _CACHE_LOCK:
        _CACHE[key] = rows
        held = sum(len(v) for v in _CACHE.values())
        while held > CACHED_ROWS and len(_CACHE) > 1:
            held -= len(_CACHE.popitem(last=False)[1])
    return list(rows)


def clear_cache() -> None:
    """Empty this process's :func:`cached_group_rows` (benchmarks time a first read with it)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def group_counts(stored: Stored, members: Iterable[str] | None = None) -> list[stats.Counts]:
    """The counts the statistics see of a group's practices (``members`` only, when given)."""
    keep = None if members is None else set(members)
    out = []
    for ods, rec in zip(stored.practices, stored.numbers.tolist(), strict=True):
        if keep is None or ods in keep:
            out.append(_counts_for_stats(ods, _raw(rec), FLAGS[rec[6]]))
    return out


# --- one practice -------------------------------------------------------------------------------


def _flagged(summ: Any) -> dict[str, str]:
    return json.loads(summ.flagged) if getattr(summ, "flagged", None) else {}


def _suspect(received_at: dt.datetime, compromised_since: dt.datetime | None) -> bool:
    if compromised_since is None:
        return False
    a, b = received_at, compromised_since
    if (a.tzinfo is None) != (b.tzinfo is None):  # SQLite hands back naive UTC
        a, b = a.replace(tzinfo=a.tzinfo or dt.UTC), b.replace(tzinfo=b.tzinfo or dt.UTC)
    return a >= b


def _latest_submissions(
    session: Session,
    practices: Sequence[str],
    periods: Sequence[tuple[dt.date, dt.date]] | None = None,
) -> list[Any]:
    """Each practice's latest effective submission of each period (``periods`` only)."""
    sub, pks = table_of(Submission).c, table_of(PracticeKey)
    q = (
        select(sub.practice_ods, sub.submission_id, sub.catalogue_id, sub.catalogue_version,
               sub.received_at, sub.seq, sub.kid, sub.envelope_sha256, sub.period_start,
               sub.period_end, sub.counts, sub.counts_verdict, pks.c.compromised_since)
        .outerjoin(pks, pks.c.kid == sub.kid)
        .where(sub.effective.is_(True), sub.practice_ods.in_(sorted(set(practices))))
    )  # fmt: skip
    if periods is not None and len(periods) == 1:
        q = q.where(sub.period_start == periods[0][0], sub.period_end == periods[0][1])
    latest: dict[tuple[str, dt.date, dt.date], Any] = {}
    wanted = None if periods is None else set(periods)
    for r in session.execute(q):
        if wanted is not None and (r.period_start, r.period_end) not in wanted:
            continue
        k = (r.practice_ods, r.period_start, r.period_end)
        cur = latest.get(k)
        if cur is None or (r.received_at, r.seq) > (cur.received_at, cur.seq):
            latest[k] = r
    return list(latest.values())


def _binding(r: Any) -> verdict.Binding:
    return (str(r.submission_id), str(r.practice_ods), str(r.kid), str(r.envelope_sha256),
            r.period_start.isoformat(), r.period_end.isoformat())  # fmt: skip


def trusted_totals(
    session: Session, subs: Sequence[Any]
) -> dict[str, tuple[dict[str, counts_value.Total], set[str]]]:
    """Each submission's whole-practice totals by indicator, and the indicators among them whose
    stored counts cannot be shown as signed here (their seal does not hold): by submission id.
    A counts value is taken whole when its seal holds; otherwise the submission's ``cells`` rows
    are read and each taken where its own verdict holds. Without a verdict key (a session that
    was given none) the stored counts are taken as they are, and the refresh's checks of the
    envelopes (``bench_summary.flagged``) decide."""
    key = session.info.get("verdict_key")
    out: dict[str, tuple[dict[str, counts_value.Total], set[str]]] = {}
    rest: list[Any] = []
    for r in subs:
        if (
            key is not None
            and verdict.Sealer(key, _binding(r)).holds_counts(r.counts_verdict, r.counts)
            or key is None
            and r.counts is not None
        ):
            out[str(r.submission_id)] = (counts_value.decode(bytes(r.counts)), set())
        else:
            rest.append(r)
    if rest:
        by_id = {str(r.submission_id): r for r in rest}
        c = table_of(Cell).c
        for i in range(0, len(rest), 500):
            ids = sorted(by_id)[i : i + 500]
            for row in session.execute(
                select(c.submission_id, c.indicator, c.denominator, c.denominator_status,
                       c.numerator, c.numerator_status, c.exclusions, c.exclusions_status,
                       c.strata, c.verdict).where(c.submission_id.in_(ids))
            ):  # fmt: skip
                sid = str(row.submission_id)
                totals, untrusted = out.setdefault(sid, ({}, set()))
                total: counts_value.Total = (
                    row.indicator, row.denominator, row.denominator_status, row.numerator,
                    row.numerator_status, row.exclusions, row.exclusions_status,
                )  # fmt: skip
                totals[row.indicator] = total
                if key is not None and not verdict.holds(
                    key, row.verdict, _binding(by_id[sid]), (*total, row.strata)
                ):
                    untrusted.add(row.indicator)
    return out


def practice_rows(
    session: Session,
    ods: str,
    indicator: str | None = None,
    period: tuple[dt.date, dt.date] | None = None,
) -> list[PracticeRow]:
    """One practice's rows (every indicator and period with a stored summary, or the one
    asked for), ordered by indicator and period end."""
    subs = _latest_submissions(session, [ods], None if period is None else [period])
    if not subs:
        return []
    t = table_of(BenchSummary)
    q = select(t)
    if indicator is not None:
        q = q.where(t.c.indicator == indicator)
    if period is not None:
        q = q.where(t.c.period_start == period[0], t.c.period_end == period[1])
    summaries = {(s.indicator, s.period_start, s.period_end): s for s in session.execute(q)}
    totals = trusted_totals(session, subs)
    from .service import indicator_versions  # (service imports this module)

    versions = indicator_versions(
        session, {(str(r.catalogue_id), int(r.catalogue_version)) for r in subs}
    )
    cells: list[stats.Counts] = []
    summs: list[stats.Summary] = []
    meta: list[tuple[Any, ...]] = []
    for r in subs:
        sid = str(r.submission_id)
        found, untrusted = totals.get(sid, ({}, set()))
        by_version = versions.get((str(r.catalogue_id), int(r.catalogue_version)), {})
        suspect = _suspect(r.received_at, r.compromised_since)
        for ind, total in found.items():
            summ = summaries.get((ind, r.period_start, r.period_end))
            if summ is None:
                continue
            flag = _flagged(summ).get(sid)
            if flag is None and suspect:
                flag = "suspect"
            if flag is None and ind in untrusted:
                flag = "unverified"
            raw = (total[3], total[4], total[1], total[2], total[5], total[6])
            if flag is not None:
                raw = (None, UNVERIFIED, None, UNVERIFIED, None, UNVERIFIED)
            cells.append(_counts_for_stats(ods, raw, flag))
            summs.append(summary_from_row(summ))  # type: ignore[arg-type]
            meta.append((ind, r.period_start, r.period_end, raw, sid, by_version.get(ind), flag))
    results = stats.results_many(cells, summs)
    rows = [_row(ind, s, e, res, raw, sid, ver, flag)
            for res, (ind, s, e, raw, sid, ver, flag) in zip(results, meta, strict=True)]  # fmt: skip
    rows.sort(key=lambda x: (x.indicator, x.period_end))
    return rows


def included_counts(
    session: Session, practices: Iterable[str], indicator: str | None = None
) -> dict[tuple[str, dt.date], int]:
    """How many of ``practices`` have a rate in each (indicator, period end) with a stored
    summary: released counts with a denominator, not flagged."""
    wanted = sorted(set(practices))
    if not wanted:
        return {}
    subs = _latest_submissions(session, wanted)
    t = table_of(BenchSummary)
    q = select(t.c.indicator, t.c.period_start, t.c.period_end, t.c.flagged)
    if indicator is not None:
        q = q.where(t.c.indicator == indicator)
    summaries = {(s.indicator, s.period_start, s.period_end): s for s in session.execute(q)}
    totals = trusted_totals(session, subs)
    out: dict[tuple[str, dt.date], int] = {}
    for r in subs:
        sid = str(r.submission_id)
        found, untrusted = totals.get(sid, ({}, set()))
        if _suspect(r.received_at, r.compromised_since):
            continue
        for ind, total in found.items():
            summ = summaries.get((ind, r.period_start, r.period_end))
            if summ is None or ind in untrusted or sid in _flagged(summ):
                continue
            c = stats.Counts(str(r.practice_ods), total[3], total[1], total[4], total[2])  # type: ignore[arg-type]
            if c.usable:
                out[(ind, r.period_end)] = out.get((ind, r.period_end), 0) + 1
    return out


def sealed_cell(session: Session, submission_id: str, indicator: str) -> Cell | None:
    """A submission's stored ``cells`` row for one indicator (its strata) if its verdict holds
    (any, without a verdict key); None otherwise: strata that are not what the practice signed
    are not shown, whatever its sealed counts value says of the total."""
    cell = session.get(Cell, (submission_id, indicator))
    key = session.info.get("verdict_key")
    if cell is None or key is None:
        return cell
    sub = session.get(Submission, submission_id)
    if sub is None:
        return None
    binding = (sub.submission_id, sub.practice_ods, sub.kid, sub.envelope_sha256,
               sub.period_start.isoformat(), sub.period_end.isoformat())  # fmt: skip
    values = (cell.indicator, cell.denominator, cell.denominator_status, cell.numerator,
              cell.numerator_status, cell.exclusions, cell.exclusions_status, cell.strata)  # fmt: skip
    return cell if verdict.holds(key, cell.verdict, binding, values) else None
