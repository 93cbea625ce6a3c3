"""Benchmark: loading a CSV extract of a synthetic practice into the practice store.

    .venv/bin/python bench/load_csv.py [--patients 30000] [--seed 1] [--runs 3]
        [--stores sqlite,duckdb] [--data-dir DIR] [--json OUT.json]

A synthetic practice (``agent.sources.synth.generate_practice``, cached in ``--data-dir``) is exported
as a CSV extract (``agent.sources.export.export_csv``, ISO dates), then loaded with
``agent.sources.csv_extract.load_csv`` into a fresh store, ``--runs`` times per store kind, each
run in a fresh subprocess so its peak RSS is the load's own. Reports the median wall time, rows
per second (all three files), the CPU time of the loading process (all its threads) and the
peak RSS, plus the extract's size, so the numbers can be
set against the file size (memory should not follow it: the reader streams).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def child(extract: Path, store: Path) -> dict[str, Any]:
    from agent.sources.common import open_store
    from agent.sources.csv_extract import load_csv

    engine = open_store(store)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    report = load_csv(extract, engine)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    engine.dispose()
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,  # all threads of the process (DuckDB's included)
        "rows": report.patients + report.events + report.medications,
        "patients": report.patients,
        "events": report.events,
        "medications": report.medications,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _extract(data_dir: Path, patients: int, seed: int) -> Path:
    from agent.sources.common import open_store
    from agent.sources.export import export_csv
    from agent.sources.synth import generate_practice

    practice = data_dir / f"practice-{patients}-{seed}.sqlite"
    if not practice.exists():
        print(f"generating {patients} patients -> {practice}", flush=True)
        generate_practice(practice, patients=patients, seed=seed)
    extract = data_dir / f"extract-{patients}-{seed}"
    if not (extract / "medications.csv").exists():
        print(f"exporting CSV -> {extract}", flush=True)
        engine = open_store(practice)
        export_csv(engine, extract)
        engine.dispose()
    return extract


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,duckdb")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "fedqi-bench"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("EXTRACT", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]))))
        return 0

    args.data_dir.mkdir(parents=True, exist_ok=True)
    extract = _extract(args.data_dir, args.patients, args.seed)
    sizes = {p.name: p.stat().st_size for p in sorted(extract.glob("*.csv"))}
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "patients": args.patients,
        "extract_bytes": sizes,
        "stores": {},
    }
    for kind in args.stores.split(","):
        runs = []
        for i in range(args.runs):
            with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
                store = Path(tmp) / f"store.{kind}"
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(extract), str(store)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                run = json.loads(out.stdout.strip().splitlines()[-1])
                runs.append(run)
                print(
                    f"{kind} run {i + 1}: {run['seconds']:.2f} s wall, "
                    f"{run['cpu_seconds']:.2f} s CPU, {run['maxrss_mb']:.0f} MB",
                    flush=True,
                )
        median = statistics.median(r["seconds"] for r in runs)
        rows = runs[0]["rows"]
        results["stores"][kind] = {
            "runs_seconds": [round(r["seconds"], 3) for r in runs],
            "median_seconds": round(median, 3),
            "median_cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs), 3),
            "rows": rows,
            "rows_per_second": round(rows / median),
            "patients": runs[0]["patients"],
            "events": runs[0]["events"],
            "medications": runs[0]["medications"],
            "peak_rss_mb": round(max(r["maxrss_mb"] for r in runs), 1),
        }
    total_mb = sum(sizes.values()) / 1e6
    print(
        f"\nextract: {total_mb:.1f} MB ({', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in sizes.items())})"
    )
    print(
        f"{'store':8} {'median s':>9} {'CPU s':>8} {'rows':>10} {'rows/s':>10} {'rows/CPU s':>11} "
        f"{'peak RSS MB':>12}"
    )
    for kind, r in results["stores"].items():
        print(
            f"{kind:8} {r['median_seconds']:>9.2f} {r['median_cpu_seconds']:>8.2f} {r['rows']:>10} "
            f"{r['rows_per_second']:>10} {round(r['rows'] / r['median_cpu_seconds']):>11} "
            f"{r['peak_rss_mb']:>12.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
