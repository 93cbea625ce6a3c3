"""protocol.linkage: identities derived from rule trees, and apply_policy(withhold=...)."""

from __future__ import annotations

import pytest

from protocol.catalogue import (
    Age,
    AgeBand,
    All,
    Any_,
    Catalogue,
    Codelist,
    DisclosurePolicy,
    HasCode,
    Indicator,
    Not,
    OnRegister,
    SexIs,
)
from protocol.disclosure import RawCell, apply_policy, check_cells
from protocol.errors import DisclosureError
from protocol.linkage import linked_identities, parse_band, region_cells
from tests.catalogue_helpers import make_codelist
from tests.catalogue_helpers import make_indicator as _ind

POLICY = DisclosurePolicy(name="default")


def _cl(cid: str) -> Codelist:
    return make_codelist(cid, [("snomedct", "1")])


def _cat(*inds: Indicator) -> Catalogue:
    return Catalogue(
        id="t",
        version=1,
        title="t",
        age_bands=(AgeBand(label="0-79", min=0, max=79), AgeBand(label="80+", min=80)),
        disclosure=POLICY,
        codelists=(_cl("reg"), _cl("xx"), _cl("yy")),
        indicators=inds,
    )


REG = OnRegister(codelist="reg")


def strs(cat: Catalogue) -> set[str]:
    return {str(i) for i in linked_identities(cat)}


def test_register_split_by_age_is_a_partition_and_not_age_is_read() -> None:
    cat = _cat(
        _ind("RR", Age(min=0), REG),
        _ind("AA", All(of=(REG, Not(rule=Age(min=80)))), HasCode(codelist="xx")),
        _ind("BB", All(of=(REG, Age(min=80))), HasCode(codelist="xx")),
    )
    found = strs(cat)
    assert "all/all: RR.numerator == AA.denominator + BB.denominator (partition)" in found
    assert "all/F: RR.numerator == AA.denominator + BB.denominator (partition)" in found
    assert "80+/M: RR.numerator == BB.denominator (equal)" in found


def test_sex_split_and_exclusions_use_the_population() -> None:
    cat = _cat(
        _ind("RR", Age(min=0), REG),
        _ind(
            "FF",
            All(of=(REG, SexIs(values=("F",)))),
            HasCode(codelist="xx"),
            HasCode(codelist="yy"),
        ),
        _ind("OO", All(of=(REG, Not(rule=SexIs(values=("F",))))), HasCode(codelist="xx")),
    )
    found = strs(cat)
    assert "all/all: RR.numerator == FF.population + OO.denominator (partition)" in found


def test_opaque_nodes_link_only_when_identical() -> None:
    # Any_ and an unknown-looking Not are opaque: no identity between x and not-x.
    cat = _cat(
        _ind("PP", All(of=(REG, HasCode(codelist="xx"))), HasCode(codelist="yy")),
        _ind("QQ", All(of=(REG, Not(rule=HasCode(codelist="xx")))), HasCode(codelist="yy")),
        _ind("RR", Age(min=0), REG),
        _ind("SS", Any_(of=(REG, HasCode(codelist="xx"))), HasCode(codelist="yy")),
    )
    found = strs(cat)
    assert not any("partition" in f for f in found)
    assert "all/all: PP.denominator <= RR.numerator (contained)" in found
    assert not any(f.startswith("all/all: SS.") and "==" in f for f in found)


def test_sex_only_indicator_has_no_age_band_identities() -> None:
    cat = _cat(
        _ind("RR", Age(min=0), REG),
        _ind("AA", REG, HasCode(codelist="xx"), strata=("sex",)),
    )
    found = strs(cat)
    assert "all/F: RR.numerator == AA.denominator (equal)" in found
    assert not any(f.startswith("80+/") and "AA." in f for f in found)
    assert region_cells(("80+", "F"), [("all", "all"), ("all", "F")]) is None
    assert region_cells(("all", "F"), [("all", "all"), ("0-79", "F"), ("80+", "F")]) == [
        ("0-79", "F"),
        ("80+", "F"),
    ]


def test_bad_band_label() -> None:
    assert parse_band("80+")[0] == 80
    with pytest.raises(DisclosureError, match="bad age band"):
        parse_band("eighty")
    with pytest.raises(DisclosureError, match="max < min"):
        parse_band("9-3")


def _raw(ind: str, f: tuple[int, int, int], m: tuple[int, int, int]) -> list[RawCell]:
    tot = tuple(a + b for a, b in zip(f, m, strict=True))
    return [
        RawCell(ind, "all", "all", *tot),
        RawCell(ind, "all", "F", *f),
        RawCell(ind, "all", "M", *m),
    ]


def test_withhold_suppresses_and_protects_the_count() -> None:
    raw = _raw("IND", (30, 20, 0), (40, 10, 0))
    plain = {c.key: c for c in apply_policy(raw, POLICY)}
    assert plain[("IND", "all", "F")].denominator.status == "rounded"
    cells = apply_policy(raw, POLICY, withhold=[("IND", ("all", "F"), "denominator")])
    by = {c.key: c for c in cells}
    assert by[("IND", "all", "F")].denominator.status == "suppressed"
    # a lone suppressed stratum next to an exact total: the witness search adds its complement
    assert by[("IND", "all", "M")].denominator.status == "suppressed"
    check_cells(cells, POLICY)


def test_withhold_keeps_zeros_and_refuses_unknown_counts() -> None:
    raw = _raw("IND", (30, 0, 0), (40, 10, 0))
    cells = apply_policy(raw, POLICY, withhold=[("IND", ("all", "F"), "numerator")])
    assert {c.key: c for c in cells}[("IND", "all", "F")].numerator.status == "zero"
    with pytest.raises(DisclosureError, match="no such count"):
        apply_policy(raw, POLICY, withhold=[("NOPE", ("all", "F"), "numerator")])
    with pytest.raises(DisclosureError, match="bad count kind"):
        apply_policy(raw, POLICY, withhold=[("IND", ("all", "F"), "patients")])
