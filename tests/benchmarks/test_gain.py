"""Patients who could gain, clinical areas and registers, and the pack's narrative: plain code,
tested apart from the views that show them."""

from __future__ import annotations

import random

import pytest

from aggregator.benchmarks import areas, pack
from aggregator.benchmarks.gain import patients_could_gain
from protocol.catalogue import Catalogue


@pytest.mark.parametrize(
    ("num", "den", "abc", "want"),
    [
        (30, 100, 0.5, 20),  # 50 needed, 30 have it
        (50, 100, 0.5, 0),  # exactly at the benchmark
        (60, 100, 0.5, 0),  # above it: never negative
        (0, 7, 0.9, 7),  # ceil(6.3) = 7
        (10, 21, 0.5, 1),  # ceil(10.5) = 11
        (0, 0, 0.8, 0),  # nobody in the denominator
        (55, 100, 0.55, 0),  # 0.55 x 100 is 55.00000000000001 in floating point: still 55
        (40, 100, 0.29, 0),  # 0.29 x 100 is 28.999999999999996: 29
        (28, 100, 0.29, 1),
        # the practice is the benchmark: 85/118 = 0.720339 to six decimals, and 0.720339 x 118
        # is 85.000002, whose ceiling asked for a patient more (a new-user run, DM_HBA1C)
        (85, 118, 0.720339, 0),
        (85, 118, 85 / 118, 0),
        (84, 118, 0.720339, 1),
        (7, 13, round(7 / 13, 6), 0),  # 0.538462 rounds 7/13 = 0.5384615... up
        (6, 13, round(7 / 13, 6), 1),
        (None, 100, 0.5, None),  # suppressed numerator: unknown, not 0
        (30, None, 0.5, None),
        (30, 100, None, None),  # no benchmark
    ],
)
def test_patients_could_gain(
    num: int | None, den: int | None, abc: float | None, want: int | None
) -> None:
    assert patients_could_gain(num, den, abc) == want


def test_patients_could_gain_is_the_fewest_that_reach_the_benchmark() -> None:
    """For random counts and a benchmark given to six decimals, as every view gives it: adding
    the figure brings the rate, to six decimals, to the benchmark, and one fewer does not."""
    rng = random.Random(7)
    for _ in range(5000):
        den = rng.randint(1, 5000)
        num = rng.randint(0, den)
        abc = round(rng.random(), 6)
        g = patients_could_gain(num, den, abc)
        assert g is not None and g >= 0
        if g > 0:
            assert (num + g) / den >= abc - 5e-7
            assert (num + g - 1) / den < abc - 5e-7
        else:
            assert num / den >= abc - 5e-7


def test_a_practice_at_the_benchmark_could_gain_none() -> None:
    """Whatever its counts, a practice whose own rate is the benchmark (it is the one practice
    the benchmark is built from), exact or rounded to six decimals as a view shows it, could
    gain 0, and one patient fewer could gain 1."""
    rng = random.Random(11)
    for _ in range(5000):
        den = rng.randint(1, 200_000)
        num = rng.randint(1, den)
        for abc in (num / den, round(num / den, 6)):
            assert patients_could_gain(num, den, abc) == 0, (num, den, abc)
            if round((num - 1) / den, 6) < round(num / den, 6):
                assert patients_could_gain(num - 1, den, abc) == 1, (num, den, abc)


def test_a_practice_at_or_above_a_pooled_benchmark_could_gain_none() -> None:
    """The benchmark pooled from several practices (sum x / sum n, to six decimals): each
    practice whose rate is at least it could gain 0, and below it at least 1."""
    rng = random.Random(13)
    for _ in range(2000):
        counts = [(rng.randint(0, d), d) for d in (rng.randint(1, 3000) for _ in range(3))]
        counts = [(min(x, d), d) for x, d in counts]
        top = max(counts, key=lambda c: c[0] / c[1])
        abc = round(sum(x for x, _ in counts) / sum(d for _, d in counts), 6)
        assert patients_could_gain(*top, abc) == 0
        for x, d in counts:
            g = patients_could_gain(x, d, abc)
            assert (g == 0) == (round(x / d, 6) >= abc), (x, d, abc, g)


def test_every_default_catalogue_indicator_has_a_named_area_and_registers_are_prevalences() -> None:
    from importlib import resources

    text = resources.files("protocol.catalogues").joinpath("default.json").read_text("utf-8")
    cat = Catalogue.model_validate_json(text)
    for ind in cat.indicators:
        assert areas.area_of(ind.id) != areas.OTHER, ind.id
        # the id convention and the title agree: a register is a prevalence, and only it
        assert areas.is_register(ind.id) == ("(prevalence)" in ind.title), ind.id
    assert areas.area_of("NEW_THING") == areas.OTHER


def test_group_by_area_orders_areas_and_puts_the_register_first() -> None:
    items = [
        {"indicator": i} for i in ("FLU_65", "DM_BP", "HYP_BP_80", "DM_REG", "XYZ_1", "HYP_REG")
    ]
    groups = areas.group_by_area(items)
    assert [g["area"] for g in groups] == ["Hypertension", "Diabetes", "Vaccination", areas.OTHER]
    assert [i["indicator"] for i in groups[1]["items"]] == ["DM_REG", "DM_BP"]
    assert [i["indicator"] for i in groups[0]["items"]] == ["HYP_REG", "HYP_BP_80"]


def _m(
    ind: str, rate: float | None, band: str | None, gain: int | None, change: dict | None = None
) -> dict:  # type: ignore[type-arg]
    return {"indicator": ind, "title": f"{ind} title", "rate": rate, "band": band, "pooled": 0.7,
            "abc": 0.9, "could_gain": gain, "change": change}  # fmt: skip


def _c(diff: float, beyond: bool, brk: bool = False) -> dict:  # type: ignore[type-arg]
    return {"difference": diff, "beyond_chance": beyond, "version_break": brk,
            "rate_from": 0.5, "rate_to": 0.5 + diff}  # fmt: skip


def test_the_narrative_counts_what_the_practice_withheld_apart_from_what_it_reports() -> None:
    """A figure the practice's own disclosure control withheld was sent: the narrative says the
    practice has a rate on so many indicators and how many it withheld, not that it 'reports'
    fewer indicators (a new-user run read 'reports 7 of 17' of a practice that sent all 17)."""
    withheld = {**_m("W", None, None, None), "status": "suppressed"}
    empty = {**_m("Z", None, None, None), "status": "exact", "note": "no eligible patients"}
    text = " ".join(
        pack.narrative("Elm", "2026-09", None, [_m("A", 0.5, "within", 0), withheld, empty], [])
    )
    assert (
        "has a rate on 1 of 3 indicators (1 withheld by its own disclosure control: a small "
        "count, or withheld to protect another count). Against" in text
    ), text
    assert "reports" not in text


def test_narrative_is_written_from_the_numbers() -> None:
    measures = [
        _m("A", 0.5, "low_998", 40, _c(0.1, True)),
        _m("B", 0.6, "low_95", 25, _c(-0.05, True)),
        _m("C", 0.95, "high_95", 0, _c(0.01, False)),
        _m("D", 0.7, "within", 5, None),
        # withheld by disclosure control in the earlier period: not compared, not "no change"
        _m("E", 0.6, "within", 3, {**_c(0.0, False), "rate_from": None, "difference": None}),
    ]
    regs = [
        {
            "indicator": "R_REG",
            "title": "R register",
            "rate": 0.02,
            "pooled": 0.05,
            "band": "low_998",
        }
    ]
    text = " ".join(pack.narrative("Elm", "2026-09", "2026-06", measures, regs))
    assert "has a rate on 5 of 5 indicators. Against" in text
    assert "below on 2, above on 1 and within on 2" in text
    assert "would mean 73 more patients meeting the standard" in text
    assert "the most on A title (40 patients" in text
    assert "already at or above the benchmark on 1 of the 5 indicators with a rate." in text
    assert "Since 2026-06: 1 indicator rose and 1 fell beyond chance" in text
    assert (
        "1 did not change beyond chance" in text
        and "2 had no rate in one of the two periods" in text
    )
    assert "R register" in text


def test_narrative_when_everything_is_suppressed_or_there_is_no_earlier_period() -> None:
    measures = [_m("A", None, None, None), _m("B", None, None, None)]
    text = " ".join(pack.narrative("Elm", "2026-09", None, measures, []))
    assert "has no indicator value to report for 2026-09" in text
    assert "no period three before 2026-09" in text
    assert "would mean" not in text


def test_a_practices_own_pack_says_the_networks_figures_to_whole_points() -> None:
    """A practice's own view gets the network's rate and benchmark to whole points: the
    narrative says '85%', not '85.0%'; its own rate keeps its decimal (a new-user run)."""
    m = [_m("A", 0.5, "low_95", 3)]
    m[0]["pooled"], m[0]["abc"] = 0.85, 0.9
    text = " ".join(pack.narrative("Elm", "2026-09", None, m, [], coarse=True))
    assert "(50.0% against the network's 85%)" in text and "benchmark 90%, practice 50.0%" in text
    text = " ".join(pack.narrative("Elm", "2026-09", None, m, []))
    assert "against the network's 85.0%" in text and "benchmark 90.0%" in text
