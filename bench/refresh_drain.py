"""Benchmark: drain a kept database's benchmark groups with one or more processes at once.

    .venv/bin/python bench/refresh_drain.py --db URL --key-dir DIR [--drainers 1,2] [--rounds 2]

``--db`` and ``--key-dir`` name a database and the aggregator's keys as ``bench/capacity.py
--keep`` leaves them (a national month: ``--practices 6500 --months 1 --keep``). Each round
marks every stored group stale and drains them with each count of processes in turn
(``capacity.timed_drainers``: each process loads its runtime first, then all start at once),
printing the wall seconds until the newest period is fresh and until every group is, the
drainers' CPU seconds, and the whole machine's busy CPU seconds over the drain (``/proc/stat``:
the database server's work included). Run it from a ``git worktree`` of an earlier commit,
with this file and ``capacity.py`` and ``ingest.py`` copied into its ``bench/``, to time that
commit's refresh on the same database.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import capacity  # noqa: E402

from aggregator.errors import AggregatorError  # noqa: E402
from aggregator.runtime import Runtime  # noqa: E402
from aggregator.settings import get_settings  # noqa: E402


def busy_seconds() -> float:
    """The machine's busy CPU seconds since boot, all cores (Linux)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="the kept database's URL")
    ap.add_argument("--key-dir", required=True, type=Path, help="the aggregator's keys")
    ap.add_argument("--drainers", default="1,2", help="comma-separated process counts")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    counts = capacity.drainer_counts(ap, args.drainers)
    if not args.key_dir.is_dir():
        ap.error(f"--key-dir {args.key_dir}: not a directory")
    try:
        rt = Runtime.load(get_settings(db=args.db, key_dir=args.key_dir))
    except AggregatorError as exc:
        ap.error(f"--db {args.db} / --key-dir {args.key_dir}: {exc.message}")
    with rt.db.read() as s:
        ends = sorted({e for _, e in capacity.bench_service.periods(s)})
    if not ends:
        ap.error(f"--db: no benchmark groups stored in {args.db}")
    print(f"tree {REPO}; {len(ends)} period(s), newest ending {ends[-1]}", flush=True)
    for round_ in range(1, args.rounds + 1):
        for n in counts:
            before = busy_seconds()
            groups, newest, everything, cpu = capacity.timed_drainers(
                rt, args.db, args.key_dir, ends[-1], n
            )
            print(
                f"round {round_}, {n} drainer(s): {groups} groups, newest period fresh after "
                f"{newest:.2f} s, all after {everything:.2f} s; drainers {cpu:.2f} CPU-s, machine "
                f"{busy_seconds() - before:.2f} CPU-s; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    rt.db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
