"""Benchmark: a backfill of N monthly periods in one engine pass against one period, and against
N periods computed one by one (issue 17, goal 1: N periods cost at most 2x one).

    .venv/bin/python bench/backfill.py [--patients 2000] [--months 12] [--runs 5] [--seed 1]
        [--engines sqlite,duckdb] [--json OUT.json]

A synthetic practice (``agent.sources.synth.generate_practice``) per engine, then, alternating in each
run so load changes hit them all alike: ``compute_cells`` for the last month alone,
``compute_cells`` for each of the N months, and ``compute_periods`` for the N months in one
pass, by each of its two methods (``changes``, the default: each patient's rules once, as bit
masks over the period ends; ``sql``: every (patient, period end) in one SQL statement). It
checks that both one-pass results equal the per-month cells, and reports the median CPU seconds
of this process (the engines run in it) and wall seconds, with the ratios: one pass / one period
(goal: <= 2; ``pass`` is the default method, ``pass_sql`` the other), one pass / one period by
the same method (``compute_periods`` for the last month alone, ``one_changes``) and N singles /
one pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PERIOD_END = dt.date(2026, 3, 31)


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _timed(fn: Any) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), _cpu()
    value = fn()
    return value, _cpu() - c, time.perf_counter() - w


def run(engine_name: str, patients: int, months: int, runs: int, seed: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from agent.engine import compute_cells, compute_periods
    from agent.engine.dates import months_before
    from agent.library import load_default_catalogue
    from agent.sources.store import open_practice
    from agent.sources.synth import generate_practice

    catalogue = load_default_catalogue()
    last = PERIOD_END
    ends = sorted({months_before(last, m) for m in range(months)})
    with tempfile.TemporaryDirectory(prefix="fedqi-backfill-") as tmp:
        path = Path(tmp) / f"practice.{engine_name}"
        url = f"{engine_name}:///{path}"
        generate_practice(url, patients=patients, seed=seed, period_end=last)
        engine: sa.Engine = open_practice(url, read_only=True)
        try:
            compute_periods(engine, catalogue, ends)  # warm-up (file cache, plan)
            samples: dict[str, list[tuple[float, float]]] = {
                "one": [],
                "one_changes": [],
                "singles": [],
                "pass": [],
                "pass_sql": [],
            }
            same = True
            for _ in range(runs):
                _, c, w = _timed(lambda: compute_cells(engine, catalogue, last))
                samples["one"].append((c, w))
                _, c, w = _timed(lambda: compute_periods(engine, catalogue, [last]))
                samples["one_changes"].append((c, w))
                singles, c, w = _timed(
                    lambda: {e: compute_cells(engine, catalogue, e) for e in ends}
                )
                samples["singles"].append((c, w))
                together, c, w = _timed(lambda: compute_periods(engine, catalogue, ends))
                samples["pass"].append((c, w))
                in_sql, c, w = _timed(
                    lambda: compute_periods(engine, catalogue, ends, method="sql")
                )
                samples["pass_sql"].append((c, w))
                same = same and together == singles and in_sql == singles
        finally:
            engine.dispose()
    med = {
        k: {
            "cpu_s": round(statistics.median(c for c, _ in v), 4),
            "wall_s": round(statistics.median(w for _, w in v), 4),
        }
        for k, v in samples.items()
    }
    return {
        "engine": engine_name,
        "patients": patients,
        "months": months,
        "runs": runs,
        "same_cells": same,
        "median": med,
        "ratio_pass_to_one_cpu": round(med["pass"]["cpu_s"] / med["one"]["cpu_s"], 2),
        "ratio_sql_pass_to_one_cpu": round(med["pass_sql"]["cpu_s"] / med["one"]["cpu_s"], 2),
        "ratio_pass_to_one_changes_cpu": round(
            med["pass"]["cpu_s"] / med["one_changes"]["cpu_s"], 2
        ),
        "ratio_singles_to_pass_cpu": round(med["singles"]["cpu_s"] / med["pass"]["cpu_s"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--engines", default="sqlite,duckdb")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    results = []
    for name in a.engines.split(","):
        r = run(name, a.patients, a.months, a.runs, a.seed)
        results.append(r)
        m = r["median"]
        print(
            f"{name:<8} {a.patients} patients, {a.months} months, {a.runs} runs (median CPU s): "
            f"one month {m['one']['cpu_s']:.3f}; {a.months} months one by one "
            f"{m['singles']['cpu_s']:.3f}; in one pass {m['pass']['cpu_s']:.3f} -> "
            f"{r['ratio_pass_to_one_cpu']}x one month, {r['ratio_singles_to_pass_cpu']}x faster "
            f"than one by one; the SQL method {m['pass_sql']['cpu_s']:.3f} -> "
            f"{r['ratio_sql_pass_to_one_cpu']}x; one month by the default method "
            f"{m['one_changes']['cpu_s']:.3f} -> one pass {r['ratio_pass_to_one_changes_cpu']}x "
            f"that; same cells: {r['same_cells']}"
        )
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average": os.getloadavg(),
        "results": results,
    }
    print(f"load average {report['load_average']}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))
    return 0 if all(r["same_cells"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
