"""Benchmark: one page of the IG payload audit, its submissions verified one by one against
verified together (``aggregator.log.verify.verify_submission`` per row, as the page did, and
``verify_submissions``, as it does now), alternating in one process, with the same results.

A fresh network (SQLite, or PostgreSQL with ``--backend postgresql``) gets ``--practices``
practices sending ``--months`` monthly submissions each through the service path (40 indicators
x 9 strata, the ingestion benchmark's catalogue); then the newest ``--page`` submissions (the
dashboard's page size) are verified both ways ``--runs`` times each. Reported: median wall and
CPU seconds of each way and their ratio.

Usage::

    .venv/bin/python bench/payload_audit.py [--backend sqlite] [--practices 40] [--months 5]
        [--page 200] [--runs 5] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import ingest as bench_ingest  # noqa: E402


def _timed(fn, *args):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _one_by_one(session, subs, cp, key_name, key):  # type: ignore[no-untyped-def]
    from aggregator.log.verify import verify_submission

    return [verify_submission(session, s, cp, key_name, key) for s in subs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--practices", type=int, default=40)
    ap.add_argument("--months", type=int, default=5)
    ap.add_argument("--page", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--admin-url",
        default=os.environ.get("FEDQI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = ap.parse_args(argv)
    if not 1 <= args.months <= 11 or args.practices < 1 or args.page < 1 or args.runs < 1:
        ap.error("--months 1 to 11; --practices, --page and --runs 1 or more")

    from sqlalchemy import select

    from aggregator.db.models import Submission
    from aggregator.log import service as log
    from aggregator.log.verify import verify_submissions

    with tempfile.TemporaryDirectory(prefix="fedqi-audit-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        url, drop = bench_ingest.fresh_database(args.backend, tmp, args.admin_url, 0)
        try:
            rt, agents, key_dir = bench_ingest.setup_network(url, tmp, 0, args.practices)
            cat = bench_ingest.bench_catalogue()
            bodies = bench_ingest.make_submissions(cat, agents, args.months, seed=1)
            bench_ingest.run_service(url, key_dir, bodies, args.practices, 1, 4)
            signer = rt.signer  # type: ignore[attr-defined]
            one_by_one: list[tuple[float, float]] = []
            together: list[tuple[float, float]] = []
            for _ in range(args.runs):
                for way in ("one", "together"):
                    with rt.db.read() as session:  # type: ignore[attr-defined]
                        subs = list(session.scalars(select(Submission).order_by(
                            Submission.leaf_index.desc()).limit(args.page)))  # fmt: skip
                        cp = log.latest_checkpoint(session)
                        key = (signer.key_name, signer.key.public)
                        if way == "one":
                            found, wall, cpu = _timed(_one_by_one, session, subs, cp, *key)
                            one_by_one.append((wall, cpu))
                            first = found
                        else:
                            found, wall, cpu = _timed(verify_submissions, session, subs, cp, *key)
                            together.append((wall, cpu))
                            if found != first:
                                raise SystemExit("the two ways disagree")
                            if not all(c.ok for checks in found for c in checks):
                                raise SystemExit("a check failed on an intact log")
            rt.db.dispose()  # type: ignore[attr-defined]
        finally:
            drop()
    page = len(subs)
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load": os.getloadavg(),
        },  # fmt: skip
        "backend": args.backend,
        "submissions": len(bodies),
        "page": page,
        "runs": args.runs,
        "one_by_one": {
            "wall_s": statistics.median(w for w, _ in one_by_one),
            "cpu_s": statistics.median(c for _, c in one_by_one),
        },  # fmt: skip
        "together": {
            "wall_s": statistics.median(w for w, _ in together),
            "cpu_s": statistics.median(c for _, c in together),
        },  # fmt: skip
    }
    result["cpu_ratio"] = result["together"]["cpu_s"] / result["one_by_one"]["cpu_s"]
    result["wall_ratio"] = result["together"]["wall_s"] / result["one_by_one"]["wall_s"]
    print(
        f"{args.backend}: a page of {page} of {len(bodies)} submissions, medians of {args.runs}: "
        f"one by one {result['one_by_one']['wall_s']:.3f} s wall / {result['one_by_one']['cpu_s']:.3f} s CPU, "
        f"together {result['together']['wall_s']:.3f} s / {result['together']['cpu_s']:.3f} s "
        f"(CPU {result['cpu_ratio']:.2f}x, wall {result['wall_ratio']:.2f}x)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
