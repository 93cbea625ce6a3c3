"""Benchmark: generating a synthetic practice (``fedqi-agent synth``) on each file backend.

    .venv/bin/python bench/synth_generate.py [--patients 30000] [--seed 7] [--runs 1]
        [--backends sqlite,duckdb] [--dir DIR] [--json OUT.json]

Each run writes a fresh practice in a fresh subprocess (so peak RSS is the run's own) and
reports wall time, CPU time (user + system) of the main process and of the generator processes,
rows, file size and peak RSS. CPU time is reported beside wall time because on a shared 2-core
machine the wall time mostly measures the neighbours. The generator processes run side by side
(one per core) and write their own parts; the main process then merges them and builds indexes,
so an idle machine's wall time is about (generator CPU / cores) + main CPU.
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SUFFIX = {"sqlite": ".db", "duckdb": ".duckdb"}


def child(target: str, patients: int, seed: int) -> dict[str, Any]:
    from agent.sources.synth import generate_practice

    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = generate_practice(target, patients=patients, seed=seed)
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    own, gen = (
        (a.ru_utime - b.ru_utime) + (a.ru_stime - b.ru_stime)
        for a, b in zip(after, before, strict=True)
    )
    peak = max(r.ru_maxrss for r in after) / 1024  # Linux: KiB
    return {
        **summary.as_dict(),
        "cpu_seconds": round(own + gen, 2),
        # This process (merging the parts, indexes; everything when serial) and the generator
        # processes (generating and writing their parts).
        "cpu_main_seconds": round(own, 2),
        "cpu_generators_seconds": round(gen, 2),
        "peak_rss_mb": round(peak, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--patients", type=int, default=30000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--backends", default="sqlite,duckdb")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument(
        "--child", nargs=3, metavar=("TARGET", "PATIENTS", "SEED"), help=argparse.SUPPRESS
    )
    args = ap.parse_args(argv)
    if args.child:
        target, patients, seed = args.child
        print(json.dumps(child(target, int(patients), int(seed))))
        return 0

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        },
        "patients": args.patients,
        "seed": args.seed,
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="fedqi-bench-synth-") as tmp:
        where = args.dir or Path(tmp)
        for backend in args.backends.split(","):
            runs = []
            for i in range(args.runs):
                target = where / f"bench-synth-{i}{SUFFIX[backend]}"
                target.unlink(missing_ok=True)
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        str(target),
                        str(args.patients),
                        str(args.seed),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                target.unlink(missing_ok=True)
            results["runs"][backend] = runs
            med_wall = statistics.median(r["seconds"] for r in runs)
            med_cpu = statistics.median(r["cpu_seconds"] for r in runs)
            r0 = runs[0]
            print(
                f"{backend:7s} patients={r0['patients']:,} events={r0['events']:,} "
                f"medications={r0['medications']:,} wall={med_wall:.1f}s cpu={med_cpu:.1f}s "
                f"(main {r0['cpu_main_seconds']:.1f}s, generators {r0['cpu_generators_seconds']:.1f}s) "
                f"file={r0['bytes'] / 1e6:.0f}MB peak_rss={r0['peak_rss_mb']:.0f}MB"
            )
    results["machine"]["load_average_at_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
