"""protocol.disclosure: primary rules at their edges, secondary suppression examples, the checker,
policy tightening. The attacker properties are in test_disclosure_attack.py."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest

from protocol.canonical import model_bytes
from protocol.catalogue import CountRule, DisclosurePolicy
from protocol.disclosure import (
    TOTAL,
    RawCell,
    apply_policy,
    check_cells,
    check_tightens,
    count_range,
    describe_count,
    feasible_range,
    is_small_population,
    policy_sha256,
    round_half_up,
    small_population_possible,
)
from protocol.errors import DisclosureError
from protocol.submission import MAX_COUNT, Cell, Count, Stratum

DEFAULT = DisclosurePolicy(name="default")
PRIMARY_ONLY = DisclosurePolicy(name="primary-only", secondary_suppression=False)
SEXES = ("F", "M", "U")


def one_stratum(value: int, policy: DisclosurePolicy = PRIMARY_ONLY) -> tuple[Count, Count]:
    """(stratum count, total count) of a denominator ``value`` in stratum F, zero elsewhere."""
    raw = [RawCell("IND", "all", "all", value, 0, 0), RawCell("IND", "all", "F", value, 0, 0)]
    raw += [RawCell("IND", "all", s, 0, 0, 0) for s in ("M", "U")]
    cells = {c.stratum.sex: c for c in apply_policy(raw, policy)}
    return cells["F"].denominator, cells["all"].denominator


def cells_of(rows: list[tuple[str, str, str, int, int, int]], policy: DisclosurePolicy) -> dict:
    out = apply_policy([RawCell(*r) for r in rows], policy)
    return {c.key: c for c in out}


def count(status: str, value: int | None = None) -> Count:
    return Count(status=status, value=value)  # type: ignore[arg-type]


def cell(
    ind: str, sex: str, den: Count, num: Count | None = None, exc: Count | None = None
) -> Cell:
    zero = count("zero", 0)
    return Cell(
        indicator=ind,
        stratum=Stratum(age_band="all", sex=sex),  # type: ignore[arg-type]
        denominator=den,
        numerator=num or zero,
        exclusions=exc or zero,
    )


# --- rounding and ranges -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "k", "expected"),
    [(0, 5, 0), (2, 5, 0), (3, 5, 5), (12, 5, 10), (13, 5, 15), (10, 5, 10), (2, 4, 4), (1, 4, 0),
     (6, 4, 8), (15, 10, 20), (14, 10, 10), (7, 1, 7), (MAX_COUNT - 2, 5, MAX_COUNT)],
)  # fmt: skip
def test_round_half_up(value: int, k: int, expected: int) -> None:
    assert round_half_up(value, k) == expected


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 10])
@pytest.mark.parametrize("t", [0, 1, 7, 10])
def test_feasible_range_is_exactly_the_counts_releasing_the_same_value(k: int, t: int) -> None:
    rule = CountRule(suppress_at_or_below=t, round_to=k)
    policy = DisclosurePolicy(name="p", stratified=rule, secondary_suppression=False)
    released: dict[int, Count] = {}
    for v in range(0, 260):
        released[v] = one_stratum(v, policy)[0]
    for v in range(0, 200):
        lo, hi = feasible_range(released[v], rule)
        same = {w for w in released if released[w] == released[v]}
        if hi is None:  # suppressed: at least 1, no upper bound
            assert released[v].status == "suppressed" and lo == 1
            assert same == set(range(1, max(t, (k - 1) // 2) + 1))
        else:
            assert same == set(range(lo, hi + 1)), (v, released[v])


# --- primary rules at the edges ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "status", "released"),
    [(0, "zero", 0), (1, "suppressed", None), (7, "suppressed", None), (8, "rounded", 10),
     (12, "rounded", 10), (13, "rounded", 15), (1234, "rounded", 1235),
     (MAX_COUNT, "rounded", MAX_COUNT), (MAX_COUNT - 1, "rounded", MAX_COUNT)],
)  # fmt: skip
def test_default_stratified_rule_edges(value: int, status: str, released: int | None) -> None:
    stratum, total = one_stratum(value)
    assert (stratum.status, stratum.value) == (status, released)
    # Totals are exact under the default policy.
    assert total.value == value
    assert total.status == ("zero" if value == 0 else "exact")


def test_round_to_one_releases_exact_counts_above_the_threshold() -> None:
    policy = DisclosurePolicy(
        name="exact-strata", stratified=CountRule(suppress_at_or_below=7, round_to=1),
        secondary_suppression=False,
    )  # fmt: skip
    assert one_stratum(7, policy)[0].status == "suppressed"
    assert one_stratum(8, policy)[0] == Count(value=8, status="exact")
    assert one_stratum(13, policy)[0] == Count(value=13, status="exact")


def test_tightened_policy_suppresses_and_rounds_more() -> None:
    tight = DisclosurePolicy(
        name="tight", stratified=CountRule(suppress_at_or_below=10, round_to=10),
        totals=CountRule(suppress_at_or_below=0, round_to=5),
    )  # fmt: skip
    check_tightens(DEFAULT, tight)
    primary = tight.model_copy(update={"secondary_suppression": False})
    assert one_stratum(10, primary)[0].status == "suppressed"
    assert one_stratum(11, primary) == (count("rounded", 10), count("rounded", 10))
    assert one_stratum(15, primary) == (count("rounded", 20), count("rounded", 15))
    # A tightened practice's cells pass the aggregator's check under the network policy.
    rows = [("IND", "all", "all", 41, 13, 0), ("IND", "all", "F", 15, 0, 0)]
    rows += [("IND", "all", "M", 26, 13, 0), ("IND", "all", "U", 0, 0, 0)]
    cells = apply_policy([RawCell(*r) for r in rows], tight)
    check_cells(cells, DEFAULT)


def test_totals_rule_can_suppress_and_round() -> None:
    policy = DisclosurePolicy(
        name="rounded-totals", totals=CountRule(suppress_at_or_below=3, round_to=5),
        secondary_suppression=False,
    )  # fmt: skip
    assert one_stratum(3, policy)[1].status == "suppressed"
    assert one_stratum(12, policy)[1] == count("rounded", 10)


def test_output_is_sorted_and_statuses_never_hide_a_zero() -> None:
    rows = [("ZZ", "all", "all", 9, 0, 0), ("ZZ", "all", "M", 9, 0, 0), ("ZZ", "all", "F", 0, 0, 0),
            ("ZZ", "all", "U", 0, 0, 0), ("AA", "all", "all", 0, 0, 0)]  # fmt: skip
    cells = apply_policy([RawCell(*r) for r in rows], DEFAULT)
    assert [c.key for c in cells] == sorted(c.key for c in cells)
    for c in cells:
        for k in ("denominator", "numerator", "exclusions"):
            cnt = getattr(c, k)
            assert (cnt.status == "zero") == (cnt.value == 0 and cnt.status != "rounded")


# --- secondary suppression examples --------------------------------------------------------------


def test_single_suppressed_stratum_gets_a_complement_the_smallest_other() -> None:
    rows = [("IND", "all", "all", 60, 0, 0), ("IND", "all", "F", 3, 0, 0),
            ("IND", "all", "M", 40, 0, 0), ("IND", "all", "U", 17, 0, 0)]  # fmt: skip
    cells = cells_of(rows, DEFAULT)
    statuses = {s: cells[("IND", "all", s)].denominator.status for s in SEXES}
    assert statuses == {"F": "suppressed", "U": "suppressed", "M": "rounded"}
    assert cells[("IND", "all", "all")].denominator == count("exact", 60)
    # Without secondary suppression F would be 60 - 40 - 17 = 3 by subtraction.
    plain = cells_of(rows, PRIMARY_ONLY)
    assert plain[("IND", "all", "U")].denominator == count("rounded", 15)


def test_tied_complements_are_chosen_by_stratum_key() -> None:
    rows = [("IND", "all", "all", 22, 0, 0), ("IND", "all", "F", 10, 0, 0),
            ("IND", "all", "M", 10, 0, 0), ("IND", "all", "U", 2, 0, 0)]  # fmt: skip
    cells = cells_of(rows, DEFAULT)
    assert cells[("IND", "all", "F")].denominator.status == "suppressed"  # "F" < "M"
    assert cells[("IND", "all", "M")].denominator == count("rounded", 10)


def test_total_is_suppressed_when_no_stratum_can_complement() -> None:
    # Total 1: the one patient's stratum would be plain to see next to exact zeros.
    rows = [("IND", "all", "all", 1, 0, 0), ("IND", "all", "F", 1, 0, 0),
            ("IND", "all", "M", 0, 0, 0), ("IND", "all", "U", 0, 0, 0)]  # fmt: skip
    cells = cells_of(rows, DEFAULT)
    assert cells[("IND", "all", "all")].denominator.status == "suppressed"
    assert cells[("IND", "all", "F")].denominator.status == "suppressed"


def test_suppressed_strata_that_are_all_one_get_more_company() -> None:
    # 1 + 1 next to an exact total of 2 and zeros would reveal both ones.
    rows = [("IND", "all", "all", 2, 0, 0), ("IND", "all", "F", 1, 0, 0),
            ("IND", "all", "M", 1, 0, 0), ("IND", "all", "U", 0, 0, 0)]  # fmt: skip
    cells = cells_of(rows, DEFAULT)
    assert cells[("IND", "all", "all")].denominator.status == "suppressed"


def test_numerator_equal_to_a_released_denominator_is_protected() -> None:
    # Numerator total 12 exact; F numerator 3 (suppressed) needs a numerator complement, and
    # the denominator must not pin it: every one of M's patients achieves.
    rows = [("IND", "all", "all", 22, 12, 0), ("IND", "all", "F", 3, 3, 0),
            ("IND", "all", "M", 9, 9, 0), ("IND", "all", "U", 10, 0, 0)]  # fmt: skip
    cells = cells_of(rows, DEFAULT)
    check_cells(list(cells.values()), DEFAULT)
    assert cells[("IND", "all", "F")].numerator.status == "suppressed"
    assert cells[("IND", "all", "M")].numerator.status == "suppressed"


def test_indicators_sharing_a_denominator_release_it_identically() -> None:
    # Same population for A and B. Alone, A's F (3) and M (2) protect each other; B's
    # numerators equal those denominators, so a move between F and M would break
    # numerator <= denominator in B, and the class needs U as well.
    base = [("all", "all", 30), ("all", "F", 3), ("all", "M", 2), ("all", "U", 25)]
    nums_a = {"all": 0, "F": 0, "M": 0, "U": 0}
    nums_b = {"all": 5, "F": 3, "M": 2, "U": 0}
    rows = [("AA", b, s, d, nums_a[s], 0) for b, s, d in base]
    rows += [("BB", b, s, d, nums_b[s], 0) for b, s, d in base]
    cells = cells_of(rows, DEFAULT)
    for _, s, _ in base:
        assert cells[("AA", "all", s)].denominator == cells[("BB", "all", s)].denominator
    assert cells[("AA", "all", "all")].denominator == count("exact", 30)
    assert cells[("AA", "all", "U")].denominator.status == "suppressed"
    alone = cells_of([r for r in rows if r[0] == "AA"], DEFAULT)
    assert alone[("AA", "all", "U")].denominator == count("rounded", 25)


def test_apply_policy_accepts_an_indicator_without_strata() -> None:
    cells = apply_policy([RawCell("IND", "all", "all", 5, 2, 0)], DEFAULT)
    assert [c.denominator for c in cells] == [count("exact", 5)]


# --- bad raw input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "match"),
    [(("IND", "all", "F", -1, 0, 0), "denominator: -1 not in"),
     (("IND", "all", "F", 3, 4, 0), "numerator 4 > denominator 3"),
     (("IND", "all", "F", 3, True, 0), "numerator: not an integer"),
     (("IND", "all", "F", 3, 1.0, 0), "numerator: not an integer"),
     (("IND", "all", "X", 3, 1, 0), "sex must be"),
     (("IND", "adult", "F", 3, 1, 0), "bad age band"),
     (("ind", "all", "F", 3, 1, 0), "bad indicator id"),
     (("IND", "all", "F", 0, 0, MAX_COUNT + 1), "exclusions")],
)  # fmt: skip
def test_raw_cell_rejects_bad_counts(args: tuple, match: str) -> None:
    with pytest.raises(DisclosureError, match=match):
        RawCell(*args)


@pytest.mark.parametrize(
    ("rows", "match"),
    [([("IND", "all", "F", 3, 0, 0)], "IND: no whole-practice total"),
     ([("IND", "all", "all", 5, 0, 0), ("IND", "all", "F", 3, 0, 0)], "IND denominator: strata add up to 3, the total is 5"),
     ([("IND", "all", "all", 3, 0, 0), ("IND", "all", "all", 3, 0, 0)], "duplicate cell"),
     ([("IND", "all", "all", 6, 0, 0), ("IND", "all", "F", 3, 0, 0), ("IND", "18+", "all", 3, 0, 0)], "mix different dimensions")],
)  # fmt: skip
def test_apply_policy_rejects_inconsistent_raw_cells(rows: list, match: str) -> None:
    with pytest.raises(DisclosureError, match=match):
        apply_policy([RawCell(*r) for r in rows], DEFAULT)


# --- check_cells ---------------------------------------------------------------------------------


def test_check_cells_accepts_a_compliant_submission() -> None:
    cells = [cell("IND", "all", count("exact", 60)), cell("IND", "F", count("suppressed")),
             cell("IND", "M", count("rounded", 40)), cell("IND", "U", count("suppressed"))]  # fmt: skip
    check_cells(cells, DEFAULT)


@pytest.mark.parametrize(
    ("cells", "match"),
    [
        # a released value at or below the threshold
        ([cell("IND", "all", count("exact", 5)), cell("IND", "F", count("rounded", 5))],
         r"IND all/F denominator: rounded 5 cannot come from a count above the threshold 7"),
        ([cell("IND", "all", count("exact", 5)), cell("IND", "F", count("exact", 5))],
         r"IND all/F denominator: exact 5 where the policy rounds"),
        # exact where the policy rounds
        ([cell("IND", "all", count("exact", 20)), cell("IND", "F", count("exact", 20))],
         r"IND all/F denominator: exact 20 where the policy rounds to 5"),
        # off the rounding grid
        ([cell("IND", "all", count("exact", 12)), cell("IND", "F", count("rounded", 12))],
         r"IND all/F denominator: 12 is not a multiple of 5"),
        # rounded 0 cannot come from a count above 7
        ([cell("IND", "all", count("exact", 20)), cell("IND", "F", count("rounded", 20), count("rounded", 0))],
         r"IND all/F numerator: a rounded 0 would read as a true zero"),
        # a single suppressed stratum next to an exact total
        ([cell("IND", "all", count("exact", 23)), cell("IND", "F", count("suppressed")),
          cell("IND", "M", count("rounded", 20))],
         r"IND all/F denominator: the only suppressed stratum next to a released total"),
        # two suppressed strata that can only be 1 + 1
        ([cell("IND", "all", count("exact", 2)), cell("IND", "F", count("suppressed")),
          cell("IND", "M", count("suppressed")), cell("IND", "U", count("zero", 0))],
         r"IND denominator: the 2 suppressed strata add up to at most 2"),
        # a suppressed total with every stratum released
        ([cell("IND", "all", count("suppressed")), cell("IND", "F", count("rounded", 10)),
          cell("IND", "M", count("zero", 0))],
         r"IND denominator: the total is suppressed but every stratum is released"),
        # no total
        ([cell("IND", "F", count("rounded", 10))], r"IND: no whole-practice total"),
        # duplicate
        ([cell("IND", "all", count("exact", 10)), cell("IND", "all", count("exact", 10))],
         r"IND all/all: duplicate cell"),
        # the exclusions are checked too
        ([cell("IND", "all", count("exact", 9), exc=count("exact", 3)),
          cell("IND", "F", count("rounded", 10), exc=count("suppressed")),
          cell("IND", "M", count("zero", 0), exc=count("zero", 0))],
         r"IND all/F exclusions: the only suppressed stratum"),
    ],
)  # fmt: skip
def test_check_cells_rejects_each_kind_of_violation(cells: list[Cell], match: str) -> None:
    with pytest.raises(DisclosureError, match=match):
        check_cells(cells, DEFAULT)


def test_check_cells_without_secondary_suppression_skips_the_partition_rules() -> None:
    cells = [cell("IND", "all", count("exact", 23)), cell("IND", "F", count("suppressed")),
             cell("IND", "M", count("rounded", 20))]  # fmt: skip
    check_cells(cells, PRIMARY_ONLY)
    with pytest.raises(DisclosureError):
        check_cells(cells, DEFAULT)


# --- policies ------------------------------------------------------------------------------------


def test_check_tightens_accepts_equal_and_stricter_policies() -> None:
    check_tightens(DEFAULT, DEFAULT)
    check_tightens(DEFAULT, DEFAULT.model_copy(update={"name": "mine"}))
    stricter = DisclosurePolicy(
        name="strict", stratified=CountRule(suppress_at_or_below=10, round_to=10),
        totals=CountRule(suppress_at_or_below=2, round_to=3),
    )  # fmt: skip
    check_tightens(DEFAULT, stricter)
    check_tightens(PRIMARY_ONLY, DEFAULT)  # switching secondary suppression on is tighter


@pytest.mark.parametrize(
    ("practice", "field"),
    [
        (DisclosurePolicy(name="p", stratified=CountRule(suppress_at_or_below=5, round_to=5)),
         "stratified.suppress_at_or_below: 5 is below the network's 7"),
        (DisclosurePolicy(name="p", stratified=CountRule(suppress_at_or_below=7, round_to=3)),
         "stratified.round_to: 3 is not a multiple of the network's 5"),
        (DisclosurePolicy(name="p", stratified=CountRule(suppress_at_or_below=9, round_to=1)),
         "stratified.round_to: 1 is not a multiple"),
        (DisclosurePolicy(name="p", secondary_suppression=False), "secondary_suppression"),
    ],
)  # fmt: skip
def test_check_tightens_rejects_loosening(practice: DisclosurePolicy, field: str) -> None:
    with pytest.raises(DisclosureError, match=field):
        check_tightens(DEFAULT, practice)


def test_check_tightens_checks_totals_too() -> None:
    network = DisclosurePolicy(name="n", totals=CountRule(suppress_at_or_below=3, round_to=5))
    with pytest.raises(DisclosureError, match="totals.suppress_at_or_below: 0 is below"):
        check_tightens(
            network,
            DEFAULT.model_copy(update={"totals": CountRule(suppress_at_or_below=0, round_to=5)}),
        )
    with pytest.raises(
        DisclosureError, match="totals.round_to: 1 is not a multiple of the network's 5"
    ):
        check_tightens(
            network,
            DEFAULT.model_copy(update={"totals": CountRule(suppress_at_or_below=3, round_to=1)}),
        )


def test_policy_sha256_is_the_hash_of_the_canonical_bytes() -> None:
    canonical = (
        b'{"name":"default","secondary_suppression":true,'
        b'"stratified":{"round_to":5,"suppress_at_or_below":7},'
        b'"totals":{"round_to":1,"suppress_at_or_below":0}}'
    )
    assert policy_sha256(DEFAULT) == hashlib.sha256(canonical).hexdigest()
    assert policy_sha256(PRIMARY_ONLY) != policy_sha256(DEFAULT)


def test_describe_count_in_plain_words() -> None:
    rule = DEFAULT.stratified
    assert describe_count(count("zero", 0), rule) == "exactly 0"
    assert describe_count(count("exact", 12)) == "exactly 12"
    assert describe_count(count("rounded", 25), rule) == "about 25 (rounded to 5)"
    assert describe_count(count("rounded", 25)) == "about 25 (rounded)"
    assert describe_count(count("suppressed"), rule).startswith("suppressed (1-7")
    assert "1-" not in describe_count(count("suppressed"), DEFAULT.totals)


def test_total_constant_is_the_whole_practice_stratum() -> None:
    assert Stratum().is_total and (Stratum().age_band, Stratum().sex) == TOTAL


def test_check_cells_rejects_an_exact_small_count_where_strata_are_exact() -> None:
    policy = DisclosurePolicy(
        name="exact-strata", stratified=CountRule(suppress_at_or_below=7, round_to=1)
    )
    cells = [cell("IND", "all", count("exact", 30)), cell("IND", "F", count("exact", 7)),
             cell("IND", "M", count("exact", 23))]  # fmt: skip
    with pytest.raises(
        DisclosureError, match="IND all/F denominator: exact 7 is at or below the threshold 7"
    ):
        check_cells(cells, policy)


def test_counts_that_would_round_to_zero_are_suppressed() -> None:
    policy = DisclosurePolicy(
        name="round-only", stratified=CountRule(suppress_at_or_below=0, round_to=5),
        secondary_suppression=False,
    )  # fmt: skip
    assert one_stratum(2, policy)[0].status == "suppressed"
    assert one_stratum(3, policy)[0] == count("rounded", 5)
    assert describe_count(count("suppressed"), policy.stratified).startswith("suppressed (1-2 ")


# check_cells checks each count inline, sending a failing one to _check_count for its message.
# Against the plain loop (every count through _check_count), on random counts and policies,
# many of them breaking the policy: the same verdict and the same first error.


def _reference_counts(cells: list[Cell], policy: DisclosurePolicy) -> None:
    from protocol.disclosure import COUNT_KINDS, _check_count, _rule_for

    for cell in cells:
        rule = _rule_for(policy, cell.stratum.is_total)
        for kind in COUNT_KINDS:
            _check_count(cell, kind, rule)


def _random_count(rng: random.Random) -> Count:
    status = rng.choice(["zero", "exact", "rounded", "suppressed"])
    if status == "zero":
        return Count(status="zero", value=0)
    if status == "suppressed":
        return Count(status="suppressed")
    value = rng.choice([rng.randint(1, 12), rng.randint(1, 60), 5 * rng.randint(0, 12)])
    if status == "exact":
        return Count(status="exact", value=max(1, value))
    return Count(status="rounded", value=value)


def _random_cell(rng: random.Random, band: str) -> Cell:
    while True:  # until numerator <= denominator
        try:
            return Cell(
                indicator="HYP001",
                stratum=Stratum(age_band=band, sex="all"),
                denominator=_random_count(rng),
                numerator=_random_count(rng),
                exclusions=_random_count(rng),
            )
        except ValueError:
            continue


@pytest.mark.parametrize("seed", range(300))
def test_inline_count_checks_agree_with_the_per_count_checks(seed: int) -> None:
    rng = random.Random(seed)
    policy = DisclosurePolicy(
        name="random",
        stratified=CountRule(suppress_at_or_below=rng.choice([0, 3, 7]), round_to=rng.choice([1, 5, 10])),
        totals=CountRule(suppress_at_or_below=rng.choice([0, 7]), round_to=rng.choice([1, 5])),
        secondary_suppression=False,
    )  # fmt: skip
    cells = [_random_cell(rng, band) for band in ("0-39", "40+", "all")]
    try:
        _reference_counts(cells, policy)
    except DisclosureError as exc:
        expected: str | None = str(exc)
    else:
        expected = None
    try:
        check_cells(cells, policy)
    except DisclosureError as exc:
        assert str(exc) == expected
    else:
        assert expected is None


# --- exclusions as a whole-practice total only (exclusions_by_stratum=False) ---------------------

TOTALS_ONLY = DisclosurePolicy(name="default", exclusions_by_stratum=False)


def test_the_by_stratum_layout_keeps_the_bytes_and_hash_of_before_the_field() -> None:
    explicit = DisclosurePolicy(name="default", exclusions_by_stratum=True)
    assert policy_sha256(explicit) == policy_sha256(DEFAULT)
    assert b"exclusions_by_stratum" not in model_bytes(DEFAULT)
    assert b'"exclusions_by_stratum":false' in model_bytes(TOTALS_ONLY)
    assert policy_sha256(TOTALS_ONLY) != policy_sha256(DEFAULT)
    assert DisclosurePolicy.model_validate_json(model_bytes(TOTALS_ONLY)) == TOTALS_ONLY


def _review(policy: DisclosurePolicy) -> dict:
    # a review's 3 exclusions all in 40+/F; the other strata's are true zeros
    rows = [("IND", "all", "all", 100, 80, 3), ("IND", "0-39", "F", 20, 16, 0)]
    rows += [("IND", "0-39", "M", 20, 16, 0), ("IND", "40+", "F", 30, 24, 3)]
    rows += [("IND", "40+", "M", 30, 24, 0)]
    return cells_of(rows, policy)  # type: ignore[arg-type]


def test_totals_only_suppresses_every_stratum_exclusions_count_zeros_included() -> None:
    cells = _review(TOTALS_ONLY)
    assert cells[("IND", "all", "all")].exclusions == count("exact", 3)
    for key, c in cells.items():
        if key[1:] != TOTAL:
            assert c.exclusions == count("suppressed")
            assert c.denominator.status == "rounded"  # nothing else changes
    check_cells(list(cells.values()), TOTALS_ONLY)
    # by stratum, the lone suppressed stratum next to zeros costs the exclusions total
    by_stratum = _review(DEFAULT)
    assert by_stratum[("IND", "0-39", "F")].exclusions == count("zero", 0)
    assert by_stratum[("IND", "all", "all")].exclusions == count("suppressed")


def test_totals_only_reads_a_suppressed_stratum_exclusions_count_as_0_or_more() -> None:
    assert feasible_range(count("suppressed"), DEFAULT.stratified, may_be_zero=True) == (0, None)
    assert count_range(count("suppressed"), TOTALS_ONLY, kind="exclusions", is_total=False) == (
        0,
        None,
    )
    assert count_range(count("suppressed"), TOTALS_ONLY, kind="exclusions", is_total=True)[0] == 1
    assert count_range(count("suppressed"), TOTALS_ONLY, kind="numerator", is_total=False)[0] == 1
    assert count_range(count("suppressed"), DEFAULT, kind="exclusions", is_total=False)[0] == 1


def test_totals_only_with_a_single_stratum_suppresses_the_total() -> None:
    rows = [("IND", "all", "all", 20, 10, 4), ("IND", "all", "F", 20, 10, 4)]
    cells = cells_of(rows, TOTALS_ONLY)  # type: ignore[arg-type]
    assert cells[("IND", "all", "all")].exclusions == count("suppressed")
    check_cells(list(cells.values()), TOTALS_ONLY)
    zero = cells_of([(*r[:5], 0) for r in rows], TOTALS_ONLY)  # type: ignore[misc]
    assert zero[("IND", "all", "all")].exclusions == count("zero", 0)
    check_cells(list(zero.values()), TOTALS_ONLY)  # a hidden 0 under a total of 0 is fine


@pytest.mark.parametrize("released", [count("zero", 0), count("rounded", 10), count("rounded", 15)])
def test_check_cells_rejects_a_stratum_exclusions_count_released_under_totals_only(
    released: Count,
) -> None:
    cells = _review(TOTALS_ONLY)
    key = ("IND", "40+", "M")
    cells[key] = dataclasses.replace(cells[key], exclusions=released)
    with pytest.raises(DisclosureError, match="IND 40\\+/M exclusions: released by stratum"):
        check_cells(list(cells.values()), TOTALS_ONLY)


def test_check_cells_rejects_a_lone_stratum_next_to_its_total_under_totals_only() -> None:
    cells = [
        cell("IND", "all", count("exact", 20), count("exact", 10), count("exact", 4)),
        cell("IND", "F", count("rounded", 20), count("rounded", 10), count("suppressed")),
    ]
    with pytest.raises(DisclosureError, match="the only stratum next to a released total"):
        check_cells(cells, TOTALS_ONLY)


def test_check_cells_accepts_all_suppressed_stratum_exclusions_only_under_totals_only() -> None:
    # what totals-only sends: under the by-stratum layout, 6 suppressed strata of an exclusions
    # total of 3 would each be at least 1, which is impossible: that layout rejects it
    cells = list(_review(TOTALS_ONLY).values())
    check_cells(cells, TOTALS_ONLY)
    with pytest.raises(DisclosureError, match="each is recoverable"):
        check_cells(cells, DEFAULT)


def test_check_tightens_keeps_the_networks_layout_of_exclusions() -> None:
    check_tightens(TOTALS_ONLY, TOTALS_ONLY.model_copy(update={"name": "mine"}))
    for network, practice in ((TOTALS_ONLY, DEFAULT), (DEFAULT, TOTALS_ONLY)):
        with pytest.raises(DisclosureError, match="exclusions_by_stratum"):
            check_tightens(network, practice)


def test_describe_count_of_a_hidden_stratum_exclusions_count() -> None:
    said = describe_count(count("suppressed"), DEFAULT.stratified, hidden=True)
    assert said.startswith("not released by stratum (0 or more")
    assert describe_count(count("zero", 0), DEFAULT.stratified, hidden=True) == "exactly 0"


# --- small populations: numerators withheld zeros included ---------------------------------------


def _stroke_80(num_f: int) -> list[tuple[str, str, str, int, int, int]]:
    # The audit's case: a practice's one stroke patient aged 80+ (a woman), BP not controlled.
    return [("STIA_BP_80", "all", "all", 1, num_f, 0), ("STIA_BP_80", "80+", "F", 1, num_f, 0),
            ("STIA_BP_80", "80+", "M", 0, 0, 0), ("STIA_BP_80", "80+", "U", 0, 0, 0)]  # fmt: skip


def test_a_small_population_withholds_a_zero_numerator_total_and_its_strata() -> None:
    cells = cells_of(_stroke_80(0), DEFAULT)
    total = cells[("STIA_BP_80", "all", "all")]
    assert total.denominator.status == "suppressed"
    assert total.numerator == count("suppressed")  # a zero, withheld (was released as 0)
    assert cells[("STIA_BP_80", "80+", "F")].numerator == count("suppressed")
    # A stratum with no patient: its numerator 0 says nothing the zero denominator does not.
    assert cells[("STIA_BP_80", "80+", "M")].numerator == count("zero", 0)
    check_cells(list(cells.values()), DEFAULT)
    # The same statuses as when the one patient meets the indicator: the reader cannot tell.
    assert cells_of(_stroke_80(1), DEFAULT) == cells


def test_small_population_numerators_are_read_as_0_or_more() -> None:
    rows = [("IND", "all", "all", 3, 0, 0), ("IND", "all", "F", 2, 0, 0),
            ("IND", "all", "M", 1, 0, 0), ("IND", "all", "U", 0, 0, 0)]  # fmt: skip
    cells = cells_of(rows, DEFAULT)
    total, strata = cells[("IND", "all", "all")], [cells[("IND", "all", s)] for s in SEXES]
    assert small_population_possible(total, strata, DEFAULT)
    assert is_small_population(3, True, DEFAULT) and not is_small_population(8, True, DEFAULT)
    assert count_range(total.numerator, DEFAULT, kind="numerator", is_total=True,
                       small_population=True) == (0, None)  # fmt: skip
    assert count_range(total.numerator, DEFAULT, kind="numerator", is_total=True) == (1, None)
    # A larger population: the zero numerators stay zeros, and the statuses say it is not small.
    rows = [("IND", "all", "all", 30, 0, 0), ("IND", "all", "F", 2, 0, 0),
            ("IND", "all", "M", 28, 0, 0), ("IND", "all", "U", 0, 0, 0)]  # fmt: skip
    cells = cells_of(rows, DEFAULT)
    total, strata = cells[("IND", "all", "all")], [cells[("IND", "all", s)] for s in SEXES]
    assert total.numerator == count("zero", 0)
    assert not small_population_possible(total, strata, DEFAULT)
