"""Strata: every (band, sex) cell of Catalogue.strata_for, zeros included, partitioning the total."""

from __future__ import annotations

from engine_spec_helpers import D, E, catalogue, cell, indicator, patient, practice, total

from protocol.catalogue import Age, SexIs


def mixed_practice():
    # ages at E: 10, 30, 70; sexes F, M, U; counts chosen so every cell differs
    born = {"0-17": D(2014, 1, 1), "18-64": D(1994, 1, 1), "65+": D(1954, 1, 1)}
    layout = {
        ("0-17", "F"): 1,
        ("0-17", "M"): 2,
        ("18-64", "F"): 3,
        ("18-64", "M"): 4,
        ("18-64", "U"): 1,
        ("65+", "F"): 5,
        ("65+", "M"): 0,
        ("65+", "U"): 2,
    }
    patients = []
    for (band, sex), n in layout.items():
        for _ in range(n):
            patients.append(patient(len(patients) + 1, born=born[band], sex=sex))
    return practice(patients), layout


def test_strata_partition_the_total(runner):
    p, layout = mixed_practice()
    cat = catalogue(indicator(Age(min=0), SexIs(values=("F", "U"))))
    cells = runner.compute(p, cat, E)
    assert [(c.age_band, c.sex) for c in cells] == cat.strata_for(cat.indicators[0])
    for band in ("0-17", "18-64", "65+"):
        for sex in ("F", "M", "U"):
            n = layout.get((band, sex), 0)
            assert cell(cells, band, sex) == (n, n if sex in "FU" else 0, 0), (band, sex)
    assert total(cells) == (18, 12, 0)
    strata = [c for c in cells if c.age_band != "all"]
    assert sum(c.denominator for c in strata) == total(cells)[0]
    assert sum(c.numerator for c in strata) == total(cells)[1]


def test_zero_cells_are_reported(runner):
    cat = catalogue(indicator(Age(min=0), SexIs(values=("F",))))
    cells = runner.compute(practice([]), cat, E)
    assert len(cells) == 1 + 3 * 3
    assert all((c.denominator, c.numerator, c.exclusions) == (0, 0, 0) for c in cells)


def test_sex_only_and_band_only_and_unstratified(runner):
    p, _ = mixed_practice()
    cat = catalogue(
        indicator(Age(min=0), SexIs(values=("M",)), ind_id="SEX", strata=("sex",)),
        indicator(Age(min=0), SexIs(values=("M",)), ind_id="BAND", strata=("age_band",)),
        indicator(Age(min=0), SexIs(values=("M",)), ind_id="NONE", strata=()),
    )
    cells = runner.compute(p, cat, E)
    assert [(c.age_band, c.sex) for c in cells if c.indicator == "SEX"] == [
        ("all", "all"),
        ("all", "F"),
        ("all", "M"),
        ("all", "U"),
    ]
    assert cell(cells, "all", "F", "SEX") == (9, 0, 0)
    assert cell(cells, "all", "M", "SEX") == (6, 6, 0)
    assert cell(cells, "all", "U", "SEX") == (3, 0, 0)
    assert cell(cells, "0-17", "all", "BAND") == (3, 2, 0)
    assert cell(cells, "18-64", "all", "BAND") == (8, 4, 0)
    assert cell(cells, "65+", "all", "BAND") == (7, 0, 0)
    assert [(c.age_band, c.sex) for c in cells if c.indicator == "NONE"] == [("all", "all")]
    assert total(cells, "NONE") == (18, 6, 0)
