"""The disclosure guard: audit a submission against linked tables and earlier releases.

``protocol.disclosure.apply_policy`` protects each indicator's table on its own. A reader who
knows the catalogue also knows the identities between tables (``protocol.linkage``), and a reader
of the network's log has every earlier release of the practice. Before a submission is signed the
guard solves the reader's problem: for every protected count, the smallest and the largest value
consistent with everything the reader knows (integer programs, scipy's HiGHS ``milp``). Where a
count is pinned closer than :class:`GuardPolicy` allows, it withholds one more count of the new
submission (the rule is in :func:`guard_cells`) and audits again; where it cannot, it says why
and the submission is held for the practice to decide. docs/disclosure.md states the policy.

What the reader is assumed to know (the attacker model, also what the attack tests use):

* of each released count, its feasible range (``feasible_range``; a suppressed count is at
  least 1);
* in each release: strata add up to their total (denominator, numerator, exclusions);
  ``numerator <= denominator`` in every cell; every identity ``linked_identities`` derives for
  the release's indicators and age bands;
* across two releases of the same period (a correction) or of adjacent periods (overlapping
  windows), for every indicator in both, every region both report (an age band or a union of
  age bands both catalogues have, by sex where both report sex, and the total): the two counts
  differ by at most ``delta``, one ``delta`` for the pair, the smallest with which the two
  releases are consistent (the reader's best guess; every larger ``delta`` gives wider
  intervals). The new submission is audited with each linked earlier release in turn.

Only counts and their positions appear in reasons and reports, never a patient.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components

try:  # scipy's own HiGHS binding: one LP, warm-started from objective to objective
    from scipy.optimize._highspy import _core as highspy

    highspy._Highs  # noqa: B018 (probe: a scipy without it takes the slow path)
except (ImportError, AttributeError):  # pragma: no cover (other scipy versions)
    highspy = None

from protocol.catalogue import Catalogue, DisclosurePolicy
from protocol.disclosure import (
    COUNT_KINDS,
    TOTAL,
    RawCell,
    Withheld,
    apply_policy,
    feasible_range,
    suppression_threshold,
)
from protocol.errors import DisclosureError
from protocol.linkage import Identity, bands_of_labels, linked_identities, region_cells
from protocol.submission import MAX_COUNT, Cell, Period

__all__ = [
    "GuardPolicy",
    "GuardResult",
    "Release",
    "Var",
    "audit",
    "guard_cells",
    "linked",
]

Var = tuple[int, str, tuple[str, str], str]  # (release index, indicator, stratum, count kind)
Row = tuple[dict[Var, int], float, float]  # coefficients, lower bound, upper bound
DELTA: Var = (-1, "", ("", ""), "delta")


@dataclass(frozen=True)
class GuardPolicy:
    """How far a reader may narrow a protected count (docs/disclosure.md, "The policy").

    ``suppressed_width``: within the submission and its linked tables, every protected (small)
    suppressed count keeps at least this many feasible values. ``linked_width``: the same, with
    a linked earlier release (the reader's drift assumption already the strongest consistent
    one). ``rounded_width``: every rounded count of the new submission keeps at least this many
    within the submission (1 switches that check off). ``max_withheld``: the most counts the
    guard withholds beyond apply_policy's before it holds the submission instead.
    """

    suppressed_width: int = 3
    linked_width: int = 2
    rounded_width: int = 2
    max_withheld: int = 60

    def __post_init__(self) -> None:
        if min(self.suppressed_width, self.linked_width, self.rounded_width) < 1:
            raise ValueError("guard widths must be at least 1")
        if self.max_withheld < 0:
            raise ValueError("max_withheld must be at least 0")


@dataclass(frozen=True)
class Release:
    """An earlier release as the reader sees it: its period, cells and indicator versions;
    ``raw``, if the agent has them, the counts recomputed now for its period (used only to tell
    which of its suppressed counts are small, and only if every one fits what was released)."""

    label: str
    period: Period
    cells: tuple[Cell, ...]
    versions: dict[str, int] = field(default_factory=dict)
    raw: tuple[RawCell, ...] | None = None


@dataclass(frozen=True)
class Exposure:
    where: str
    var: Var
    lo: int
    hi: int
    required: int

    def reason(self) -> str:
        _, ind, (band, sex), kind = self.var
        return (
            f"{self.where}: {ind} {band}/{sex} {kind} could be narrowed to "
            f"{self.hi - self.lo + 1} value(s) (the policy asks for at least {self.required})"
        )


@dataclass(frozen=True)
class GuardResult:
    cells: tuple[Cell, ...]
    withheld: tuple[Withheld, ...]  # counts withheld beyond apply_policy's own
    held_reason: str | None
    linked_releases: tuple[str, ...]
    seconds: float
    audits: int


# --- the reader's knowledge -------------------------------------------------------------------


def linked(new: Period, earlier: Period) -> Literal["same", "adjacent"] | None:
    """How an earlier release's period links to the new one's, if at all."""
    if (new.start, new.end) == (earlier.start, earlier.end):
        return "same"
    one_day = new.start.toordinal() - earlier.end.toordinal()
    other = earlier.start.toordinal() - new.end.toordinal()
    if one_day == 1 or other == 1:
        return "adjacent"
    if new.start <= earlier.end and earlier.start <= new.end:
        return "adjacent"  # overlapping periods of another length
    return None


@dataclass
class Model:
    lo: dict[Var, int]
    hi: dict[Var, int]
    rows: list[Row]
    targets: dict[Var, int]  # protected variable -> required width
    has_delta: bool = False
    keys: list[object] = field(default_factory=list)  # what the relations were built from


def _cells_by_ind(cells: Sequence[Cell]) -> dict[str, dict[tuple[str, str], Cell]]:
    out: dict[str, dict[tuple[str, str], Cell]] = defaultdict(dict)
    for c in cells:
        out[c.indicator][(c.stratum.age_band, c.stratum.sex)] = c
    return out


RowCache = dict[object, list[Row]]


def _release_rows(
    r: int,
    cells: Sequence[Cell],
    policy: DisclosurePolicy,
    identities: Sequence[Identity],
    model: Model,
    cache: RowCache | None = None,
) -> None:
    """A release's ranges and relations. The relations depend only on which cells there are,
    so ``cache`` keeps them between rounds (the statuses change, the cells do not)."""
    for cell in cells:
        stratum = (cell.stratum.age_band, cell.stratum.sex)
        rule = policy.totals if stratum == TOTAL else policy.stratified
        for kind in COUNT_KINDS:
            lo, hi = feasible_range(getattr(cell, kind), rule)
            var = (r, cell.indicator, stratum, kind)
            model.lo[var] = lo
            model.hi[var] = MAX_COUNT if hi is None else hi
    key = ("release", r, tuple(c.key for c in cells), id(identities))
    model.keys.append(key)
    if cache is not None and key in cache:
        model.rows.extend(cache[key])
        return
    rows: list[Row] = []
    _relation_rows(r, cells, identities, rows)
    if cache is not None:
        cache[key] = rows
    model.rows.extend(rows)


def _relation_rows(
    r: int, cells: Sequence[Cell], identities: Iterable[Identity], out: list[Row]
) -> None:
    by_ind = _cells_by_ind(cells)
    for ind, group in by_ind.items():
        for stratum in group:
            out.append(
                (
                    {(r, ind, stratum, "numerator"): 1, (r, ind, stratum, "denominator"): -1},
                    -np.inf,
                    0,
                )
            )
        strata = [s for s in group if s != TOTAL]
        if strata and TOTAL in group:
            for kind in COUNT_KINDS:
                coeffs = {(r, ind, TOTAL, kind): 1}
                for s in strata:
                    coeffs[(r, ind, s, kind)] = -1
                out.append((coeffs, 0, 0))
    for ident in identities:
        coeffs: dict[Var, int] = {}
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
        if not ok:
            continue
        coeffs = {v: c for v, c in coeffs.items() if c}
        if ident.relation == "contained":
            out.append((coeffs, -np.inf, 0))
        else:
            out.append((coeffs, 0, 0))


def _common_regions(
    a: dict[tuple[str, str], Cell], b: dict[tuple[str, str], Cell]
) -> list[tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
    """Pairs of cell lists of one indicator in two releases that cover the same patients: the
    total, and every (union of age bands) x sex both can form."""
    out = [([TOTAL], [TOTAL])]
    sa = [s for s in a if s != TOTAL]
    sb = [s for s in b if s != TOTAL]
    if not sa or not sb:
        return out
    sex_a = {x for _, x in sa} - {"all"}
    sex_b = {x for _, x in sb} - {"all"}
    sexes = sorted(sex_a) if sex_a and sex_a == sex_b else ["all"]
    bands_a = bands_of_labels(b_ for b_, _ in sa)
    bands_b = bands_of_labels(b_ for b_, _ in sb)
    groups: list[tuple[list[str], list[str]]] = []
    if bands_a and bands_b:
        ia = ib = 0
        cur_a: list[str] = []
        cur_b: list[str] = []
        # merge bands until both sides end at the same age
        while ia < len(bands_a) and ib < len(bands_b):
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

    def cells_for(side: dict[tuple[str, str], Cell], bands: list[str], sex: str) -> list:
        return [
            s
            for s in side
            if s != TOTAL and (s[0] in bands or bands == ["all"]) and (sex == "all" or s[1] == sex)
        ]

    for ga, gb in groups:
        for sex in sexes:
            ca, cb = cells_for(a, ga, sex), cells_for(b, gb, sex)
            if ca and cb:
                out.append((ca, cb))
    return out


def _link_rows(
    ra: int,
    ca: Sequence[Cell],
    rb: int,
    cb: Sequence[Cell],
    model: Model,
    cache: RowCache | None = None,
) -> None:
    """|count in release ra - count in release rb| <= delta over every common region."""
    key = ("link", ra, tuple(c.key for c in ca), rb, tuple(c.key for c in cb))
    model.keys.append(key)
    if cache is not None and key in cache:
        model.rows.extend(cache[key])
    else:
        rows: list[Row] = []
        a_by, b_by = _cells_by_ind(ca), _cells_by_ind(cb)
        for ind in sorted(set(a_by) & set(b_by)):
            for cells_a, cells_b in _common_regions(a_by[ind], b_by[ind]):
                for kind in COUNT_KINDS:
                    coeffs: dict[Var, int] = {(ra, ind, s, kind): 1 for s in cells_a}
                    for s in cells_b:
                        coeffs[(rb, ind, s, kind)] = -1
                    rows.append(({**coeffs, DELTA: -1}, -np.inf, 0))
                    rows.append(({**coeffs, DELTA: 1}, 0, np.inf))
        if cache is not None:
            cache[key] = rows
        model.rows.extend(rows)
    model.has_delta = True
    model.lo[DELTA] = 0
    model.hi[DELTA] = MAX_COUNT


def identities_for(
    catalogue: Catalogue, cells: Sequence[Cell], versions: dict[str, int] | None = None
) -> tuple[Identity, ...]:
    """The identities of a release: the catalogue's, for the release's own age bands, between
    indicators whose version in the release is the catalogue's (a changed indicator may have
    changed its rules)."""
    present = {c.indicator for c in cells}
    same = {
        i.id
        for i in catalogue.indicators
        if i.id in present and (versions is None or versions.get(i.id) == i.version)
    }
    bands = bands_of_labels(c.stratum.age_band for c in cells)
    strata: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for c in cells:
        strata[c.indicator].append((c.stratum.age_band, c.stratum.sex))
    return linked_identities(catalogue, bands=bands or None, indicators=same, strata=strata)


# --- solving ----------------------------------------------------------------------------------


class _Compiled:
    """A model's relations as one sparse matrix (built once per set of relations)."""

    def __init__(self, rows: Sequence[Row]) -> None:
        names = sorted({v for coeffs, _, _ in rows for v in coeffs})
        self.names = names
        self.index = {v: j for j, v in enumerate(names)}
        data, ri, ci = [], [], []
        for i, (coeffs, _, _) in enumerate(rows):
            for v, c in coeffs.items():
                data.append(c)
                ri.append(i)
                ci.append(self.index[v])
        self.a = csr_array((np.array(data, dtype=float), (ri, ci)), shape=(len(rows), len(names)))
        self.lb = np.array([r[1] for r in rows], dtype=float)
        self.ub = np.array([r[2] for r in rows], dtype=float)
        self.delta = self.index.get(DELTA, -1)


def _components(
    model: Model, comp: _Compiled, wanted: set[Var]
) -> list[tuple[list[int], np.ndarray, list[Var]]]:
    """Connected parts of the model over its free variables (fixed ones become constants):
    (columns, rows, targets) for each part that holds a wanted target."""
    n = len(comp.names)
    if not n:
        return []
    lo = np.array([model.lo[v] for v in comp.names], dtype=float)
    hi = np.array([model.hi[v] for v in comp.names], dtype=float)
    free = lo != hi
    open_delta = comp.delta >= 0 and lo[comp.delta] != hi[comp.delta]
    if open_delta:  # delta is its own (per part) until the pair's delta is fixed
        free[comp.delta] = False
    fixed_values = np.where(free, 0.0, lo)
    if open_delta:
        fixed_values[comp.delta] = 0.0
    const = comp.a @ fixed_values
    af = comp.a[:, np.flatnonzero(free)]
    has_free = np.diff(af.tocsr().indptr) > 0
    closed = ~has_free
    if open_delta:
        closed &= comp.a[:, [comp.delta]].toarray().ravel() == 0
    bad = closed & ((const < comp.lb - 1e-9) | (const > comp.ub + 1e-9))
    if bad.any():
        raise DisclosureError("internal: a released count breaks a relation it must hold")
    free_cols = np.flatnonzero(free)
    m = len(comp.lb)
    # bipartite graph: rows 0..m-1, free columns m..m+len(free_cols)-1
    coo = af.tocoo()
    graph = csr_array(
        (np.ones(len(coo.row)), (coo.row, coo.col + m)),
        shape=(m + len(free_cols), m + len(free_cols)),
    )
    _, labels = connected_components(graph, directed=False)
    col_label = {int(c): int(labels[m + k]) for k, c in enumerate(free_cols)}
    out: list[tuple[list[int], np.ndarray, list[Var]]] = []
    seen: dict[int, int] = {}
    for t in sorted(wanted):
        j = comp.index.get(t)
        if j is None or not free[j]:
            continue
        lab = col_label[j]
        if lab in seen:
            out[seen[lab]][2].append(t)
            continue
        seen[lab] = len(out)
        cols = [int(c) for c in free_cols if col_label[int(c)] == lab]
        rows = np.flatnonzero(has_free & (labels[:m] == lab))
        out.append((cols, rows, [t]))
    model._const = const  # type: ignore[attr-defined]
    return out


class Solver:
    """Bounds of target variables, per connected part, cached by the part's content."""

    def __init__(self) -> None:
        self.cache: dict[object, dict[Var, tuple[int, int]]] = {}
        self.compiled: dict[object, _Compiled] = {}
        self.solves = 0
        self.integer_solves = 0

    def bounds(self, model: Model, only: Iterable[Var] | None = None) -> dict[Var, tuple[int, int]]:
        """For each target (or each of ``only``): its exact bounds when it is narrower than its
        required width, else a range at least that wide which integer worlds reach (enough to
        show it is protected; not necessarily the bounds)."""
        wanted = set(model.targets) if only is None else set(only) & set(model.targets)
        out: dict[Var, tuple[int, int]] = {}
        skey = tuple(model.keys) if model.keys else None
        comp = self.compiled.get(skey) if skey is not None else None
        if comp is None:
            comp = _Compiled(model.rows)
            if skey is not None:
                self.compiled[skey] = comp
        if model.has_delta and model.lo[DELTA] != model.hi[DELTA]:
            model.lo[DELTA] = model.hi[DELTA] = self.pair_delta(model, comp)
        for t in wanted:
            if model.lo[t] == model.hi[t] or t not in comp.index:
                out[t] = (model.lo[t], model.hi[t])  # fixed, or in no relation: its own range
        for cols, rows, targets in _components(model, comp, wanted):
            const = model._const  # type: ignore[attr-defined]
            sub = comp.a[rows][:, cols] if len(rows) else csr_array((0, len(cols)))
            lb = comp.lb[rows] - const[rows]
            ub = comp.ub[rows] - const[rows]
            delta_col = None
            if comp.delta >= 0 and len(rows):
                dcol = comp.a[rows][:, [comp.delta]].toarray().ravel()
                if dcol.any():
                    delta_col = dcol
            names = [comp.names[c] for c in cols]
            lo = np.array([model.lo[v] for v in names], dtype=float)
            hi = np.array([model.hi[v] for v in names], dtype=float)
            need = np.array([model.targets[t] for t in targets])
            key = (
                skey,
                tuple(cols),
                lo.tobytes(),
                hi.tobytes(),
                rows.tobytes(),
                lb.tobytes(),
                ub.tobytes(),
                tuple(targets),
                need.tobytes(),
            )
            if key not in self.cache:
                self.cache[key] = self._solve(
                    names, sub, lb, ub, lo, hi, delta_col, dict(zip(targets, need, strict=True))
                )
            out.update(self.cache[key])
        return out

    def pair_delta(self, model: Model, comp: _Compiled) -> int:
        """The smallest delta with which the whole pair is consistent (one integer program
        over every count of both releases; cached by the releases' content)."""
        names = comp.names
        lo = np.array([model.lo[v] for v in names], dtype=float)
        hi = np.array([model.hi[v] for v in names], dtype=float)
        key = ("delta", tuple(model.keys), lo.tobytes(), hi.tobytes())
        if key not in self.cache:
            c = np.zeros(len(names))
            c[comp.delta] = 1
            cons = (LinearConstraint(comp.a, comp.lb, comp.ub),)
            res = milp(c, constraints=cons, integrality=np.ones(len(names)), bounds=Bounds(lo, hi))
            if res.x is None:
                res = milp(
                    c,
                    constraints=cons,
                    integrality=np.ones(len(names)),
                    bounds=Bounds(lo, hi),
                    options={"presolve": False},
                )
            if res.x is None:
                raise DisclosureError(f"the audit's integer program failed: {res.message}")
            self.integer_solves += 1
            self.cache[key] = {DELTA: (round(res.fun), round(res.fun))}
        return self.cache[key][DELTA][0]

    def _solve(
        self,
        names: list[Var],
        sub: csr_array,
        lb: np.ndarray,
        ub: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        delta_col: np.ndarray | None,
        targets: dict[Var, int],
    ) -> dict[Var, tuple[int, int]]:
        use_delta = delta_col is not None
        if use_delta:
            from scipy.sparse import hstack

            a = hstack([sub, csr_array(delta_col.reshape(-1, 1))]).tocsr()
            lo = np.append(lo, 0.0)
            hi = np.append(hi, float(MAX_COUNT))
        else:
            a = sub.tocsr()
        n = a.shape[1]
        d = n - 1 if use_delta else -1
        index = {v: j for j, v in enumerate(names)}
        cons = (LinearConstraint(a, lb, ub),) if a.shape[0] else ()
        integrality = np.ones(n)
        if highspy is None:  # pragma: no cover
            return self._solve_milp(a, lb, ub, lo, hi, d, index, targets)
        h = highspy._Highs()
        h.setOptionValue("output_flag", False)
        lp = highspy.HighsLp()
        lp.num_col_ = n
        lp.num_row_ = a.shape[0]
        lp.col_cost_ = np.zeros(n)
        lp.col_lower_ = lo
        lp.col_upper_ = hi
        lp.row_lower_ = np.maximum(lb, -highspy.kHighsInf)
        lp.row_upper_ = np.minimum(ub, highspy.kHighsInf)
        csc = a.tocsc()
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = csc.indptr
        lp.a_matrix_.index_ = csc.indices
        lp.a_matrix_.value_ = csc.data.astype(float)
        h.passModel(lp)
        costed: list[int] = []
        # Every integer world found on the way widens what is known reachable for every target.
        seen_lo = np.full(n, np.inf)
        seen_hi = np.full(n, -np.inf)

        def run(c: np.ndarray) -> float:
            """min c.x over the integers: the LP's optimal vertex when it is integral (then it
            is the integer optimum too), else the integer program. The LP keeps its basis from
            the previous objective (warm start)."""
            self.solves += 1
            for j in costed:
                h.changeColCost(j, 0.0)
            costed.clear()
            for j in np.flatnonzero(c):
                h.changeColCost(int(j), float(c[j]))
                costed.append(int(j))
            h.run()
            if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                # HiGHS' presolve has been seen to call a feasible problem infeasible
                h.setOptionValue("presolve", "off")
                h.run()
            if h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
                x = np.asarray(h.getSolution().col_value)
                if np.allclose(x, np.round(x), atol=1e-7):
                    return seen(np.round(x), c)
            self.integer_solves += 1
            res = milp(c, constraints=cons, integrality=integrality, bounds=Bounds(lo, hi))
            if res.x is None:
                res = milp(
                    c,
                    constraints=cons,
                    integrality=integrality,
                    bounds=Bounds(lo, hi),
                    options={"presolve": False},
                )
            if res.status != 0 or res.x is None:
                raise DisclosureError(f"the audit's integer program failed: {res.message}")
            return seen(np.round(res.x), c)

        def seen(x: np.ndarray, c: np.ndarray) -> float:
            if not use_delta or lo[d] == hi[d]:  # a world of the audited model
                np.minimum(seen_lo, x, out=seen_lo)
                np.maximum(seen_hi, x, out=seen_hi)
            return float(c @ x)

        if use_delta:
            c = np.zeros(n)
            c[d] = 1
            best = round(run(c))
            lo[d] = hi[d] = best
            h.changeColBounds(d, float(best), float(best))
        out: dict[Var, tuple[int, int]] = {}
        for t, need in targets.items():
            j = index[t]
            if seen_hi[j] - seen_lo[j] + 1 >= need:
                out[t] = (int(seen_lo[j]), int(seen_hi[j]))
                continue
            c = np.zeros(n)
            c[j] = 1
            a_lo = round(run(c))
            a_hi = round(-run(-c)) if seen_hi[j] - a_lo + 1 < need else int(seen_hi[j])
            out[t] = (a_lo, a_hi)
        return out

    def _solve_milp(
        self,
        a: csr_array,
        lb: np.ndarray,
        ub: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        d: int,
        index: dict[Var, int],
        targets: dict[Var, int],
    ) -> dict[Var, tuple[int, int]]:  # pragma: no cover (only without scipy's binding)
        n = a.shape[1]
        cons = (LinearConstraint(a, lb, ub),) if a.shape[0] else ()

        def run(c: np.ndarray) -> float:
            self.solves += 1
            res = milp(c, constraints=cons, integrality=np.ones(n), bounds=Bounds(lo, hi))
            if res.status != 0 or res.x is None:
                raise DisclosureError(f"the audit's integer program failed: {res.message}")
            return float(res.fun)

        if d >= 0:
            c = np.zeros(n)
            c[d] = 1
            lo[d] = hi[d] = round(run(c))
        out = {}
        for t in targets:
            c = np.zeros(n)
            c[index[t]] = 1
            out[t] = (round(run(c)), round(-run(-c)))
        return out


def audit(
    model: Model, solver: Solver, where: str, protected: Iterable[Var] | None = None
) -> list[Exposure]:
    """Every target of ``model`` narrowed below its required width."""
    bounds = solver.bounds(model, protected)
    wanted = set(model.targets if protected is None else protected)
    return [
        Exposure(where, v, *bounds[v], model.targets[v])
        for v in sorted(wanted)
        if v in bounds and bounds[v][1] - bounds[v][0] + 1 < model.targets[v]
    ]


# --- the guard --------------------------------------------------------------------------------


def _new_model(
    cells: Sequence[Cell],
    policy: DisclosurePolicy,
    ids: Sequence[Identity],
    guard: GuardPolicy,
    *,
    rounded: bool,
    sensitive: set[Var],
    cache: RowCache | None = None,
) -> Model:
    m = Model({}, {}, [], {})
    _release_rows(0, cells, policy, ids, m, cache)
    width = guard.suppressed_width if rounded else guard.linked_width
    for c in cells:
        for kind in COUNT_KINDS:
            status = getattr(c, kind).status
            v = (0, c.indicator, (c.stratum.age_band, c.stratum.sex), kind)
            if status == "suppressed" and v in sensitive:
                m.targets[v] = width
            elif status == "rounded" and rounded and guard.rounded_width > 1:
                m.targets[v] = guard.rounded_width
    return m


def _pair_model(
    cells: Sequence[Cell],
    ids: Sequence[Identity],
    earlier: Release,
    earlier_ids: Sequence[Identity],
    policy: DisclosurePolicy,
    guard: GuardPolicy,
    earlier_floor: dict[Var, int],
    sensitive: set[Var],
    cache: RowCache | None = None,
) -> Model:
    m = _new_model(cells, policy, ids, guard, rounded=False, sensitive=sensitive, cache=cache)
    _release_rows(1, earlier.cells, policy, earlier_ids, m, cache)
    for c in earlier.cells:
        for kind in COUNT_KINDS:
            if getattr(c, kind).status == "suppressed":
                v = (1, c.indicator, (c.stratum.age_band, c.stratum.sex), kind)
                if v in earlier_floor:  # a count that may be small (see guard_cells)
                    m.targets[v] = min(guard.linked_width, earlier_floor[v])
    _link_rows(0, cells, 1, earlier.cells, m, cache)
    return m


def _cap(model: Model, at_least: int) -> Model:
    """No upper bound (a suppressed count) becomes twice the largest bound there is or twice the
    largest true count of the new submission (``at_least``), plus 10: every true world stays in
    the model, a tighter bound only makes the reader stronger, and the solver stays well
    scaled."""
    finite = [h for v, h in model.hi.items() if h < MAX_COUNT and v != DELTA]
    cap = 2 * max([*finite, at_least]) + 10
    for v, h in model.hi.items():
        if h >= MAX_COUNT:
            model.hi[v] = cap
    return model


def _recomputed(e: Release, policy: DisclosurePolicy) -> dict[Var, int] | None:
    """The earlier release's counts as recomputed now, if they fit every released count (else
    the data changed since, and the guard does not lean on them)."""
    if e.raw is None:
        return None
    known = {(1, r.indicator, r.stratum, k): r.count(k) for r in e.raw for k in COUNT_KINDS}
    for c in e.cells:
        stratum = (c.stratum.age_band, c.stratum.sex)
        rule = policy.totals if stratum == TOTAL else policy.stratified
        for kind in COUNT_KINDS:
            v = (1, c.indicator, stratum, kind)
            if v not in known:
                return None
            lo, hi = feasible_range(getattr(c, kind), rule)
            if not lo <= known[v] <= (hi if hi is not None else MAX_COUNT):
                return None
    return known


def _check_truth(model: Model, raw: Sequence[RawCell]) -> None:
    """The true counts must satisfy every relation of the new release (else an identity is
    wrong for this catalogue or the engine disagrees with the rules: never release then)."""
    truth = {(0, r.indicator, r.stratum, k): r.count(k) for r in raw for k in COUNT_KINDS}
    for v, value in truth.items():
        if not model.lo[v] <= value <= model.hi[v]:
            raise DisclosureError(
                f"internal: {v[1]} {v[2][0]}/{v[2][1]} {v[3]} is outside its released range"
            )
    for coeffs, lb, ub in model.rows:
        if any(v[0] != 0 for v in coeffs):
            continue
        value = sum(c * truth[v] for v, c in coeffs.items())
        if not lb <= value <= ub:
            names = ", ".join(f"{v[1]} {v[2][0]}/{v[2][1]} {v[3]}" for v in sorted(coeffs))
            raise DisclosureError(
                f"the local counts break a linked-table relation the catalogue implies "
                f"({names}): the guard cannot audit this submission"
            )


def _candidates(
    model: Model, start: Var, cells: Sequence[Cell], withheld: set[Withheld]
) -> list[Withheld]:
    """Released non-zero counts of the new submission near ``start`` in the model's relations:
    by distance (rows crossed), then the smaller released value, then the key."""
    released = {
        (0, c.indicator, (c.stratum.age_band, c.stratum.sex), k): getattr(c, k)
        for c in cells
        for k in COUNT_KINDS
        if getattr(c, k).status in ("rounded", "exact")
    }
    by_var: dict[Var, list[int]] = defaultdict(list)
    for i, (coeffs, _, _) in enumerate(model.rows):
        for v in coeffs:
            if v != DELTA:
                by_var[v].append(i)
    dist = {start: 0}
    frontier = [start]
    found: list[tuple[int, int, Var]] = []
    seen_rows: set[int] = set()
    while frontier and len(found) < 12:
        nxt: list[Var] = []
        for v in frontier:
            for i in by_var[v]:
                if i in seen_rows:
                    continue
                seen_rows.add(i)
                for w in model.rows[i][0]:
                    if w == DELTA or w in dist:
                        continue
                    dist[w] = dist[v] + 1
                    nxt.append(w)
                    if w in released:
                        found.append((dist[w], released[w].value or 0, w))
        frontier = nxt
    found.sort()
    return [(w[1], w[2], w[3]) for _, _, w in found if (w[1], w[2], w[3]) not in withheld]  # type: ignore[misc]


class _Releaser:
    """apply_policy with more withheld, recomputing only the denominator classes touched.

    apply_policy decides each denominator class (indicators with identical denominators in
    every stratum) on its own, so the cells of a class depend only on its raw cells and what is
    withheld in it; a class is recomputed with apply_policy on its own indicators."""

    def __init__(self, raw: Sequence[RawCell], policy: DisclosurePolicy) -> None:
        self.policy = policy
        by_ind: dict[str, list[RawCell]] = defaultdict(list)
        for c in raw:
            by_ind[c.indicator].append(c)
        sig: dict[str, object] = {
            ind: tuple(sorted((c.stratum, c.denominator) for c in cells))
            for ind, cells in by_ind.items()
        }
        self.members: dict[str, tuple[str, ...]] = {}
        for ind in by_ind:
            self.members[ind] = tuple(sorted(i for i in by_ind if sig[i] == sig[ind]))
        self.raw = by_ind
        self.cells: dict[str, tuple[Cell, ...]] = {}
        for ind in by_ind:
            if ind not in self.cells:
                self._class(self.members[ind], set())

    def _class(
        self, members: tuple[str, ...], withheld: set[Withheld]
    ) -> dict[str, tuple[Cell, ...]]:
        raw = [c for ind in members for c in self.raw[ind]]
        mine = {w for w in withheld if w[0] in members}
        out: dict[str, list[Cell]] = defaultdict(list)
        for cell in apply_policy(raw, self.policy, withhold=mine):
            out[cell.indicator].append(cell)
        done = {ind: tuple(cells) for ind, cells in out.items()}
        if not withheld:
            self.cells.update(done)
        return done

    def release(self, withheld: set[Withheld], changed: Iterable[str] = ()) -> tuple[Cell, ...]:
        cells = dict(self.cells)
        for members in {self.members[ind] for ind in changed}:
            cells.update(self._class(members, withheld))
        return tuple(sorted((c for group in cells.values() for c in group), key=lambda c: c.key))

    def commit(self, withheld: set[Withheld], changed: Iterable[str]) -> tuple[Cell, ...]:
        for members in {self.members[ind] for ind in changed}:
            self.cells.update(self._class(members, withheld))
        return self.release(withheld)


def guard_cells(
    *,
    catalogue: Catalogue,
    raw: Sequence[RawCell],
    policy: DisclosurePolicy,
    period: Period,
    history: Sequence[Release] = (),
    guard: GuardPolicy | None = None,
) -> GuardResult:
    """apply_policy, then withhold more until no protected count is narrowed below the policy.

    A round audits the submission alone (with its linked tables), then with each linked earlier
    release, and stops at the first audit that finds exposed counts. It works through those in
    order: each is checked again on its own; for one still exposed it tries the nearest released
    non-zero counts of the new submission (:func:`_candidates`'s order), up to six, and
    withholds the first that restores the exposed count's width on its own, else the nearest.
    Rounds repeat until an audit finds nothing. The submission is held (``held_reason``) when an
    exposed count has nothing left in the new submission that relates to it, when more than
    ``guard.max_withheld`` counts would be withheld, and (in agent.release) when the audit
    cannot run.
    """
    guard = guard or GuardPolicy()
    t0 = time.perf_counter()
    solver = Solver()
    cache: RowCache = {}
    ids = identities_for(catalogue, apply_policy(raw, policy))
    links = [e for e in history if linked(period, e.period)]
    earlier_ids = {id(e): identities_for(catalogue, e.cells, e.versions or None) for e in links}
    # Protected: counts that are small (1..T, T the stratified threshold), which the primary
    # rule or the small-population rule suppressed. A complementary suppression of a larger
    # count protects them and needs no width of its own. In the new submission the guard knows
    # which these are; in an earlier release only through its recomputed counts (if they fit
    # it), else every suppressed count that the release alone leaves possibly small is
    # protected. What the release alone already gives away (its width there) is never asked to
    # be undone.
    small = suppression_threshold(policy.stratified)
    sensitive = {
        (0, r.indicator, r.stratum, k) for r in raw for k in COUNT_KINDS if 1 <= r.count(k) <= small
    }
    top = max((r.count(k) for r in raw for k in COUNT_KINDS), default=0)
    floors: dict[int, dict[Var, int]] = {}
    for e in links:
        m = Model({}, {}, [], {})
        _release_rows(1, e.cells, policy, earlier_ids[id(e)], m)
        known = _recomputed(e, policy)
        for c in e.cells:
            for kind in COUNT_KINDS:
                v = (1, c.indicator, (c.stratum.age_band, c.stratum.sex), kind)
                if getattr(c, kind).status == "suppressed" and (
                    known is None or 1 <= known.get(v, 0) <= small
                ):
                    m.targets[v] = MAX_COUNT + 2  # exact bounds
        try:
            b = solver.bounds(_cap(m, top))
        except DisclosureError:
            b = {}
        floors[id(e)] = {v: hi - lo + 1 for v, (lo, hi) in b.items() if lo <= small}

    withheld: set[Withheld] = set()
    held: str | None = None
    audits = 0
    found: list[tuple[Exposure, str]]

    def models(cells: Sequence[Cell], only: str | None = None) -> list[tuple[str, Model]]:
        out = []
        if only in (None, "this submission"):
            m = _new_model(
                cells, policy, ids, guard, rounded=True, sensitive=sensitive, cache=cache
            )
            out.append(("this submission", _cap(m, top)))
        for e in links:
            if only not in (None, f"with {e.label}"):
                continue
            out.append(
                (
                    f"with {e.label}",
                    _cap(
                        _pair_model(
                            cells,
                            ids,
                            e,
                            earlier_ids[id(e)],
                            policy,
                            guard,
                            floors[id(e)],
                            sensitive,
                            cache,
                        ),
                        top,
                    ),
                )
            )
        return out

    releaser = _Releaser(raw, policy)
    cells = releaser.release(set())
    _check_truth(models(cells)[0][1], raw)
    while held is None:
        # A full audit, then each exposure it found in turn (checked again alone first: an
        # earlier withholding of the round may have covered it), then a full audit again.
        found: list[tuple[Exposure, str]] = []
        for where, m in models(cells):
            audits += 1
            found = [(e, where) for e in audit(m, solver, where)]
            if found:
                break
        if not found:
            break
        for first, where in found:
            m = models(cells, where)[0][1]
            audits += 1
            still = audit(m, solver, where, [first.var]) if first.var in m.targets else []
            if not still:
                continue
            exposure = still[0]
            if len(withheld) >= guard.max_withheld:
                held = (
                    f"the disclosure guard withheld {len(withheld)} counts and one is still "
                    f"exposed ({exposure.reason()}); check the submission before approving it"
                )
                break
            cands = _candidates(m, exposure.var, cells, withheld)
            if not cands:
                held = (
                    f"{exposure.reason()}, and nothing left in this submission relates to it; "
                    "approve only if that is acceptable"
                )
                break
            chosen = cands[0]
            for cand in cands[:6]:
                trial = releaser.release(withheld | {cand}, [cand[0]])
                trial_model = models(trial, where)[0][1]
                audits += 1
                if exposure.var not in trial_model.targets or not audit(
                    trial_model, solver, where, [exposure.var]
                ):
                    chosen = cand
                    break
            withheld.add(chosen)
            cells = releaser.commit(withheld, [chosen[0]])
    return GuardResult(
        cells=cells,
        withheld=tuple(sorted(withheld)),
        held_reason=held,
        linked_releases=tuple(e.label for e in links),
        seconds=time.perf_counter() - t0,
        audits=audits,
    )
