"""Benchmark: the whole default catalogue, all strata, on a synthetic practice.

    .venv/bin/python bench/agent_compute.py [--patients 30000] [--seed 1] [--runs 5]
        [--engines sqlite,duckdb,postgresql] [--data-dir DIR] [--reference-patients 3000]
        [--code-match join,in] [--json OUT.json]

For each engine: a synthetic practice (``agent.sources.synth.generate_practice``, cached in
``--data-dir``), then, in a fresh subprocess per engine so peak memory is the engine's own:
``compute_cells`` for every indicator and stratum (one warm-up, then ``--runs`` timed runs), and
the same number of runs of one full aggregate scan of the events table
(``SELECT patient_id, count(*), max(date) FROM events GROUP BY patient_id``) in the same engine.
Reports medians, the catalogue time as a multiple of the scan, and peak RSS
(``ru_maxrss`` of the subprocess, which holds DuckDB's and SQLite's memory too; PostgreSQL's
server memory is not in it). ``--code-match join,in`` measures both ways of matching codes in
the same child, alternating (a VALUES table of codes joined to the rows, or one ``code IN
(...)`` list per code set). Then the reference evaluator against the engine on a smaller
practice (``--reference-patients``), since the reference is too slow for the full one. The whole
``fedqi-agent preview`` process is measured by ``bench/preview_process.py``.

PostgreSQL: a fresh database is made on the server at FEDQI_BENCH_PG (default FEDQI_TEST_PG or
postgresql://postgres@127.0.0.1:5432/test) and dropped afterwards; skipped if none answers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PERIOD_END = dt.date(2026, 3, 31)


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) of this process: the client's share of the
    work, less disturbed than wall time on a shared machine (the PostgreSQL server's is not in
    it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _maxrss_mb() -> float:
    """Peak resident memory of this process image, in MB. On Linux VmHWM of the current address
    space: ru_maxrss would also count the forking parent's pages, inherited at fork."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- child: measure one engine in a fresh process ----------------------------------------------


def child(url: str, runs: int, modes: Sequence[str] = ("join",)) -> dict[str, Any]:
    import sqlalchemy as sa

    from agent.engine import compute_cells
    from agent.library import load_default_catalogue
    from agent.sources import schema
    from agent.sources.store import open_practice

    catalogue = load_default_catalogue()
    engine = open_practice(url, read_only=url.endswith((".duckdb", ".sqlite")))
    with engine.connect() as conn:
        n_events = conn.execute(sa.select(sa.func.count()).select_from(schema.events)).scalar()
        n_patients = conn.execute(sa.select(sa.func.count()).select_from(schema.patients)).scalar()
    rss_before = _maxrss_mb()
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    results: dict[str, Any] = {}
    for i in range(runs + 1):
        for mode in modes:  # alternating, so drift on a shared machine hits both alike
            started, cpu_started = time.perf_counter(), _cpu_s()
            results[mode] = compute_cells(engine, catalogue, PERIOD_END, code_match=mode)
            if i:  # the first run warms caches
                times[mode].append(time.perf_counter() - started)
                cpu[mode].append(_cpu_s() - cpu_started)
    rss_compute = _maxrss_mb()
    cells = results[modes[0]]
    if any(results[m] != cells for m in modes):
        raise SystemExit("code-match modes disagree")
    ev = schema.events
    scan = sa.select(ev.c.patient_id, sa.func.count(), sa.func.max(ev.c.date)).group_by(
        ev.c.patient_id
    )
    scans = []
    scan_cpu = []
    for i in range(runs + 1):
        started, cpu_started = time.perf_counter(), _cpu_s()
        with engine.connect() as conn:
            conn.execute(scan).all()
        if i:
            scans.append(time.perf_counter() - started)
            scan_cpu.append(_cpu_s() - cpu_started)
    engine.dispose()
    digest = hashlib.sha256(repr(cells).encode()).hexdigest()
    return {
        "cells_sha256": digest,
        "events": n_events,
        "patients": n_patients,
        "indicators": len(catalogue.indicators),
        "codes": sum(len(c.codes) for c in catalogue.codelists),
        "cells": len(cells),
        "compute_s": times[modes[0]],
        "compute_cpu_s": cpu[modes[0]],
        "by_code_match": {m: {"compute_s": times[m], "compute_cpu_s": cpu[m]} for m in modes},
        "scan_s": scans,
        "scan_cpu_s": scan_cpu,
        "rss_before_compute_mb": rss_before,
        "peak_rss_mb": rss_compute,
    }


def run_child(url: str, runs: int, modes: Sequence[str] = ("join",)) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            url,
            "--runs",
            str(runs),
            "--code-match",
            ",".join(modes),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- practices ---------------------------------------------------------------------------------


def practice_file(data_dir: Path, backend: str, patients: int, seed: int) -> str:
    from agent.sources.synth import generate_practice

    ext = {"sqlite": "sqlite", "duckdb": "duckdb"}[backend]
    path = data_dir / f"practice-{patients}-s{seed}.{ext}"
    if not path.exists():
        print(f"  generating {path} ...", file=sys.stderr, flush=True)
        generate_practice(path, patients=patients, seed=seed, period_end=PERIOD_END)
    return str(path)


def pg_admin_url(environ: Mapping[str, str]) -> str:
    return environ.get(
        "FEDQI_BENCH_PG",
        environ.get("FEDQI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
    )


def pg_practice(admin: str, patients: int, seed: int) -> tuple[str, str] | None:
    """(url, database name) of a fresh PostgreSQL database holding the practice, or None."""
    try:
        import psycopg

        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            name = f"fedqi_bench_{uuid.uuid4().hex[:10]}"
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # no server: skip PostgreSQL
        print(f"  PostgreSQL skipped: {exc}", file=sys.stderr)
        return None
    from agent.sources.synth import generate_practice

    url = admin.rsplit("/", 1)[0] + "/" + name
    print(f"  generating PostgreSQL database {name} ...", file=sys.stderr, flush=True)
    generate_practice(url, patients=patients, seed=seed, period_end=PERIOD_END)
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return url, name


def pg_drop(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- reference ---------------------------------------------------------------------------------


def reference_speedup(data_dir: Path, backend: str, patients: int, seed: int, runs: int) -> dict:
    from agent.engine import compute_cells, reference
    from agent.library import load_default_catalogue
    from agent.sources.store import open_practice

    catalogue = load_default_catalogue()
    engine = open_practice(practice_file(data_dir, backend, patients, seed), read_only=True)
    started = time.perf_counter()
    practice = reference.load_practice(engine)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    expected = reference.evaluate(practice, catalogue, PERIOD_END)
    eval_s = time.perf_counter() - started
    compute_cells(engine, catalogue, PERIOD_END)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        got = compute_cells(engine, catalogue, PERIOD_END)
        times.append(time.perf_counter() - started)
    engine.dispose()
    if got != expected:
        raise SystemExit("engine and reference disagree on the benchmark practice")
    return {
        "patients": patients,
        "backend": backend,
        "reference_load_s": load_s,
        "reference_evaluate_s": eval_s,
        "engine_median_s": statistics.median(times),
        "speedup": (load_s + eval_s) / statistics.median(times),
        "cells_equal": True,
    }


# --- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--engines", default="sqlite,duckdb,postgresql")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--reference-patients", type=int, default=3000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--code-match", default="join", help="join, in, or join,in")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.code_match.split(",") if m.strip()]
    if not modes or set(modes) - {"join", "in"}:
        parser.error("--code-match: join, in, or join,in")

    if args.child:
        print(json.dumps(child(args.child, args.runs, modes)))
        return 0

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - {"sqlite", "duckdb", "postgresql"}
    if unknown:
        parser.error(f"--engines: unknown {', '.join(sorted(unknown))}")
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fedqi-bench-")
        data_dir = Path(tmp.name)
    else:
        data_dir = args.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "engines": {},
    }
    try:
        for backend in engines:
            print(f"{backend}:", file=sys.stderr, flush=True)
            pg = None
            if backend == "postgresql":
                pg = pg_practice(pg_admin_url(environ), args.patients, args.seed)
                if pg is None:
                    continue
                url = pg[0]
            else:
                url = practice_file(data_dir, backend, args.patients, args.seed)
            try:
                r = run_child(url, args.runs, modes)
            finally:
                if pg is not None:
                    pg_drop(pg_admin_url(environ), pg[1])
            r["compute_median_s"] = statistics.median(r["compute_s"])
            r["scan_median_s"] = statistics.median(r["scan_s"])
            r["scans_per_catalogue"] = r["compute_median_s"] / r["scan_median_s"]
            r["compute_cpu_median_s"] = statistics.median(r["compute_cpu_s"])
            r["scan_cpu_median_s"] = statistics.median(r["scan_cpu_s"])
            for mode, m in r["by_code_match"].items():
                m["compute_median_s"] = statistics.median(m["compute_s"])
                m["compute_cpu_median_s"] = statistics.median(m["compute_cpu_s"])
                print(
                    f"  code match {mode}: median {m['compute_median_s']:.3f} s wall, "
                    f"{m['compute_cpu_median_s']:.3f} s CPU",
                    file=sys.stderr,
                )
            results["engines"][backend] = r
            print(
                f"  {r['patients']} patients, {r['events']} events, {r['indicators']} indicators, "
                f"{r['cells']} cells: catalogue median {r['compute_median_s']:.3f} s, "
                f"scan median {r['scan_median_s']:.3f} s "
                f"(catalogue = {r['scans_per_catalogue']:.1f} scans; CPU "
                f"{r['compute_cpu_median_s']:.2f} s vs {r['scan_cpu_median_s']:.2f} s), "
                f"peak RSS {r['peak_rss_mb']:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
        digests = {b: r["cells_sha256"] for b, r in results["engines"].items()}
        if len(set(digests.values())) > 1:
            print(
                "  note: the engines' cells differ; each engine has its own generated copy of "
                "the practice (compare their event counts)",
                file=sys.stderr,
            )
        results["cells_identical_across_engines"] = len(set(digests.values())) == 1
        if args.reference_patients > 0:
            backend = next((b for b in ("duckdb", "sqlite") if b in engines), None)
            if backend:
                print(
                    f"reference vs {backend} on {args.reference_patients} patients:",
                    file=sys.stderr,
                )
                ref = reference_speedup(
                    data_dir, backend, args.reference_patients, args.seed, args.runs
                )
                results["reference"] = ref
                print(
                    f"  reference {ref['reference_load_s'] + ref['reference_evaluate_s']:.2f} s "
                    f"(load {ref['reference_load_s']:.2f} s), engine median "
                    f"{ref['engine_median_s']:.3f} s: speed-up {ref['speedup']:.0f}x, "
                    "cells identical",
                    file=sys.stderr,
                )
    finally:
        if tmp is not None:
            tmp.cleanup()
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
