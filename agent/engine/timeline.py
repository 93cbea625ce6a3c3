"""Counts for several period ends from each patient's changes of state (a backfill in one pass).

Evaluating every rule for every (patient, period end) costs the number of period ends times one
period's rules (docs/benchmarks.md, "Backfill in one pass"). But a patient's state changes only
where something happens: a coded row arrives, a row leaves a window, a birthday crosses an age
bound, a registration starts or ends. So here each leaf of a rule is evaluated once per patient
(or once per patient and bucket with coded rows) as a **mask**: an integer whose bit ``i`` says
whether the leaf holds at the ``i``-th period end. ``All``, ``Any`` and ``Not`` are then bitwise
``&``, ``|`` and ``~``, over one integer per patient, whatever the number of period ends.

How each leaf becomes a mask (``E_i`` the sorted period ends, ``n`` their number; a bound such as
``E - 12 months`` is computed in Python for every end, ``dates.bound_value``, and is
non-decreasing in ``i``, so "``d`` is after the bound" holds for a prefix of the ends: the first
``flip(d)`` of them, ``flip`` a binary search):

* the database returns, per (patient, code set, bucket), the latest and first date and the lowest
  value on the latest valued date, exactly as the one-pass query aggregates them (a bucket is the
  first period end on or after a row's date, ``compiler._buckets``);
* ``HasCode`` in an N-month window: each bucket ``b`` with rows holds from ``b`` until its latest
  date leaves the window; the leaf is the OR of those ranges;
* ``FirstCode``: from the bucket of the earliest row until that row leaves the window;
* the latest-wins leaves (``OnRegister`` with a resolved list, ``LatestValue``, ``LatestCode``):
  each bucket with a row decides the state from itself until the patient's next such bucket (a
  later bucket's dates are all later), ANDed for the windowed ones with "some such row is in the
  window";
* ``Age``, ``RegisteredFor``, the base population and the age band: one flip per bound and
  patient; ``SexIs``: all or none;
* ``Score``: the weighted sum per period end, bit by bit.

Counting: each stratum (age band, sex) and period end sums the bits of the denominator,
numerator and exclusion masks of the patients in it; a patient whose band changes within the
span counts in each band for the period ends it is in it.

This is the default of ``compute_periods`` for up to 63 period ends (the masks are unsigned 64-bit
integers); the SQL one-pass plan (``compiler``) serves more. The reference evaluator and the
per-period SQL are its oracles (tests/engine/test_generative.py).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from protocol.catalogue import (
    Age,
    All,
    Any_,
    Catalogue,
    FirstCode,
    HasCode,
    Indicator,
    LatestCode,
    LatestValue,
    Not,
    OnRegister,
    RegisteredFor,
    Rule,
    Score,
    SexIs,
    Window,
)

from .dates import bound_value
from .features import CodeSet, FirstDate, LatestValueOf, events, features_for

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .compiler import CodeMatch

MAX_ENDS = 63  # bits of an unsigned 64-bit mask, one to spare for the shifts' upper bound
_NONE = np.iinfo(np.int64).min  # a missing date, as days
_EPOCH = dt.date(1970, 1, 1)
_ONE = np.uint64(1)


def _days(values: Any) -> np.ndarray:
    """Dates (a numpy datetime64 array, masked where null, or a sequence of ``date``/None) as
    int64 days since 1970, ``_NONE`` where null."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        filled = (
            np.ma.filled(values, np.datetime64("NaT")) if np.ma.isMaskedArray(values) else values
        )
        out = filled.astype("datetime64[D]").astype(np.int64)
        out[np.isnat(filled)] = _NONE
        return out
    return np.fromiter(
        ((v - _EPOCH).days if v is not None else _NONE for v in values), np.int64, len(values)
    )


def _floats(values: Any) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return (
            np.ma.filled(values.astype(np.float64), np.nan)
            if np.ma.isMaskedArray(values)
            else values.astype(np.float64)
        )
    return np.fromiter((np.nan if v is None else float(v) for v in values), np.float64, len(values))


@dataclass
class _Rows:
    """One code set's (patient, bucket) rows, ordered by patient then bucket."""

    p: np.ndarray  # patient index
    b: np.ndarray  # bucket (period end index)
    last: np.ndarray
    first: np.ndarray | None
    vdate: np.ndarray | None
    value: np.ndarray | None

    def take(self, keep: np.ndarray) -> _Rows:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[keep]

        return _Rows(
            self.p[keep],
            self.b[keep],
            self.last[keep],
            pick(self.first),
            pick(self.vdate),
            pick(self.value),
        )


class Timeline:
    """The masks of one practice's patients over sorted period ends ``ends``."""

    def __init__(
        self,
        ends: Sequence[dt.date],
        patients: dict[str, Any],
        rows: dict[str, Any],
        numbers: dict[CodeSet, int],
    ) -> None:
        self.ends = tuple(ends)
        self.n = len(self.ends)
        if not 1 <= self.n <= MAX_ENDS:
            raise ValueError(f"{self.n} period ends: a timeline holds 1 to {MAX_ENDS}")
        self.full = np.uint64((1 << self.n) - 1)
        self.pid = np.asarray(patients["patient_id"], dtype=np.int64)
        self.P = len(self.pid)
        self.birth = _days(patients["birth_date"])
        self.sex = np.asarray([str(s) for s in patients["sex"]], dtype=object)
        self.reg_start = _days(patients["registration_start"])
        self.reg_end = _days(patients["registration_end"])
        self.death = _days(patients["death_date"])
        self._bounds: dict[str, np.ndarray] = {}
        self._leaves: dict[int, np.ndarray] = {}
        self.sets = self._split_rows(rows, numbers)

    # --- bounds and ranges ----------------------------------------------------------------

    def bounds(self, name: str) -> np.ndarray:
        """The date bound ``name`` at every period end, as days (non-decreasing)."""
        found = self._bounds.get(name)
        if found is None:
            found = _days([bound_value(name, end) for end in self.ends])
            self._bounds[name] = found
        return found

    def flip(self, name: str, days: np.ndarray) -> np.ndarray:
        """For each date: how many period ends have the bound ``name`` before it (so "date >
        bound" holds at exactly the first ``flip`` ends). A missing date: 0."""
        out = np.searchsorted(self.bounds(name), days, side="left")
        out[days == _NONE] = 0
        return out

    def ranges(self, lo: np.ndarray, hi: np.ndarray | int) -> np.ndarray:
        """Masks with the bits ``lo <= i < hi`` set (none where ``hi <= lo``)."""
        lo = np.asarray(lo, dtype=np.uint64)
        hi = np.broadcast_to(np.asarray(hi, dtype=np.uint64), lo.shape)
        masks = (_ONE << hi) - (_ONE << lo)
        return np.where(hi > lo, masks, np.uint64(0))

    def per_patient(self, p: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """The OR of row masks per patient (rows ordered by patient)."""
        out = np.zeros(self.P, dtype=np.uint64)
        if len(p):
            starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
            out[p[starts]] = np.bitwise_or.reduceat(masks, starts)
        return out

    def _until_next(self, rows: _Rows) -> np.ndarray:
        """Each row's next bucket for the same patient (``n`` for a patient's last row)."""
        nxt = np.full(len(rows.b), self.n, dtype=np.int64)
        if len(rows.b) > 1:
            same = rows.p[1:] == rows.p[:-1]
            nxt[:-1] = np.where(same, rows.b[1:], self.n)
        return nxt

    def _window_hi(self, dates: np.ndarray, window: Window | None) -> np.ndarray | int:
        return self.n if window is None else self.flip(f"m_{window.months}", dates)

    # --- rows ---------------------------------------------------------------------------

    def _split_rows(self, rows: dict[str, Any], numbers: dict[CodeSet, int]) -> dict[int, _Rows]:
        pid = np.asarray(rows["patient_id"], dtype=np.int64)
        k = np.asarray(rows["k"], dtype=np.int64)
        b = np.asarray(rows["pidx"], dtype=np.int64)
        p = np.searchsorted(self.pid, pid)
        p_clip = np.minimum(p, max(self.P - 1, 0))
        known = (p < self.P) & (self.pid[p_clip] == pid) if self.P else np.zeros(len(pid), bool)
        last = _days(rows["last"])
        first = _days(rows["first"]) if "first" in rows else None
        vdate = _days(rows["vdate"]) if "vdate" in rows else None
        value = _floats(rows["v"]) if "v" in rows else None
        # ordered by code set, patient, bucket (patient_id order is patient index order)
        order = np.lexsort((b, p, k))
        keep = order[known[order]]
        all_rows = _Rows(
            p[keep],
            b[keep],
            last[keep],
            None if first is None else first[keep],
            None if vdate is None else vdate[keep],
            None if value is None else value[keep],
        )
        ks = k[keep]
        out: dict[int, _Rows] = {}
        for number in sorted(set(numbers.values())):
            lo, hi = np.searchsorted(ks, number, "left"), np.searchsorted(ks, number, "right")
            out[number] = all_rows.take(slice(lo, hi))  # type: ignore[arg-type]
        self.numbers = numbers
        return out

    def rows(self, codeset: CodeSet) -> _Rows:
        return self.sets[self.numbers[codeset]]

    # --- rules --------------------------------------------------------------------------

    def mask(self, rule: Rule) -> np.ndarray:
        """The rule's mask for every patient (cached per rule object)."""
        found = self._leaves.get(id(rule))
        if found is None:
            found = _mask(rule, self)
            self._leaves[id(rule)] = found
        return found

    def latest_wins(self, rows: _Rows, state: np.ndarray) -> np.ndarray:
        """Per patient: the bits where the latest bucket with a row, up to that period end, has
        ``state``."""
        masks = np.where(state, self.ranges(rows.b, self._until_next(rows)), np.uint64(0))
        return self.per_patient(rows.p, masks)

    def latest_in_window(
        self, rows: _Rows, state: np.ndarray, dates: np.ndarray, window: Window | None
    ) -> np.ndarray:
        """:meth:`latest_wins`, and (with a window) some row's date inside the window: the
        latest row up to a period end is then inside it too, its date being the latest."""
        good = self.latest_wins(rows, state)
        if window is None:
            return good
        inside = self.per_patient(rows.p, self.ranges(rows.b, self._window_hi(dates, window)))
        both_hold: np.ndarray = good & inside
        return both_hold

    def base(self) -> np.ndarray:
        """Born, registered and alive on the period end."""
        # birth and registration on or before E_i: from the first end not before them; the end
        # of registration and death after E_i: up to the first end not before them
        lo = np.maximum(_ends_before(self, self.birth), _ends_before(self, self.reg_start))
        hi = np.minimum(_ends_before(self, self.reg_end), _ends_before(self, self.death))
        return self.ranges(lo, hi)

    def bands(self, catalogue: Catalogue) -> np.ndarray:
        """(patients x period ends): the index of each patient's age band at each end."""
        band = np.zeros((self.P, self.n), dtype=np.int64)
        steps = np.arange(self.n)
        for b in catalogue.age_bands[:-1]:
            if b.max is None:
                continue
            # in a later band from the first end at which birth <= the age bound
            crossing = self.flip(f"age_{b.max + 1}", self.birth)
            band += steps[None, :] >= crossing[:, None]
        return band


def _ends_before(t: Timeline, days: np.ndarray) -> np.ndarray:
    """For each date: the number of period ends before it, which is also the index of the first
    end on or after it; a missing date: ``n`` (for a birth or a registration start, never; for
    an end of registration or a death, after every end)."""
    out = np.searchsorted(t.bounds("period_end"), days, side="left")
    out[days == _NONE] = t.n
    return out


@functools.singledispatch
def _mask(rule: Rule, t: Timeline) -> np.ndarray:
    raise TypeError(f"cannot evaluate rule node {type(rule).__name__}")


@_mask.register
def _(rule: All, t: Timeline) -> np.ndarray:
    return functools.reduce(np.bitwise_and, (t.mask(c) for c in rule.of))


@_mask.register
def _(rule: Any_, t: Timeline) -> np.ndarray:
    return functools.reduce(np.bitwise_or, (t.mask(c) for c in rule.of))


@_mask.register
def _(rule: Not, t: Timeline) -> np.ndarray:
    return t.full & ~t.mask(rule.rule)


@_mask.register
def _(rule: Age, t: Timeline) -> np.ndarray:
    lo: np.ndarray | int = 0
    hi: np.ndarray | int = t.n
    if rule.min is not None:  # birth <= bound: from the first end where the bound reaches it
        lo = t.flip(f"age_{rule.min}", t.birth)
    if rule.max is not None:  # birth > bound(max + 1): while the bound is before it
        hi = t.flip(f"age_{rule.max + 1}", t.birth)
    return t.ranges(np.broadcast_to(np.asarray(lo), (t.P,)), hi)


@_mask.register
def _(rule: SexIs, t: Timeline) -> np.ndarray:
    return np.where(np.isin(t.sex, list(rule.values)), t.full, np.uint64(0))


@_mask.register
def _(rule: RegisteredFor, t: Timeline) -> np.ndarray:
    return t.ranges(t.flip(f"m_{rule.months}", t.reg_start), t.n)


@_mask.register
def _(rule: HasCode, t: Timeline) -> np.ndarray:
    rows = t.rows(CodeSet(rule.table, (rule.codelist,)))
    return t.per_patient(rows.p, t.ranges(rows.b, t._window_hi(rows.last, rule.window)))


@_mask.register
def _(rule: FirstCode, t: Timeline) -> np.ndarray:
    rows = t.rows(events(rule.codelist))
    if not len(rows.p):
        return np.zeros(t.P, dtype=np.uint64)
    firsts = np.flatnonzero(np.r_[True, rows.p[1:] != rows.p[:-1]])
    assert rows.first is not None
    masks = t.ranges(rows.b[firsts], t._window_hi(rows.first[firsts], rule.window))
    out = np.zeros(t.P, dtype=np.uint64)
    out[rows.p[firsts]] = masks
    return out


@_mask.register
def _(rule: OnRegister, t: Timeline) -> np.ndarray:
    reg = t.rows(events(rule.codelist))
    if not rule.resolved:
        return t.per_patient(reg.p, t.ranges(reg.b, t.n))
    res = t.rows(events(rule.resolved))
    width = t.n + 1
    keys_reg = reg.p * width + reg.b
    keys_res = res.p * width + res.b
    keys = np.union1d(keys_reg, keys_res)
    r = np.full(len(keys), _NONE, dtype=np.int64)
    s = np.full(len(keys), _NONE, dtype=np.int64)
    r[np.searchsorted(keys, keys_reg)] = reg.last
    s[np.searchsorted(keys, keys_res)] = res.last
    # a bucket with register rows and no resolved row on or after the latest of them
    state = (r != _NONE) & ((s == _NONE) | (s < r))
    merged = _Rows(keys // width, keys % width, r, None, None, None)
    return t.latest_wins(merged, state)


def _compare(left: np.ndarray, op: str, right: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        result: np.ndarray = {
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
            "==": left == right,
        }[op]
    return result


@_mask.register
def _(rule: LatestValue, t: Timeline) -> np.ndarray:
    rows = t.rows(events(rule.codelist))
    assert rows.vdate is not None and rows.value is not None
    valued = rows.take(rows.vdate != _NONE)
    assert valued.vdate is not None and valued.value is not None
    state = _compare(valued.value, rule.op, rule.value)
    return t.latest_in_window(valued, state, valued.vdate, rule.window)


@_mask.register
def _(rule: LatestCode, t: Timeline) -> np.ndarray:
    family = t.rows(events(rule.family))
    both = t.rows(events(rule.family, rule.codelist))
    width = t.n + 1
    keys_family = family.p * width + family.b
    keys_both = both.p * width + both.b
    latest_both = np.full(len(keys_family), _NONE, dtype=np.int64)
    if len(keys_both):  # every row in both is a family row, so its bucket is a family bucket
        latest_both[np.searchsorted(keys_family, keys_both)] = both.last
    return t.latest_in_window(family, latest_both == family.last, family.last, rule.window)


@_mask.register
def _(rule: Score, t: Timeline) -> np.ndarray:
    terms = [(term.weight, t.mask(term.rule)) for term in rule.terms]
    out = np.zeros(t.P, dtype=np.uint64)
    for i in range(t.n):
        shift = np.uint64(i)
        total = sum(
            (w * ((m >> shift) & _ONE).astype(np.int64) for w, m in terms),
            start=np.zeros(t.P, dtype=np.int64),
        )
        hit = _compare(total, rule.op, rule.value)
        out |= np.where(hit, _ONE << shift, np.uint64(0))
    return out


# --- counting ------------------------------------------------------------------------------


def count(
    t: Timeline, catalogue: Catalogue, indicators: Sequence[Indicator]
) -> dict[int, list[tuple[Any, ...]]]:
    """Per period end index: rows (age band, sex, denominator_0, numerator_0, exclusions_0, ...)
    for every (band, sex) with a count, as the SQL's grouped query returns them."""
    labels = [b.label for b in catalogue.age_bands]
    sexes, sex_code = (
        np.unique(t.sex, return_inverse=True) if t.P else (np.array([]), np.array([], np.int64))
    )
    nsex = max(len(sexes), 1)
    strata = len(labels) * nsex
    n = t.n
    stratum = t.bands(catalogue) * nsex + np.asarray(sex_code, dtype=np.int64)[:, None]
    keys_all = stratum * n + np.arange(n)[None, :]  # (patient, end) -> stratum * n + end
    shifts = np.arange(n, dtype=np.uint64)[None, :]
    base = t.base()
    counts = np.zeros((len(indicators), 3, strata * n), dtype=np.int64)
    for i, ind in enumerate(indicators):
        pop = base & t.mask(ind.population)
        num = t.mask(ind.numerator)
        exc = t.mask(ind.exclusions) if ind.exclusions is not None else np.zeros(t.P, np.uint64)
        masks = (pop & (num | (t.full & ~exc)), pop & num, pop & (t.full & ~num) & exc)
        for j, m in enumerate(masks):
            nz = np.flatnonzero(m)
            if not len(nz):
                continue
            bits = ((m[nz, None] >> shifts) & _ONE).astype(bool)
            counts[i, j] = np.bincount(keys_all[nz][bits], minlength=strata * n)
    out: dict[int, list[tuple[Any, ...]]] = {e: [] for e in range(n)}
    by = counts.reshape(len(indicators) * 3, strata, n)
    for s in range(strata):
        band, sex = divmod(s, nsex)
        column = by[:, s, :]
        for e in np.flatnonzero(column.any(axis=0)):
            out[int(e)].append((labels[band], str(sexes[sex]), *column[:, e].tolist()))
    return out


# --- the query -----------------------------------------------------------------------------


def _queries(
    dialect: sa.Dialect,
    catalogue: Catalogue,
    indicators: list[Indicator],
    ends: tuple[dt.date, ...],
    code_match: CodeMatch,
) -> tuple[sa.Select[Any], sa.Select[Any], dict[CodeSet, int]]:
    """(the per-(patient, code set, bucket) aggregates, the patients who could be in the base
    population at some end, the code sets' numbers)."""
    import sqlalchemy as sa

    from agent.sources import schema

    from . import compiler
    from .dialects import flavour_for

    flavour = flavour_for(dialect)
    features = features_for(indicators)
    codesets = sorted({f.codeset for f in features})
    number = {cs: k for k, cs in enumerate(codesets, start=1)}
    p = schema.patients
    first, last = compiler._date(ends[0]), compiler.end_param("period_end", ends[-1])
    people = (
        sa.select(
            p.c.patient_id,
            p.c.birth_date,
            p.c.sex,
            p.c.registration_start,
            p.c.registration_end,
            p.c.death_date,
        )
        .where(
            p.c.birth_date <= last,
            p.c.registration_start <= last,
            sa.or_(p.c.registration_end.is_(None), p.c.registration_end > first),
            sa.or_(p.c.death_date.is_(None), p.c.death_date > first),
        )
        .order_by(p.c.patient_id)
    )
    if not codesets:
        return sa.select(sa.literal(0).label("patient_id")).where(sa.false()), people, number
    hits = compiler._hits_cte(catalogue, codesets, number, ends[-1], flavour, code_match)
    has_first = any(isinstance(f, FirstDate) for f in features)
    has_value = any(isinstance(f, LatestValueOf) for f in features)
    cols = compiler.set_aggregates(hits, features, flavour)
    per_bucket = compiler.per_bucket_cte(hits, ends, cols)
    b = per_bucket.c
    out = [b.patient_id, b.k, b.pidx, b.last]
    if has_first:
        out.append(b.first)
    if not has_value:
        return sa.select(*out), people, number
    source, value = flavour.lowest_value_on_latest_date(hits, per_bucket, True)
    return sa.select(*out, b.vdate, value.label("v")).select_from(source), people, number


def compute(
    engine: sa.Engine,
    catalogue: Catalogue,
    indicators: list[Indicator],
    ends: tuple[dt.date, ...],
    code_match: CodeMatch = "join",
) -> dict[int, list[tuple[Any, ...]]]:
    """Rows per period end index, as ``count`` gives them, for the practice in ``engine``."""
    rows_query, people_query, numbers = _queries(
        engine.dialect, catalogue, indicators, ends, code_match
    )
    with engine.connect() as conn:
        people = _fetch(conn, people_query)
        if numbers:
            rows = _fetch(conn, rows_query)
        else:  # no rule reads a coded row
            rows = {"patient_id": [], "k": [], "pidx": [], "last": []}
    timeline = Timeline(ends, people, rows, numbers)
    return count(timeline, catalogue, indicators)


def _fetch(conn: sa.Connection, query: sa.Select[Any]) -> dict[str, Any]:
    """The query's columns by name: numpy arrays from DuckDB, lists elsewhere."""
    if conn.dialect.name == "duckdb":
        # render_postcompile: an expanding IN list (``code_match="in"``) becomes one parameter
        # per code, so the SQL text and the positional parameters line up
        compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        params = compiled.construct_params()
        names = list(compiled.positiontup or ())
        raw = conn.connection.driver_connection
        assert raw is not None
        result = raw.execute(str(compiled), [params[name] for name in names])
        return dict(result.fetchnumpy())
    result = conn.execute(query)
    names = list(result.keys())
    columns: list[list[Any]] = [[] for _ in names]
    for row in result:
        for i, v in enumerate(row):
            columns[i].append(v)
    return dict(zip(names, columns, strict=True))
