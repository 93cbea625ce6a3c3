"""The disclosure property of issue 2: no suppressed value can be recovered from the other released
cells of the same submission.

The attacker knows every released cell, what each status means (:func:`feasible_range`: an
interval for a rounded value, at least 1 for a suppressed one), and the relations: strata add up
to their total (denominator, numerator, exclusions), ``numerator <= denominator`` in every cell,
and identical denominators for indicators that share a population. A suppressed value is
recovered when exactly one value is consistent with all of that.

The solver: for each suppressed value, an integer linear program (scipy's HiGHS) looks for the
smallest and the largest value consistent with everything released. It is only a search: a
value counts as protected when the search returns a second world that plain Python checks,
constraint by constraint, and whose value differs from the true one. Every world, the true one
included, goes through the same check. A stronger attacker who knows every released count
exactly (no rounding uncertainty) is run too.

Separately, on tiny submissions, the strongest attacker of all: one who also knows the
algorithm, enumerating every raw input in a box and grouping them by what apply_policy releases.

Derandomised with modest examples; FEDQI_LONG=1 runs many more.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, milp

from protocol.catalogue import CountRule, DisclosurePolicy
from protocol.disclosure import (
    COUNT_KINDS,
    TOTAL,
    RawCell,
    apply_policy,
    check_cells,
    feasible_range,
    is_small_population,
    small_population_possible,
    suppression_threshold,
)
from protocol.submission import Cell, Count

LONG = os.environ.get("FEDQI_LONG") == "1"
PROPERTY = settings(max_examples=1500 if LONG else 60, derandomize=True, deadline=None)
BIG = 100_000  # stands in for "no upper bound" on a suppressed value

DEFAULT = DisclosurePolicy(name="default")

Var = tuple[str, str, tuple[str, str]]  # (indicator, count kind, stratum)


# --- the attacker --------------------------------------------------------------------------------


@dataclass
class Knowledge:
    """Everything the attacker knows, as integer bounds and linear relations."""

    names: list[Var]
    lo: list[int]
    hi: list[int]
    sums: list[tuple[int, list[int]]]  # total index, strata indices
    leq: list[tuple[int, int]]  # (numerator index, denominator index)
    equal: list[tuple[int, int]]  # shared denominators
    # Indicators whose cells may come from a small population: (denominator total index, the
    # indices of its suppressed numerators, the threshold T). Either the population is small
    # (denominator total at most T, those numerators 0 or more) or it is not (denominator total
    # above T, those numerators at least 1): the disjunction is exact, with one binary each.
    small: list[tuple[int, list[int], int]] = dataclasses.field(default_factory=list)

    def consistent(self, world: Sequence[int]) -> list[str]:
        """Every constraint the integer ``world`` breaks (plain Python, no solver)."""
        broken = [
            f"{self.names[i]}={v} outside {self.lo[i]}..{self.hi[i]}"
            for i, v in enumerate(world)
            if not self.lo[i] <= v <= self.hi[i]
        ]
        broken += [
            f"sum at {self.names[t]}" for t, s in self.sums if world[t] != sum(world[j] for j in s)
        ]
        broken += [f"{self.names[n]} > denominator" for n, d in self.leq if world[n] > world[d]]
        broken += [
            f"{self.names[a]} != {self.names[b]}" for a, b in self.equal if world[a] != world[b]
        ]
        broken += [
            f"{self.names[d]}: neither a small population nor a larger one"
            for d, nums, t in self.small
            if world[d] > t and (min(world[j] for j in nums) < 1 if nums else False)
        ]
        return broken

    def _extreme(self, target: int, sign: int) -> list[int] | None:
        n = len(self.names)
        rows: list[np.ndarray] = []
        lbs: list[float] = []
        ubs: list[float] = []

        def row(coeffs: dict[int, int], lb: float, ub: float) -> None:
            r = np.zeros(n)
            for j, c in coeffs.items():
                r[j] += c
            rows.append(r)
            lbs.append(lb)
            ubs.append(ub)

        for t, s in self.sums:
            row({t: 1, **{j: -1 for j in s}}, 0, 0)
        for num, den in self.leq:
            row({num: 1, den: -1}, -np.inf, 0)
        for a, b in self.equal:
            row({a: 1, b: -1}, 0, 0)
        # One binary per possible small population (column n + i, 1 = small):
        # den <= T + BIG (1 - b), den >= (T + 1)(1 - b), and each numerator >= 1 - b.
        width = n + len(self.small)
        rows = [np.concatenate([r, np.zeros(len(self.small))]) for r in rows]
        for i, (d, nums, t) in enumerate(self.small):
            r = np.zeros(width)
            r[d], r[n + i] = 1, BIG
            rows.append(r)
            lbs.append(-np.inf)
            ubs.append(t + BIG)
            r = np.zeros(width)
            r[d], r[n + i] = 1, t + 1
            rows.append(r)
            lbs.append(t + 1)
            ubs.append(np.inf)
            for j in nums:
                r = np.zeros(width)
                r[j], r[n + i] = 1, 1
                rows.append(r)
                lbs.append(1)
                ubs.append(np.inf)
        c = np.zeros(width)
        c[target] = sign
        res = milp(
            c,
            constraints=LinearConstraint(np.array(rows), lbs, ubs) if rows else (),
            integrality=np.ones(width),
            bounds=Bounds(self.lo + [0] * len(self.small), self.hi + [1] * len(self.small)),
        )
        if res.x is None:
            return None
        return [round(v) for v in res.x[:n]]

    def alternative(self, target: int, truth: Sequence[int]) -> list[int] | None:
        """A checked world consistent with everything known, differing from ``truth`` at
        ``target``; None if the solver finds none (the value is recovered)."""
        for sign in (1, -1):
            world = self._extreme(target, sign)
            if world is not None and not self.consistent(world) and world[target] != truth[target]:
                return world
        return None


def knowledge(
    cells: Sequence[Cell],
    policy: DisclosurePolicy,
    shared: Sequence[Sequence[str]],
    truth: dict[Var, int],
    *,
    exact_released: bool = False,
) -> tuple[Knowledge, list[int]]:
    """What a reader of ``cells`` knows; ``shared`` lists groups of indicators known to share a
    denominator. Returns it with the true world in the same variable order."""
    names: list[Var] = []
    lo: list[int] = []
    hi: list[int] = []
    index: dict[Var, int] = {}
    maybe_small = _maybe_small(cells, policy)
    for cell in cells:
        stratum = (cell.stratum.age_band, cell.stratum.sex)
        rule = policy.totals if stratum == TOTAL else policy.stratified
        for kind in COUNT_KINDS:
            count = getattr(cell, kind)
            # a stratum's exclusions under a totals-only layout: suppressed whatever it is, 0 too
            hidden = kind == "exclusions" and stratum != TOTAL and not policy.exclusions_by_stratum
            # a numerator of a possibly small population: 0 or more (the disjunction below)
            hidden = hidden or (kind == "numerator" and cell.indicator in maybe_small)
            a, b = feasible_range(count, rule, may_be_zero=hidden)
            var = (cell.indicator, kind, stratum)
            if exact_released and count.status != "suppressed":
                a = b = truth[var]
            index[var] = len(names)
            names.append(var)
            lo.append(a)
            hi.append(BIG if b is None else b)
    sums: list[tuple[int, list[int]]] = []
    leq: list[tuple[int, int]] = []
    equal: list[tuple[int, int]] = []
    indicators = sorted({c.indicator for c in cells})
    for ind in indicators:
        strata = sorted({v[2] for v in names if v[0] == ind and v[2] != TOTAL})
        for kind in COUNT_KINDS:
            if strata:
                sums.append((index[(ind, kind, TOTAL)], [index[(ind, kind, s)] for s in strata]))
        for s in [TOTAL, *strata]:
            leq.append((index[(ind, "numerator", s)], index[(ind, "denominator", s)]))
    for group in shared:
        for a, b in itertools.pairwise(group):
            for s in {v[2] for v in names if v[0] == a}:
                equal.append((index[(a, "denominator", s)], index[(b, "denominator", s)]))
    t = suppression_threshold(policy.stratified)
    small = [
        (
            index[(ind, "denominator", TOTAL)],
            [
                index[(ind, "numerator", s)]
                for s in sorted({v[2] for v in names if v[0] == ind})
                if released[(ind, s)].numerator.status == "suppressed"
            ],
            t,
        )
        for ind in sorted(maybe_small)
        for released in [{(c.indicator, (c.stratum.age_band, c.stratum.sex)): c for c in cells}]
    ]
    know = Knowledge(names, lo, hi, sums, leq, equal, small)
    return know, [truth[v] for v in names]


def _maybe_small(cells: Sequence[Cell], policy: DisclosurePolicy) -> set[str]:
    """Indicators whose released cells may come from a small population."""
    by_ind: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        by_ind[c.indicator].append(c)
    out = set()
    for ind, group in by_ind.items():
        total = [c for c in group if c.stratum.is_total]
        strata = [c for c in group if not c.stratum.is_total]
        if total and small_population_possible(total[0], strata, policy):
            out.add(ind)
    return out


def recovered(
    raw: Sequence[RawCell],
    cells: Sequence[Cell],
    policy: DisclosurePolicy,
    shared: Sequence[Sequence[str]],
    *,
    exact_released: bool = False,
) -> dict[Var, int]:
    """The suppressed values the attacker pins down, with their (true) value."""
    truth: dict[Var, int] = {}
    for r in raw:
        for kind in COUNT_KINDS:
            truth[(r.indicator, kind, (r.age_band, r.sex))] = r.count(kind)
    know, world = knowledge(cells, policy, shared, truth, exact_released=exact_released)
    assert know.consistent(world) == [], "the true world must fit what is released"
    tiny = {
        r.indicator
        for r in raw
        if r.stratum == TOTAL
        and is_small_population(
            r.denominator,
            any(x.indicator == r.indicator and x.stratum != TOTAL for x in raw),
            policy,
        )
    }
    pinned: dict[Var, int] = {}
    for cell in cells:
        for kind in COUNT_KINDS:
            if getattr(cell, kind).status == "suppressed":
                j = know.names.index(
                    (cell.indicator, kind, (cell.stratum.age_band, cell.stratum.sex))
                )
                # a hidden 0 (a stratum's exclusions under a totals-only layout) is not
                # protected: the other layout releases it as a zero; a small population's zero
                # numerator is (it would tell that none of its few patients meets the indicator)
                protect = world[j] or (kind == "numerator" and cell.indicator in tiny)
                if protect and know.alternative(j, world) is None:
                    pinned[know.names[j]] = world[j]
    return pinned


# --- random small submissions --------------------------------------------------------------------

SEXES = ("F", "M", "U")
LAYOUTS = (
    [("all", s) for s in SEXES],
    [(b, s) for b in ("0-39", "40+") for s in SEXES],
    [(b, "all") for b in ("0-17", "18-64", "65+")],
    [],
)
POLICIES = (
    DEFAULT,
    DisclosurePolicy(name="tight", stratified=CountRule(suppress_at_or_below=10, round_to=10)),
    DisclosurePolicy(name="exact-strata", stratified=CountRule(suppress_at_or_below=5, round_to=1)),
    DisclosurePolicy(
        name="rounded-totals",
        stratified=CountRule(suppress_at_or_below=3, round_to=3),
        totals=CountRule(suppress_at_or_below=2, round_to=5),
    ),
    DisclosurePolicy(name="low", stratified=CountRule(suppress_at_or_below=1, round_to=2)),
    DisclosurePolicy(name="totals-only", exclusions_by_stratum=False),
    DisclosurePolicy(
        name="totals-only-tight",
        stratified=CountRule(suppress_at_or_below=10, round_to=10),
        totals=CountRule(suppress_at_or_below=2, round_to=5),
        exclusions_by_stratum=False,
    ),
)

small = st.one_of(st.integers(0, 3), st.integers(0, 10), st.integers(0, 10), st.integers(8, 40))


@st.composite
def submissions(draw: st.DrawFn) -> tuple[list[RawCell], list[list[str]], DisclosurePolicy]:
    policy = draw(st.sampled_from(POLICIES))
    raw: list[RawCell] = []
    shared: list[list[str]] = []
    n_classes = draw(st.integers(1, 2))
    ind_no = 0
    for _ in range(n_classes):
        layout = draw(st.sampled_from(LAYOUTS)) or [TOTAL]
        dens = [draw(small) for _ in layout]
        members = []
        for _ in range(draw(st.integers(1, 2))):
            ind = f"I{ind_no}"
            ind_no += 1
            members.append(ind)
            nums = [draw(st.one_of(st.just(d), st.just(0), st.integers(0, d))) for d in dens]
            excs = [draw(small) for _ in dens]
            rows = list(zip(layout, dens, nums, excs, strict=True))
            if layout != [TOTAL]:
                rows.append((TOTAL, sum(dens), sum(nums), sum(excs)))
            raw += [RawCell(ind, b, s, d, n, e) for (b, s), d, n, e in rows]
        shared.append(members)
    return raw, shared, policy


@PROPERTY
@given(submissions())
def test_no_suppressed_value_can_be_recovered(sub: tuple) -> None:
    raw, shared, policy = sub
    cells = apply_policy(raw, policy)
    assert recovered(raw, cells, policy, shared) == {}


@PROPERTY
@given(submissions())
def test_not_even_knowing_every_released_count_exactly(sub: tuple) -> None:
    raw, shared, policy = sub
    cells = apply_policy(raw, policy)
    assert recovered(raw, cells, policy, shared, exact_released=True) == {}


@PROPERTY
@given(submissions())
def test_check_cells_accepts_apply_policys_own_output(sub: tuple) -> None:
    raw, shared, policy = sub
    cells = apply_policy(raw, policy)
    check_cells(cells, policy)
    if policy.name == "tight":  # tightens the default: the network's check accepts it too
        check_cells(cells, DEFAULT)
    # Shared denominators are released identically.
    by_key = {c.key: c for c in cells}
    for group in shared:
        for a, b in itertools.pairwise(group):
            for (ind, band, sex), c in by_key.items():
                if ind == a:
                    assert c.denominator == by_key[(b, band, sex)].denominator


# --- the attacker is not toothless ---------------------------------------------------------------

PRIMARY_ONLY = DEFAULT.model_copy(update={"secondary_suppression": False})


def rows_to_raw(ind: str, rows: list[tuple[str, int, int, int]]) -> list[RawCell]:
    return [RawCell(ind, "all", s, d, n, e) for s, d, n, e in rows]


def test_attacker_recovers_a_lone_suppressed_stratum_by_subtraction() -> None:
    raw = rows_to_raw("IND", [("all", 60, 0, 0), ("F", 3, 0, 0), ("M", 40, 0, 0), ("U", 17, 0, 0)])
    pinned = recovered(raw, apply_policy(raw, PRIMARY_ONLY), PRIMARY_ONLY, [["IND"]])
    # Rounding M and U leaves F in 1..7 under intervals, but the exact-knowledge attacker pins it.
    assert pinned == {}
    pinned = recovered(
        raw, apply_policy(raw, PRIMARY_ONLY), PRIMARY_ONLY, [["IND"]], exact_released=True
    )
    assert pinned == {("IND", "denominator", ("all", "F")): 3}
    raw = rows_to_raw("IND", [("all", 3, 0, 0), ("F", 3, 0, 0), ("M", 0, 0, 0), ("U", 0, 0, 0)])
    pinned = recovered(raw, apply_policy(raw, PRIMARY_ONLY), PRIMARY_ONLY, [["IND"]])
    assert pinned == {("IND", "denominator", ("all", "F")): 3}


def test_attacker_uses_numerator_within_denominator() -> None:
    # D_F = 20 - D_M and D_M >= N_M = 17 (exact from the numerator total): D_F <= 3, and
    # D_M <= 17 from its rounding interval 13..17: D_F >= 3.
    raw = rows_to_raw("IND", [("all", 20, 17, 0), ("F", 3, 0, 0), ("M", 17, 17, 0), ("U", 0, 0, 0)])
    cells = apply_policy(raw, PRIMARY_ONLY)
    assert recovered(raw, cells, PRIMARY_ONLY, [["IND"]]) == {
        ("IND", "denominator", ("all", "F")): 3
    }
    # Without the numerator relation (numerator total withheld) the same denominator is safe.
    no_num = [
        dataclasses.replace(c, numerator=Count(status="suppressed"))
        if c.stratum.sex == "M" or c.stratum.is_total
        else c
        for c in cells
    ]
    assert ("IND", "denominator", ("all", "F")) not in recovered(
        raw, no_num, PRIMARY_ONLY, [["IND"]]
    )
    cells = apply_policy(raw, DEFAULT)
    assert recovered(raw, cells, DEFAULT, [["IND"]]) == {}


def test_attacker_uses_shared_denominators() -> None:
    # Released inconsistently (A suppresses F and U, B releases them): B gives A's F away.
    raw = rows_to_raw("AA", [("all", 20, 0, 0), ("F", 3, 0, 0), ("M", 0, 0, 0), ("U", 17, 0, 0)])
    raw += rows_to_raw("BB", [("all", 20, 0, 0), ("F", 3, 0, 0), ("M", 0, 0, 0), ("U", 17, 0, 0)])
    cells = list(apply_policy(raw, DEFAULT))
    assert recovered(raw, cells, DEFAULT, [["AA", "BB"]]) == {}
    leaky = DEFAULT.model_copy(update={"stratified": CountRule(suppress_at_or_below=0, round_to=1)})
    b_exact = [c for c in apply_policy(raw, leaky) if c.indicator == "BB"]
    mixed = [c for c in cells if c.indicator == "AA"] + b_exact
    pinned = recovered(raw, mixed, DEFAULT, [["AA", "BB"]])
    assert pinned[("AA", "denominator", ("all", "F"))] == 3
    # Not knowing that they share a denominator, the attacker learns nothing about A.
    assert recovered(raw, mixed, DEFAULT, [["AA"], ["BB"]]) == {}


def test_knowledge_check_catches_a_broken_world() -> None:
    raw = rows_to_raw("IND", [("all", 20, 5, 0), ("F", 3, 1, 0), ("M", 17, 4, 0), ("U", 0, 0, 0)])
    cells = apply_policy(raw, DEFAULT)
    truth = {(r.indicator, k, (r.age_band, r.sex)): r.count(k) for r in raw for k in COUNT_KINDS}
    know, world = knowledge(cells, DEFAULT, [["IND"]], truth)
    assert know.consistent(world) == []
    f_num = know.names.index(("IND", "numerator", ("all", "F")))
    f_den = know.names.index(("IND", "denominator", ("all", "F")))
    broken = list(world)
    broken[f_num] = broken[f_den] + 1
    assert any("> denominator" in b for b in know.consistent(broken))


# --- a reader who also knows the algorithm (exhaustive, tiny boxes) -----------------------------
#
# Such a reader can rule out raw inputs that apply_policy would have released differently (e.g.
# "this complement was the smallest released stratum"). The witness rules do not protect against
# that in general (docs/disclosure.md, "Limits"); the small-population rule does for indicators
# whose whole-practice denominator is at most the threshold, which is what these tests show.


def algorithm_aware_pins(
    worlds: list[list[RawCell]], policy: DisclosurePolicy, max_total: int
) -> list[str]:
    """Group every raw input by what apply_policy releases; for each group holding an input whose
    totals are all at most ``max_total``, every suppressed value must differ within the group.

    Only the inputs in the box are enumerated (a subset of those a reader must consider), so a
    pass is conclusive for the inputs checked; the box must hold every input with the same
    totals, so its edge is no knowledge for them."""
    groups: dict[tuple[Cell, ...], list[list[RawCell]]] = defaultdict(list)
    for raw in worlds:
        groups[apply_policy(raw, policy)].append(sorted(raw, key=lambda r: r.key))
    pins: list[str] = []
    checked = 0
    for released, members in groups.items():
        small = [
            m for m in members
            if all(max(r.denominator, r.exclusions) <= max_total for r in m if r.stratum == TOTAL)
        ]  # fmt: skip
        if not small:
            continue
        checked += len(small)
        for i, cell in enumerate(released):
            for kind in COUNT_KINDS:
                suppressed = getattr(cell, kind).status == "suppressed"
                if suppressed and len({m[i].count(kind) for m in members}) < 2:
                    pins.append(f"{cell.key} {kind} pinned in {small[0]}")
    assert checked >= 50, "too few inputs checked to mean anything"
    return pins


def one_indicator(ind: str, strata: Sequence[tuple[int, int, int]]) -> list[RawCell]:
    sexes = SEXES[: len(strata)]
    raw = [RawCell(ind, "all", s, d, n, e) for s, (d, n, e) in zip(sexes, strata, strict=True)]
    tot = [sum(x[i] for x in strata) for i in range(3)]
    return [RawCell(ind, "all", "all", *tot), *raw]


SMALL_POLICIES = [DEFAULT, POLICIES[1]]  # default (7 / 5) and "tight" (10 / 10)


@pytest.mark.parametrize("policy", SMALL_POLICIES, ids=lambda p: p.name)
def test_algorithm_aware_reader_learns_no_value_of_a_tiny_population(
    policy: DisclosurePolicy,
) -> None:
    t = policy.stratified.suppress_at_or_below
    box = 2 * t if LONG else t + 1
    # Three strata, denominators and numerators.
    worlds = [
        one_indicator("IND", [(d, n, 0) for d, n in zip(ds, ns, strict=True)])
        for ds in itertools.product(range(box + 1), repeat=3)
        if sum(ds) <= box
        for ns in itertools.product(*[range(d + 1) for d in ds])
    ]
    assert algorithm_aware_pins(worlds, policy, max_total=t) == []


def test_algorithm_aware_reader_learns_no_value_of_a_tiny_shared_population() -> None:
    t = DEFAULT.stratified.suppress_at_or_below
    box = t + 1
    triples = [(d, a, b) for d in range(box + 1) for a in range(d + 1) for b in range(d + 1)]
    worlds = [
        one_indicator("AA", [(f[0], f[1], 0), (m[0], m[1], 0)])
        + one_indicator("BB", [(f[0], f[2], 0), (m[0], m[2], 0)])
        for f, m in itertools.product(triples, repeat=2)
        if f[0] + m[0] <= box
    ]
    assert algorithm_aware_pins(worlds, DEFAULT, max_total=t) == []


def test_small_population_rule_is_what_protects_tiny_totals() -> None:
    # 1 + 1 + 0 = 2: suppressing the total only because the strata are all ones would tell.
    raw = one_indicator("IND", [(1, 0, 0), (1, 0, 0), (0, 0, 0)])
    cells = {c.key: c for c in apply_policy(raw, DEFAULT)}
    assert cells[("IND", "all", "all")].denominator.status == "suppressed"
    raw = one_indicator("IND", [(1, 0, 0), (2, 0, 0), (0, 0, 0)])
    cells = {c.key: c for c in apply_policy(raw, DEFAULT)}
    assert cells[("IND", "all", "all")].denominator.status == "suppressed"


def test_known_limit_algorithm_aware_reader_of_a_larger_population() -> None:
    # docs/disclosure.md, "Limits": F 12, M 12, U 7, total 31. U is suppressed, F is its
    # complement (the smallest released stratum, F before M), M is released as 10. A reader of
    # the statuses alone cannot pin U; one who knows that the complement was the smallest
    # released stratum can (F <= M <= 12 and F + U = 31 - M with U <= 7 leave only 12, 12, 7).
    raw = one_indicator("IND", [(12, 0, 0), (12, 0, 0), (7, 0, 0)])
    cells = apply_policy(raw, DEFAULT)
    assert recovered(raw, cells, DEFAULT, [["IND"]]) == {}
    status = {c.key: c.denominator.status for c in cells}
    assert status == {("IND", "all", "F"): "suppressed", ("IND", "all", "M"): "rounded",
                      ("IND", "all", "U"): "suppressed", ("IND", "all", "all"): "exact"}  # fmt: skip
    box = 31
    worlds = [
        one_indicator("IND", [(f, 0, 0), (m, 0, 0), (31 - f - m, 0, 0)])
        for f in range(box + 1) for m in range(box + 1 - f)
    ]  # fmt: skip
    same = [w for w in worlds if apply_policy(w, DEFAULT) == cells]
    assert {w[3].denominator for w in same} == {7}  # U: the only value consistent


@PROPERTY
@given(submissions(), st.randoms(use_true_random=False))
def test_secondary_suppression_only_withholds_more_and_ignores_input_order(sub: tuple, rnd) -> None:
    raw, _, policy = sub
    cells = apply_policy(raw, policy)
    shuffled = list(raw)
    rnd.shuffle(shuffled)
    assert apply_policy(shuffled, policy) == cells
    primary = apply_policy(raw, policy.model_copy(update={"secondary_suppression": False}))
    for with_secondary, alone in zip(cells, primary, strict=True):
        for kind in COUNT_KINDS:
            a, b = getattr(with_secondary, kind), getattr(alone, kind)
            # a zero is suppressed only as a small population's numerator
            tiny = kind == "numerator" and with_secondary.denominator.status != "zero"
            assert a == b or (a.status == "suppressed" and (b.status != "zero" or tiny))
