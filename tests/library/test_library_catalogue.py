"""The default indicator library: it parses, every rule's codelists exist, every code has a source,
and the committed JSON and docs are what the authoring code produces."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from agent import library
from protocol.catalogue import (
    Catalogue,
    CountRule,
    HasCode,
    LatestValue,
    OnRegister,
    Score,
    codelists_of,
    codes_sha256,
    iter_rules,
)
from protocol.catalogues import build as library_build
from protocol.catalogues.build import CODELIST_DIR, CatalogueBuildError
from tests.conftest import SHARED_DATA

REQUIRED_QOF = {
    "HYP001",
    "HYP008",
    "HYP009",
    "DM017",
    "DM020",
    "AF001",
    "AF008",
    "CHD015",
    "CHD016",
    "STIA014",
    "STIA015",
    "CKD005",
    "AST005",
    "AST007",
    "COPD010",
    "SMOK002",
    "BP002",
}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return library.load_default_catalogue()


def test_default_catalogue_parses_with_identity_and_policy(catalogue: Catalogue) -> None:
    assert catalogue.id == "fedqi-default"
    assert catalogue.version >= 2  # version 1 carried the demonstration subsets
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
    # Cervical screening has no public cluster: it is out of the catalogue, said so in the docs.
    assert not {"CS005", "CS006"} & mirrored
    assert {q for q, _ in library_build.UNAVAILABLE} == {"CS005", "CS006"}


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


def test_every_codelist_is_published_with_provenance_and_hash(catalogue: Catalogue) -> None:
    manifest = _manifest(CODELIST_DIR / "MANIFEST.csv")
    for cl in catalogue.codelists:
        src = cl.source
        row = manifest[src.file]
        assert src.publisher_id == f"opencodelists:{row['opencodelists_id']}", cl.id
        assert (src.version, src.commit, src.repository) == (
            row["version"],
            row["source_commit"],
            row["source_repo"],
        ), cl.id
        assert src.file_sha1 == _manifest_sha1(row), cl.id
        assert src.rows == int(row["rows"]), cl.id
        assert cl.codes_sha256 == codes_sha256((c.system, c.code) for c in cl.codes)
        for code in cl.codes:
            assert code.system in ("snomedct", "dmd"), (cl.id, code)
            # SNOMED CT / dm+d identifiers are 6-18 digit integers not starting with 0.
            assert re.fullmatch(r"[1-9][0-9]{5,17}", code.code), (cl.id, code.code)


def test_codelists_are_the_vendored_files_read_independently(catalogue: Catalogue) -> None:
    """Each codelist holds exactly the codes of its file (read here with the csv module), less
    the codes its stated derivation leaves out, and every code the derivation names is one."""
    for cl in catalogue.codelists:
        with (CODELIST_DIR / cl.source.file).open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1:]
        published = {r[0] for r in rows}
        assert len(published) == len(rows) == cl.source.rows, cl.id
        kept = {c.code for c in cl.codes}
        assert kept <= published, cl.id
        left_out = published - kept
        if cl.source.derivation is None:
            assert not left_out, cl.id
        else:
            named = set(re.findall(r"\b([1-9][0-9]{5,17})\b", cl.source.derivation))
            assert named == left_out and left_out, cl.id
        terms = {r[0]: r[1] for r in rows if len(r) > 1 and r[1]}
        for code in cl.codes:
            assert code.term == (terms[code.code].strip() if code.code in terms else None)


def test_vendored_files_match_the_manifest_content_hash() -> None:
    """Every vendored file's OpenCodelists content hash (SHA-1 of its lines joined by LF, computed
    here without the build's code) equals MANIFEST.csv; and where the shared data folder is at
    hand, the vendored manifest rows are its rows unchanged."""
    manifest = _manifest(CODELIST_DIR / "MANIFEST.csv")
    files = sorted(p.name for p in CODELIST_DIR.glob("*.csv") if p.name != "MANIFEST.csv")
    assert files == sorted(manifest)
    for name in files:
        lines = (CODELIST_DIR / name).read_bytes().splitlines()
        assert hashlib.sha1(b"\n".join(lines)).hexdigest() == _manifest_sha1(manifest[name]), name
    shared = SHARED_DATA / "codelists" / "MANIFEST.csv"
    if shared.exists():
        theirs = _manifest(shared)
        for name, row in manifest.items():
            assert theirs[name] == row, name
            assert (CODELIST_DIR / name).read_bytes() == (shared.parent / name).read_bytes()


def _manifest(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def _manifest_sha1(row: dict[str, str]) -> str:
    match = re.search(r"content_sha1\(hash_bytes\)=([0-9a-f]{40})", row["notes"])
    assert match, row["file"]
    return match.group(1)


def test_medication_rules_use_dmd_and_value_rules_use_numeric_codes(catalogue: Catalogue) -> None:
    for ind in catalogue.indicators:
        for rule in (ind.population, ind.numerator, *([ind.exclusions] if ind.exclusions else [])):
            for node in iter_rules(rule):
                if isinstance(node, HasCode) and node.table == "medications":
                    systems = {c.system for c in catalogue.codelist(node.codelist).codes}
                    assert systems == {"dmd"}, (ind.id, node.codelist)
                if isinstance(node, OnRegister):
                    systems = {c.system for c in catalogue.codelist(node.codelist).codes}
                    assert systems == {"snomedct"}, (ind.id, node.codelist)
                if isinstance(node, LatestValue):
                    assert node.codelist in {"sbp", "dbp", "hba1c"}


def test_af_anticoagulation_computes_cha2ds2_vasc_from_components(catalogue: Catalogue) -> None:
    scores = [
        n for n in iter_rules(catalogue.indicator("AF_ANTICOAG").population) if isinstance(n, Score)
    ]
    assert len(scores) == 1
    score = scores[0]
    assert (score.op, score.value) == (">=", 2)
    assert sorted(t.weight for t in score.terms) == [1, 1, 1, 1, 1, 1, 2, 2]
    used = set().union(*(codelists_of(t.rule) for t in score.terms))
    assert used == {"hf", "hyp", "hyp_res", "dm", "dm_res", "stroke", "tia", "chd"}


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


def test_committed_json_is_what_the_build_gives() -> None:
    committed = library.default_catalogue_text()
    assert committed == library_build.catalogue_json(), (
        "protocol/catalogues/default.json is stale: run python -m protocol.catalogues.build"
    )
    rebuilt = library_build.build_catalogue(previous=json.loads(committed))
    assert Catalogue.model_validate(json.loads(committed)) == rebuilt
    assert library_build.main(["--check"]) == 0


def _copy_codelists(tmp_path: Path) -> Path:
    target = tmp_path / "codelists"
    shutil.copytree(CODELIST_DIR, target)
    return target


def _replace_in_file(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_changing_one_code_changes_hash_and_versions(tmp_path: Path) -> None:
    """A new release of HYP_COD with one code replaced (file and manifest row updated together)
    gives a new codes_sha256, the next catalogue version and the next version of every indicator
    that reads hypertension codes, and leaves the others' versions alone (a series break only
    where the definition changed)."""
    previous = json.loads(library.default_catalogue_text())
    before = Catalogue.model_validate(previous)
    directory = _copy_codelists(tmp_path)
    hyp_file = directory / before.codelist("hyp").source.file
    old_sha1 = before.codelist("hyp").source.file_sha1
    _replace_in_file(hyp_file, "10725009,Benign hypertension", "10725008,Benign hypertension")
    new_sha1 = hashlib.sha1(b"\n".join(hyp_file.read_bytes().splitlines())).hexdigest()
    _replace_in_file(directory / "MANIFEST.csv", old_sha1, new_sha1)

    after = library_build.build_catalogue(directory, previous=previous)
    assert after.codelist("hyp").codes_sha256 != before.codelist("hyp").codes_sha256
    assert after.codelist("hyp").source.file_sha1 == new_sha1
    assert after.version == before.version + 1
    for ind in before.indicators:
        changed = after.indicator(ind.id).version - ind.version
        assert changed == (1 if "hyp" in ind.codelist_ids() else 0), ind.id
    assert {"HYP_REG", "HYP_BP_U80", "AF_ANTICOAG", "SMOK_STATUS"} <= {
        i.id for i in before.indicators if "hyp" in i.codelist_ids()
    }
    # Built again from the new catalogue: a fixed point.
    again = library_build.build_catalogue(
        directory, previous=after.model_dump(mode="json", exclude_none=True)
    )
    assert again == after


def test_a_file_changed_without_its_manifest_row_fails_the_build(tmp_path: Path) -> None:
    directory = _copy_codelists(tmp_path)
    _replace_in_file(directory / library_build.SPECS[0].file, "10725009,", "10725008,")
    with pytest.raises(
        CatalogueBuildError, match="hyp_cod.csv: content hash .* is not the manifest"
    ):
        library_build.build_codelists(directory)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1072x5009,Benign hypertension", r"hyp_cod.csv:3: '1072x5009' is not a SNOMED CT"),
        (",", r"hyp_cod.csv:3: empty row"),
        ("10725009,Benign hypertension again", r"hyp_cod.csv:4: code 10725009 appears twice"),
    ],
)
def test_a_malformed_row_fails_the_build_naming_file_and_line(
    tmp_path: Path, row: str, message: str
) -> None:
    directory = _copy_codelists(tmp_path)
    path = directory / library_build.SPECS[0].file
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(2, row)  # line 3 of the file
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CatalogueBuildError, match=message):
        library_build.read_codelist_file(path, "snomedct")


def test_build_command_reports_a_broken_codelist_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _copy_codelists(tmp_path)
    (directory / library_build.SPECS[0].file).write_text("code,term\nnot-a-code,x\n")
    target = tmp_path / "default.json"
    target.write_text("{}", encoding="utf-8")
    monkeypatch.setattr(library_build, "CODELIST_DIR", directory)
    monkeypatch.setattr(library_build, "CATALOGUE_PATH", target)
    monkeypatch.setattr(
        library_build.build_catalogue, "__defaults__", (directory, None), raising=True
    )
    assert library_build.main([]) == 1
    assert "hyp_cod.csv" in capsys.readouterr().err
    assert target.read_text(encoding="utf-8") == "{}"


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
