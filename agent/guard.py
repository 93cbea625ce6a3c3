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
  differ by at most ``delta``, for the smallest ``delta`` consistent with what was released
  (the reader's best guess; every larger ``delta`` gives wider intervals). The new submission is
  audited with each linked earlier release in turn.

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
    """How far a reader may narrow a protected count.

    ``suppressed_width``: every suppressed count keeps at least this many feasible values.
    ``rounded_width``: every rounded count of the new submission keeps at least this many within
    the submission and its linked tables (1 switches that check off). ``max_withheld``: the most
    counts the guard withholds beyond apply_policy's before it holds the submission instead.
    """

    suppressed_width: int = 3
    rounded_width: int = 2
    max_withheld: int = 60

    def __post_init__(self) -> None:
        if self.suppressed_width < 1 or self.rounded_width < 1:
            raise ValueError("guard widths must be at least 1")
        if self.max_withheld < 0:
            raise ValueError("max_withheld must be at least 0")


@dataclass(frozen=True)
class Release:
    """An earlier release as the reader sees it: its period, cells and indicator versions."""

    label: str
    period: Period
    cells: tuple[Cell, ...]
    versions: dict[str, int] = field(default_factory=dict)


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


def _cells_by_ind(cells: Sequence[Cell]) -> dict[str, dict[tuple[str, str], Cell]]:
    out: dict[str, dict[tuple[str, str], Cell]] = defaultdict(dict)
    for c in cells:
        out[c.indicator][(c.stratum.age_band, c.stratum.sex)] = c
    return out


def _release_rows(
    r: int,
    cells: Sequence[Cell],
    policy: DisclosurePolicy,
    identities: Iterable[Identity],
    model: Model,
) -> None:
    by_ind = _cells_by_ind(cells)
    for ind, group in by_ind.items():
        for stratum, cell in group.items():
            rule = policy.totals if stratum == TOTAL else policy.stratified
            for kind in COUNT_KINDS:
                lo, hi = feasible_range(getattr(cell, kind), rule)
                var = (r, ind, stratum, kind)
                model.lo[var] = lo
                model.hi[var] = MAX_COUNT if hi is None else hi
            model.rows.append(
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
                model.rows.append((coeffs, 0, 0))
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
            model.rows.append((coeffs, -np.inf, 0))
        else:
            model.rows.append((coeffs, 0, 0))


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


def _link_rows(ra: int, ca: Sequence[Cell], rb: int, cb: Sequence[Cell], model: Model) -> None:
    """|count in release ra - count in release rb| <= delta over every common region."""
    a_by, b_by = _cells_by_ind(ca), _cells_by_ind(cb)
    for ind in sorted(set(a_by) & set(b_by)):
        for cells_a, cells_b in _common_regions(a_by[ind], b_by[ind]):
            for kind in COUNT_KINDS:
                coeffs: dict[Var, int] = {(ra, ind, s, kind): 1 for s in cells_a}
                for s in cells_b:
                    coeffs[(rb, ind, s, kind)] = -1
                model.rows.append(({**coeffs, DELTA: -1}, -np.inf, 0))
                model.rows.append(({**coeffs, DELTA: 1}, 0, np.inf))
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
    return linked_identities(catalogue, bands=bands or None, indicators=same)


# --- solving ----------------------------------------------------------------------------------


def _components(model: Model, wanted: set[Var]) -> list[tuple[list[Var], list[Row]]]:
    """Connected parts of the model over its free variables (fixed ones become constants),
    keeping only parts that hold a target."""
    fixed = {v for v in model.lo if model.lo[v] == model.hi[v] and v != DELTA}
    parent: dict[Var, Var] = {}

    def find(v: Var) -> Var:
        parent.setdefault(v, v)
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    reduced: list[Row] = []
    for coeffs, lb, ub in model.rows:
        const = sum(c * model.lo[v] for v, c in coeffs.items() if v in fixed)
        free = {v: c for v, c in coeffs.items() if v not in fixed}
        if not free:
            if not lb - 1e-9 <= const <= ub + 1e-9:
                raise DisclosureError("internal: a released count breaks a relation it must hold")
            continue
        reduced.append((free, lb - const, ub - const))
        vs = [v for v in free if v != DELTA]
        for v in vs:
            find(v)
        for v in vs[1:]:
            parent[find(v)] = find(vs[0])
    comps: dict[Var, tuple[list[Var], list[Row]]] = {}
    for row in reduced:
        vs = [v for v in row[0] if v != DELTA]
        if not vs:
            continue
        comps.setdefault(find(vs[0]), ([], []))[1].append(row)
    for v in list(parent):
        if v in comps or find(v) in comps:
            comps[find(v)][0].append(v)
    out = []
    for t in sorted(wanted):
        if t in fixed:
            continue
        root = find(t)
        if root not in comps:  # a free target in no relation: only its own range
            comps[root] = ([t], [])
    seen = set()
    for t in sorted(wanted):
        if t in fixed:
            continue
        root = find(t)
        if root in seen:
            continue
        seen.add(root)
        vs, rows = comps[root]
        out.append((sorted(set(vs)), rows))
    return out


class Solver:
    """Bounds of target variables, per connected part, cached by the part's content."""

    def __init__(self) -> None:
        self.cache: dict[object, dict[Var, tuple[int, int]]] = {}
        self.solves = 0
        self.integer_solves = 0

    def bounds(self, model: Model, only: Iterable[Var] | None = None) -> dict[Var, tuple[int, int]]:
        """For each target (or each of ``only``): its exact bounds when it is narrower than its
        required width, else a range at least that wide which integer worlds reach (enough to
        show it is protected; not necessarily the bounds)."""
        wanted = set(model.targets) if only is None else set(only) & set(model.targets)
        out: dict[Var, tuple[int, int]] = {}
        for t in wanted:
            if model.lo[t] == model.hi[t]:
                out[t] = (model.lo[t], model.hi[t])
        for vs, rows in _components(model, wanted):
            use_delta = model.has_delta and any(DELTA in r[0] for r in rows)
            cols = vs + ([DELTA] if use_delta else [])
            targets = tuple((v, model.targets[v]) for v in vs if v in wanted)
            key = (
                tuple((v, model.lo[v], model.hi[v]) for v in cols),
                tuple((tuple(sorted(r[0].items())), r[1], r[2]) for r in rows),
                targets,
            )
            if key not in self.cache:
                self.cache[key] = self._solve(cols, rows, model, dict(targets), use_delta)
            out.update(self.cache[key])
        return out

    def _solve(
        self,
        cols: list[Var],
        rows: list[Row],
        model: Model,
        targets: dict[Var, int],
        use_delta: bool,
    ) -> dict[Var, tuple[int, int]]:
        index = {v: j for j, v in enumerate(cols)}
        n = len(cols)
        lo = np.array([model.lo[v] for v in cols], dtype=float)
        hi = np.array([model.hi[v] for v in cols], dtype=float)
        cons = ()
        if rows:
            data, ri, ci = [], [], []
            for i, (coeffs, _, _) in enumerate(rows):
                for v, c in coeffs.items():
                    if v in index:
                        data.append(c)
                        ri.append(i)
                        ci.append(index[v])
            a = csr_array((data, (ri, ci)), shape=(len(rows), n))
            cons = (LinearConstraint(a, [r[1] for r in rows], [r[2] for r in rows]),)
        integrality = np.ones(n)
        if highspy is None:  # pragma: no cover
            return self._solve_milp(cols, rows, model, targets, use_delta)
        h = highspy._Highs()
        h.setOptionValue("output_flag", False)
        lp = highspy.HighsLp()
        lp.num_col_ = n
        lp.num_row_ = len(rows)
        lp.col_cost_ = np.zeros(n)
        lp.col_lower_ = lo
        lp.col_upper_ = hi
        lp.row_lower_ = np.array([max(r[1], -highspy.kHighsInf) for r in rows], dtype=float)
        lp.row_upper_ = np.array([min(r[2], highspy.kHighsInf) for r in rows], dtype=float)
        if rows:
            csc = a.tocsc()
            lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
            lp.a_matrix_.start_ = csc.indptr
            lp.a_matrix_.index_ = csc.indices
            lp.a_matrix_.value_ = csc.data.astype(float)
        else:
            lp.a_matrix_.start_ = np.zeros(n + 1, dtype=np.int32)
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
            if h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
                x = np.asarray(h.getSolution().col_value)
                if np.allclose(x, np.round(x), atol=1e-7):
                    return seen(np.round(x), c)
            self.integer_solves += 1
            res = milp(c, constraints=cons, integrality=integrality, bounds=Bounds(lo, hi))
            if res.status != 0 or res.x is None:
                raise DisclosureError(f"the audit's integer program failed: {res.message}")
            return seen(np.round(res.x), c)

        def seen(x: np.ndarray, c: np.ndarray) -> float:
            if not use_delta or lo[d] == hi[d]:  # a world of the audited model
                np.minimum(seen_lo, x, out=seen_lo)
                np.maximum(seen_hi, x, out=seen_hi)
            return float(c @ x)

        def fix_delta(value: int) -> None:
            lo[d] = hi[d] = value
            h.changeColBounds(d, float(value), float(value))

        d = index.get(DELTA, -1)
        if use_delta:
            c = np.zeros(n)
            c[d] = 1
            fix_delta(round(run(c)))
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
        cols: list[Var],
        rows: list[Row],
        model: Model,
        targets: dict[Var, int],
        use_delta: bool,
    ) -> dict[Var, tuple[int, int]]:  # pragma: no cover (only without scipy's binding)
        index = {v: j for j, v in enumerate(cols)}
        n = len(cols)
        lo = np.array([model.lo[v] for v in cols], dtype=float)
        hi = np.array([model.hi[v] for v in cols], dtype=float)
        cons = ()
        if rows:
            a = np.zeros((len(rows), n))
            for i, (coeffs, _, _) in enumerate(rows):
                for v, c in coeffs.items():
                    a[i, index[v]] += c
            cons = (LinearConstraint(a, [r[1] for r in rows], [r[2] for r in rows]),)

        def run(c: np.ndarray) -> float:
            self.solves += 1
            res = milp(c, constraints=cons, integrality=np.ones(n), bounds=Bounds(lo, hi))
            if res.status != 0 or res.x is None:
                raise DisclosureError(f"the audit's integer program failed: {res.message}")
            return float(res.fun)

        if use_delta:
            c = np.zeros(n)
            c[index[DELTA]] = 1
            lo[index[DELTA]] = hi[index[DELTA]] = round(run(c))
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
) -> Model:
    m = Model({}, {}, [], {})
    _release_rows(0, cells, policy, ids, m)
    for c in cells:
        for kind in COUNT_KINDS:
            status = getattr(c, kind).status
            v = (0, c.indicator, (c.stratum.age_band, c.stratum.sex), kind)
            if status == "suppressed":
                m.targets[v] = guard.suppressed_width
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
) -> Model:
    m = _new_model(cells, policy, ids, guard, rounded=False)
    _release_rows(1, earlier.cells, policy, earlier_ids, m)
    for c in earlier.cells:
        for kind in COUNT_KINDS:
            if getattr(c, kind).status == "suppressed":
                v = (1, c.indicator, (c.stratum.age_band, c.stratum.sex), kind)
                m.targets[v] = min(guard.suppressed_width, earlier_floor.get(v, MAX_COUNT))
    _link_rows(0, cells, 1, earlier.cells, m)
    return m


def _check_truth(model: Model, raw: Sequence[RawCell]) -> None:
    """The true counts must satisfy every relation of the new release (else an identity is
    wrong for this catalogue or the engine disagrees with the rules: never release then)."""
    truth = {(0, r.indicator, r.stratum, k): r.count(k) for r in raw for k in COUNT_KINDS}
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

    Each round audits the submission alone (with its linked tables) and then with each linked
    earlier release. For the first exposed count it tries the nearest released non-zero counts of
    the new submission (:func:`_candidates`'s order), up to six, and withholds the first that
    restores the exposed count's width; if none does on its own, it withholds the nearest one and
    audits again. Rounds stop when nothing is exposed; the submission is held (``held_reason``)
    when a count of an earlier release is exposed and nothing in the new submission relates to
    it, or when more than ``guard.max_withheld`` counts would be withheld.
    """
    guard = guard or GuardPolicy()
    t0 = time.perf_counter()
    solver = Solver()
    ids = linked_identities(catalogue, indicators={r.indicator for r in raw})
    links = [e for e in history if linked(period, e.period)]
    earlier_ids = {id(e): identities_for(catalogue, e.cells, e.versions or None) for e in links}
    # What each earlier release already gives away on its own: never asked to be undone.
    floors: dict[int, dict[Var, int]] = {}
    for e in links:
        m = Model({}, {}, [], {})
        _release_rows(1, e.cells, policy, earlier_ids[id(e)], m)
        for c in e.cells:
            for kind in COUNT_KINDS:
                if getattr(c, kind).status == "suppressed":
                    m.targets[(1, c.indicator, (c.stratum.age_band, c.stratum.sex), kind)] = 1
        try:
            b = solver.bounds(m)
        except DisclosureError:
            b = {}
        floors[id(e)] = {v: hi - lo + 1 for v, (lo, hi) in b.items()}

    withheld: set[Withheld] = set()
    held: str | None = None
    audits = 0

    def models(cells: Sequence[Cell], only: str | None = None) -> list[tuple[str, Model]]:
        out = []
        if only in (None, "this submission"):
            out.append(("this submission", _new_model(cells, policy, ids, guard, rounded=True)))
        for e in links:
            if only not in (None, f"with {e.label}"):
                continue
            out.append(
                (
                    f"with {e.label}",
                    _pair_model(cells, ids, e, earlier_ids[id(e)], policy, guard, floors[id(e)]),
                )
            )
        return out

    cells = apply_policy(raw, policy)
    _check_truth(models(cells)[0][1], raw)
    while True:
        exposure: Exposure | None = None
        exposed_model: Model | None = None
        for where, m in models(cells):
            audits += 1
            found = audit(m, solver, where)
            if found:
                exposure, exposed_model = found[0], m
                break
        if exposure is None or exposed_model is None:
            break
        if len(withheld) >= guard.max_withheld:
            held = (
                f"the disclosure guard withheld {len(withheld)} counts and one is still "
                f"exposed ({exposure.reason()}); check the submission before approving it"
            )
            break
        cands = _candidates(exposed_model, exposure.var, cells, withheld)
        if not cands:
            held = (
                f"{exposure.reason()}, and nothing left in this submission relates to it; "
                "approve only if that is acceptable"
            )
            break
        chosen = cands[0]
        for cand in cands[:6]:
            trial = apply_policy(raw, policy, withhold=withheld | {cand})
            where = exposure.where
            trial_model = models(trial, where)[0][1]
            audits += 1
            if not audit(trial_model, solver, where, [exposure.var]):
                chosen = cand
                break
        withheld.add(chosen)
        cells = apply_policy(raw, policy, withhold=withheld)
    return GuardResult(
        cells=cells,
        withheld=tuple(sorted(withheld)),
        held_reason=held,
        linked_releases=tuple(e.label for e in links),
        seconds=time.perf_counter() - t0,
        audits=audits,
    )
