"""Benchmark: a funnel's practice entries read as the refresh stored them, or computed at read.

    .venv/bin/python bench/read_compute.py --db URL [--runs 9] [--indicator ID]

``--db`` names a database as ``bench/capacity.py --keep`` leaves it (a national month:
``--practices 6500 --months 1 --keep``). For one group of its newest period (the first
indicator, or ``--indicator``) it times, alternating, ``--runs`` times each in a new
connection:

* **stored**: the narrow read of the stored practice rows that a national funnel's fast path
  makes (``aggregator.benchmarks.funnel.funnel_json``: each practice's entry as JSON, spliced);
* **computed**: what a read would do if the refresh stored no practice rows: the effective
  cells' counts (without their strata, and without checking their verdicts), each practice's
  latest submission, every statistic (``stats.funnel``) and the two JSON entries per practice
  that the refresh renders.

It prints medians of wall time and of this process's CPU, the computed read's parts (query
wall, statistics CPU, rendering CPU), and what the stored rows weigh: bytes per practice row
(``pg_column_size``), and what a full national refresh (6,500 practices x 40 indicators x 24
periods) writes at that size. It changes nothing in the database.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from aggregator.benchmarks import render, stats  # noqa: E402
from aggregator.benchmarks.service import _r6  # noqa: E402

NATIONAL_ROWS = 6500 * 40 * 24

_GROUP = sa.text(
    "SELECT indicator, period_start, period_end FROM bench_summary "
    "WHERE (CAST(:i AS text) IS NULL OR indicator = :i) "
    "ORDER BY period_end DESC, indicator LIMIT 1"
)
_STORED = sa.text(
    "SELECT practice_ods, item_json, peer_json, denominator, rate, denominator_status "
    "FROM bench_practice WHERE indicator = :i AND period_start = :s AND period_end = :e"
)
_CELLS = sa.text(
    "SELECT s.practice_ods, s.received_at, s.seq, c.numerator, c.numerator_status, "
    "c.denominator, c.denominator_status FROM cells c "
    "JOIN submissions s ON s.submission_id = c.submission_id "
    "WHERE s.effective AND s.period_start = :s AND s.period_end = :e AND c.indicator = :i"
)
_WEIGHT = sa.text(
    "SELECT count(*), avg(pg_column_size(b.*)), avg(pg_column_size(b.item_json) + "
    "pg_column_size(b.peer_json)) FROM bench_practice b "
    "WHERE indicator = :i AND period_start = :s AND period_end = :e"
)


def stored(conn: sa.Connection, group: dict[str, object]) -> int:
    return len(conn.execute(_STORED, group).all())


def computed(
    conn: sa.Connection, group: dict[str, object], parts: list[float] | None = None
) -> int:
    t0 = time.perf_counter()
    rows = conn.execute(_CELLS, group).all()
    t1 = time.process_time()
    latest: dict[str, Any] = {}
    for r in rows:
        cur = latest.get(r[0])
        if cur is None or (r[1], r[2]) > (cur[1], cur[2]):
            latest[r[0]] = r
    cells = sorted(latest.values())
    query = time.perf_counter() - t0
    f = stats.funnel([stats.Counts(r[0], r[3], r[5], r[4], r[6]) for r in cells])
    t2 = time.process_time()
    entries = []
    for c, res in zip(cells, f.practices, strict=True):
        ci95, ci998 = res.ci95, res.ci998
        lo95, hi95 = (_r6(ci95[0]), _r6(ci95[1])) if ci95 else (None, None)
        lo998, hi998 = (_r6(ci998[0]), _r6(ci998[1])) if ci998 else (None, None)
        flat = (res.practice, c[3], c[4], c[5], c[6], res.status, _r6(res.rate), lo95, hi95,
                lo998, hi998, res.approximate, _r6(res.z), res.band, None, res.note, None, None)  # fmt: skip
        entries.append(
            (
                render.as_json(render.identified_fields(flat)),
                render.as_json(render.peer_fields(flat)),
            )
        )
    if parts is not None:
        parts[:] = [query, t2 - t1, time.process_time() - t2]
    return len(entries)


def timed(engine: sa.Engine, fn: Callable[[sa.Connection], int]) -> tuple[int, float, float]:
    with engine.connect() as conn:
        t0, c0 = time.perf_counter(), time.process_time()
        n = fn(conn)
        return n, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="the kept database's URL")
    ap.add_argument("--runs", type=int, default=9, help="reads of each kind (default 9)")
    ap.add_argument("--indicator", help="the group's indicator (default: the first stored)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error(f"--runs {args.runs}: use 1 or more")
    try:
        engine = sa.create_engine(args.db)
        with engine.connect() as conn:
            found = conn.execute(_GROUP, {"i": args.indicator}).first()
    except (sa.exc.SQLAlchemyError, ValueError) as exc:
        ap.error(f"--db {args.db}: cannot read its benchmarks ({type(exc).__name__})")
    if found is None:
        what = f"indicator {args.indicator}" if args.indicator else "benchmark group"
        ap.error(f"--db: no {what} stored in {args.db}")
    group = {"i": found[0], "s": found[1], "e": found[2]}
    kinds: dict[str, Callable[[sa.Connection], int]] = {
        "stored": lambda c: stored(c, group),
        "computed": lambda c: computed(c, group),
    }
    for fn in kinds.values():  # warm the database's caches and this process's imports
        timed(engine, fn)
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    practices = 0
    for _ in range(args.runs):
        for name, fn in kinds.items():
            practices, wall, cpu = timed(engine, fn)
            walls[name].append(wall)
            cpus[name].append(cpu)
    parts: list[float] = []
    with engine.connect() as conn:
        computed(conn, group, parts)
        rows, row_bytes, json_bytes = conn.execute(_WEIGHT, group).one()
    engine.dispose()
    print(f"group {found[0]} {found[1]}/{found[2]}: {practices} practices, {args.runs} runs each")
    ms = {k: (statistics.median(walls[k]) * 1000, statistics.median(cpus[k]) * 1000) for k in kinds}
    for name, (wall, cpu) in ms.items():
        print(f"{name}: wall median {wall:.1f} ms, this process's CPU median {cpu:.1f} ms")
    print(f"computed / stored: {ms['computed'][0] / ms['stored'][0]:.1f}x wall")
    print(
        f"computed, one read's parts: query {parts[0] * 1000:.1f} ms wall, statistics "
        f"{parts[1] * 1000:.1f} ms CPU, entries rendered {parts[2] * 1000:.1f} ms CPU"
    )
    if rows:
        print(
            f"stored rows: {float(row_bytes):.0f} bytes a practice row ({float(json_bytes):.0f} "
            f"of them its two JSON entries); a full national refresh writes "
            f"{NATIONAL_ROWS:,} rows, {NATIONAL_ROWS * float(row_bytes) / 1e9:.1f} GB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
