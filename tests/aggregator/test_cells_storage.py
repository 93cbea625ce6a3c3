"""Cells are stored one row per indicator (aggregator/db/cells.py, migration 0003): the stored
rows give back exactly the protocol cells sent, and the migration moves stored cells both ways
without losing or changing one, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from agg_helpers import default_catalogue, make_cells
from sqlalchemy import create_engine, text

from aggregator.db.cells import StoredCell, cell_rows, protocol_cells, stored_cells
from aggregator.db.migrate import downgrade, upgrade
from protocol.submission import Cell, Count, Stratum


def _rows_as_objects(rows: list[tuple[object, ...]]) -> list[object]:
    from types import SimpleNamespace

    from aggregator.db.cells import COLUMNS

    return [SimpleNamespace(**dict(zip(COLUMNS, r, strict=True))) for r in rows]


@pytest.mark.parametrize("seed", range(5))
def test_stored_rows_give_back_the_protocol_cells(seed: int) -> None:
    cells = make_cells(default_catalogue(), seed=seed)
    rows = cell_rows("s-1", cells)
    assert len(rows) == len({c.indicator for c in cells})
    assert all(r[0] == "s-1" for r in rows)
    assert protocol_cells(_rows_as_objects(rows)) == cells
    # suppressed counts (null values) are among them, and survive the trip
    assert any(c.numerator.status == "suppressed" for c in cells)
    # the strata text, written out by hand, is exactly the compact JSON encoding
    for row in rows:
        strata = json.loads(str(row[8]))
        assert row[8] == json.dumps(strata, separators=(",", ":"), ensure_ascii=True)


def test_whole_practice_cell_is_in_the_columns_and_strata_in_the_json() -> None:
    def cell(band: str, sex: str, d: int, n: int | None) -> Cell:
        return Cell(
            indicator="HYP001",
            stratum=Stratum(age_band=band, sex=sex),  # type: ignore[arg-type]
            denominator=Count(status="exact", value=d),
            numerator=Count(status="suppressed") if n is None else Count(status="exact", value=n),
            exclusions=Count(status="zero", value=0),
        )

    cells = (cell("18-39", "F", 40, 20), cell("18-39", "M", 30, None), cell("all", "all", 70, 35))
    (row,) = cell_rows("s-2", cells)
    assert row[8] == (
        '[["18-39","F",40,"exact",20,"exact",0,"zero"],'
        '["18-39","M",30,"exact",null,"suppressed",0,"zero"]]'
    )
    assert row[:8] == ("s-2", "HYP001", 70, "exact", 35, "exact", 0, "zero")
    assert json.loads(str(row[8])) == [
        ["18-39", "F", 40, "exact", 20, "exact", 0, "zero"],
        ["18-39", "M", 30, "exact", None, "suppressed", 0, "zero"],
    ]
    (obj,) = _rows_as_objects([row])
    got = stored_cells(obj)
    assert got[0] == StoredCell("HYP001", "all", "all", 70, "exact", 35, "exact", 0, "zero")
    assert got[0].is_total and not any(c.is_total for c in got[1:])


def test_an_indicator_without_its_total_is_refused() -> None:
    cells = tuple(c for c in make_cells(default_catalogue()) if c.stratum.age_band != "all")
    with pytest.raises(ValueError, match="no whole-practice cell"):
        cell_rows("s-3", cells)


# --- migration 0003, both ways -------------------------------------------------------------------

OLD_COLUMNS = (
    "submission_id, indicator, age_band, sex, denominator, denominator_status, numerator, "
    "numerator_status, exclusions, exclusions_status"
)


def _old_rows(n_submissions: int) -> list[tuple[object, ...]]:
    """Per-stratum rows, as revision 0002 stored them, for a few submissions."""
    out: list[tuple[object, ...]] = []
    for i in range(n_submissions):
        for c in make_cells(default_catalogue(), seed=i):
            out.append(
                (
                    f"00000000-0000-4000-8000-{i:012d}",
                    c.indicator,
                    c.stratum.age_band,
                    c.stratum.sex,
                    *(x for k in (c.denominator, c.numerator, c.exclusions) for x in (k.value, k.status)),
                )
            )  # fmt: skip
    return out


def _seed_at_0002(url: str, rows: list[tuple[object, ...]]) -> None:
    upgrade(url, "0002")
    engine = create_engine(url)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO practices (ods, name, pcn, list_size, imd_decile, created_at) "
                    "VALUES ('A81001', 'p', 'PCN', 1000, 5, :now)"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO practice_keys (kid, practice_ods, public_key, status, last_seq, "
                    "created_at) VALUES (:kid, 'A81001', :pk, 'active', 0, :now)"
                ),
                {"kid": "k" * 43, "pk": b"\0" * 32, "now": now},
            )
            for i, sid in enumerate(sorted({r[0] for r in rows})):
                sha = f"{i:064x}"
                conn.execute(
                    text(
                        "INSERT INTO envelopes (sha256, kind, practice_ods, body, received_at, "
                        "receipt, leaf_index) VALUES (:sha, 'submission', 'A81001', :b, :now, "
                        ":b, :i)"
                    ),
                    {"sha": sha, "b": b"x", "now": now, "i": i},
                )
                conn.execute(
                    text(
                        "INSERT INTO submissions (submission_id, practice_ods, kid, seq, iat, "
                        "period_start, period_end, catalogue_id, catalogue_version, "
                        "catalogue_sha256, envelope_sha256, payload_sha256, leaf_index, "
                        "received_at, effective) VALUES (:sid, 'A81001', :kid, :seq, 0, "
                        ":start, :end, 'c', 1, :sha, :sha, :sha, :i, :now, true)"
                    ),
                    {
                        "sid": sid, "kid": "k" * 43, "seq": i + 1, "start": dt.date(2026, 1, 1),
                        "end": dt.date(2026, 1, 31), "sha": sha, "i": i, "now": now,
                    },
                )  # fmt: skip
            conn.execute(
                text(
                    f"INSERT INTO cells ({OLD_COLUMNS}) VALUES (:a, :b, :c, :d, :e, :f, :g, :h, "
                    ":i, :j)"
                ),
                [dict(zip("abcdefghij", r, strict=True)) for r in rows],
            )
    finally:
        engine.dispose()


def _select(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _migration_round_trip(url: str) -> None:
    rows = _old_rows(4)
    random.Random(0).shuffle(rows)
    _seed_at_0002(url, rows)

    assert upgrade(url, "0003") == "0003"
    new = _select(
        url,
        "SELECT submission_id, indicator, denominator, denominator_status, numerator, "
        "numerator_status, exclusions, exclusions_status, strata FROM cells",
    )
    assert len(new) == len({(r[0], r[1]) for r in rows})
    by_submission: dict[str, list[tuple[object, ...]]] = {}
    for r in new:
        by_submission.setdefault(str(r[0]), []).append(r)
    for i, sid in enumerate(sorted(by_submission)):
        got = protocol_cells(_rows_as_objects(by_submission[sid]))
        assert got == make_cells(default_catalogue(), seed=i)

    assert downgrade(url, "0002") == "0002"
    back = _select(url, f"SELECT {OLD_COLUMNS} FROM cells")
    assert sorted(back, key=repr) == sorted(rows, key=repr)


def test_migration_0003_moves_cells_both_ways_on_sqlite(tmp_path: Path) -> None:
    _migration_round_trip(f"sqlite:///{tmp_path / 'agg.db'}")


@pytest.mark.postgres
def test_migration_0003_moves_cells_both_ways_on_postgresql(
    pg_database_factory: Callable[[], str],
) -> None:
    _migration_round_trip(pg_database_factory())


def _verdict_round_trip(url: str) -> None:
    """Migration 0007 adds ``cells.verdict`` as null (the refresh checks such rows against their
    envelopes) without touching a stored value, and its downgrade drops it the same way."""
    rows = _old_rows(3)
    _seed_at_0002(url, rows)
    assert upgrade(url, "0006") == "0006"
    columns = (
        "submission_id, indicator, denominator, denominator_status, numerator, numerator_status, "
        "exclusions, exclusions_status, strata"
    )
    before = sorted(_select(url, f"SELECT {columns} FROM cells"), key=repr)
    assert before
    assert upgrade(url, "0007") == "0007"
    after = _select(url, f"SELECT {columns}, verdict FROM cells")
    assert sorted((r[:-1] for r in after), key=repr) == before
    assert {r[-1] for r in after} == {None}
    assert downgrade(url, "0006") == "0006"
    assert sorted(_select(url, f"SELECT {columns} FROM cells"), key=repr) == before
    with pytest.raises(Exception, match="verdict"):
        _select(url, "SELECT verdict FROM cells")


def test_migration_0007_adds_an_empty_verdict_column_on_sqlite(tmp_path: Path) -> None:
    _verdict_round_trip(f"sqlite:///{tmp_path / 'agg.db'}")


@pytest.mark.postgres
def test_migration_0007_adds_an_empty_verdict_column_on_postgresql(
    pg_database_factory: Callable[[], str],
) -> None:
    _verdict_round_trip(pg_database_factory())


def _rerender_round_trip(url: str, revision: str = "0008") -> None:
    """Migration 0008 (and 0009, for the withheld note) queues every benchmark group with a
    summary for recomputation (their stored JSON views are rendered again), keeping an already
    queued group's mark."""
    before = f"{int(revision) - 1:04d}"
    assert upgrade(url, before) == before
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for month, queued in ((1, False), (2, True)):
                start, end = dt.date(2026, month, 1), dt.date(2026, month, 28)
                conn.execute(
                    text(
                        "INSERT INTO bench_summary (indicator, period_start, period_end, versions, "
                        "practices, included, suppressed, empty, rounded, numerator, denominator, "
                        "overdispersed, tau2, method, abc_practices, computed_at) VALUES "
                        "('DM_HBA1C', :s, :e, '1', 3, 3, 0, 0, 0, 10, 20, false, 0, 'exact', 1, :t)"
                    ),
                    {"s": start, "e": end, "t": dt.datetime(2026, 3, 1, tzinfo=dt.UTC)},
                )
                if queued:
                    conn.execute(
                        text("INSERT INTO bench_stale VALUES ('DM_HBA1C', :s, :e, 7, :t)"),
                        {"s": start, "e": end, "t": dt.datetime(2026, 3, 1, tzinfo=dt.UTC)},
                    )
    finally:
        engine.dispose()
    assert upgrade(url, revision) == revision
    stale = sorted((str(e)[:10], m) for _, _, e, m, _ in _select(url, "SELECT * FROM bench_stale"))
    assert stale == [("2026-01-28", 1), ("2026-02-28", 7)]


def test_migration_0008_queues_every_benchmark_group_on_sqlite(tmp_path: Path) -> None:
    _rerender_round_trip(f"sqlite:///{tmp_path / 'agg.db'}")


def test_migration_0009_queues_every_benchmark_group_on_sqlite(tmp_path: Path) -> None:
    _rerender_round_trip(f"sqlite:///{tmp_path / 'agg.db'}", "0009")


@pytest.mark.postgres
def test_migration_0008_queues_every_benchmark_group_on_postgresql(
    pg_database_factory: Callable[[], str],
) -> None:
    _rerender_round_trip(pg_database_factory())
