"""Benchmark: the whole ``fedqi-agent preview`` process, as a newcomer runs it.

    .venv/bin/python bench/preview_process.py [--case LABEL:TREE:PRACTICE ...] [--runs 5]
        [--period 2026-03] [--patients 30000] [--cold] [--json OUT.json]

Each case is a checkout of the project (TREE: this repository, or a ``git worktree`` of an
earlier commit, whose packages go first on the child's PYTHONPATH) and a practice database
(PRACTICE). For each case a fresh agent home is made with that tree's ``fedqi-agent init``
(not enrolled, so the tree's default catalogue is used); then ``fedqi-agent preview --period P
--local`` runs ``--runs`` times per case, the cases alternating so that drift on a shared
machine hits them alike, after one untimed warm-up run each (which also writes the tree's
bytecode, as a first run on a practice's machine does). Reported per case: wall time and
CPU time (user + system of the child process and its threads, from ``RUSAGE_CHILDREN``),
medians, and each case's median as a ratio of the first case's. Without ``--case``: this tree
on a synthetic practice of ``--patients`` patients (``agent.sources.synth``, seed 1, period end
2026-03-31) made in a temporary directory.

A DuckDB practice's compiled statement is stored in the agent home by the first command that
computes (agent/engine/stored.py), and the practice file's identity once it is found clean of
records dated before birth (agent/engine/clean.py), so the timed runs find both, as a practice's
later commands do. ``--cold`` removes both before every timed run: each run then compiles and
stores the statement and checks the file, as the first command after an install does (after a
catalogue change, or an upgrade that leaves the check as it was, only the statement is
compiled again).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# What the ``fedqi-agent`` console script runs (agent.entry); a tree from before it existed runs
# agent.cli's main, as its console script did. The child runs in the tree, so the test is that
# tree's file: the development install's path finder would find this checkout's agent.entry
# for a tree that has none.
_ENTRY = (
    "import os\n"
    "if os.path.exists(os.path.join('agent', 'entry.py')):\n"
    "    from agent.entry import main\n"
    "else:\n"
    "    from agent.cli import main\n"
    "raise SystemExit(main())\n"
)


def _agent(tree: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    # Python writes the tree's bytecode (__pycache__) on the first run, as it does on a
    # practice's machine; a PYTHONDONTWRITEBYTECODE in this environment would make every run
    # compile the project's modules from source, a cost no installed agent pays.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(tree)
    return subprocess.run(
        [sys.executable, "-c", _ENTRY, *args],
        env=env,
        capture_output=True,
        check=False,
        cwd=tree,
    )


def _timed(tree: Path, args: Sequence[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = _agent(tree, *args)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(
            f"{tree}: fedqi-agent {' '.join(args)} failed: {proc.stderr.decode()[-2000:]}"
        )
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", default=[], help="LABEL:TREE:PRACTICE")
    parser.add_argument("--patients", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--period", default="2026-03")
    parser.add_argument(
        "--cold", action="store_true", help="remove the stored statement before every run"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    cases = []
    for text in args.case:
        parts = text.split(":", 2)
        if len(parts) != 3 or not all(parts):
            parser.error(f"--case {text!r}: expected LABEL:TREE:PRACTICE")
        label, tree, practice = parts
        if not (Path(tree) / "agent" / "cli.py").exists():
            parser.error(f"--case {label}: {tree} is not a checkout of this project")
        if not Path(practice).exists():
            parser.error(f"--case {label}: no practice database at {practice}")
        cases.append((label, Path(tree).resolve(), str(Path(practice).resolve())))
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    made = None
    if not cases:
        import datetime as dt

        sys.path.insert(0, str(REPO))
        from agent.sources.synth import generate_practice

        made = tempfile.TemporaryDirectory(prefix="fedqi-bench-practice-")
        practice = Path(made.name) / "practice.duckdb"
        print(f"generating {args.patients} patients ...", file=sys.stderr, flush=True)
        generate_practice(practice, patients=args.patients, seed=1, period_end=dt.date(2026, 3, 31))
        cases.append(("current", REPO, str(practice)))

    results: dict[str, dict[str, list[float]]] = {
        label: {"wall_s": [], "cpu_s": []} for label, _, _ in cases
    }
    with tempfile.TemporaryDirectory(prefix="fedqi-bench-preview-") as tmp:
        homes = {}
        for label, tree, practice in cases:
            home = Path(tmp) / label
            init = _agent(
                tree, "init", "--home", str(home), "--practice", "A81001", "--aud", "bench",
                "--aggregator-url", "http://127.0.0.1:9", "--source-url", practice,
            )  # fmt: skip
            if init.returncode != 0:
                raise SystemExit(f"{label}: init failed: {init.stderr.decode()[-2000:]}")
            homes[label] = home
        for i in range(args.runs + 1):
            for label, tree, _ in cases:
                if args.cold:
                    shutil.rmtree(homes[label] / "statements", ignore_errors=True)
                    (homes[label] / "clean-source.json").unlink(missing_ok=True)
                wall, cpu = _timed(
                    tree,
                    ["preview", "--period", args.period, "--local", "--home", str(homes[label])],
                )
                if i:  # the first round warms the file cache
                    results[label]["wall_s"].append(wall)
                    results[label]["cpu_s"].append(cpu)
    if made is not None:
        made.cleanup()
    first = cases[0][0]
    summary = {}
    for label, _, practice in cases:
        r = results[label]
        summary[label] = {
            **r,
            "practice": practice,
            "wall_median_s": statistics.median(r["wall_s"]),
            "cpu_median_s": statistics.median(r["cpu_s"]),
        }
    for label in summary:
        s = summary[label]
        s["cpu_ratio_to_first"] = s["cpu_median_s"] / summary[first]["cpu_median_s"]
        s["wall_ratio_to_first"] = s["wall_median_s"] / summary[first]["wall_median_s"]
        print(
            f"{label}: preview median {s['wall_median_s']:.2f} s wall, {s['cpu_median_s']:.2f} s "
            f"CPU ({s['cpu_ratio_to_first']:.2f}x {first}'s CPU)",
            file=sys.stderr,
        )
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cold": args.cold,
        "cases": summary,
    }
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
