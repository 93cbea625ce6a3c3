"""Benchmark: what the pre-rendered JSON entries cost a group's refresh.

    .venv/bin/python bench/refresh_render.py --db URL --key-dir DIR [--groups 6] [--rounds 3]

``--db`` and ``--key-dir`` name a database and its keys as ``bench/capacity.py --keep`` leaves
them (a national month: ``--practices 6500 --months 1 --keep``). For the first ``--groups``
groups of that database it runs :func:`aggregator.benchmarks.service.refresh_group`, alternating
in each round between the refresh as it is and the refresh with the two JSON entries of each
practice row (``item_json``, ``peer_json``: aggregator/benchmarks/render.py) not rendered and
stored empty, each in its own transaction, rolled back (the database is left as it was). It
prints the medians of wall time, this process's CPU and the database server process's CPU
(read from ``/proc`` of the connection's backend, so the server must run on this machine).

It answers whether storing the entries pre-rendered is what makes a national refresh slow:
the rows' numbers are written either way; the entries are 538 of a row's 772 bytes
(``bench/read_compute.py``). A rolled-back refresh pays the writes but not the commit's flush
nor the vacuum after it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from aggregator.benchmarks import render, service  # noqa: E402

_GROUPS = sa.text(
    "SELECT indicator, period_start, period_end FROM bench_summary "
    "ORDER BY period_end DESC, indicator LIMIT :n"
)


@contextmanager
def unrendered(on: bool) -> Iterator[None]:
    """With ``on``, the refresh's two JSON entries per practice are not rendered (empty)."""
    saved = render.as_json, render.identified_fields, render.peer_fields
    if on:
        render.as_json = lambda fields: ""  # type: ignore[assignment]
        render.identified_fields = lambda flat: {}  # type: ignore[assignment]
        render.peer_fields = lambda flat: {}  # type: ignore[assignment]
    try:
        yield
    finally:
        render.as_json, render.identified_fields, render.peer_fields = saved


def backend_cpu(pid: int) -> float:
    """The CPU seconds (user + system) of the database server process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(db: object, group: service.Group, skip_render: bool) -> tuple[float, float, float]:
    """One refresh of ``group``, rolled back: (wall, this process's CPU, server CPU)."""
    with db.session() as session, unrendered(skip_render):  # type: ignore[attr-defined]
        pid = int(session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        b0, c0, w0 = backend_cpu(pid), time.process_time(), time.perf_counter()
        service.refresh_group(session, group)
        session.execute(sa.text("SELECT 1"))  # the writes have reached the server
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        server = backend_cpu(pid) - b0
        session.rollback()
    return wall, cpu, server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="the kept database's URL (PostgreSQL)")
    ap.add_argument("--key-dir", required=True, type=Path, help="its key directory")
    ap.add_argument("--groups", type=int, default=6, help="groups refreshed a round (default 6)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of both kinds (default 3)")
    args = ap.parse_args(argv)
    for name in ("groups", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} {getattr(args, name)}: use 1 or more")
    if not args.db.startswith(("postgresql", "postgres:")):
        ap.error(f"--db {args.db}: a PostgreSQL URL (its server's CPU is read from /proc)")
    from aggregator.errors import AggregatorError
    from aggregator.runtime import Runtime
    from aggregator.settings import get_settings

    try:
        rt = Runtime.load(get_settings(db=args.db, key_dir=args.key_dir))
        with rt.db.read() as session:
            groups = [service.Group(*r) for r in session.execute(_GROUPS, {"n": args.groups})]
    except (AggregatorError, sa.exc.SQLAlchemyError) as exc:
        ap.error(f"--db {args.db}: cannot load its runtime ({exc})")
    if not groups:
        ap.error(f"--db: no benchmark group stored in {args.db}")
    results: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for g in groups[:1]:  # warm the caches and this process's imports
        one(rt.db, g, False)
    for r in range(args.rounds):
        for skip in (False, True) if r % 2 == 0 else (True, False):
            results[skip] += [one(rt.db, g, skip) for g in groups]
    rt.db.dispose()
    print(f"{len(groups)} group(s) x {args.rounds} round(s) each way, rolled back")
    base = results[False]
    for skip, label in ((False, "as stored"), (True, "without JSON")):
        rows = results[skip]
        med = [statistics.median(x[k] for x in rows) * 1000 for k in range(3)]
        ratio = med[1] / (statistics.median(x[1] for x in base) * 1000 or 1)
        print(
            f"{label}: wall median {med[0]:.1f} ms, client CPU {med[1]:.1f} ms "
            f"({ratio:.2f}x), server CPU {med[2]:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
