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
* A count is shown to be *not* pinned by exhibiting worlds: the true counts are one world; two
  integer programs over all remaining parts at once (maximise, then minimise, a signed sum of
  the protected counts) give two more; every protected count that takes enough distinct values
  across these worlds is proven at once. Only the few left are bounded one by one (two integer
  programs each, on their own part).
* History: only the latest earlier release of the same period (a correction) and of each
  adjacent period. In a correction, every count the earlier version suppressed stays suppressed
  (sticky suppression), which removes most differencing without a solver.

Only counts and their positions appear in reasons, never a patient.
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
from protocol.submission import Cell, Period

__all__ = ["GuardPolicy", "GuardResult", "Release", "guard_cells", "linked"]

Var = tuple[int, str, tuple[str, str], str]  # (release: 0 new, 1 earlier; indicator; stratum; kind)
Row = tuple[dict[Var, int], float, float]  # coefficients, lower bound, upper bound
DELTA: Var = (-1, "", ("", ""), "delta")


@dataclass(frozen=True)
class GuardPolicy:
    """How far a reader may narrow a protected count (docs/disclosure.md, "The policy").

    ``suppressed_width``: a small suppressed count of the new submission keeps at least this
    many feasible values within the submission and its linked tables. ``linked_width``: a small
    suppressed count of either release keeps at least this many with a linked earlier release.
    ``rounded_width``: a rounded count of the new submission keeps at least this many within
    the submission (1 switches the check off). ``max_withheld``: the most counts the guard
    withholds beyond apply_policy's before it holds the submission instead.
    """

    suppressed_width: int = 2
    linked_width: int = 2
    rounded_width: int = 2
    max_withheld: int = 60

    def __post_init__(self) -> None:
        if min(self.suppressed_width, self.linked_width, self.rounded_width) < 1:
            raise ValueError("guard widths must be at least 1")
        if max(self.suppressed_width, self.linked_width, self.rounded_width) > 3:
            raise ValueError("guard widths above 3 are not supported (three worlds prove 3)")
        if self.max_withheld < 0:
            raise ValueError("max_withheld must be at least 0")


@dataclass(frozen=True)
class Release:
    """An earlier release as the reader sees it: its period, cells and indicator versions;
    ``raw``, when the agent has them, that period's true counts (used only to tell which of its
    suppressed counts are small, and only if every one fits what was released)."""

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
        r, ind, (band, sex), kind = self.var
        which = "this submission's" if r == 0 else "the earlier release's"
        return (
            f"{self.where}: {which} {ind} {band}/{sex} {kind} could be narrowed to "
            f"{self.hi - self.lo + 1} value(s) (the policy asks for at least {self.required})"
        )


@dataclass(frozen=True)
class GuardResult:
    cells: tuple[Cell, ...]
    withheld: tuple[Withheld, ...]  # counts withheld beyond apply_policy's own
    held_reason: str | None
    linked_releases: tuple[str, ...]
    seconds: float
    solves: int = 0


def linked(new: Period, earlier: Period) -> Literal["same", "adjacent"] | None:
    """How an earlier release's period links to the new one's, if at all."""
    if (new.start, new.end) == (earlier.start, earlier.end):
        return "same"
    if new.start.toordinal() - earlier.end.toordinal() == 1:
        return "adjacent"
    if earlier.start.toordinal() - new.end.toordinal() == 1:
        return "adjacent"
    if new.start <= earlier.end and earlier.start <= new.end:
        return "adjacent"  # overlapping periods of other lengths
    return None


def latest_linked(period: Period, history: Sequence[Release]) -> list[Release]:
    """The releases the guard audits with: the latest of the same period and the latest of each
    adjacent or overlapping period (``history`` oldest first)."""
    last: dict[tuple[object, object], Release] = {}
    for e in history:
        if linked(period, e.period):
            last[(e.period.start, e.period.end)] = e
    return sorted(last.values(), key=lambda e: (linked(period, e.period) != "same", e.label))


# --- the reader's relations (cached) -----------------------------------------------------------

_CAT_SHA: dict[int, tuple[Catalogue, str]] = {}
_IDS: dict[object, tuple[Identity, ...]] = {}
_ROWS: dict[object, list[Row]] = {}


def _catalogue_sha(catalogue: Catalogue) -> str:
    hit = _CAT_SHA.get(id(catalogue))
    if hit is None or hit[0] is not catalogue:
        if len(_CAT_SHA) > 16:
            _CAT_SHA.clear()
        hit = (catalogue, catalogue.sha256())
        _CAT_SHA[id(catalogue)] = hit
    return hit[1]


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
        _catalogue_sha(catalogue),
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
            out.append(({(r, ind, s, "numerator"): 1, (r, ind, s, "denominator"): -1}, -np.inf, 0))
        strata = [s for s in group if s != TOTAL]
        if strata and TOTAL in group:
            for kind in COUNT_KINDS:
                coeffs = {(r, ind, TOTAL, kind): 1}
                for s in strata:
                    coeffs[(r, ind, s, kind)] = -1
                out.append((coeffs, 0, 0))
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
            out.append((coeffs, -np.inf if ident.relation == "contained" else 0, 0))
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


def _is_zero(cells: dict[tuple[str, str], Cell], where: list[tuple[str, str]], kind: str) -> bool:
    return all(
        getattr(cells[s], kind).status == "exact" and getattr(cells[s], kind).value == 0
        for s in where
    )


def _link_rows(new: Sequence[Cell], old: Sequence[Cell], *, zeros: bool) -> list[Row]:
    """``|count now - count then| <= delta`` over every region both releases report. With
    ``zeros`` False (adjacent periods), a region released as an exact zero in either release is
    not linked: docs/disclosure.md, "The reader"."""
    rows: list[Row] = []
    a_by, b_by = _by_ind(new), _by_ind(old)
    for ind in sorted(set(a_by) & set(b_by)):
        for ca, cb in _common_regions(a_by[ind], b_by[ind]):
            for kind in COUNT_KINDS:
                if not zeros and (_is_zero(a_by[ind], ca, kind) or _is_zero(b_by[ind], cb, kind)):
                    continue
                coeffs: dict[Var, int] = {(0, ind, s, kind): 1 for s in ca}
                for s in cb:
                    coeffs[(1, ind, s, kind)] = -1
                rows.append(({**coeffs, DELTA: -1}, -np.inf, 0))
                rows.append(({**coeffs, DELTA: 1}, 0, np.inf))
    return rows


# --- the model and its audit ------------------------------------------------------------------


@dataclass
class Model:
    lo: dict[Var, int] = field(default_factory=dict)
    hi: dict[Var, int] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    targets: dict[Var, int] = field(default_factory=dict)  # protected count -> required width
    truth: dict[Var, int] = field(default_factory=dict)

    def add_release(self, r: int, cells: Sequence[Cell], policy: DisclosurePolicy) -> None:
        for cell in cells:
            stratum = (cell.stratum.age_band, cell.stratum.sex)
            rule = policy.totals if stratum == TOTAL else policy.stratified
            for kind in COUNT_KINDS:
                lo, hi = feasible_range(getattr(cell, kind), rule)
                self.lo[(r, cell.indicator, stratum, kind)] = lo
                self.hi[(r, cell.indicator, stratum, kind)] = -1 if hi is None else hi


class _Solver:
    def __init__(self) -> None:
        self.solves = 0

    def milp(
        self,
        c: np.ndarray,
        a: csr_array,
        lb: np.ndarray,
        ub: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
    ) -> np.ndarray | None:
        """An integer world minimising ``c.x``, or None when there is none."""
        self.solves += 1
        cons = (LinearConstraint(a, lb, ub),) if a.shape[0] else ()
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
        return np.round(res.x)


def audit(model: Model, solver: _Solver, where: str, cap: int) -> list[Exposure]:
    """Every target of ``model`` narrowed below its required width (see the module docstring).
    ``cap`` stands in for "no upper bound" (a suppressed count): larger than any true count, so
    every true world stays in the model and a tighter bound only makes the reader stronger."""
    if not model.targets:
        return []
    names = sorted({v for coeffs, _, _ in model.rows for v in coeffs} | set(model.targets))
    index = {v: j for j, v in enumerate(names)}
    n = len(names)
    lo = np.array([model.lo.get(v, 0) for v in names], dtype=float)
    hi = np.array([model.hi.get(v, cap) for v in names], dtype=float)
    hi[hi < 0] = cap
    d = index.get(DELTA, -1)
    if d >= 0:
        lo[d], hi[d] = 0, cap
    data, ri, ci = [], [], []
    for i, (coeffs, _, _) in enumerate(model.rows):
        for v, c in coeffs.items():
            data.append(c)
            ri.append(i)
            ci.append(index[v])
    a = csr_array((np.array(data, dtype=float), (ri, ci)), shape=(len(model.rows), n))
    lb = np.array([r[1] for r in model.rows], dtype=float)
    ub = np.array([r[2] for r in model.rows], dtype=float)
    truth = np.array([model.truth.get(v, np.nan) for v in names])

    if d >= 0:
        # The reader's delta: the smallest with which both releases are consistent. A lower
        # bound from the rows whose counts are all fixed first; if that is feasible it is it.
        fixed = lo == hi
        exact_rows = [
            i
            for i, (coeffs, _, _) in enumerate(model.rows)
            if DELTA in coeffs and all(fixed[index[v]] for v in coeffs if v != DELTA)
        ]
        guess = 0
        for i in exact_rows:
            coeffs = model.rows[i][0]
            guess = max(guess, abs(sum(c * lo[index[v]] for v, c in coeffs.items() if v != DELTA)))
        lo[d] = hi[d] = guess
        t = truth.copy()
        t[d] = guess
        if not _fits(a, lb, ub, lo, hi, t):
            cost = np.zeros(n)
            cost[d] = 1
            lo[d], hi[d] = 0, cap
            world = solver.milp(cost, a, lb, ub, lo, hi)
            if world is None:
                raise DisclosureError("internal: the two releases have no common world")
            lo[d] = hi[d] = world[d]
        truth[d] = lo[d]

    # Parts over the free counts; fixed ones become constants.
    free = lo != hi
    const = a @ np.where(free, 0.0, lo)
    free_cols = np.flatnonzero(free)
    af = a[:, free_cols].tocsr()
    live_rows = np.flatnonzero(np.diff(af.indptr) > 0)
    m = a.shape[0]
    coo = af.tocoo()
    graph = csr_array(
        (np.ones(len(coo.row)), (coo.row, coo.col + m)),
        shape=(m + len(free_cols), m + len(free_cols)),
    )
    _, labels = connected_components(graph, directed=False)
    col_label = {int(c): int(labels[m + k]) for k, c in enumerate(free_cols)}
    out: list[Exposure] = []
    want: dict[int, list[int]] = defaultdict(list)  # part -> target columns
    for t, need in model.targets.items():
        j = index[t]
        if not free[j]:
            if need > 1:
                out.append(Exposure(where, t, int(lo[j]), int(hi[j]), need))
            continue
        want[col_label[j]].append(j)
    if not want:
        return out
    parts = set(want)
    cols = np.array([c for c in free_cols if col_label[int(c)] in parts], dtype=int)
    rows = np.array([r for r in live_rows if labels[r] in parts], dtype=int)
    sub = af[rows][:, np.searchsorted(free_cols, cols)] if len(rows) else csr_array((0, len(cols)))
    slb, sub_ub = lb[rows] - const[rows], ub[rows] - const[rows]
    slo, shi = lo[cols], hi[cols]
    pos = {int(c): k for k, c in enumerate(cols)}
    targets = [j for js in want.values() for j in js]
    seen: dict[int, set[int]] = {j: set() for j in targets}
    known_truth = not np.isnan(truth[cols]).any()
    worlds: list[np.ndarray] = []
    if known_truth:
        worlds.append(truth[cols])
    # two worlds for every part at once: push the protected counts apart, signed alternately
    sign = np.zeros(len(cols))
    for k, j in enumerate(sorted(targets)):
        sign[pos[j]] = 1 if k % 2 else -1
    for s in (sign, -sign):
        w = solver.milp(s, sub, slb, sub_ub, slo, shi)
        if w is None:
            raise DisclosureError("internal: the released counts have no world")
        worlds.append(w)
    for w in worlds:
        for j in targets:
            seen[j].add(int(w[pos[j]]))
    # the few left: their own bounds, on their own part
    part_cols: dict[int, np.ndarray] = {}
    for j in sorted(targets):
        need = model.targets[names[j]]
        if len(seen[j]) >= need:
            continue
        lab = col_label[j]
        if lab not in part_cols:
            part_cols[lab] = np.array([k for k, c in enumerate(cols) if col_label[int(c)] == lab])
        pc = part_cols[lab]
        prow = np.array([k for k, r in enumerate(rows) if labels[r] == lab], dtype=int)
        psub = sub[prow][:, pc] if len(prow) else csr_array((0, len(pc)))
        at = int(np.flatnonzero(pc == pos[j])[0])
        bounds = []
        for s in (1.0, -1.0):
            c = np.zeros(len(pc))
            c[at] = s
            w = solver.milp(c, psub, slb[prow], sub_ub[prow], slo[pc], shi[pc])
            if w is None:
                raise DisclosureError("internal: the released counts have no world")
            bounds.append(int(w[at]))
            for k, jj in enumerate(cols[pc]):
                if int(jj) in seen:
                    seen[int(jj)].add(int(w[k]))
        if bounds[1] - bounds[0] + 1 < need:
            out.append(Exposure(where, names[j], bounds[0], bounds[1], need))
    return out


def _fits(
    a: csr_array, lb: np.ndarray, ub: np.ndarray, lo: np.ndarray, hi: np.ndarray, x: np.ndarray
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


def _candidates(model: Model, start: Var, cells: Sequence[Cell], skip: set[Withheld]) -> list:
    """Released non-zero counts of the new submission near ``start`` in the model's relations:
    by distance (relations crossed), then the smaller released value, then the key."""
    released = {
        (0, c.indicator, (c.stratum.age_band, c.stratum.sex), k): getattr(c, k)
        for c in cells
        for k in COUNT_KINDS
        if getattr(c, k).status in ("rounded", "exact") and getattr(c, k).value
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
    while frontier and len(found) < 8:
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
                    if w in released and (w[1], w[2], w[3]) not in skip:
                        found.append((dist[w], released[w].value or 0, w))
        frontier = nxt
    found.sort()
    return [(w[1], w[2], w[3]) for _, _, w in found]


# --- the guard --------------------------------------------------------------------------------


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
    ``guard.max_withheld`` counts would be withheld, and (in agent.release) when it cannot run.
    """
    guard = guard or GuardPolicy()
    t0 = time.perf_counter()
    solver = _Solver()
    small = suppression_threshold(policy.stratified)
    truth0 = {(0, r.indicator, r.stratum, k): r.count(k) for r in raw for k in COUNT_KINDS}
    cap = 2 * max(truth0.values(), default=0) + 10
    links = latest_linked(period, history)
    releaser = _Releaser(raw, policy)
    withheld: set[Withheld] = set()
    raw_keys = {(r.indicator, r.stratum) for r in raw}
    for e in links:
        if linked(period, e.period) == "same":  # sticky suppression in a correction
            for c in e.cells:
                s = (c.stratum.age_band, c.stratum.sex)
                for k in COUNT_KINDS:
                    if getattr(c, k).status == "suppressed" and (c.indicator, s) in raw_keys:
                        withheld.add((c.indicator, s, k))
    cells = releaser.release(withheld, {w[0] for w in withheld})
    for e in links:
        cap = max(
            cap,
            2 * max((getattr(c, k).value or 0 for c in e.cells for k in COUNT_KINDS), default=0)
            + 10,
        )
    ids = identities_for(catalogue, cells)
    earlier = []
    for e in links:
        eids = identities_for(catalogue, e.cells, e.versions or None)
        known: dict[Var, int] | None = None
        if e.raw is not None:
            known = {(1, r.indicator, r.stratum, k): r.count(k) for r in e.raw for k in COUNT_KINDS}
            m = Model()
            m.add_release(1, e.cells, policy)
            if any(
                v not in known or not m.lo[v] <= known[v] <= (m.hi[v] if m.hi[v] >= 0 else cap)
                for v in m.lo
            ):
                known = None  # the data changed since: do not lean on the recomputed counts
        earlier.append((e, eids, known))
    excused: set[tuple[str, Var]] = set()  # earlier counts already pinned by that release alone

    def models(cells: Sequence[Cell]) -> list[tuple[str, Model]]:
        out = []
        m = Model(truth=truth0)
        m.add_release(0, cells, policy)
        m.rows = list(_relation_rows(0, cells, ids))
        _targets_new(m, cells, guard.suppressed_width, guard.rounded_width)
        out.append(("this submission", m))
        for e, eids, known in earlier:
            mp = Model(truth={**truth0, **(known or {})})
            mp.add_release(0, cells, policy)
            mp.add_release(1, e.cells, policy)
            mp.rows = [
                *_relation_rows(0, cells, ids),
                *_relation_rows(1, e.cells, eids),
                *_link_rows(cells, e.cells, zeros=linked(period, e.period) == "same"),
            ]
            _targets_new(mp, cells, guard.linked_width, 1)
            for c in e.cells:
                for k in COUNT_KINDS:
                    v = (1, c.indicator, (c.stratum.age_band, c.stratum.sex), k)
                    if getattr(c, k).status != "suppressed" or (f"with {e.label}", v) in excused:
                        continue
                    if known is None or 1 <= known.get(v, 0) <= small:
                        mp.targets[v] = guard.linked_width
            out.append((f"with {e.label}", mp))
        return out

    def _targets_new(m: Model, cells: Sequence[Cell], width: int, rounded: int) -> None:
        for c in cells:
            s = (c.stratum.age_band, c.stratum.sex)
            for k in COUNT_KINDS:
                v = (0, c.indicator, s, k)
                status = getattr(c, k).status
                if status == "suppressed" and 1 <= truth0[v] <= small:
                    m.targets[v] = width
                elif status == "rounded" and rounded > 1:
                    m.targets[v] = rounded

    held: str | None = None
    while held is None:
        found: list[tuple[Exposure, Model]] = []
        for where, m in models(cells):
            exposed = audit(m, solver, where, cap)
            # an earlier count that the earlier release alone already pins cannot be undone
            for x in [x for x in exposed if x.var[0] == 1]:
                alone = Model()
                e = next(e for e in earlier if f"with {e[0].label}" == where)
                alone.add_release(1, e[0].cells, policy)
                alone.rows = list(_relation_rows(1, e[0].cells, e[1]))
                alone.targets[x.var] = x.required
                if audit(alone, solver, where, cap):
                    excused.add((where, x.var))
                    exposed.remove(x)
            found += [(x, m) for x in exposed]
            if found:
                break
        if not found:
            break
        chosen: set[Withheld] = set()
        for x, m in found:
            cands = _candidates(m, x.var, cells, withheld)
            if any(c in chosen for c in cands):
                continue  # a count withheld for another exposure this round is near it too
            if not cands:
                held = (
                    f"{x.reason()}, and nothing left in this submission relates to it; approve "
                    "only if that is acceptable"
                )
                break
            chosen.add(cands[0])
        if held is not None:
            break
        if len(withheld) + len(chosen) > guard.max_withheld:
            held = (
                f"the disclosure guard would withhold more than {guard.max_withheld} counts and "
                f"one is still exposed ({found[0][0].reason()}); check it before approving"
            )
            break
        withheld |= chosen
        cells = releaser.release(withheld, {w[0] for w in chosen})
    return GuardResult(
        cells=cells,
        withheld=tuple(sorted(withheld)),
        held_reason=held,
        linked_releases=tuple(e.label for e in links),
        seconds=time.perf_counter() - t0,
        solves=solver.solves,
    )
