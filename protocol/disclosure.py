"""Disclosure control: from a practice's exact local counts to cells it may release.

Everything that leaves a practice passes through :func:`apply_policy`; the aggregator rejects a
payload that :func:`check_cells` does not accept. Pure: no I/O, no clock.

Primary rules (per count, under the policy's ``stratified`` rule, or ``totals`` for the
whole-practice cell ``("all", "all")``):

* 0 is released as status ``zero`` (a true zero: never rounded, and suppressed only as a small
  population's numerator or a stratum's exclusions under a totals-only layout, below).
* 1..``suppress_at_or_below`` is ``suppressed`` (no value); so is anything that would round to
  0 (a policy whose ``round_to`` is more than twice its threshold), so ``zero`` always means 0.
* Anything larger is rounded to the nearest ``round_to``, halves up (status ``rounded``), or
  released as it is when ``round_to == 1`` (status ``exact``). A count ``v`` released as ``r``
  under ``round_to = k`` satisfies ``r - k//2 <= v <= r + (k-1)//2`` (and ``v`` is above the
  threshold): :func:`feasible_range`.

Secondary suppression (``secondary_suppression=True``, the default). A reader knows the
relations between the cells of one submission:

1. the strata of an indicator partition its total, separately for the denominator, the
   numerator and the exclusions (``total = sum(strata)``);
2. in every cell ``numerator <= denominator``;
3. indicators with the same population rule have identical denominators in every stratum.

A suppressed value is *protected* when a second world exists that differs from the true one in
that value and releases exactly the same cells. :func:`apply_policy` proves this for every
suppressed value by exhibiting the second world: a *witness*, a move of +1/-1 on the suppressed
value, balanced by +1/-1 on other suppressed values so that every partition still adds up
(a stratum against another suppressed stratum of the same group, or a stratum together with a
suppressed total), every suppressed value stays at least 1 (a suppressed count is never a zero),
and ``numerator <= denominator`` still holds in every cell of every indicator concerned. A
numerator move may carry its denominator with it (both +1) where the denominator is suppressed.
Witnesses move only suppressed values, so the protection does not lean on rounding: it holds even
for a reader who knew every released count exactly.

Where a suppressed value has no witness, one more value is suppressed and every value is checked
again (adding suppression never removes a witness, so this ends). The choice is deterministic:

* first, the smallest released non-zero stratum of the same group (ties by stratum key) whose
  suppression gives the value a witness (a complementary suppression);
* failing that, escalate in a fixed order: the group's total; for a numerator, its stratum's
  denominator, then the denominator total (then, for a numerator total, the denominators of its
  suppressed strata); for a total with no suppressed stratum, its smallest released stratum.
  Once everything non-zero of an indicator is suppressed every value has a witness (all +1).

Denominators are treated once per *denominator class*: the indicators of a submission whose
denominators are identical in every stratum. Their denominator cells are decided together (taking
all their numerators into account) and released identically, so a denominator suppressed in one
indicator is never released in another. Exclusions have no released relation to the other counts
and are treated per indicator on their own.

Exclusions as a whole-practice total only (``exclusions_by_stratum=False``, the shipped
catalogues' layout): every stratum's exclusions count is released ``suppressed``, zeros included,
and only the total carries a value (under the ``totals`` rule). Such a count is the one kind of
``suppressed`` count that may be 0: every reader of it (the witness search, :func:`check_cells`,
:func:`count_range`, the guard's models) takes it as 0 or more, not 1..T. A reader of one release
learns only that the strata add up to the total; the guard (below) protects each stratum's count
of 1..T against the linked tables as before, but no longer has a released zero stratum that pins
the one stratum holding a review's few exclusions to the exact total.

Small populations: a stratified indicator whose whole-practice denominator is 1..T (the
stratified threshold) has its denominator and numerator totals suppressed too, whatever the
strata hold, so a suppressed total never says "the strata are all ones". Its numerators are
suppressed zeros included: the total and every stratum whose denominator is not 0 (a stratum
with no patient has a numerator of 0 that says nothing the released zero denominator does not).
A zero numerator over so few patients would tell something about every one of them (none of
them meets the indicator: an attribute disclosure), so here, and only here, a suppressed count
may be a true 0. Such a numerator is the second kind of ``suppressed`` count that may be 0; a
reader who sees the statuses this rule leaves (:func:`small_population_possible`) takes the
suppressed numerators as 0 or more (:func:`count_range` with ``small_population``), and a
witness may take them to 0. (Exclusion totals keep the network's rule: they are not small
populations, just small counts.)

Limits (see docs/disclosure.md): the guarantee is against a reader of the released values and
statuses; a reader who also replays this algorithm over candidate inputs can, in corner cases,
use the choice of complement (e.g. "the smallest released stratum") to pin a value. Only
relations inside one submission are considered; two indicators sharing a population but reported
by different strata (e.g. age x sex and sex only), or one indicator's denominator equal to
another's numerator, are linked tables this does not protect, nor is differencing across periods
or corrections: those are the agent's disclosure guard's (agent/outbound/guard.py, with the identities of
protocol/linkage.py), which names further counts to suppress through ``withhold``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from .canonical import model_bytes, sha256_hex
from .catalogue import CountRule, DisclosurePolicy
from .errors import DisclosureError
from .submission import MAX_COUNT, Cell, Count, SexStratum, Stratum

__all__ = [
    "COUNT_KINDS",
    "TOTAL",
    "RawCell",
    "Withheld",
    "apply_policy",
    "check_cells",
    "is_small_population",
    "check_tightens",
    "count_range",
    "describe_count",
    "exclusions_hidden",
    "feasible_range",
    "policy_sha256",
    "round_half_up",
    "small_population_possible",
    "suppression_threshold",
]

TOTAL = ("all", "all")
CountKind = Literal["denominator", "numerator", "exclusions"]
COUNT_KINDS: tuple[CountKind, ...] = ("denominator", "numerator", "exclusions")

_INDICATOR = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")
_AGE_BAND = re.compile(r"^(all|[0-9]{1,3}(-[0-9]{1,3}|\+))$")
_SEXES = ("all", "F", "M", "U")


# --- raw cells ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawCell:
    """Exact local counts for one indicator in one stratum (never leaves the practice)."""

    indicator: str
    age_band: str
    sex: str
    denominator: int
    numerator: int
    exclusions: int

    def __post_init__(self) -> None:
        where = f"{self.indicator} {self.age_band}/{self.sex}"
        if not isinstance(self.indicator, str) or not _INDICATOR.match(self.indicator):
            raise DisclosureError(f"raw cell: bad indicator id {self.indicator!r}")
        if not isinstance(self.age_band, str) or not _AGE_BAND.match(self.age_band):
            raise DisclosureError(f"raw cell {where}: bad age band {self.age_band!r}")
        if self.sex not in _SEXES:
            raise DisclosureError(f"raw cell {where}: sex must be one of {_SEXES}")
        for kind in COUNT_KINDS:
            value = getattr(self, kind)
            # bool is an int subclass; a True count is a bug upstream, not a 1.
            if not isinstance(value, int) or isinstance(value, bool):
                raise DisclosureError(f"raw cell {where} {kind}: not an integer: {value!r}")
            if not 0 <= value <= MAX_COUNT:
                raise DisclosureError(f"raw cell {where} {kind}: {value} not in 0..{MAX_COUNT}")
        if self.numerator > self.denominator:
            raise DisclosureError(
                f"raw cell {where}: numerator {self.numerator} > denominator {self.denominator}"
            )

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.indicator, self.age_band, self.sex)

    @property
    def stratum(self) -> tuple[str, str]:
        return (self.age_band, self.sex)

    def count(self, kind: CountKind) -> int:
        value: int = getattr(self, kind)
        return value


# --- primary rules -----------------------------------------------------------------------------


def round_half_up(value: int, round_to: int) -> int:
    """``value`` rounded to the nearest multiple of ``round_to``, halves up (12.5 -> 15)."""
    if round_to < 1:
        raise ValueError("round_to must be at least 1")
    return ((value + round_to // 2) // round_to) * round_to


def feasible_range(
    count: Count, rule: CountRule, *, may_be_zero: bool = False
) -> tuple[int, int | None]:
    """Every true count that ``count`` can have been released from under ``rule``, as an
    inclusive range (``None``: no upper bound). What a reader of the cell alone can tell.

    ``rounded`` value ``r`` under ``round_to = k``: ``[max(T+1, r - k//2), r + (k-1)//2]`` with
    ``T`` the threshold (:func:`suppression_threshold`) (halves go up, so ``r - k/2`` rounds to ``r`` for even ``k`` and
    ``r + k/2`` does not). ``suppressed``: at least 1 (secondary suppression withholds counts
    above the threshold too), or at least 0 with ``may_be_zero`` (a stratum's exclusions under a
    policy that releases them as a total only: :func:`count_range`). Raises
    :class:`DisclosureError` when no count fits.
    """
    t, k = suppression_threshold(rule), rule.round_to
    if count.status == "zero":
        return (0, 0)
    if count.status == "suppressed":
        return (0 if may_be_zero else 1, None)
    assert count.value is not None  # Count's validator guarantees it
    v = count.value
    if count.status == "exact":
        lo, hi = v, v
    else:
        lo, hi = max(t + 1, v - k // 2, 1), v + (k - 1) // 2
    if lo > hi:
        raise DisclosureError(f"{count.status} {v} cannot come from any count under {_rule(rule)}")
    return (lo, hi)


def exclusions_hidden(policy: DisclosurePolicy, kind: str, is_total: bool) -> bool:
    """Whether ``policy`` releases this count as ``suppressed`` whatever it is, zeros included:
    a stratum's exclusions under ``exclusions_by_stratum=False``."""
    return kind == "exclusions" and not is_total and not policy.exclusions_by_stratum


def count_range(
    count: Count,
    policy: DisclosurePolicy,
    *,
    kind: str,
    is_total: bool,
    small_population: bool = False,
) -> tuple[int, int | None]:
    """:func:`feasible_range` of a released count under ``policy``: its cell's rule, and 0 or
    more for a stratum's exclusions that the policy releases as a whole-practice total only,
    and for a numerator of an indicator read as a small population (``small_population``: the
    small-population rule suppresses its numerators zeros included;
    :func:`small_population_possible` says when a reader of the cells must allow it)."""
    return feasible_range(
        count,
        _rule_for(policy, is_total),
        may_be_zero=exclusions_hidden(policy, kind, is_total)
        or (small_population and kind == "numerator"),
    )


def is_small_population(den_total: int, has_strata: bool, policy: DisclosurePolicy) -> bool:
    """Whether the small-population rule applies to an indicator whose true whole-practice
    denominator is ``den_total``: it has strata, secondary suppression is on, and the total is
    1..the stratified threshold. Its denominator and numerator totals are then suppressed, and
    its numerators zeros included (the total and every stratum with a denominator above 0)."""
    threshold = suppression_threshold(policy.stratified)
    return has_strata and policy.secondary_suppression and 1 <= den_total <= threshold


def small_population_possible(
    total: Cell, strata: Sequence[Cell], policy: DisclosurePolicy
) -> bool:
    """Whether released cells may come from a small population (:func:`is_small_population`):
    what a reader of them alone must allow. The rule leaves the denominator and numerator
    totals suppressed, every stratum's denominator suppressed or a zero, and every numerator
    whose denominator is suppressed suppressed too. When it holds, a reader takes each
    suppressed numerator of the indicator as 0 or more (:func:`count_range`); when it does not,
    the population is not small and a suppressed numerator is at least 1 as before."""
    if not strata or not policy.secondary_suppression:
        return False
    if suppression_threshold(policy.stratified) < 1:
        return False
    if total.denominator.status != "suppressed" or total.numerator.status != "suppressed":
        return False
    for c in strata:
        if c.denominator.status == "zero":
            continue
        if c.denominator.status != "suppressed" or c.numerator.status != "suppressed":
            return False
    return True


def _rule(rule: CountRule) -> str:
    return f"suppress 1-{rule.suppress_at_or_below}, round to {rule.round_to}"


def _rule_for(policy: DisclosurePolicy, is_total: bool) -> CountRule:
    return policy.totals if is_total else policy.stratified


def suppression_threshold(rule: CountRule) -> int:
    """The largest count ``rule`` suppresses: its threshold, raised to ``(round_to - 1) // 2``
    where that is higher, so no count above 0 is ever released as a rounded 0."""
    return max(rule.suppress_at_or_below, (rule.round_to - 1) // 2)


def _primary_suppressed(value: int, rule: CountRule) -> bool:
    return 1 <= value <= suppression_threshold(rule)


def _release(value: int, suppressed: bool, rule: CountRule) -> Count:
    if value == 0:
        return Count(value=0, status="zero")
    if suppressed:
        return Count(status="suppressed")
    if rule.round_to == 1:
        return Count(value=value, status="exact")
    return Count(value=round_half_up(value, rule.round_to), status="rounded")


# --- secondary suppression ---------------------------------------------------------------------
#
# A *group* is one count kind of one indicator (or of a denominator class): position 0 is the
# total, positions 1.. the strata in key order. Deltas are {position: +1 or -1}.

Delta = dict[int, int]


def _shifts(sup: Sequence[bool], pos: int, d: int) -> list[Delta]:
    """Balanced moves changing ``pos`` by ``d`` using only suppressed positions of its group."""
    n = len(sup)
    if pos == 0:
        if n == 1:  # no strata: nothing to add up
            return [{0: d}]
        return [{0: d, y: d} for y in range(1, n) if sup[y]]
    moves: list[Delta] = [{pos: d, 0: d}] if sup[0] else []
    moves += [{pos: d, y: -d} for y in range(1, n) if y != pos and sup[y]]
    return moves


class _Class:
    """A denominator class (indicators with identical denominators) and its numerators.

    Used for exclusions too, as a class of one with no numerators (no cross relation).
    """

    def __init__(
        self,
        den: list[int],
        nums: list[list[int]],
        den_rules: list[CountRule],
        keys: list[tuple[str, str]],
        withheld_den: Collection[int] = (),
        withheld_nums: Sequence[Collection[int]] = (),
        hidden_den: Collection[int] = (),
    ) -> None:
        self.den = den
        self.nums = nums
        self.keys = keys
        # Positions released as suppressed whatever they hold, zeros included (a stratum's
        # exclusions under a totals-only layout): a reader knows them as 0 or more, so a
        # witness may take them to 0, and one holding 0 needs no witness (a zero is released
        # as such under the other layout).
        self.floor_den = [0 if p in hidden_den else 1 for p in range(len(den))]
        self.sup_den = [
            p in hidden_den or _primary_suppressed(v, r) or (p in withheld_den and v > 0)
            for p, (v, r) in enumerate(zip(den, den_rules, strict=True))
        ]
        self.sup_nums = [
            [
                _primary_suppressed(v, r)
                or (m < len(withheld_nums) and p in withheld_nums[m] and v > 0)
                for p, (v, r) in enumerate(zip(num, den_rules, strict=True))
            ]
            for m, num in enumerate(nums)
        ]
        # Numerators suppressed zeros included (a small population's): a witness may take them
        # to 0, and one holding 0 needs a witness like any other suppressed count.
        self.floor_nums = [[1] * len(num) for num in nums]

    # -- witnesses --

    def _valid(self, dd: Delta, dn: dict[int, Delta]) -> bool:
        for p, d in dd.items():
            if self.den[p] + d < self.floor_den[p]:
                return False
        for m, delta in dn.items():
            for p, d in delta.items():
                if self.nums[m][p] + d < self.floor_nums[m][p]:
                    return False
        touched = set(dd).union(*[set(delta) for delta in dn.values()])
        for p in touched:
            new_den = self.den[p] + dd.get(p, 0)
            for m, num in enumerate(self.nums):
                if num[p] + dn.get(m, {}).get(p, 0) > new_den:
                    return False
        return True

    def den_has_witness(self, pos: int) -> bool:
        return any(self._valid(dd, {}) for d in (1, -1) for dd in _shifts(self.sup_den, pos, d))

    def num_has_witness(self, m: int, pos: int) -> bool:
        for d in (1, -1):
            for dn in _shifts(self.sup_nums[m], pos, d):
                if self._valid({}, {m: dn}):
                    return True
                if d == 1 and any(self._valid(dd, {m: dn}) for dd in self._den_carries(dn)):
                    return True
        return False

    def _den_carries(self, dn: Delta) -> list[Delta]:
        """Denominator moves raising a suppressed denominator where ``dn`` raises its numerator
        (room for a numerator already equal to its denominator)."""
        return [
            dd
            for q, step in dn.items()
            if step == 1 and self.sup_den[q]
            for dd in _shifts(self.sup_den, q, 1)
        ]

    # -- repair --

    def _released_strata(self, values: list[int], sup: list[bool]) -> list[int]:
        cands = [p for p in range(1, len(values)) if values[p] > 0 and not sup[p]]
        return sorted(cands, key=lambda p: (values[p], self.keys[p]))

    def _first_helping(
        self, options: Iterable[tuple[list[bool], int]], works: Callable[[], bool]
    ) -> bool:
        for sup, p in options:
            sup[p] = True
            if works():
                return True
            sup[p] = False
        return False

    def _escalate(self, options: Iterable[tuple[list[bool], list[int], int]]) -> None:
        for sup, values, p in options:
            if not sup[p] and values[p] > 0:
                sup[p] = True
                return
        raise DisclosureError("internal: secondary suppression found nothing left to suppress")

    def repair_den(self, pos: int) -> None:
        sd = self.sup_den
        singles = [(sd, p) for p in self._released_strata(self.den, sd)] + [(sd, 0)]
        singles = [(s, p) for s, p in singles if not s[p] and self.den[p] > 0]
        if self._first_helping(singles, lambda: self.den_has_witness(pos)):
            return
        self._escalate([(sd, self.den, 0)] + [(sd, self.den, p) for _, p in singles])

    def repair_num(self, m: int, pos: int) -> None:
        sn, sd, num = self.sup_nums[m], self.sup_den, self.nums[m]
        singles = [(sn, p) for p in self._released_strata(num, sn)] + [(sn, 0)]
        singles += [(sd, pos)] + [(sd, p) for p in self._released_strata(self.den, sd)] + [(sd, 0)]
        singles = [(s, p) for s, p in singles if not s[p] and (num if s is sn else self.den)[p]]
        if self._first_helping(singles, lambda: self.num_has_witness(m, pos)):
            return
        order: list[tuple[list[bool], list[int], int]] = [(sn, num, 0)]
        if pos != 0:
            order += [(sd, self.den, pos), (sd, self.den, 0)]
        else:
            order += [(sn, num, p) for p in self._released_strata(num, sn)][:1]
            order += [(sd, self.den, 0)]
            order += [(sd, self.den, p) for p in range(1, len(num)) if sn[p]]
        self._escalate(order)

    def suppress_small_totals(self, threshold: int) -> None:
        """A stratified group whose whole-practice denominator is 1..threshold: suppress the
        denominator total too, and every numerator whose denominator is not 0 (the total
        included), zeros included.

        Every non-zero stratum is suppressed then; suppressing the totals up front, whatever the
        strata hold, keeps a suppressed total from telling that they are all ones (which is when
        the witness search alone would suppress it). Rates on so few patients say nothing, and a
        zero numerator would say something about each of them (that none meets the indicator),
        so a numerator here is suppressed even when it is 0 (it may be 0: ``floor_nums``)."""
        if len(self.den) > 1 and 1 <= self.den[0] <= threshold:
            self.sup_den[0] = True
            for sup, floor in zip(self.sup_nums, self.floor_nums, strict=True):
                for p, den in enumerate(self.den):
                    if den > 0:
                        sup[p] = True
                        floor[p] = 0

    def settle(self) -> None:
        """Suppress more until every suppressed value has a witness."""
        while True:
            for pos in range(len(self.den)):
                if self.sup_den[pos] and self.den[pos] and not self.den_has_witness(pos):
                    self.repair_den(pos)
                    break
            else:
                for m in range(len(self.nums)):
                    failing = [
                        p
                        for p in range(len(self.den))
                        if self.sup_nums[m][p] and not self.num_has_witness(m, p)
                    ]
                    if failing:
                        self.repair_num(m, failing[0])
                        break
                else:
                    return


# --- apply_policy ------------------------------------------------------------------------------


def _indicator_groups(raw: Sequence[RawCell]) -> dict[str, list[RawCell]]:
    """Cells by indicator, total first then strata in key order; checks the partition."""
    by_ind: dict[str, dict[tuple[str, str], RawCell]] = {}
    for cell in raw:
        if not isinstance(cell, RawCell):
            raise DisclosureError(f"apply_policy takes RawCell objects, not {type(cell).__name__}")
        cells = by_ind.setdefault(cell.indicator, {})
        if cell.stratum in cells:
            raise DisclosureError(f"{cell.indicator} {cell.age_band}/{cell.sex}: duplicate cell")
        cells[cell.stratum] = cell
    out: dict[str, list[RawCell]] = {}
    for ind, cells in sorted(by_ind.items()):
        if TOTAL not in cells:
            raise DisclosureError(f"{ind}: no whole-practice total cell ('all', 'all')")
        strata = [cells[k] for k in sorted(cells) if k != TOTAL]
        if strata:
            dims = {(c.age_band != "all", c.sex != "all") for c in strata}
            if len(dims) != 1:
                raise DisclosureError(f"{ind}: strata mix different dimensions (not a partition)")
            for kind in COUNT_KINDS:
                total = cells[TOTAL].count(kind)
                summed = sum(c.count(kind) for c in strata)
                if summed != total:
                    raise DisclosureError(
                        f"{ind} {kind}: strata add up to {summed}, the total is {total}"
                    )
        out[ind] = [cells[TOTAL], *strata]
    return out


Withheld = tuple[str, tuple[str, str], CountKind]  # (indicator, (age_band, sex), count kind)


def apply_policy(
    raw: Sequence[RawCell], policy: DisclosurePolicy, *, withhold: Collection[Withheld] = ()
) -> tuple[Cell, ...]:
    """Releasable cells for ``raw`` under ``policy``, sorted by (indicator, age_band, sex).

    Each indicator needs its whole-practice total and strata that add up to it (else
    :class:`DisclosureError`). See the module docstring for the rules.

    ``withhold`` names counts to suppress as well as those the primary rule suppresses (the
    agent's disclosure guard uses it for linked tables); the witness search then protects them
    like any other suppressed count. A withheld zero stays a zero (a true zero is suppressed only
    as a small population's numerator: :func:`is_small_population`); a withheld denominator is withheld in every indicator of its denominator class.
    Naming a count that ``raw`` does not have raises :class:`DisclosureError`.
    """
    groups = _indicator_groups(raw)
    wanted: dict[tuple[str, CountKind], set[int]] = {}
    for item in withhold:
        try:
            ind, stratum, kind = item
            pos = [c.stratum for c in groups[ind]].index(tuple(stratum))  # type: ignore[arg-type]
        except (KeyError, ValueError, TypeError):
            raise DisclosureError(f"withhold: no such count in the raw cells: {item!r}") from None
        if kind not in COUNT_KINDS:
            raise DisclosureError(f"withhold: bad count kind {kind!r}")
        wanted.setdefault((ind, kind), set()).add(pos)
    released: dict[str, dict[CountKind, list[bool]]] = {ind: {} for ind in groups}
    hidden_nums: dict[str, list[bool]] = {}  # numerators suppressed zeros included

    # Denominator classes: identical strata and identical denominators.
    classes: dict[tuple[object, ...], list[str]] = {}
    for ind, cells in groups.items():
        sig = tuple((c.stratum, c.denominator) for c in cells)
        classes.setdefault(sig, []).append(ind)

    for members in classes.values():
        first = groups[members[0]]
        keys = [c.stratum for c in first]
        rules = [_rule_for(policy, k == TOTAL) for k in keys]
        cls = _Class(
            [c.denominator for c in first],
            [[c.numerator for c in groups[ind]] for ind in members],
            rules,
            keys,
            set().union(*(wanted.get((ind, "denominator"), set()) for ind in members)),
            [wanted.get((ind, "numerator"), set()) for ind in members],
        )
        if policy.secondary_suppression:
            cls.suppress_small_totals(suppression_threshold(policy.stratified))
            cls.settle()
        for m, ind in enumerate(members):
            released[ind]["denominator"] = cls.sup_den
            released[ind]["numerator"] = cls.sup_nums[m]
            hidden_nums[ind] = [f == 0 for f in cls.floor_nums[m]]

    for ind, cells in groups.items():
        keys = [c.stratum for c in cells]
        rules = [_rule_for(policy, k == TOTAL) for k in keys]
        hidden = [
            p for p, k in enumerate(keys) if exclusions_hidden(policy, "exclusions", k == TOTAL)
        ]
        exc = _Class(
            [c.exclusions for c in cells],
            [],
            rules,
            keys,
            wanted.get((ind, "exclusions"), set()),
            hidden_den=hidden,
        )
        if policy.secondary_suppression:
            exc.settle()
        released[ind]["exclusions"] = exc.sup_den

    out: list[Cell] = []
    for ind, cells in groups.items():
        for p, c in enumerate(cells):
            rule = _rule_for(policy, c.stratum == TOTAL)
            counts = {
                kind: _release(c.count(kind), released[ind][kind][p], rule) for kind in COUNT_KINDS
            }
            if exclusions_hidden(policy, "exclusions", c.stratum == TOTAL):
                counts["exclusions"] = Count(status="suppressed")  # zeros included
            if hidden_nums[ind][p]:
                counts["numerator"] = Count(status="suppressed")  # a small population's, 0 too
            out.append(
                Cell(
                    indicator=ind,
                    stratum=Stratum(age_band=c.age_band, sex=cast(SexStratum, c.sex)),
                    **counts,
                )
            )
    out.sort(key=lambda cell: cell.key)
    return tuple(out)


# --- check_cells -------------------------------------------------------------------------------


def _where(cell: Cell, kind: str) -> str:
    return f"{cell.indicator} {cell.stratum.age_band}/{cell.stratum.sex} {kind}"


def _check_count(cell: Cell, kind: CountKind, rule: CountRule) -> None:
    count: Count = getattr(cell, kind)
    t, k = rule.suppress_at_or_below, rule.round_to
    if count.status in ("zero", "suppressed"):
        return
    v = count.value
    assert v is not None
    if count.status == "exact" and k != 1:
        raise DisclosureError(f"{_where(cell, kind)}: exact {v} where the policy rounds to {k}")
    if count.status == "rounded" and v == 0:
        raise DisclosureError(f"{_where(cell, kind)}: a rounded 0 would read as a true zero")
    if count.status == "exact" and v <= t:
        raise DisclosureError(f"{_where(cell, kind)}: exact {v} is at or below the threshold {t}")
    if v % k:
        raise DisclosureError(f"{_where(cell, kind)}: {v} is not a multiple of {k}")
    if count.status == "rounded" and v + (k - 1) // 2 <= suppression_threshold(rule):
        raise DisclosureError(
            f"{_where(cell, kind)}: rounded {v} cannot come from a count above the threshold "
            f"{suppression_threshold(rule)}"
        )


def check_cells(cells: Sequence[Cell], policy: DisclosurePolicy) -> None:
    """Raise :class:`DisclosureError`, naming indicator, stratum and count, when ``cells`` break
    ``policy``: a released value in 1..threshold, a rounded value off the ``round_to`` grid, a
    rounded 0, ``exact`` where the policy rounds, a duplicate cell, an indicator without its
    total; and, under
    secondary suppression, what can be seen from released cells alone: a single suppressed
    stratum next to a released total, suppressed strata that can only each be 1, a suppressed
    total whose strata are all released. Under ``exclusions_by_stratum=False``, any stratum's
    exclusions count that is not ``suppressed`` (a value or a zero released by stratum), and a
    lone stratum's next to a released non-zero total.

    Output of a stricter policy that tightens this one (:func:`check_tightens`) passes.
    """
    # Per rule: (rule, threshold, round_to, suppression threshold), for the inline checks.
    limits = {
        total: (r, r.suppress_at_or_below, r.round_to, suppression_threshold(r))
        for total, r in ((True, policy.totals), (False, policy.stratified))
    }
    by_ind: dict[str, dict[tuple[str, str], Cell]] = {}
    for cell in cells:
        key = (cell.stratum.age_band, cell.stratum.sex)
        group = by_ind.setdefault(cell.indicator, {})
        if key in group:
            raise DisclosureError(f"{cell.indicator} {key[0]}/{key[1]}: duplicate cell")
        group[key] = cell
        rule, t, k, st = limits[key == TOTAL]
        # The checks of _check_count, inline (a submission has about a thousand counts): a
        # count that fails any goes to _check_count, which names the first failure.
        for count in (cell.denominator, cell.numerator, cell.exclusions):
            status, v = count.status, count.value
            if status == "exact":
                if k == 1 and v > t:  # type: ignore[operator]
                    continue
            elif status == "rounded":
                if v and not v % k and v + (k - 1) // 2 > st:
                    continue
            else:  # zero, suppressed: nothing released to check
                continue
            for kind in COUNT_KINDS:
                _check_count(cell, kind, rule)
    _check_exclusions_layout(cells, policy)
    for ind, group in sorted(by_ind.items()):
        if TOTAL not in group:
            raise DisclosureError(f"{ind}: no whole-practice total cell ('all', 'all')")
        if not policy.secondary_suppression:
            continue
        total = group[TOTAL]
        strata = [group[k] for k in sorted(group) if k != TOTAL]
        if not strata:
            continue
        for kind in COUNT_KINDS:
            _check_partition(total, strata, kind, policy)


def _check_exclusions_layout(cells: Sequence[Cell], policy: DisclosurePolicy) -> None:
    """Under ``exclusions_by_stratum=False`` no stratum's exclusions count carries a value or a
    zero: each is ``suppressed``."""
    if policy.exclusions_by_stratum:
        return
    for cell in cells:
        if (cell.stratum.age_band, cell.stratum.sex) != TOTAL and (
            cell.exclusions.status != "suppressed"
        ):
            raise DisclosureError(
                f"{_where(cell, 'exclusions')}: released by stratum ({cell.exclusions.status}) "
                "where the policy releases exclusions as a whole-practice total only"
            )


def _check_partition(
    total: Cell, strata: list[Cell], kind: CountKind, policy: DisclosurePolicy
) -> None:
    t_count: Count = getattr(total, kind)
    suppressed = [c for c in strata if getattr(c, kind).status == "suppressed"]
    where = f"{total.indicator} {kind}"
    if exclusions_hidden(policy, kind, False):
        # Every stratum is suppressed and may be 0: only a lone stratum next to a released
        # non-zero total is recoverable (it is the total). The rest is as below.
        if len(strata) == 1 and t_count.status in ("exact", "rounded"):
            raise DisclosureError(
                f"{_where(strata[0], kind)}: the only stratum next to a released total "
                "(it is the total)"
            )
        return
    if t_count.status == "suppressed":
        if not suppressed:
            raise DisclosureError(
                f"{where}: the total is suppressed but every stratum is released, so it is "
                "their sum"
            )
        return
    if len(suppressed) == 1:
        c = suppressed[0]
        raise DisclosureError(
            f"{_where(c, kind)}: the only suppressed stratum next to a released total "
            "(recoverable by subtraction; needs secondary suppression)"
        )
    if suppressed and t_count.status in ("exact", "zero"):
        # The most generous reading of the released strata, so that a practice's tightened
        # policy (coarser rounding, higher threshold) is never wrongly rejected: a rounded
        # stratum may be as small as the threshold + 1.
        floor = suppression_threshold(policy.stratified) + 1
        released_lo = sum(
            (count.value or 0) if count.status != "rounded" else floor
            for count in (getattr(c, kind) for c in strata)
            if count.status != "suppressed"
        )
        room = (t_count.value or 0) - released_lo
        if room <= len(suppressed):
            raise DisclosureError(
                f"{where}: the {len(suppressed)} suppressed strata add up to at most {room}, so "
                "each is recoverable (needs secondary suppression)"
            )


# --- policies ----------------------------------------------------------------------------------


def check_tightens(network: DisclosurePolicy, practice: DisclosurePolicy) -> None:
    """Raise :class:`DisclosureError`, naming the field, unless ``practice`` is at least as
    strict as ``network``: every threshold at least the network's, every ``round_to`` a multiple
    of the network's, secondary suppression kept on if the network has it on, and the network's
    layout of exclusions (``exclusions_by_stratum``: by stratum, or a whole-practice total only)."""
    for part in ("stratified", "totals"):
        n: CountRule = getattr(network, part)
        p: CountRule = getattr(practice, part)
        if p.suppress_at_or_below < n.suppress_at_or_below:
            raise DisclosureError(
                f"{part}.suppress_at_or_below: {p.suppress_at_or_below} is below the network's "
                f"{n.suppress_at_or_below} (a practice may only tighten the policy)"
            )
        if p.round_to % n.round_to:
            raise DisclosureError(
                f"{part}.round_to: {p.round_to} is not a multiple of the network's {n.round_to} "
                "(a practice may only tighten the policy)"
            )
    if practice.exclusions_by_stratum != network.exclusions_by_stratum:
        raise DisclosureError(
            f"exclusions_by_stratum: {str(practice.exclusions_by_stratum).lower()} where the "
            f"network's is {str(network.exclusions_by_stratum).lower()} (the aggregator reads "
            "every practice's exclusions in the network's layout)"
        )
    if network.secondary_suppression and not practice.secondary_suppression:
        raise DisclosureError(
            "secondary_suppression: the network requires it; a practice may not switch it off"
        )


def policy_sha256(policy: DisclosurePolicy) -> str:
    """SHA-256 (hex) of the policy's canonical bytes, as recorded in a submission's provenance."""
    return sha256_hex(model_bytes(policy))


def describe_count(count: Count, rule: CountRule | None = None, *, hidden: bool = False) -> str:
    """A released count in plain words: ``exactly 0``, ``exactly 12``, ``about 25 (rounded to
    5)``, ``suppressed (1-7 or withheld to protect another count)``; with ``hidden`` (a
    stratum's exclusions under a policy that releases them as a total only, :func:`exclusions_hidden`)
    ``not released by stratum (0 or more; the whole-practice total is released)``."""
    if hidden and count.status == "suppressed":
        return "not released by stratum (0 or more; the whole-practice total is released)"
    if count.status == "zero":
        return "exactly 0"
    if count.status == "exact":
        return f"exactly {count.value}"
    if count.status == "rounded":
        if rule is None:
            return f"about {count.value} (rounded)"
        return f"about {count.value} (rounded to {rule.round_to})"
    if rule is None or suppression_threshold(rule) == 0:
        return "suppressed (withheld to protect another count)"
    return f"suppressed (1-{suppression_threshold(rule)} or withheld to protect another count)"
