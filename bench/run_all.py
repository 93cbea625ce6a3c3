"""Run the benchmarks in bench/ one after another, each with its own defaults (the figures in
docs/benchmarks.md come from these commands). All of them together take about an hour on a
2-core machine; name some to run only those:

    make bench                         # every benchmark
    make bench BENCH="agent_compute"   # one (or several, space-separated)

Extra options for a single benchmark go after ``--``:
``.venv/bin/python bench/run_all.py agent_compute -- --runs 3``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Cheapest first, so a partial run still tells something.
ORDER = [
    "agent_compute",
    "backfill",
    "preview_process",
    "install_size",
    "synth_generate",
    "load_csv",
    "ingest",
    "query",
    "payload_audit",
    "demo",
    "capacity",
]


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    names = [n for a in argv for n in a.split()] or ORDER
    unknown = [n for n in names if not (HERE / f"{n}.py").is_file()]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(ORDER)}",
            file=sys.stderr,
        )
        return 2
    if extra and len(names) != 1:
        print("options after -- need exactly one benchmark name", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py"), *extra]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
        print(f"== {name}: {time.perf_counter() - start:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
