"""Benchmark: ``fedqi-demo`` from start to a checked dashboard, wall and CPU per phase.

    .venv/bin/python bench/demo.py [--runs 1] [--runner pool,process] [--practices 30]
        [--periods 12] [--jobs 2] [--json OUT.json]

Each run is a fresh ``fedqi-demo --once --json --port 0`` in a temporary home (a real
aggregator server on loopback, real agents signing and POSTing over HTTP), timed from outside
with the CPU the demo measures per phase (its own, its commands', the server's). ``--runner pool,process`` alternates the two
ways of running the command lines (warm worker processes, the default; a new process per
command, the old way) so their ratio is measured under the same load. Reports, per runner, the
median wall and CPU and, per phase, the demo's own figures (``phases`` in its summary: wall,
and CPU of the demo, its commands and the aggregator server), with the load average before and
after each run; JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def demo_command() -> str:
    here = Path(sys.executable).parent / "fedqi-demo"
    found = str(here) if here.exists() else shutil.which("fedqi-demo")
    if not found:
        raise SystemExit("fedqi-demo is not installed: run `make venv` first")
    return found


def one_run(runner: str, practices: int, periods: int, jobs: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="fedqi-bench-demo-")) / "home"
    cmd = [
        demo_command(), "--home", str(home), "--once", "--json", "--port", "0",
        "--practices", str(practices), "--periods", str(periods), "--jobs", str(jobs),
        "--runner", runner,
    ]  # fmt: skip
    load_before = os.getloadavg()
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    load_after = os.getloadavg()
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        raise SystemExit(
            f"fedqi-demo exited {proc.returncode} without a JSON summary: {proc.stderr[-500:]}"
        ) from None
    shutil.rmtree(home.parent, ignore_errors=True)
    return {
        "runner": runner,
        "ok": summary["ok"] and proc.returncode == 0,
        "failures": summary["failures"],
        "wall_s": round(wall, 1),
        "seconds_to_dashboard": summary["seconds_to_dashboard"],
        # CPU of the demo, its commands and the server, summed over the phases the demo
        # measures (the pool's workers are the forkserver's children, not the demo's, so
        # getrusage(RUSAGE_CHILDREN) here misses them: that figure is kept apart)
        "cpu_s": round(sum(p["cpu"] for p in summary.get("phases", {}).values()) or cpu, 1),
        "cpu_waited_children_s": round(cpu, 1),
        "commands_run": summary["commands_run"],
        "accepted": summary["submissions"]["accepted"],
        "expected": summary["submissions"]["expected"],
        "phases": summary.get("phases", {}),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--runner", default="pool", help="pool, process, or both: pool,process")
    ap.add_argument("--practices", type=int, default=30)
    ap.add_argument("--periods", type=int, default=12)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    runners = a.runner.split(",")
    runs: list[dict[str, Any]] = []
    for i in range(a.runs):
        for runner in runners:
            r = one_run(runner, a.practices, a.periods, a.jobs)
            runs.append(r)
            print(
                f"run {i + 1} {runner:<7} {'ok' if r['ok'] else 'FAILED'}: {r['wall_s']:.1f} s "
                f"wall ({r['seconds_to_dashboard']:.1f} s to the checked dashboard), "
                f"{r['cpu_s']:.1f} CPU-s, {r['commands_run']} commands, "
                f"{r['accepted']}/{r['expected']} accepted; load {r['load_before'][0]:.2f} -> "
                f"{r['load_after'][0]:.2f}"
            )
            for name, ph in r["phases"].items():
                print(
                    f"    {name:<44} {ph['wall']:>6.1f} s wall {ph['cpu']:>6.1f} CPU-s "
                    f"(demo {ph['cpu_demo']:.1f}, commands {ph['cpu_commands']:.1f}, "
                    f"server {ph['cpu_server']:.1f})"
                )
            for failure in r["failures"]:
                print(f"    FAIL {failure}")
    medians = {
        runner: {
            k: statistics.median(r[k] for r in runs if r["runner"] == runner)
            for k in ("wall_s", "seconds_to_dashboard", "cpu_s")
        }
        for runner in runners
    }
    for runner, m in medians.items():
        print(
            f"median {runner:<7}: {m['wall_s']:.1f} s wall, {m['cpu_s']:.1f} CPU-s "
            f"({a.practices} practices x {a.periods} months, --jobs {a.jobs})"
        )
    if {"pool", "process"} <= set(medians):
        p, q = medians["process"], medians["pool"]
        print(
            f"process / pool: {p['wall_s'] / q['wall_s']:.2f}x wall, "
            f"{p['cpu_s'] / q['cpu_s']:.2f}x CPU"
        )
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "args": vars(a) | {"json": str(a.json) if a.json else None},
        "runs": runs,
        "medians": medians,
    }
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
