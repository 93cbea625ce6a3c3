"""Benchmark: benchmark reads over HTTP at national scale on PostgreSQL.

Builds a store of P practices x I indicators x T monthly periods (default 6,500 x 40 x 24: about
6.2 million whole-practice cells) by bulk COPY straight into the aggregator's tables (setup only:
the ingest path is measured elsewhere), computes every benchmark with the incremental refresh,
serves the aggregator with ``fedqi-aggregator serve`` in its own process, and times:

* ``GET /v1/benchmarks/indicators/{id}?period=...`` (one indicator's funnel, every practice),
  as a network lead and as a practice user (peers pseudonymised);
* ``GET /v1/benchmarks/practices/{ods}`` (one practice's full summary: every indicator, every
  period, with trends);
* the incremental path: one practice's correction lands (40 groups go stale), then the next
  read of one of those indicators.

Usage::

    .venv/bin/python bench/query.py [--admin-url postgresql://postgres@127.0.0.1:5432/test]
        [--practices 6500] [--indicators 40] [--periods 24] [--requests 200] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GOALS = {"indicator": 100.0, "practice": 300.0}


def _months(n: int, end: dt.date = dt.date(2026, 9, 30)) -> list[tuple[dt.date, dt.date]]:
    out = []
    y, m = end.year, end.month
    for _ in range(n):
        start = dt.date(y, m, 1)
        nxt = dt.date(y + (m == 12), m % 12 + 1, 1)
        out.append((start, nxt - dt.timedelta(days=1)))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out[::-1]


def _copy(
    conn: psycopg.Connection, table: str, cols: Sequence[str], rows: Sequence[Sequence[object]]
) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)


def build(
    url: str, key_dir: Path, practices: int, indicators: int, periods: int, seed: int = 7
) -> dict[str, object]:
    from aggregator.cli import main as cli
    from aggregator.db.session import normalise_url

    assert cli(["db", "upgrade", "--db", url]) == 0
    assert (
        cli(
            [
                "init",
                "--name",
                "Bench network",
                "--aud",
                "fedqi-bench",
                "--db",
                url,
                "--key-dir",
                str(key_dir),
            ]
        )
        == 0
    )
    rng = np.random.default_rng(seed)
    now = dt.datetime(2026, 10, 5, tzinfo=dt.UTC)
    ods = [f"Y{10000 + i:05d}" for i in range(practices)]
    sizes = np.clip(rng.lognormal(np.log(8500), 0.55, practices), 1200, 60000).astype(int)
    pcn = [f"PCN {i // 5:04d}" for i in range(practices)]
    imd = rng.integers(1, 11, practices)
    inds = [f"IND_{i:02d}" for i in range(indicators)]
    prevalence = rng.uniform(0.01, 0.2, indicators)
    target = rng.uniform(0.55, 0.92, indicators)
    months = _months(periods)
    raw = psycopg.connect(normalise_url(url).replace("postgresql+psycopg://", "postgresql://"))
    t0 = time.perf_counter()
    with raw:
        _copy(raw, "practices", ["ods", "name", "pcn", "list_size", "imd_decile", "created_at"],
              [(o, f"Practice {o}", g, int(s), int(d), now) for o, g, s, d in zip(ods, pcn, sizes, imd, strict=True)])  # fmt: skip
        kids = {o: hashlib.sha256(o.encode()).hexdigest()[:43] for o in ods}
        _copy(raw, "practice_keys", ["kid", "practice_ods", "public_key", "status", "last_seq", "created_at"],
              [(kids[o], o, b"\0" * 32, "active", periods, now) for o in ods])  # fmt: skip
        env_rows, sub_rows, cell_rows = [], [], []
        leaf = 0
        quality = rng.normal(0, 0.06, (practices, indicators))
        for t, (start, end) in enumerate(months):
            drift = 0.002 * t
            for i, o in enumerate(ods):
                sid = str(uuid.UUID(int=rng.integers(0, 2**63) << 64 | leaf))
                sha = hashlib.sha256(sid.encode()).hexdigest()
                env_rows.append((sha, "submission", o, sid.encode(), now, b"", leaf))
                sub_rows.append(
                    (
                        sid,
                        o,
                        kids[o],
                        t + 1,
                        0,
                        start,
                        end,
                        "fedqi-default",
                        1,
                        "0" * 64,
                        sha,
                        sha,
                        leaf,
                        now,
                        True,
                    )
                )
                dens = rng.binomial(sizes[i], prevalence)
                rates = np.clip(target + drift + quality[i], 0.01, 0.995)
                nums = rng.binomial(dens, rates)
                exc = rng.binomial(dens - nums, 0.05)
                for k, ind in enumerate(inds):
                    d, n_, e = int(dens[k]), int(nums[k]), int(exc[k])
                    cell_rows.append((sid, ind, d, "zero" if d == 0 else "exact", n_, "zero" if n_ == 0 else "exact",
                                      e, "zero" if e == 0 else "exact", "[]"))  # fmt: skip
                leaf += 1
            _copy(
                raw,
                "envelopes",
                ["sha256", "kind", "practice_ods", "body", "received_at", "receipt", "leaf_index"],
                env_rows,
            )
            _copy(raw, "submissions", ["submission_id", "practice_ods", "kid", "seq", "iat", "period_start", "period_end",
                                       "catalogue_id", "catalogue_version", "catalogue_sha256", "envelope_sha256",
                                       "payload_sha256", "leaf_index", "received_at", "effective"], sub_rows)  # fmt: skip
            _copy(raw, "cells", ["submission_id", "indicator", "denominator", "denominator_status", "numerator",
                                 "numerator_status", "exclusions", "exclusions_status", "strata"], cell_rows)  # fmt: skip
            env_rows, sub_rows, cell_rows = [], [], []
            raw.commit()
        _copy(raw, "bench_stale", ["indicator", "period_start", "period_end", "mark", "marked_at"],
              [(ind, s, e, 1, now) for ind in inds for s, e in months])  # fmt: skip
        raw.execute("ANALYZE")
    load_s = time.perf_counter() - t0
    raw.close()
    return {
        "ods": ods,
        "indicators": inds,
        "months": months,
        "load_s": load_s,
        "cells": practices * indicators * periods,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(client: httpx.Client, paths: Sequence[str], token: str) -> list[float]:
    out = []
    for p in paths:
        t = time.perf_counter()
        r = client.get(p, headers={"authorization": f"Bearer {token}"})
        out.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"GET {p}: {r.status_code} {r.text[:300]}")
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    env = environ if environ is not None else os.environ
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--admin-url", default=env.get("FEDQI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    )
    ap.add_argument("--practices", type=int, default=6500)
    ap.add_argument("--indicators", type=int, default=40)
    ap.add_argument("--periods", type=int, default=24)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    from aggregator.benchmarks import service
    from aggregator.db.session import Database
    from aggregator.users.service import add_user

    name = f"fedqi_bench_{uuid.uuid4().hex[:8]}"
    base = args.admin_url.rsplit("/", 1)[0]
    try:
        with psycopg.connect(args.admin_url, autocommit=True, connect_timeout=5) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        print(
            f"error: no PostgreSQL server answers at --admin-url {args.admin_url}: {exc}",
            file=sys.stderr,
        )
        return 2
    url = f"{base}/{name}"
    tmp = Path(tempfile.mkdtemp(prefix="fedqi-bench-"))
    server = None
    results: dict[str, object] = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
        "scale": {
            "practices": args.practices,
            "indicators": args.indicators,
            "periods": args.periods,
        },
    }
    try:
        print(
            f"building {args.practices} practices x {args.indicators} indicators x {args.periods} periods in {name} ...",
            flush=True,
        )
        data = build(url, tmp / "keys", args.practices, args.indicators, args.periods)
        results["load_seconds"] = round(float(data["load_s"]), 1)  # type: ignore[arg-type]
        results["load_average_at_start"] = round(os.getloadavg()[0], 1)
        db = Database(url)
        t = time.perf_counter()
        groups = service.refresh_stale(db)
        full = time.perf_counter() - t
        results["full_refresh"] = {
            "groups": groups,
            "seconds": round(full, 1),
            "ms_per_group": round(1000 * full / max(groups, 1), 1),
        }
        print(
            f"loaded in {data['load_s']:.0f} s; full refresh of {groups} groups in {full:.0f} s",
            flush=True,
        )
        with db.session() as s:
            now = dt.datetime.now(dt.UTC)
            ods: list[str] = data["ods"]  # type: ignore[assignment]
            _, lead = add_user(
                s, "bench lead", "network_lead", practice=None, group="PCN 0000", now=now
            )
            _, prac = add_user(
                s, "bench practice", "practice", practice=ods[0], group=None, now=now
            )
            _, admin = add_user(s, "bench admin", "admin", practice=None, group=None, now=now)

        port = free_port()
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("fedqi-aggregator")), "serve", "--db", url, "--key-dir", str(tmp / "keys"), "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.time() + 60
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(
                    f"server did not start: {server.stderr.read().decode() if server.stderr else ''}"
                )
            time.sleep(0.2)

        rnd = random.Random(1)
        inds: list[str] = data["indicators"]  # type: ignore[assignment]
        months: list[tuple[dt.date, dt.date]] = data["months"]  # type: ignore[assignment]
        n = args.requests
        ind_paths = [
            f"/v1/benchmarks/indicators/{rnd.choice(inds)}?period={rnd.choice(months)[1].isoformat()}"
            for _ in range(n)
        ]
        prac_paths = [f"/v1/benchmarks/practices/{rnd.choice(ods)}" for _ in range(n)]
        timed(client, ind_paths[:10], admin)  # warm-up
        timed(client, prac_paths[:10], admin)
        plan = {
            "indicator (network lead)": (ind_paths, lead),
            "indicator (practice user)": (ind_paths, prac),
            "practice summary (admin)": (prac_paths, admin),
            "practice summary (own practice)": ([f"/v1/benchmarks/practices/{ods[0]}"] * n, prac),
        }
        runs: dict[str, list[float]] = {}
        cpu: dict[str, float | None] = {}
        for label, (paths, token) in plan.items():
            # Server CPU per request: less at the mercy of neighbours than wall time.
            before = cpu_seconds(server.pid)
            runs[label] = timed(client, paths, token)
            after = cpu_seconds(server.pid)
            cpu[label] = (
                None if before is None or after is None else 1000 * (after - before) / len(paths)
            )
        size = len(client.get(ind_paths[0], headers={"authorization": f"Bearer {lead}"}).content)
        results["indicator_response_bytes"] = size
        results["latency_ms"] = {
            k: {
                "n": len(v),
                "p50": round(pct(v, 50), 1),
                "p95": round(pct(v, 95), 1),
                "max": round(max(v), 1),
                "server_cpu_ms_per_request": None if cpu[k] is None else round(cpu[k], 1),  # type: ignore[arg-type]
            }
            for k, v in runs.items()
        }

        # The incremental path: a correction for one practice and period marks every indicator
        # of that period stale; a refresh recomputes just those groups.
        from sqlalchemy import select

        from aggregator.benchmarks.service import on_submission_stored
        from aggregator.db.models import Submission

        start, end = months[-1]
        with db.session() as s:
            row = s.scalars(
                select(Submission).where(
                    Submission.practice_ods == ods[1], Submission.period_end == end
                )
            ).one()
            on_submission_stored(s, row)
        t = time.perf_counter()
        first = timed(
            client, [f"/v1/benchmarks/indicators/{inds[0]}?period={end.isoformat()}"], lead
        )[0]
        stale_left = None
        with db.read() as s:
            stale_left = service.stale_count(s)
        t = time.perf_counter()
        done = service.refresh_stale(db)
        rest = time.perf_counter() - t
        results["incremental"] = {
            "stale_groups_after_one_correction": args.indicators,
            "first_read_ms (refreshes its own group)": round(first, 1),
            "groups_left_for_background": stale_left,
            "refresh_remaining_s": round(rest, 2),
            "refreshed": done,
        }
        db.dispose()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        if not args.keep:
            with psycopg.connect(args.admin_url, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(json.dumps(results, indent=2))
    lat = results["latency_ms"]  # type: ignore[assignment]
    ok_ind = all(v["p95"] < GOALS["indicator"] for k, v in lat.items() if k.startswith("indicator"))  # type: ignore[union-attr]
    ok_pr = all(v["p95"] < GOALS["practice"] for k, v in lat.items() if k.startswith("practice"))  # type: ignore[union-attr]
    print(f"goal p95 < {GOALS['indicator']:.0f} ms (indicator): {'met' if ok_ind else 'MISSED'}; "
          f"p95 < {GOALS['practice']:.0f} ms (practice summary): {'met' if ok_pr else 'MISSED'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
