"""Benchmark: a funnel read, each practice's figures computed when read from its group's
stored counts and summary, for each kind of viewer.

    .venv/bin/python bench/read_compute.py --db URL [--runs 9] [--indicator ID]

``--db`` names a database as ``bench/capacity.py --keep`` leaves it (a national month:
``--practices 6500 --months 1 --keep``). For one group of its newest period (the first
indicator, or ``--indicator``) it times ``funnel_json`` (what ``GET /v1/benchmarks/funnel``
answers: aggregator/benchmarks/funnel.py), alternating, ``--runs`` times each in a new session,
as read by an admin (every practice identified), a network lead (its PCN identified, every
other practice pseudonymised, counts re-published) and a practice (its peers without counts,
in list-size bands). Each read computes every practice's rate, intervals, z and band from the
group's ``bench_entries`` value and its summary (aggregator/benchmarks/entries_store.py) and
renders its entry; each viewer's read is timed twice a run, first with the process's cache of
computed groups emptied (``first``: as after a refresh), then again (``again``: the group's rows
and rendered entries from that cache).

It prints medians of wall time and of this process's CPU for each viewer, the response's size,
and what the group's stored value weighs (bytes a practice, and for a full national refresh:
6,500 practices x 40 indicators x 24 periods). It changes nothing in the database.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from aggregator.benchmarks import entries_store, stats  # noqa: E402
from aggregator.benchmarks.funnel import funnel_json  # noqa: E402
from aggregator.benchmarks.viewer import Viewer  # noqa: E402
from aggregator.db.models import User  # noqa: E402
from aggregator.db.session import Database  # noqa: E402

NATIONAL_GROUPS = 40 * 24
NATIONAL_PRACTICES = 6500

_GROUP = sa.text(
    "SELECT indicator, period_start, period_end FROM bench_summary "
    "WHERE (CAST(:i AS text) IS NULL OR indicator = :i) "
    "ORDER BY period_end DESC, indicator LIMIT 1"
)
_WEIGHT = sa.text(
    "SELECT octet_length(numbers) + octet_length(practices) + octet_length(submissions), "
    "pg_column_size(numbers) + pg_column_size(practices) + pg_column_size(submissions) "
    "FROM bench_entries WHERE indicator = :i AND period_start = :s AND period_end = :e"
)
_SOME_PRACTICE = sa.text("SELECT ods, pcn FROM practices ORDER BY ods LIMIT 1")


def _viewers(first: str, group: str) -> dict[str, User]:
    """An admin, a lead of the first practice's PCN and that practice's user (not stored)."""
    return {
        "admin": User(id=-1, name="bench admin", role="admin"),
        "network lead": User(id=-2, name="bench lead", role="network_lead", group=group),
        "practice": User(id=-3, name="bench practice", role="practice", practice_ods=first),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="the kept database's URL")
    ap.add_argument("--runs", type=int, default=9, help="reads for each viewer (default 9)")
    ap.add_argument("--indicator", help="the group's indicator (default: the first stored)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error(f"--runs {args.runs}: use 1 or more")
    try:
        db = Database(args.db)
        with db.read() as session:
            found = session.execute(_GROUP, {"i": args.indicator}).first()
            first = session.execute(_SOME_PRACTICE).first()
    except (sa.exc.SQLAlchemyError, ValueError) as exc:
        ap.error(f"--db {args.db}: cannot read its benchmarks ({type(exc).__name__})")
    if found is None or first is None:
        what = f"indicator {args.indicator}" if args.indicator else "benchmark group"
        ap.error(f"--db: no {what} stored in {args.db}")
    indicator, start, end = found
    period = end.isoformat()
    bands = stats.PeerBands((5000, 10000, 15000), 3)
    secret = b"bench read_compute pseudonyms!!!"
    sizes: dict[str, int] = {}

    def reader(user: User) -> Callable[[], None]:
        def read() -> None:
            with db.read() as session:
                viewer = Viewer.load(session, user, secret, bands)
                sizes[user.role] = len(funnel_json(session, viewer, indicator, period))

        return read

    viewers = {name: reader(u) for name, u in _viewers(first[0], first[1]).items()}
    for fn in viewers.values():  # warm the database's caches and this process's imports
        fn()
    # Each viewer's read twice a run: first with the process's cache of computed groups emptied
    # (the first read after a refresh: every practice computed and its entry rendered), then
    # again (the group's rows and entries from the cache: entries_store.cached_group_rows).
    kinds = {
        f"{name}, {how}": (fn, how) for name, fn in viewers.items() for how in ("first", "again")
    }
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.runs):
        for name, (fn, how) in kinds.items():
            if how == "first":
                entries_store.clear_cache()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(time.process_time() - c0)
    with db.read() as session:
        raw, stored = session.execute(_WEIGHT, {"i": indicator, "s": start, "e": end}).one()
        practices = session.execute(
            sa.text(
                "SELECT practices FROM bench_summary WHERE indicator = :i AND period_start = :s "
                "AND period_end = :e"
            ),
            {"i": indicator, "s": start, "e": end},
        ).scalar_one()
    db.dispose()
    print(f"group {indicator} {start}/{end}: {practices} practices, {args.runs} runs each")
    for name, (_, how) in kinds.items():
        wall, cpu = statistics.median(walls[name]) * 1000, statistics.median(cpus[name]) * 1000
        role = _viewers("", "")[name.removesuffix(f", {how}")].role
        print(f"{name}: wall median {wall:.1f} ms, this process's CPU median {cpu:.1f} ms, "
              f"{sizes[role]:,} bytes")  # fmt: skip
    per = float(stored) / max(practices, 1)
    print(
        f"stored: {per:.0f} bytes a practice ({float(raw) / max(practices, 1):.0f} before "
        f"compression); a full national refresh writes {NATIONAL_GROUPS} such values, "
        f"{NATIONAL_GROUPS * NATIONAL_PRACTICES * per / 1e6:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
