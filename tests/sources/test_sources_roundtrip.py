"""The same synthetic practice exported to a CSV extract, a FHIR bulk export and an OMOP
database gives exactly the indicator counts of the canonical store it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sources_helpers import PERIOD_END, synthetic_rows, write_store

from agent.engine import compute_cells
from agent.library import load_default_catalogue
from agent.sources.common import open_store
from agent.sources.csv_extract import load_csv
from agent.sources.export import export_csv, export_fhir, export_omop
from agent.sources.fhir import load_fhir
from agent.sources.omop import open_omop
from protocol.catalogue import Catalogue, codes_sha256
from protocol.disclosure import RawCell

N_PATIENTS = 600


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_default_catalogue()


@pytest.fixture(scope="module")
def canonical(tmp_path_factory: pytest.TempPathFactory, catalogue: Catalogue) -> sa.Engine:
    path = tmp_path_factory.mktemp("canonical") / "practice.sqlite"
    return write_store(path, synthetic_rows(catalogue, N_PATIENTS))


@pytest.fixture(scope="module")
def expected(canonical: sa.Engine, catalogue: Catalogue) -> list[RawCell]:
    cells = compute_cells(canonical, catalogue, PERIOD_END)
    # The practice must exercise the indicators, or equal counts would prove little.
    totals = {c.indicator: c for c in cells if c.age_band == "all" and c.sex == "all"}
    with_numerators = [i for i, c in totals.items() if c.numerator > 0]
    with_exclusions = [i for i, c in totals.items() if c.exclusions > 0]
    assert len(with_numerators) >= 0.8 * len(totals), sorted(set(totals) - set(with_numerators))
    assert with_exclusions
    return cells


@pytest.mark.parametrize(
    ("date_format", "sex_style", "store"),
    [("iso", "letter", "sqlite"), ("uk", "word", "sqlite"), ("uk", "nhs", "duckdb")],
)
def test_csv_round_trip(
    tmp_path: Path,
    canonical: sa.Engine,
    catalogue: Catalogue,
    expected: list[RawCell],
    date_format: str,
    sex_style: str,
    store: str,
) -> None:
    export_csv(canonical, tmp_path / "extract", date_format=date_format, sex_style=sex_style)
    engine = open_store(tmp_path / f"loaded.{store}")
    report = load_csv(tmp_path / "extract", engine, date_format=date_format)
    assert report.patients == N_PATIENTS
    assert compute_cells(engine, catalogue, PERIOD_END) == expected
    engine.dispose()


def test_fhir_round_trip(
    tmp_path: Path, canonical: sa.Engine, catalogue: Catalogue, expected: list[RawCell]
) -> None:
    written = export_fhir(canonical, tmp_path / "bulk")
    assert written["Observation"] > 0 and written["Condition"] > 0
    # Blood-pressure panels were written, so components are read back.
    assert '"component"' in (tmp_path / "bulk" / "Observation.000.ndjson").read_text()
    engine = open_store(tmp_path / "loaded.sqlite")
    report = load_fhir(tmp_path / "bulk", engine)
    assert report.patients == N_PATIENTS
    assert compute_cells(engine, catalogue, PERIOD_END) == expected


def test_fhir_export_is_valid_fhir_r4(tmp_path: Path, canonical: sa.Engine) -> None:
    """The exporter's resources validate against the FHIR R4B models (fhir.resources), so the
    round trip reads real FHIR, not a private dialect."""
    from fhir.resources.R4B import get_fhir_model_class

    export_fhir(canonical, tmp_path / "bulk")
    checked = 0
    import json

    for path in sorted((tmp_path / "bulk").glob("*.ndjson")):
        for line in path.read_text().splitlines()[:200]:
            data = json.loads(line)
            get_fhir_model_class(data["resourceType"]).model_validate(data)
            checked += 1
    assert checked > 500


def _omop_round_trip(url: str, canonical: sa.Engine, catalogue: Catalogue) -> list[RawCell]:
    target = sa.create_engine(url)
    export_omop(canonical, target)
    target.dispose()
    engine = open_omop(url)
    try:
        return compute_cells(engine, catalogue, PERIOD_END)
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "duckdb"])
def test_omop_round_trip(
    tmp_path: Path,
    canonical: sa.Engine,
    catalogue: Catalogue,
    expected: list[RawCell],
    backend: str,
) -> None:
    url = f"{backend}:///{tmp_path / ('omop.' + backend)}"
    assert _omop_round_trip(url, canonical, catalogue) == expected


@pytest.mark.postgres
def test_omop_round_trip_postgresql(
    pg_database_factory: Any, canonical: sa.Engine, catalogue: Catalogue, expected: list[RawCell]
) -> None:
    assert _omop_round_trip(pg_database_factory(), canonical, catalogue) == expected


def test_omop_concept_id_codelists(
    tmp_path: Path, canonical: sa.Engine, catalogue: Catalogue, expected: list[RawCell]
) -> None:
    """A catalogue whose codelists name OMOP concept ids (system omop) gives the same counts
    on the concept ids alone (codes="concept_id")."""
    url = f"sqlite:///{tmp_path / 'omop.sqlite'}"
    target = sa.create_engine(url)
    concepts = export_omop(canonical, target)
    target.dispose()
    data = catalogue.model_dump(mode="json")
    for cl in data["codelists"]:
        mapped: dict[str, dict[str, str]] = {}
        for code in cl["codes"]:
            # A code the practice never used has no concept here: concept 1 stands for all of
            # them (once per list), which no row carries.
            concept = str(concepts.get((code["system"], code["code"]), 1))
            mapped.setdefault(concept, {**code, "system": "omop", "code": concept})
        cl["codes"] = list(mapped.values())
        cl["codes_sha256"] = codes_sha256((c["system"], c["code"]) for c in cl["codes"])
    omop_catalogue = Catalogue.model_validate(data)
    engine = open_omop(url, codes="concept_id")
    try:
        assert compute_cells(engine, omop_catalogue, PERIOD_END) == expected
    finally:
        engine.dispose()


def test_round_trips_of_a_generated_practice(tmp_path: Path, catalogue: Catalogue) -> None:
    """The project's synthetic practice generator (agent.sources.synth) through all three sources."""
    synth = pytest.importorskip("agent.sources.synth")
    path = tmp_path / "practice.sqlite"
    synth.generate_practice(path, patients=200, seed=11, parallel=False)
    canonical = open_store(path)
    end = synth.DEFAULT_PERIOD_END
    expected = compute_cells(canonical, catalogue, end)
    assert sum(c.numerator for c in expected if c.age_band == "all" and c.sex == "all") > 0

    export_csv(canonical, tmp_path / "csv", date_format="uk", sex_style="nhs")
    loaded = open_store(tmp_path / "csv.sqlite")
    load_csv(tmp_path / "csv", loaded, date_format="uk")
    assert compute_cells(loaded, catalogue, end) == expected

    export_fhir(canonical, tmp_path / "bulk")
    loaded = open_store(tmp_path / "fhir.sqlite")
    load_fhir(tmp_path / "bulk", loaded)
    assert compute_cells(loaded, catalogue, end) == expected

    url = f"sqlite:///{tmp_path / 'omop.sqlite'}"
    target = sa.create_engine(url)
    export_omop(canonical, target)
    target.dispose()
    omop = open_omop(url)
    try:
        assert compute_cells(omop, catalogue, end) == expected
    finally:
        omop.dispose()


def test_agent_config_source_omop_reads_in_place(
    tmp_path: Path, canonical: sa.Engine, catalogue: Catalogue, expected: list[RawCell]
) -> None:
    """``source.kind = "omop"`` in agent.toml: the agent's own compute path reads the OMOP
    database through its views and records "omop" as the provenance source."""
    from agent.engine.compute import compute_raw_cells
    from agent.home.settings import get_settings

    url = f"sqlite:///{tmp_path / 'omop.sqlite'}"
    target = sa.create_engine(url)
    export_omop(canonical, target)
    target.dispose()
    home = tmp_path / "home"
    home.mkdir()
    (home / "agent.toml").write_text(f'[source]\nkind = "omop"\nurl = "{url}"\n')
    settings = get_settings(home, environ={})
    computed = compute_raw_cells(settings, catalogue, PERIOD_END)
    cells, kind = computed.cells, computed.kind
    assert kind == "omop"
    assert cells == expected


def test_load_csv_into_the_configured_store(
    tmp_path: Path, canonical: sa.Engine, catalogue: Catalogue, expected: list[RawCell]
) -> None:
    """Without --into, load-csv fills source.url; the agent then computes from it."""
    from agent.cli import main
    from agent.engine.compute import compute_raw_cells
    from agent.home.settings import get_settings

    export_csv(canonical, tmp_path / "extract")
    home = tmp_path / "home"
    home.mkdir()
    (home / "agent.toml").write_text('[source]\nkind = "csv"\nurl = "practice.sqlite"\n')
    assert main(["load-csv", str(tmp_path / "extract"), "--home", str(home)], {}) == 0
    assert (home / "practice.sqlite").is_file()
    computed = compute_raw_cells(get_settings(home, environ={}), catalogue, PERIOD_END)
    cells, kind = computed.cells, computed.kind
    assert (kind, cells) == ("csv", expected)
