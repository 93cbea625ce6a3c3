"""``compute_periods`` by each patient's changes of state (agent/engine/timeline.py) on the
default catalogue (the national clusters) and at its limits: the generative test covers random
rule trees on small code pools; these cover the real catalogue, an empty practice and more
period ends than a mask holds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from agent.engine import compute_cells, compute_periods
from agent.engine.dates import months_before
from agent.engine.timeline import MAX_ENDS
from agent.library import load_default_catalogue
from agent.sources import schema
from agent.sources.store import open_practice
from agent.sources.synth import generate_practice
from protocol.catalogue import Catalogue

LAST = dt.date(2026, 3, 31)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_default_catalogue()


@pytest.fixture(scope="module", params=["sqlite", "duckdb"])
def practice(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sa.Engine]:
    path: Path = tmp_path_factory.mktemp("timeline") / f"practice.{request.param}"
    url = f"{request.param}:///{path}"
    generate_practice(url, patients=400, seed=3, period_end=LAST)
    engine = open_practice(url, read_only=True)
    yield engine
    engine.dispose()


def _ends(count: int) -> list[dt.date]:
    return sorted({months_before(LAST, m) for m in range(count)})


def test_two_years_of_the_national_catalogue_equal_each_month(
    practice: sa.Engine, catalogue: Catalogue
) -> None:
    ends = _ends(24)
    together = compute_periods(practice, catalogue, ends, method="changes")
    assert together == compute_periods(practice, catalogue, ends, method="sql")
    for end in ends:
        assert together[end] == compute_cells(practice, catalogue, end), end
    # the practice is not empty: the counts being equal says something
    assert sum(c.denominator for c in together[LAST]) > 0


def test_codes_matched_by_in_lists_give_the_same_cells(
    practice: sa.Engine, catalogue: Catalogue
) -> None:
    # code_match="in" binds an expanding list per code set (DuckDB's arrays path once failed)
    ends = _ends(3)
    some = ["HYP_BP_U80", "DM_STATIN", "AF_ANTICOAG"]
    together = compute_periods(practice, catalogue, ends, some, code_match="in")
    for end in ends:
        assert together[end] == compute_cells(practice, catalogue, end, some), end


def test_more_ends_than_a_mask_holds_take_the_sql_plan(
    practice: sa.Engine, catalogue: Catalogue
) -> None:
    ends = _ends(MAX_ENDS + 1)
    assert len(ends) == MAX_ENDS + 1
    some = ["HYP_BP_U80", "AF_ANTICOAG"]  # a windowed latest value; a score
    together = compute_periods(practice, catalogue, ends, some)
    for end in (ends[0], ends[MAX_ENDS // 2], ends[-1]):
        assert together[end] == compute_cells(practice, catalogue, end, some), end
    with pytest.raises(ValueError, match="1 to 63"):
        compute_periods(practice, catalogue, ends, some, method="changes")


@pytest.mark.parametrize("kind", ["sqlite", "duckdb"])
def test_a_practice_with_no_records_counts_zero(
    kind: str, tmp_path: Path, catalogue: Catalogue
) -> None:
    engine = sa.create_engine(f"{kind}:///{tmp_path / ('empty.' + kind)}")
    schema.metadata.create_all(engine)
    ends = _ends(3)
    together = compute_periods(engine, catalogue, ends, method="changes")
    for end in ends:
        expected = compute_cells(engine, catalogue, end)
        assert together[end] == expected
        assert all(c.denominator == c.numerator == c.exclusions == 0 for c in expected)
    engine.dispose()
