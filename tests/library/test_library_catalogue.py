"""The default indicator library: it parses, every rule's codelists exist, every code has a source,
and the committed JSON and docs are what the authoring code produces."""

from __future__ import annotations

import json
import re

import pytest

from agent import library, library_build
from protocol.catalogue import (
    Catalogue,
    CountRule,
    HasCode,
    LatestValue,
    OnRegister,
    iter_rules,
)

REQUIRED_QOF = {
    "HYP001",
    "HYP008",
    "HYP009",
    "DM017",
    "DM020",
    "AF008",
    "CHD015",
    "CHD016",
    "STIA014",
    "STIA015",
    "CKD005",
    "AST007",
    "COPD010",
    "SMOK002",
    "BP002",
    "CS005",
    "CS006",
}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return library.load_default_catalogue()


def test_default_catalogue_parses_with_identity_and_policy(catalogue: Catalogue) -> None:
    assert catalogue.id == "fedqi-default"
    assert catalogue.version == 1
    assert [b.label for b in catalogue.age_bands] == ["0-39", "40-59", "60-79", "80+"]
    assert catalogue.disclosure.name == "default"
    assert catalogue.disclosure.stratified == CountRule(suppress_at_or_below=7, round_to=5)
    assert catalogue.disclosure.totals == CountRule(suppress_at_or_below=0, round_to=1)
    # Canonical bytes round-trip (what the network signs).
    assert Catalogue.from_bytes(catalogue.to_bytes()) == catalogue


def test_at_least_15_indicators_each_stratified_and_explained(catalogue: Catalogue) -> None:
    assert len(catalogue.indicators) >= 15
    for ind in catalogue.indicators:
        assert ind.strata == ("age_band", "sex"), ind.id
        assert ind.simplifications, f"{ind.id} says nothing about what it simplifies"
    mirrored = {i.qof for i in catalogue.indicators if i.qof}
    assert mirrored >= REQUIRED_QOF, REQUIRED_QOF - mirrored
    flu = catalogue.indicator("FLU_65")
    assert flu.qof is None and "Not a QOF indicator" in (flu.simplifications or "")


def test_every_indicator_references_known_codelists_and_every_codelist_is_used(
    catalogue: Catalogue,
) -> None:
    known = {c.id for c in catalogue.codelists}
    used: set[str] = set()
    for ind in catalogue.indicators:
        ids = ind.codelist_ids()
        assert ids <= known, (ind.id, ids - known)
        used |= ids
    assert used == known, f"codelists no indicator uses: {known - used}"


def test_every_code_has_a_source_and_a_plausible_identifier(catalogue: Catalogue) -> None:
    for cl in catalogue.codelists:
        for code in cl.codes:
            assert code.source.strip(), (cl.id, code.code)
            assert code.term.strip(), (cl.id, code.code)
            if code.system in ("snomedct", "dmd", "omop"):
                # SNOMED CT / dm+d identifiers are 6-18 digit integers not starting with 0.
                assert re.fullmatch(r"[1-9][0-9]{5,17}", code.code), (cl.id, code.code)


def test_medication_rules_use_dmd_and_value_rules_use_numeric_codes(catalogue: Catalogue) -> None:
    for ind in catalogue.indicators:
        for rule in (ind.population, ind.numerator, *([ind.exclusions] if ind.exclusions else [])):
            for node in iter_rules(rule):
                if isinstance(node, HasCode) and node.table == "medications":
                    systems = {c.system for c in catalogue.codelist(node.codelist).codes}
                    # dm+d, plus RxNorm equivalents for FHIR / OMOP data (docs/sources.md)
                    assert "dmd" in systems and systems <= {"dmd", "rxnorm"}, (
                        ind.id,
                        node.codelist,
                    )
                if isinstance(node, OnRegister):
                    systems = {c.system for c in catalogue.codelist(node.codelist).codes}
                    assert systems == {"snomedct"}, (ind.id, node.codelist)
                if isinstance(node, LatestValue):
                    assert node.codelist in {"sbp", "dbp", "hba1c", "cha2ds2vasc"}


def test_bp_targets_match_qof(catalogue: Catalogue) -> None:
    def thresholds(ind_id: str) -> dict[str, float]:
        return {
            n.codelist: n.value
            for n in iter_rules(catalogue.indicator(ind_id).numerator)
            if isinstance(n, LatestValue)
        }

    assert thresholds("HYP_BP_U80") == {"sbp": 140, "dbp": 90}
    assert thresholds("HYP_BP_80") == {"sbp": 150, "dbp": 90}
    assert thresholds("DM_HBA1C") == {"hba1c": 58}


def test_committed_json_equals_authoring_output() -> None:
    committed = library.default_catalogue_text()
    assert committed == library_build.catalogue_json(), (
        "protocol/catalogues/default.json is stale: run python -m agent.library_build"
    )
    assert Catalogue.model_validate(json.loads(committed)) == library_build.build_catalogue()


def test_committed_indicator_docs_are_current(catalogue: Catalogue) -> None:
    committed = library.DOCS_PATH.read_text(encoding="utf-8")
    assert committed == library.render_indicators_markdown(catalogue), (
        "docs/indicators.md is stale: run python -m agent.library"
    )
    for ind in catalogue.indicators:
        assert f"`{ind.id}`" in committed


def test_describe_rule_reads_as_plain_english(catalogue: Catalogue) -> None:
    text = library.describe_indicator(catalogue.indicator("HYP_BP_U80"))
    assert "aged 79 or under" in text
    assert "`sbp` value at most 140" in text and "`dbp` value at most 90" in text
    assert "not registered for at least 9 months" in text
