"""The disclosure guard: audit a submission against linked tables and earlier releases.

``protocol.disclosure.apply_policy`` protects each indicator's table on its own. A reader who
knows the catalogue also knows the identities between tables (``protocol.linkage``), and a reader
of the network's log has the practice's earlier releases. Before a submission is signed the guard
solves that reader's problem for every protected count and, where one is pinned closer than
:class:`GuardPolicy` allows, withholds more counts of the new submission (``apply_policy``'s
``withhold``) and audits again; where withholding cannot help it says why and the submission is
held for the practice to decide. docs/disclosure.md ("The disclosure guard") states the policy
and the reader; this docstring says how it is made fast.

* The catalogue's identities are derived once per catalogue and set of strata (cached by the
  catalogue's hash), and a release's relation rows once per set of cells.
* Released exact counts are constants. The model is split into connected parts over its free
  counts, and every part with no protected count is skipped unsolved.
* Bound propagation first (each row's implied bounds on its counts, vectorised, repeated until
  nothing changes): sound, and a count pinned through a chain of rows shows as ``lo == hi``
  with no integer program. When propagation pins any protected count, the audit reports those
  at once without solving; the guard withholds and audits again.
* A count is shown to be *not* pinned by exhibiting worlds: the true counts are one world; two
  integer programs over all remaining parts at once (maximise, then minimise, a signed sum of
  the protected counts) give two more; then, while it proves any, the counts still unproven are
  pushed down and up together (two more integer programs a round). Every protected count that
  takes enough distinct values across these worlds is proven. Only the few left are bounded one
  by one (on their own part; the second bound is skipped once the first proves it).
* For each exposure the nearest released count is withheld, unless a count chosen for another
  exposure this round is as near (fewer rounds than skipping on any nearby choice); "near"
  through relations that hold with equality at the true counts first (an inequality they
  leave slack cannot pin a count).
* Once nothing is exposed, what the guard withheld is released again where the same audit then
  finds nothing (:meth:`_Guard.prune`): runs of counts at once, a needed count found by a short
  audit (the first exposure found ends it), a released one paid by one full audit per run.
* History: only the latest earlier release of the same period (a correction) and of each
  adjacent period. In a correction, every count the earlier version suppressed stays suppressed
  (sticky suppression), which removes most differencing without a solver.

* A stratum's exclusions under a policy that releases exclusions as a whole-practice total
  only (``exclusions_by_stratum=False``) is suppressed whatever it holds: the model reads it as
  0 or more (``protocol.disclosure.count_range``), an earlier release in the layout it was made
  with (:func:`released_under`). Such a count is protected (a target) when it is 1..T, as any
  suppressed count; a true 0 is not (the other layout releases it as a zero).
* A small population's numerators (``protocol.disclosure.is_small_population``: a
  whole-practice denominator of 1..T) are suppressed zeros included. Where the guard knows the
  true counts (the new submission; an earlier one whose counts it has) it reads them in the true
  case: a small population's suppressed numerators 0 or more with its denominator total at most
  T, any other's at least 1, both of them worlds the reader must allow
  (:func:`_small_populations`); a small population's zero numerator is protected (a target).
  An earlier release whose counts it does not have is read as the weaker union of both cases
  (numerators 0 or more wherever its cells allow a small population).

Only counts and their positions appear in reasons, never a patient.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import highspy
import numpy as np
import numpy.typing as npt
from highspy._core import _Highs  # highspy.Highs without its callbacks, which print a banner

from protocol.catalogue import Catalogue, DisclosurePolicy
from protocol.disclosure import (
    COUNT_KINDS,
    TOTAL,
    RawCell,
    Withheld,
    apply_policy,
    count_range,
    exclusions_hidden,
    is_small_population,
    small_population_possible,
    suppression_threshold,
)
from protocol.errors import DisclosureError
from protocol.linkage import Identity, bands_of_labels, linked_identities, region_cells
from protocol.submission import Cell, Period

from .guard_types import (
    Exposure,
    GuardPolicy,
    GuardResult,
    Release,
    Var,
    latest_linked,
    linked,
)
from .sparse import Csr, bipartite_components, vstack

__all__ = ["GuardPolicy", "GuardResult", "Release", "guard_cells", "linked"]

Row = tuple[dict[Var, int], float, float]  # coefficients, lower bound, upper bound
DELTA: Var = (-1, "", ("", ""), "delta")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int_]


# --- the reader's relations (cached) -----------------------------------------------------------

_IDS: dict[object, tuple[Identity, ...]] = {}
_ROWS: dict[object, list[Row]] = {}


def identities_for(
    catalogue: Catalogue, cells: Sequence[Cell], versions: dict[str, int] | None = None
) -> tuple[object, tuple[Identity, ...]]:
    """(cache key, identities) of a release: the catalogue's, for the release's own age bands
    and strata, between indicators whose version in the release is the catalogue's (a changed
    indicator may have changed its rules). Derived once per catalogue and set of strata."""
    present = {c.indicator for c in cells}
    same = sorted(
        i.id
        for i in catalogue.indicators
        if i.id in present and (versions is None or versions.get(i.id) == i.version)
    )
    strata: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for c in cells:
        strata[c.indicator].append((c.stratum.age_band, c.stratum.sex))
    key = (
        catalogue.sha256(),  # kept per catalogue object (protocol.catalogue)
        tuple(same),
        tuple(sorted((k, tuple(v)) for k, v in strata.items())),
    )
    if key not in _IDS:
        if len(_IDS) > 64:
            _IDS.clear()
        bands = bands_of_labels(c.stratum.age_band for c in cells)
        _IDS[key] = linked_identities(
            catalogue, bands=bands or None, indicators=same, strata=dict(strata)
        )
    return key, _IDS[key]


def _by_ind(cells: Sequence[Cell]) -> dict[str, dict[tuple[str, str], Cell]]:
    out: dict[str, dict[tuple[str, str], Cell]] = defaultdict(dict)
    for c in cells:
        out[c.indicator][(c.stratum.age_band, c.stratum.sex)] = c
    return out


def _relation_rows(
    r: int, cells: Sequence[Cell], ids: tuple[object, tuple[Identity, ...]]
) -> list[Row]:
    """Partitions, ``numerator <= denominator`` and the identities, for release ``r``. They
    depend only on which cells there are, not on their values: cached."""
    key = ("rel", r, ids[0], tuple(c.key for c in cells))
    if key in _ROWS:
        return _ROWS[key]
    out: list[Row] = []
    by_ind = _by_ind(cells)
    for ind, group in by_ind.items():
        for s in group:
            pair: dict[Var, int] = {(r, ind, s, "numerator"): 1, (r, ind, s, "denominator"): -1}
            out.append((pair, -np.inf, 0.0))
        strata = [s for s in group if s != TOTAL]
        if strata and TOTAL in group:
            for kind in COUNT_KINDS:
                coeffs: dict[Var, int] = {(r, ind, TOTAL, kind): 1}
                for s in strata:
                    coeffs[(r, ind, s, kind)] = -1
                out.append((coeffs, 0.0, 0.0))
    for ident in ids[1]:
        coeffs = {}
        ok = True
        for sign, terms in ((1, (ident.lhs,)), (-1, ident.rhs)):
            for term in terms:
                where = region_cells(ident.region, list(by_ind.get(term.indicator, {})))
                if not where:
                    ok = False
                    break
                for s in where:
                    for kind in term.kinds:
                        v = (r, term.indicator, s, kind)
                        coeffs[v] = coeffs.get(v, 0) + sign
        coeffs = {v: c for v, c in coeffs.items() if c}
        if ok and coeffs:
            out.append((coeffs, -np.inf if ident.relation == "contained" else 0.0, 0.0))
    if len(_ROWS) > 256:
        _ROWS.clear()
    _ROWS[key] = out
    return out


def _common_regions(
    a: dict[tuple[str, str], Cell], b: dict[tuple[str, str], Cell]
) -> list[tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
    """Pairs of cell lists of one indicator in two releases that cover the same patients: the
    total, and every (union of age bands) x sex both can form (two catalogue versions may split
    or merge a band; one release may report totals only)."""
    out = [([TOTAL], [TOTAL])]
    sa = [s for s in a if s != TOTAL]
    sb = [s for s in b if s != TOTAL]
    if not sa or not sb:
        return out
    sex_a = {x for _, x in sa} - {"all"}
    sex_b = {x for _, x in sb} - {"all"}
    sexes = sorted(sex_a) if sex_a and sex_a == sex_b else ["all"]
    bands_a = bands_of_labels(x for x, _ in sa)
    bands_b = bands_of_labels(x for x, _ in sb)
    groups: list[tuple[list[str], list[str]]] = []
    if bands_a and bands_b:
        ia = ib = 0
        cur_a: list[str] = []
        cur_b: list[str] = []
        while ia < len(bands_a) and ib < len(bands_b):  # merge bands until both end together
            end_a, end_b = bands_a[ia][2], bands_b[ib][2]
            if end_a <= end_b:
                cur_a.append(bands_a[ia][0])
                ia += 1
            if end_b <= end_a:
                cur_b.append(bands_b[ib][0])
                ib += 1
            if end_a == end_b:
                groups.append((cur_a, cur_b))
                cur_a, cur_b = [], []
    else:
        groups = [(["all"], ["all"])]
    if sexes == ["all"] and groups == [(["all"], ["all"])]:
        return out

    def cells_for(
        side: dict[tuple[str, str], Cell], bands: list[str], sex: str
    ) -> list[tuple[str, str]]:
        return [
            s
            for s in side
            if s != TOTAL and (bands == ["all"] or s[0] in bands) and sex in ("all", s[1])
        ]

    for ga, gb in groups:
        for sex in sexes:
            ca, cb = cells_for(a, ga, sex), cells_for(b, gb, sex)
            if ca and cb:
                out.append((ca, cb))
    return out


def _link_rows(new: Sequence[Cell], old: Sequence[Cell]) -> list[Row]:
    """``|count now - count then| <= delta`` over every region both releases report, a region
    released as a zero in either release included (docs/disclosure.md, "The reader": a zero next
    to a suppressed count pins it at 1 when every count moved by at most 1). They depend only on
    which cells there are, not on their values."""
    rows: list[Row] = []
    a_by, b_by = _by_ind(new), _by_ind(old)
    for ind in sorted(set(a_by) & set(b_by)):
        for ca, cb in _common_regions(a_by[ind], b_by[ind]):
            for kind in COUNT_KINDS:
                coeffs: dict[Var, int] = {(0, ind, s, kind): 1 for s in ca}
                for s in cb:
                    coeffs[(1, ind, s, kind)] = -1
                rows.append(({**coeffs, DELTA: -1}, -np.inf, 0.0))
                rows.append(({**coeffs, DELTA: 1}, 0.0, np.inf))
    return rows


# --- the model and its audit ------------------------------------------------------------------


@dataclass
class Model:
    lo: dict[Var, int] = field(default_factory=dict)
    hi: dict[Var, int] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    targets: dict[Var, int] = field(default_factory=dict)  # protected count -> required width
    truth: dict[Var, int] = field(default_factory=dict)
    blocks: tuple[list[Row], ...] = ()  # when set, ``rows`` is these lists one after another

    def rows_of(self) -> dict[Var, list[int]]:
        """For each count, the rows it appears in."""
        return _shape(self.rows, self.blocks).rows_of()

    def add_release(
        self,
        r: int,
        cells: Sequence[Cell],
        policy: DisclosurePolicy,
        small: tuple[set[str], bool] = (set(), False),
    ) -> None:
        lo, hi = _release_bounds(r, cells, policy, small)
        self.lo.update(lo)
        self.hi.update(hi)


def _small_populations(
    r: int, cells: Sequence[Cell], policy: DisclosurePolicy, truth: dict[Var, int] | None
) -> tuple[set[str], bool]:
    """The indicators of a release read as small populations, and whether that is the true case
    (``truth`` known) rather than the reader's union of both.

    With the true counts: the indicators whose whole-practice denominator is truly 1..T
    (protocol.disclosure.is_small_population); their suppressed numerators are read as 0 or more
    and their denominator total as at most T, every other indicator's suppressed numerators as at
    least 1. Each is a set of worlds the reader must allow (the statuses fit both cases), so a
    count the guard finds two values for has two for the reader. Without them: every indicator
    whose cells allow a small population (``small_population_possible``), numerators 0 or more
    and no bound on the denominator total (the union of both cases: a weaker reader, the limit
    docs/disclosure.md states)."""
    by_ind: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        by_ind[c.indicator].append(c)
    out: set[str] = set()
    for ind, group in by_ind.items():
        total = [c for c in group if c.stratum.is_total]
        strata = [c for c in group if not c.stratum.is_total]
        if not total or not small_population_possible(total[0], strata, policy):
            continue
        if truth is not None:
            den = truth.get((r, ind, TOTAL, "denominator"))
            if den is None or not is_small_population(den, bool(strata), policy):
                continue
        out.add(ind)
    return out, truth is not None


def _release_bounds(
    r: int,
    cells: Sequence[Cell],
    policy: DisclosurePolicy,
    small: tuple[set[str], bool] = (set(), False),
) -> tuple[dict[Var, int], dict[Var, int]]:
    """Each count's feasible range as the reader sees it (``hi`` -1: no upper bound), the
    release read under ``policy`` (a stratum's exclusions 0 or more where it releases them as a
    total only: protocol.disclosure.count_range); ``small``: the indicators read as small
    populations and whether that is the true case (:func:`_small_populations`)."""
    lo: dict[Var, int] = {}
    hi: dict[Var, int] = {}
    seen: dict[tuple[bool, bool, str, int | None], tuple[int, int]] = {}
    for cell in cells:
        stratum = (cell.stratum.age_band, cell.stratum.sex)
        total = stratum == TOTAL
        for kind in COUNT_KINDS:
            count = getattr(cell, kind)
            key = (total, kind == "exclusions", count.status, count.value)
            got = seen.get(key)
            if got is None:
                a, b = count_range(count, policy, kind=kind, is_total=total)
                got = seen[key] = (a, -1 if b is None else b)
            v = (r, cell.indicator, stratum, kind)
            lo[v], hi[v] = got
    inds, true_case = small
    threshold = suppression_threshold(policy.stratified)
    for cell in cells:
        if cell.indicator not in inds:
            continue
        stratum = (cell.stratum.age_band, cell.stratum.sex)
        if cell.numerator.status == "suppressed":
            lo[(r, cell.indicator, stratum, "numerator")] = 0
        if true_case and stratum == TOTAL:
            v = (r, cell.indicator, stratum, "denominator")
            hi[v] = threshold if hi[v] < 0 else min(hi[v], threshold)
    return lo, hi


@dataclass
class _Shape:
    """What a list of rows gives whatever the counts' bounds: the columns, the matrix, and for
    the reader's delta its rows without the delta column; the rows of each count on demand.
    Built once per list of rows (the guard keeps its lists between rounds: withholding changes
    bounds, never rows), and a list made of blocks (a release's relations, cached across months,
    and the links between two releases) from the blocks' own shapes."""

    rows: list[Row]
    names: list[Var]
    index: dict[Var, int]
    a: Csr
    lb: FloatArray
    ub: FloatArray
    no_delta: Csr  # the rows holding the reader's delta, without the delta column
    blocks: tuple[_Shape, ...] = ()
    _rows_of: dict[Var, list[int]] | None = None

    def rows_of(self) -> dict[Var, list[int]]:
        """For each count (not the delta), the rows it appears in."""
        if self._rows_of is None:
            out: dict[Var, list[int]] = defaultdict(list)
            if self.blocks:
                offset = 0
                for block in self.blocks:
                    for v, rows in block.rows_of().items():
                        out[v].extend(i + offset for i in rows)
                    offset += len(block.rows)
            else:
                for i, (coeffs, _, _) in enumerate(self.rows):
                    for v in coeffs:
                        if v != DELTA:
                            out[v].append(i)
            self._rows_of = dict(out)
        return self._rows_of


_SHAPES: dict[int, _Shape] = {}


def _shape(rows: list[Row], blocks: tuple[list[Row], ...] = ()) -> _Shape:
    """The shape of ``rows``; ``blocks``, when given, are lists whose concatenation is ``rows``."""
    hit = _SHAPES.get(id(rows))
    if hit is not None and hit.rows is rows:
        return hit
    shape = _joined(rows, tuple(_shape(b) for b in blocks)) if blocks else _built(rows)
    if len(_SHAPES) > 64:
        _SHAPES.clear()
    _SHAPES[id(rows)] = shape
    return shape


def _built(rows: list[Row]) -> _Shape:
    index: dict[Var, int] = {}
    ci: list[int] = []
    data: list[int] = []
    counts: list[int] = []
    setdefault = index.setdefault
    for coeffs, _, _ in rows:
        counts.append(len(coeffs))
        for v, c in coeffs.items():
            ci.append(setdefault(v, len(index)))
            data.append(c)
    a = Csr.from_coo(
        np.array(data, dtype=float),
        np.repeat(np.arange(len(rows), dtype=np.int64), counts),
        np.array(ci, dtype=np.int64),
        (len(rows), len(index)),
    )
    d = index.get(DELTA, -1)
    if d >= 0:
        delta_rows = np.unique(a.row_of_entries()[a.indices == d])
        sub_row, sub_col, sub_data = a.take_rows(delta_rows).coo()
        keep = sub_col != d
        no_delta = Csr.from_coo(
            sub_data[keep], sub_row[keep], sub_col[keep], (len(delta_rows), len(index))
        )
    else:
        no_delta = Csr.empty((0, len(index)))
    return _Shape(
        rows=rows,
        names=list(index),
        index=index,
        a=a,
        lb=np.array([r[1] for r in rows], dtype=float),
        ub=np.array([r[2] for r in rows], dtype=float),
        no_delta=no_delta,
    )


def _joined(rows: list[Row], blocks: tuple[_Shape, ...]) -> _Shape:
    """The shape of the blocks' rows one after another: their columns merged (a count that two
    blocks share is one column), their matrices stacked."""
    index: dict[Var, int] = {}
    setdefault = index.setdefault
    maps: list[npt.NDArray[np.int64]] = []
    for b in blocks:
        maps.append(np.fromiter((setdefault(v, len(index)) for v in b.names), dtype=np.int64))
    n = len(index)
    indptr = [np.zeros(1, dtype=np.int64)]
    indices, data = [], []
    nd_parts = []
    offset = 0
    for b, colmap in zip(blocks, maps, strict=True):
        indptr.append(b.a.indptr[1:].astype(np.int64) + offset)
        offset += b.a.nnz
        indices.append(colmap[b.a.indices])
        data.append(b.a.data)
        if b.no_delta.shape[0]:
            nd_row, nd_col, nd_data = b.no_delta.coo()
            nd_parts.append(Csr.from_coo(nd_data, nd_row, colmap[nd_col], (b.no_delta.shape[0], n)))
    a = Csr(
        np.concatenate(data),
        np.concatenate(indices),
        np.concatenate(indptr),
        (sum(b.a.shape[0] for b in blocks), n),
    )
    no_delta = vstack(nd_parts) if nd_parts else Csr.empty((0, n))
    return _Shape(
        rows=rows,
        names=list(index),
        index=index,
        a=a,
        lb=np.concatenate([b.lb for b in blocks]),
        ub=np.concatenate([b.ub for b in blocks]),
        no_delta=no_delta,
        blocks=blocks,
    )


class _Solver:
    """Integer worlds from HiGHS: the linear relaxation first (highspy, the model kept between
    calls that differ only in their objective or the counts' bounds, as the worlds that push
    counts away from the truth do, so a re-solve starts from the last basis), the
    integer program (``scipy.optimize.milp``) only when the relaxation's optimum is not an
    integer world. The reader's relations are partitions, differences and sums of counts; their
    relaxations' optimal vertices have been integral in every release measured
    (docs/disclosure.md), and an integral optimum of the relaxation is an optimum of the integer
    program, so bounds stay exact."""

    def __init__(self) -> None:
        self.solves = 0
        self.integer_programs = 0
        self._key: tuple[object, ...] | None = None
        self._highs: _Highs | None = None
        self._n = 0
        self._lo: FloatArray = np.zeros(0)
        self._hi: FloatArray = np.zeros(0)

    def _model(
        self,
        a: Csr,
        lb: FloatArray,
        ub: FloatArray,
        lo: FloatArray,
        hi: FloatArray,
        presolve: bool,
    ) -> _Highs:
        key = (
            a.shape,
            a.nnz,
            presolve,
            a.data.tobytes(),
            a.indices.tobytes(),
            a.indptr.tobytes(),
            lb.tobytes(),
            ub.tobytes(),
        )
        if self._highs is not None and key == self._key:
            if not (np.array_equal(lo, self._lo) and np.array_equal(hi, self._hi)):
                # only the counts' bounds differ: HiGHS starts again from its last basis
                n = self._n
                self._highs.changeColsBounds(n, np.arange(n, dtype=np.int32), lo, hi)
                self._lo, self._hi = lo.copy(), hi.copy()
            return self._highs
        h = _Highs()
        h.setOptionValue("output_flag", False)
        if not presolve:
            h.setOptionValue("presolve", "off")
        m, n = a.shape
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = n, m
        lp.col_cost_ = np.zeros(n)
        lp.col_lower_, lp.col_upper_ = lo, hi
        inf = highspy.kHighsInf
        lp.row_lower_ = np.where(np.isfinite(lb), lb, -inf)
        lp.row_upper_ = np.where(np.isfinite(ub), ub, inf)
        start, index, value = a.columnwise()
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = start.astype(np.int32)
        lp.a_matrix_.index_ = index.astype(np.int32)
        lp.a_matrix_.value_ = value
        h.passModel(lp)
        self._highs, self._key, self._n = h, key, n
        self._lo, self._hi = lo.copy(), hi.copy()
        return h

    def _relaxed(
        self,
        c: FloatArray,
        a: Csr,
        lb: FloatArray,
        ub: FloatArray,
        lo: FloatArray,
        hi: FloatArray,
        presolve: bool = True,
    ) -> tuple[str, FloatArray | None]:
        h = self._model(a, lb, ub, lo, hi, presolve)
        h.changeColsCost(self._n, np.arange(self._n, dtype=np.int32), np.asarray(c, dtype=float))
        h.run()
        status = h.getModelStatus()
        if status == highspy.HighsModelStatus.kOptimal:
            return "optimal", np.asarray(h.getSolution().col_value, dtype=float)
        if status == highspy.HighsModelStatus.kInfeasible:
            return "infeasible", None
        return "other", None

    def milp(
        self,
        c: FloatArray,
        a: Csr,
        lb: FloatArray,
        ub: FloatArray,
        lo: FloatArray,
        hi: FloatArray,
    ) -> FloatArray | None:
        """An integer world minimising ``c.x``, or None when there is none."""
        self.solves += 1
        if len(c) == 0:
            return np.zeros(0)
        status, x = self._relaxed(c, a, lb, ub, lo, hi)
        if status == "infeasible":  # confirm without presolve, as for the integer program below
            status, x = self._relaxed(c, a, lb, ub, lo, hi, presolve=False)
            if status == "infeasible":
                return None  # no real world either
        if x is not None:
            world: FloatArray = np.round(x)
            if np.allclose(x, world, atol=1e-7) and _fits(a, lb, ub, lo, hi, world):
                return world
        return self._integer(c, a, lb, ub, lo, hi)

    def _integer(
        self,
        c: FloatArray,
        a: Csr,
        lb: FloatArray,
        ub: FloatArray,
        lo: FloatArray,
        hi: FloatArray,
    ) -> FloatArray | None:
        # scipy.optimize costs about 0.2 s to import and few releases need it (6 of 6,147
        # programs on the demo's year), so it is loaded on the first one that does.
        from scipy.optimize import Bounds, LinearConstraint, milp

        self.integer_programs += 1
        cons = (LinearConstraint(a.to_scipy(), lb, ub),) if a.shape[0] else ()
        n = len(c)
        res = milp(c, constraints=cons, integrality=np.ones(n), bounds=Bounds(lo, hi))
        if res.x is None and res.status == 2:  # HiGHS' presolve has called feasible ones infeasible
            res = milp(
                c,
                constraints=cons,
                integrality=np.ones(n),
                bounds=Bounds(lo, hi),
                options={"presolve": False},
            )
        if res.x is None:
            if res.status == 2:
                return None
            raise DisclosureError(f"the audit's integer program failed: {res.message}")
        world: FloatArray = np.round(np.asarray(res.x, dtype=float))
        if not _fits(a, lb, ub, lo, hi, world):
            raise DisclosureError(
                "the audit's integer program returned a world that breaks a relation"
            )
        return world


@dataclass
class _Problem:
    """A model as matrices: ``lb <= a @ x <= ub``, ``lo <= x <= hi``, x integer; ``truth`` the
    true world where known (NaN where not); ``d`` the column of the reader's delta (or -1)."""

    names: list[Var]
    index: dict[Var, int]
    a: Csr
    lb: FloatArray
    ub: FloatArray
    lo: FloatArray
    hi: FloatArray
    truth: FloatArray
    d: int
    shape: _Shape

    @classmethod
    def of(cls, model: Model, cap: int) -> _Problem:
        shape = _shape(model.rows, model.blocks)
        index, names, a = shape.index, shape.names, shape.a
        extra = [v for v in model.targets if v not in index]  # a count in no relation
        if extra:
            index = {**index, **{v: len(index) + k for k, v in enumerate(extra)}}
            names = [*names, *extra]
            a = a.widened(len(names))
        n = len(names)
        mlo, mhi, truth = model.lo, model.hi, model.truth
        lo = np.fromiter((mlo.get(v, 0) for v in names), dtype=float, count=n)
        hi = np.fromiter((mhi.get(v, cap) for v in names), dtype=float, count=n)
        hi[hi < 0] = cap
        d = index.get(DELTA, -1)
        if d >= 0:
            lo[d], hi[d] = 0, cap
        return cls(
            names=names,
            index=index,
            a=a,
            lb=shape.lb,
            ub=shape.ub,
            lo=lo,
            hi=hi,
            truth=np.fromiter((truth.get(v, np.nan) for v in names), dtype=float, count=n),
            d=d,
            shape=shape,
        )

    def fix_delta(self, solver: _Solver, cap: int) -> None:
        """The reader's delta: the smallest with which both releases are consistent. A lower
        bound from the rows whose counts are all fixed first; if that is feasible it is it."""
        d, lo, hi = self.d, self.lo, self.hi
        nd = self.shape.no_delta
        n0 = nd.shape[1]
        free = (lo[:n0] != hi[:n0]).astype(float)
        all_fixed = (abs(nd) @ free) == 0
        totals = nd @ lo[:n0]
        guess = float(np.max(np.abs(totals[all_fixed]), initial=0.0))
        lo[d] = hi[d] = guess
        world = self.truth.copy()
        world[d] = guess
        if not _fits(self.a, self.lb, self.ub, lo, hi, world):
            cost = np.zeros(len(self.names))
            cost[d] = 1
            lo[d], hi[d] = 0, cap
            found = solver.milp(cost, self.a, self.lb, self.ub, lo, hi)
            if found is None:
                raise DisclosureError("internal: the two releases have no common world")
            lo[d] = hi[d] = found[d]
        self.truth[d] = lo[d]


@dataclass
class _Parts:
    """The free counts of the parts that hold a protected count, with their rows, the fixed
    counts folded into the rows' bounds; ``label`` maps a free column to its part."""

    cols: IntArray  # columns of the problem, in order
    rows: IntArray
    sub: Csr
    lb: FloatArray
    ub: FloatArray
    lo: FloatArray
    hi: FloatArray
    label: dict[int, int]  # problem column -> part
    row_label: IntArray  # part of each problem row
    pos: dict[int, int] = field(default_factory=dict)  # problem column -> position in cols
    _parts: dict[int, tuple[IntArray, IntArray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pos = {int(c): k for k, c in enumerate(self.cols)}

    def part(self, lab: int) -> tuple[IntArray, IntArray]:
        """(positions in ``cols``, positions in ``rows``) of one part."""
        if lab not in self._parts:
            pc = [k for k, c in enumerate(self.cols) if self.label[int(c)] == lab]
            pr = [k for k, r in enumerate(self.rows) if self.row_label[r] == lab]
            self._parts[lab] = (np.array(pc, dtype=int), np.array(pr, dtype=int))
        return self._parts[lab]


def _split(p: _Problem, wanted: set[int]) -> tuple[_Parts, dict[int, list[int]]]:
    """Split ``p`` into connected parts over its free counts; keep the parts holding a column
    of ``wanted``. Returns the parts and, per part, its wanted columns."""
    free = p.lo != p.hi
    const = p.a @ np.where(free, 0.0, p.lo)
    free_cols = np.flatnonzero(free)
    af = p.a.take_columns(free_cols)
    live_rows = np.flatnonzero(np.diff(af.indptr) > 0)
    m = p.a.shape[0]
    labels = bipartite_components(af)
    col_label = {int(c): int(labels[m + k]) for k, c in enumerate(free_cols)}
    want: dict[int, list[int]] = defaultdict(list)
    for j in sorted(wanted):
        want[col_label[j]].append(j)
    cols = np.array([c for c in free_cols if col_label[int(c)] in want], dtype=int)
    rows = np.array([r for r in live_rows if labels[r] in want], dtype=int)
    sub = (
        af.take_rows(rows).take_columns(np.searchsorted(free_cols, cols))
        if len(rows)
        else Csr.empty((0, len(cols)))
    )
    parts = _Parts(
        cols=cols,
        rows=rows,
        sub=sub,
        lb=p.lb[rows] - const[rows],
        ub=p.ub[rows] - const[rows],
        lo=p.lo[cols],
        hi=p.hi[cols],
        label=col_label,
        row_label=np.asarray(labels[:m], dtype=int),
    )
    return parts, want


def audit(model: Model, solver: _Solver, where: str, cap: int) -> list[Exposure]:
    """Every target of ``model`` narrowed below its required width (see the module docstring);
    when bound propagation alone pins some, only those (the guard withholds and audits again).
    ``cap`` stands in for "no upper bound" (a suppressed count): larger than any true count, so
    every true world stays in the model and a tighter bound only makes the reader stronger."""
    if not model.targets:
        return []
    p = _Problem.of(model, cap)
    if p.d >= 0:
        p.fix_delta(solver, cap)
    _tighten(p)
    out: list[Exposure] = []
    wanted: set[int] = set()
    for var, need in model.targets.items():
        j = p.index[var]
        if p.lo[j] != p.hi[j]:
            wanted.add(j)
        elif need > 1:  # released exactly
            out.append(Exposure(where, var, int(p.lo[j]), int(p.hi[j]), need))
    if not wanted or out:  # exposures found without a solver: these first, the rest next round
        return out
    parts, _ = _split(p, wanted)
    needs = {j: model.targets[p.names[j]] for j in wanted}
    seen = _seen_in_worlds(p, parts, sorted(wanted), needs, solver)
    for j in sorted(wanted):
        need = model.targets[p.names[j]]
        if len(seen[j]) < need:
            lo, hi = _bounds(parts, j, need, seen, solver)
            if hi - lo + 1 < need:
                out.append(Exposure(where, p.names[j], lo, hi, need))
    return out


def _tighten(p: _Problem, passes: int = 20) -> None:
    """Tighten the counts' bounds by what each row implies given the others' bounds (bound
    propagation, as a solver's presolve does): sound, every integer world stays inside, and a
    count pinned by a chain of rows shows up as ``lo == hi`` with no integer program."""
    r, j, c = p.a.coo()
    if not len(c):
        return
    lb, ub, pos = p.lb[r], p.ub[r], c > 0
    m = p.a.shape[0]
    with np.errstate(invalid="ignore"):
        for _ in range(passes):
            low = np.where(pos, c * p.lo[j], c * p.hi[j])  # each term's least and most
            high = np.where(pos, c * p.hi[j], c * p.lo[j])
            act_lo = np.bincount(r, weights=low, minlength=m)[r]
            act_hi = np.bincount(r, weights=high, minlength=m)[r]
            r_lo = lb - (act_hi - high)  # c * x_j between these, whatever the others are
            r_hi = ub - (act_lo - low)
            new_lo = np.ceil(np.where(pos, r_lo / c, r_hi / c) - 1e-9)
            new_hi = np.floor(np.where(pos, r_hi / c, r_lo / c) + 1e-9)
            lo, hi = p.lo.copy(), p.hi.copy()
            np.fmax.at(lo, j, new_lo)
            np.fmin.at(hi, j, new_hi)
            if np.array_equal(lo, p.lo) and np.array_equal(hi, p.hi):
                return
            p.lo[:], p.hi[:] = lo, hi


def _seen_in_worlds(
    p: _Problem, parts: _Parts, targets: list[int], need: dict[int, int], solver: _Solver
) -> dict[int, set[int]]:
    """The values each target takes in the true world and in worlds that push the protected
    counts away from it (:func:`_push_away`); when the true world is not known (an earlier
    release whose counts have changed since) or is not one of the reader's (whose delta, the
    smallest the releases allow, may be smaller than the true change), in two worlds that push them apart, signed
    alternately, and then together (:func:`_push_unproven`)."""
    pos = parts.pos
    truth = p.truth[parts.cols]
    if _fits(parts.sub, parts.lb, parts.ub, parts.lo, parts.hi, truth):  # a world of the reader's
        seen = {j: {int(truth[pos[j]])} for j in targets}
        _push_away(parts, seen, need, truth, solver)
        return seen
    worlds: list[FloatArray] = []
    sign = np.zeros(len(parts.cols))
    for k, j in enumerate(targets):
        sign[pos[j]] = 1 if k % 2 else -1
    for cost in (sign, -sign):
        w = solver.milp(cost, parts.sub, parts.lb, parts.ub, parts.lo, parts.hi)
        if w is None:
            raise DisclosureError("internal: the released counts have no world")
        worlds.append(w)
    seen = {j: {int(w[pos[j]]) for w in worlds} for j in targets}
    _push_unproven(parts, seen, need, solver)
    return seen


def _push_away(
    parts: _Parts,
    seen: dict[int, set[int]],
    need: dict[int, int],
    truth: FloatArray,
    solver: _Solver,
) -> None:
    """Worlds in which the unproven targets move away from their true values, all at once: down
    where a target can go lower, up where it is at its least; then the other way for those
    still unproven; again while a world proves any (both ways). One world usually proves most
    targets, since every count it moves is proven (it is a whole solution of the released
    counts). What is left is bounded one by one."""
    pos = parts.pos
    flip = False
    stalled = 0
    while stalled < 2:
        left = [j for j in seen if len(seen[j]) < need[j]]
        if not left:
            return
        cost = np.zeros(len(parts.cols))
        # each target may move by at most one here, so a world gains as much by moving one
        # more target as by moving one further: it moves as many as it can
        lo, hi = parts.lo.copy(), parts.hi.copy()
        for j in left:
            k = pos[j]
            down = truth[k] > parts.lo[k]
            cost[k] = 1.0 if down != flip else -1.0
            lo[k] = max(lo[k], truth[k] - 1)
            hi[k] = min(hi[k], truth[k] + 1)
        w = solver.milp(cost, parts.sub, parts.lb, parts.ub, lo, hi)
        if w is None:
            raise DisclosureError("internal: the released counts have no world")
        progress = False
        for j in left:
            before = len(seen[j])
            seen[j].add(int(w[pos[j]]))
            progress = progress or len(seen[j]) > before
        stalled = 0 if progress else stalled + 1
        flip = not flip


def _push_unproven(
    parts: _Parts, seen: dict[int, set[int]], need: dict[int, int], solver: _Solver
) -> None:
    """More worlds for the targets not yet proven: push all of them up at once, then down, and
    again with those still left, while a round proves some (each world is a whole solution of
    the released counts, so every count it moves is proven). What is left is bounded one by one."""
    pos = parts.pos
    while True:
        left = [j for j in seen if len(seen[j]) < need[j]]
        if not left:
            return
        progress = False
        for direction in (-1.0, 1.0):
            cost = np.zeros(len(parts.cols))
            for j in left:
                cost[pos[j]] = direction
            w = solver.milp(cost, parts.sub, parts.lb, parts.ub, parts.lo, parts.hi)
            if w is None:
                raise DisclosureError("internal: the released counts have no world")
            for j in left:
                before = len(seen[j])
                seen[j].add(int(w[pos[j]]))
                progress = progress or len(seen[j]) > before
        if not progress:
            return


def _bounds(
    parts: _Parts, j: int, need: int, seen: dict[int, set[int]], solver: _Solver
) -> tuple[int, int]:
    """The tightest bounds of column ``j`` on its own part (two integer programs); the worlds
    found add to ``seen`` for the other targets of the part. When the first world already gives
    ``j`` its ``need`` values, the values seen stand for the bounds (it is not pinned)."""
    pc, pr = parts.part(parts.label[j])
    psub = parts.sub.take_rows(pr).take_columns(pc) if len(pr) else Csr.empty((0, len(pc)))
    at = int(np.flatnonzero(pc == parts.pos[j])[0])
    found: list[int] = []
    for direction in (1.0, -1.0):
        cost = np.zeros(len(pc))
        cost[at] = direction
        w = solver.milp(cost, psub, parts.lb[pr], parts.ub[pr], parts.lo[pc], parts.hi[pc])
        if w is None:
            raise DisclosureError("internal: the released counts have no world")
        found.append(int(w[at]))
        for k, jj in enumerate(parts.cols[pc]):
            if int(jj) in seen:
                seen[int(jj)].add(int(w[k]))
        if len(seen[j]) >= need:  # proven by the worlds: the other bound is not needed
            return min(seen[j]), max(seen[j])
    return found[0], found[1]


def _fits(
    a: Csr, lb: FloatArray, ub: FloatArray, lo: FloatArray, hi: FloatArray, x: FloatArray
) -> bool:
    if np.isnan(x).any():
        return False
    ax = a @ x
    return bool(
        np.all(x >= lo) and np.all(x <= hi) and np.all(ax >= lb - 1e-9) and np.all(ax <= ub + 1e-9)
    )


# --- withholding ------------------------------------------------------------------------------


class _Releaser:
    """apply_policy with more withheld, recomputing only the denominator classes touched
    (apply_policy decides each class, indicators with identical denominators, on its own)."""

    def __init__(self, raw: Sequence[RawCell], policy: DisclosurePolicy) -> None:
        self.policy = policy
        by_ind: dict[str, list[RawCell]] = defaultdict(list)
        for c in raw:
            by_ind[c.indicator].append(c)
        sig = {
            ind: tuple(sorted((c.stratum, c.denominator) for c in cells))
            for ind, cells in by_ind.items()
        }
        self.members = {
            ind: tuple(sorted(i for i in by_ind if sig[i] == sig[ind])) for ind in by_ind
        }
        self.raw = by_ind
        self.cells: dict[str, tuple[Cell, ...]] = {}
        for cell_group in _group(apply_policy(raw, policy)).items():
            self.cells[cell_group[0]] = cell_group[1]

    def release(self, withheld: set[Withheld], changed: Iterable[str]) -> tuple[Cell, ...]:
        for members in {self.members[ind] for ind in changed}:
            raw = [c for ind in members for c in self.raw[ind]]
            mine = {w for w in withheld if w[0] in members}
            self.cells.update(_group(apply_policy(raw, self.policy, withhold=mine)))
        return tuple(sorted((c for g in self.cells.values() for c in g), key=lambda c: c.key))


def _group(cells: Iterable[Cell]) -> dict[str, tuple[Cell, ...]]:
    out: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        out[c.indicator].append(c)
    return {k: tuple(v) for k, v in out.items()}


def _released_nonzero(cells: Sequence[Cell]) -> dict[Var, int]:
    """The new submission's released non-zero counts, with their released values."""
    return {
        (0, c.indicator, (c.stratum.age_band, c.stratum.sex), k): getattr(c, k).value or 0
        for c in cells
        for k in COUNT_KINDS
        if getattr(c, k).status in ("rounded", "exact") and getattr(c, k).value
    }


def _candidates(
    model: Model, start: Var, released: dict[Var, int], skip: set[Withheld]
) -> list[tuple[int, Withheld]]:
    """Released non-zero counts of the new submission near ``start`` in the model's relations,
    with their distance (relations crossed): by distance, then the smaller released value, then
    the key. An inequality that the true counts leave slack (``a <= b`` with ``a < b``) cannot
    pin a count at the truth, so it is crossed only when the tight relations lead to none."""
    found = _near(model, start, released, skip, tight=True)
    if not found:
        found = _near(model, start, released, skip, tight=False)
    return found


def _near(
    model: Model, start: Var, released: dict[Var, int], skip: set[Withheld], *, tight: bool
) -> list[tuple[int, Withheld]]:
    by_var = model.rows_of()
    truth = model.truth
    dist = {start: 0}
    frontier = [start]
    found: list[tuple[int, int, Var]] = []
    seen_rows: set[int] = set()
    while frontier and len(found) < 8:
        nxt: list[Var] = []
        for v in frontier:
            for i in by_var.get(v, ()):
                if i in seen_rows:
                    continue
                seen_rows.add(i)
                coeffs, lb, ub = model.rows[i]
                if tight and _slack(coeffs, lb, ub, truth):
                    continue
                for w in coeffs:
                    if w == DELTA or w in dist:
                        continue
                    dist[w] = dist[v] + 1
                    nxt.append(w)
                    if w in released and (w[1], w[2], w[3]) not in skip:
                        found.append((dist[w], released[w], w))
        frontier = nxt
    found.sort()
    return [(d, cast(Withheld, (w[1], w[2], w[3]))) for d, _, w in found]


def _slack(coeffs: dict[Var, int], lb: float, ub: float, truth: dict[Var, int]) -> bool:
    """Whether an inequality (one side unbounded, no delta) is strict at the true counts."""
    if np.isfinite(lb) == np.isfinite(ub) or DELTA in coeffs:
        return False
    if any(v not in truth for v in coeffs):
        return False
    value = sum(c * truth[v] for v, c in coeffs.items())
    return bool(value > lb) if np.isfinite(lb) else bool(value < ub)


# --- the guard --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Earlier:
    """A linked earlier release with its identities and, when they fit it, its true counts."""

    release: Release
    ids: tuple[object, tuple[Identity, ...]]
    known: dict[Var, int] | None
    where: str
    policy: DisclosurePolicy  # the policy its cells are read under (its layout of exclusions)
    small: tuple[set[str], bool] = (set(), False)  # its small populations (_small_populations)


def _sticky(period: Period, links: Sequence[Release], raw: Sequence[RawCell]) -> set[Withheld]:
    """In a correction, every count the earlier version suppressed stays suppressed."""
    raw_keys = {(r.indicator, r.stratum) for r in raw}
    out: set[Withheld] = set()
    for e in links:
        if linked(period, e.period) != "same":
            continue
        for c in e.cells:
            s = (c.stratum.age_band, c.stratum.sex)
            for k in COUNT_KINDS:
                if getattr(c, k).status == "suppressed" and (c.indicator, s) in raw_keys:
                    out.add((c.indicator, s, k))
    return out


def _cap(truth: dict[Var, int], links: Sequence[Release]) -> int:
    """Stands in for "no upper bound": twice the largest count known or released, and 10."""
    released = (getattr(c, k).value or 0 for e in links for c in e.cells for k in COUNT_KINDS)
    return 2 * max([*truth.values(), *released], default=0) + 10


def released_under(policy: DisclosurePolicy, e: Release) -> DisclosurePolicy:
    """The policy an earlier release is read under: ``policy``, with the layout of exclusions
    the release was made with. By stratum when the release says so (``e.exclusions_by_stratum``)
    or shows it (a stratum's exclusions released as a value or a zero), so that the reader's
    knowledge that its suppressed strata are at least 1 is never dropped."""
    by_stratum = e.exclusions_by_stratum
    if by_stratum is None:
        by_stratum = policy.exclusions_by_stratum or any(
            c.exclusions.status != "suppressed"
            for c in e.cells
            if (c.stratum.age_band, c.stratum.sex) != TOTAL
        )
    if by_stratum == policy.exclusions_by_stratum:
        return policy
    return policy.model_copy(update={"exclusions_by_stratum": by_stratum})


def _earlier(catalogue: Catalogue, e: Release, policy: DisclosurePolicy, cap: int) -> _Earlier:
    """``e`` as the guard uses it: its identities, and its true counts if they fit it."""
    policy = released_under(policy, e)
    known: dict[Var, int] | None = None
    if e.raw is not None:
        known = {(1, r.indicator, r.stratum, k): r.count(k) for r in e.raw for k in COUNT_KINDS}
        m = Model()
        m.add_release(1, e.cells, policy, _small_populations(1, e.cells, policy, None))
        for v in m.lo:
            if v not in known or not m.lo[v] <= known[v] <= (m.hi[v] if m.hi[v] >= 0 else cap):
                known = None  # the data changed since: do not lean on the recomputed counts
                break
    ids = identities_for(catalogue, e.cells, e.versions or None)
    small = _small_populations(1, e.cells, policy, known)
    return _Earlier(e, ids, known, f"with {e.label}", policy, small)


class _Guard:
    """One run of :func:`guard_cells` (its docstring says what it does)."""

    def __init__(
        self,
        catalogue: Catalogue,
        raw: Sequence[RawCell],
        policy: DisclosurePolicy,
        period: Period,
        history: Sequence[Release],
        guard: GuardPolicy,
    ) -> None:
        self.policy, self.period, self.guard = policy, period, guard
        self.solver = _Solver()
        self.small = suppression_threshold(policy.stratified)
        self.truth: dict[Var, int] = {
            (0, r.indicator, r.stratum, k): r.count(k) for r in raw for k in COUNT_KINDS
        }
        self.links = latest_linked(period, history)
        self.cap = _cap(self.truth, self.links)
        self.releaser = _Releaser(raw, policy)
        self.sticky = _sticky(period, self.links, raw)
        self.withheld = set(self.sticky)
        self.cells = self.releaser.release(self.withheld, {w[0] for w in self.withheld})
        self.ids = identities_for(catalogue, self.cells)
        self.earlier = [_earlier(catalogue, e, policy, self.cap) for e in self.links]
        self.excused: set[tuple[str, Var]] = set()  # earlier counts pinned by that release alone
        self._old_bounds: dict[str, tuple[dict[Var, int], dict[Var, int]]] = {}
        self._rows: dict[str, tuple[list[Row], tuple[list[Row], ...]]] = {}
        self.passed: tuple[Cell, ...] | None = None  # the last cells exposures() found clean

    def _small_new(self) -> tuple[set[str], bool]:
        """The new release's small populations, in the true case (:func:`_small_populations`)."""
        return _small_populations(0, self.cells, self.policy, self.truth)

    def _targets_new(self, m: Model, width: int, rounded: int) -> None:
        tiny = self._small_new()[0]
        for c in self.cells:
            s = (c.stratum.age_band, c.stratum.sex)
            for k in COUNT_KINDS:
                v = (0, c.indicator, s, k)
                status = getattr(c, k).status
                if status == "suppressed" and 1 <= self.truth[v] <= self.small:
                    m.targets[v] = width
                elif status == "suppressed" and k == "numerator" and c.indicator in tiny:
                    m.targets[v] = width  # a small population's 0: none of them meets it
                elif status == "rounded" and rounded > 1:
                    m.targets[v] = rounded

    def _alone(self) -> Model:
        m = Model(truth=self.truth)
        m.add_release(0, self.cells, self.policy, self._small_new())
        m.rows = _relation_rows(0, self.cells, self.ids)  # shared, never changed
        self._targets_new(m, self.guard.suppressed_width, self.guard.rounded_width)
        return m

    def _with(self, e: _Earlier) -> Model:
        cells, old = self.cells, e.release.cells
        m = Model(truth={**self.truth, **(e.known or {})})
        m.add_release(0, cells, self.policy, self._small_new())
        if e.where not in self._old_bounds:
            self._old_bounds[e.where] = _release_bounds(1, old, e.policy, e.small)
        m.lo.update(self._old_bounds[e.where][0])
        m.hi.update(self._old_bounds[e.where][1])
        # The rows depend only on which cells there are, which withholding never changes: one
        # list per earlier release.
        if e.where not in self._rows:
            blocks = (
                _relation_rows(0, cells, self.ids),
                _relation_rows(1, old, e.ids),
                _link_rows(cells, old),
            )
            self._rows[e.where] = ([row for block in blocks for row in block], blocks)
        m.rows, m.blocks = self._rows[e.where]
        self._targets_new(m, self.guard.linked_width, 1)
        zero_totals = {
            c.indicator
            for c in old
            if (c.stratum.age_band, c.stratum.sex) == TOTAL and c.exclusions.status == "zero"
        }
        for c in old:
            s = (c.stratum.age_band, c.stratum.sex)
            for k in COUNT_KINDS:
                v = (1, c.indicator, s, k)
                if getattr(c, k).status != "suppressed" or (e.where, v) in self.excused:
                    continue
                if (
                    e.known is None
                    and exclusions_hidden(e.policy, k, s == TOTAL)
                    and c.indicator in zero_totals
                ):
                    continue  # a stratum of an exclusions total released as 0 is 0
                if e.known is None or 1 <= e.known.get(v, 0) <= self.small:
                    m.targets[v] = self.guard.linked_width
                elif k == "numerator" and c.indicator in e.small[0]:
                    m.targets[v] = self.guard.linked_width  # a small population's 0
        return m

    def _pinned_by_itself(self, e: _Earlier, x: Exposure) -> bool:
        """Whether the earlier release alone already pins ``x`` (that cannot be undone now)."""
        alone = Model()
        alone.add_release(1, e.release.cells, e.policy, e.small)
        alone.rows = _relation_rows(1, e.release.cells, e.ids)
        alone.targets[x.var] = x.required
        return bool(audit(alone, self.solver, e.where, self.cap))

    def exposures(self) -> list[tuple[Exposure, Model]]:
        """The first audit with exposures: the submission alone, then with each earlier one.
        When there is none, ``self.passed`` is set to the cells audited: the test every
        release the guard returns unheld has passed (:func:`guard_cells` checks that)."""
        cells = self.cells
        m = self._alone()
        exposed = audit(m, self.solver, "this submission", self.cap)
        if exposed:
            return [(x, m) for x in exposed]
        for e in self.earlier:
            m = self._with(e)
            exposed = []
            for x in audit(m, self.solver, e.where, self.cap):
                if x.var[0] == 1 and self._pinned_by_itself(e, x):
                    self.excused.add((e.where, x.var))
                else:
                    exposed.append(x)
            if exposed:
                return [(x, m) for x in exposed]
        self.passed = cells
        return []

    def choose(self, found: list[tuple[Exposure, Model]]) -> tuple[set[Withheld], str | None]:
        """For each exposure the nearest count to withhold, or why the submission is held."""
        chosen: set[Withheld] = set()
        released = _released_nonzero(self.cells)
        for x, m in found:
            near = _candidates(m, x.var, released, self.withheld)
            cands = [c for _, c in near]
            if any(c in chosen for d, c in near if d == near[0][0]):
                continue  # a count withheld for another exposure this round is as near it
            if not cands:
                return chosen, (
                    f"{x.reason()}, and nothing left in this submission relates to it; approve "
                    "only if that is acceptable"
                )
            chosen.add(cands[0])
        if len(self.withheld) + len(chosen) > self.guard.max_withheld:
            return chosen, (
                f"the disclosure guard would withhold more than {self.guard.max_withheld} "
                f"counts and one is still exposed ({found[0][0].reason()}); check it before "
                "approving"
            )
        return chosen, None

    def run(self) -> str | None:
        """Withhold until nothing is exposed; the reason to hold, if it comes to that."""
        last: frozenset[Var] = frozenset()
        same = 0
        while found := self.exposures():
            exposed = frozenset(x.var for x, _ in found)
            # only with an earlier release can withholding stop helping (the submission alone
            # is always protected once enough of it is withheld)
            linked_only = all(x.where != "this submission" for x, _ in found)
            same = same + 1 if exposed == last and linked_only else 0
            last = exposed
            if same >= self.guard.stall_rounds:
                return (
                    f"{found[0][0].reason()}, still, after {same} more rounds of withholding "
                    "the counts nearest it; approve only if that is acceptable"
                )
            chosen, held = self.choose(found)
            if held is not None:
                return held
            self.withheld |= chosen
            self.cells = self.releaser.release(self.withheld, {w[0] for w in chosen})
        return None

    def prune(self) -> None:
        """Release again the counts the guard withheld that the final release does not need.

        Withholding answers each exposure with the count nearest it, round after round, and
        never takes one back: a count withheld in an early round may protect nothing once a
        later round has withheld the one that does. So, after :meth:`run` ends with nothing
        exposed, the counts the guard itself withheld (never apply_policy's, nor a correction's
        sticky ones) are released again: the whole-practice denominators and numerators first
        (they carry the rates), then the other totals, then the strata, each by largest true
        value. A release is kept only if :meth:`exposures`, the test :meth:`run` stops on,
        finds nothing in the whole resulting release (apply_policy's witness search redone
        with those counts no longer withheld, with the same earlier releases); otherwise the
        counts are withheld again and the release is exactly the one that passed before. So
        every state the pass leaves behind has passed that test, and the final release is the
        last one that did (``self.passed``, checked by :func:`guard_cells`).

        Cost: a test that finds an exposure usually stops early (bound propagation, or the
        submission alone), one that finds none audits everything (on the demo's year about 4
        and 28 ms). The whole-practice denominators and numerators are mostly needed (each
        pins a linked indicator's small exclusions or a small population), so they are tried
        one by one: a needed one costs a short test. The other counts mostly are not, so they
        are tried together, and where that exposes something the first of them that does is
        found by bisection (:meth:`_release_again`): a run of counts that can all go costs
        one full audit. Withholding more can make apply_policy choose other complements,
        which a linked table may narrow, so a count found needed may not be once others are
        released: at the end each one left is tried on its own again, until a round releases
        none. Every count left withheld is then needed: releasing it alone exposes one.
        """
        mine = self.withheld - self.sticky
        if not mine:
            return
        order = sorted(mine, key=self._prune_key)
        for w in (w for w in order if self._prune_key(w)[0] == 0):
            self._try_release([w])
        for tier in (1, 2):
            self._release_again([w for w in order if self._prune_key(w)[0] == tier])
        again = True
        while again:
            left = sorted(self.withheld - self.sticky, key=self._prune_key)
            again = any([self._try_release([w]) for w in left])

    def _release_again(self, counts: list[Withheld]) -> None:
        """Release ``counts``, in order, as far as the exposure test allows: all that are left,
        else (bisecting) the longest run of them that passes, keeping the next one withheld."""
        while counts:
            if self._try_release(counts):
                return
            lo, hi = 0, len(counts)  # counts[:lo] are released; releasing counts[:hi] exposes
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self._try_release(counts[lo:mid]):
                    lo = mid
                else:
                    hi = mid
            counts = counts[hi:]  # counts[hi - 1] stays withheld

    def _try_release(self, counts: list[Withheld]) -> bool:
        """Release ``counts`` if :meth:`exposures` then finds nothing; else leave all as it was."""
        before_withheld, before_cells = self.withheld, self.cells
        before_groups = dict(self.releaser.cells)
        self.withheld = self.withheld - set(counts)
        self.cells = self.releaser.release(self.withheld, {w[0] for w in counts})
        if self.cells == before_cells:  # still withheld (e.g. with its denominator class)
            self.cells = before_cells  # the release that passed, unchanged
        elif self.exposures():
            self.withheld, self.cells = before_withheld, before_cells
            self.releaser.cells = before_groups
            return False
        return True

    def _prune_key(self, w: Withheld) -> tuple[int, int, Withheld]:
        ind, stratum, kind = w
        tier = 0 if stratum == TOTAL and kind != "exclusions" else 1 if stratum == TOTAL else 2
        return (tier, -self.truth[(0, ind, stratum, kind)], w)


def guard_cells(
    *,
    catalogue: Catalogue,
    raw: Sequence[RawCell],
    policy: DisclosurePolicy,
    period: Period,
    history: Sequence[Release] = (),
    guard: GuardPolicy | None = None,
) -> GuardResult:
    """apply_policy, then withhold more until no protected count is narrowed below the policy,
    or say why not (``held_reason``). ``history``: the practice's earlier releases, oldest first.

    Each round audits the submission alone (with its linked tables), then with each linked
    earlier release; for every exposed count it withholds the nearest released non-zero count
    of the new submission in the relations (:func:`_candidates`), all at once, and audits again.
    It holds when an exposed count has nothing left near it to withhold, when more than
    ``guard.max_withheld`` counts would be withheld, and (in agent.outbound.release) when it
    cannot run. When nothing is left exposed it releases again each count it withheld that the
    release does not need (``guard.prune``, :meth:`_Guard.prune`); the cells returned unheld
    are always the last ones the audit found nothing in.
    """
    t0 = time.perf_counter()
    g = _Guard(catalogue, raw, policy, period, history, guard or GuardPolicy())
    held = g.run()
    if held is None:
        if g.guard.prune:
            g.prune()
        if g.passed is not g.cells:  # cannot happen: every unheld release is one that passed
            raise DisclosureError("internal: the guard's release is not the one it audited")
    return GuardResult(
        cells=g.cells,
        withheld=tuple(sorted(g.withheld)),
        held_reason=held,
        linked_releases=tuple(e.label for e in g.links),
        seconds=time.perf_counter() - t0,
        solves=g.solver.solves,
        integer_programs=g.solver.integer_programs,
    )
