"""Benchmark: what a national network stores, measured on PostgreSQL at national scale.

A fresh PostgreSQL database gets ``--practices`` enrolled practices (6,500 by default: every GP
practice in England) and, month after month, one real signed submission from each (40
indicators x 9 strata, the ingestion benchmark's catalogue, through the service path with every
ingest check, the log append, the checkpoint and the receipt). After each month it records:

* the size of every table with its indexes and TOAST (``pg_total_relation_size``), its live rows,
  and the database's size; the growth per month and per submission;
* the time to ingest the month;
* a full benchmark refresh of the month's groups (``refresh_stale``: every submission's sealed
  counts value checked, and where one does not hold its cells and then its signed envelope, the
  statistics recomputed) in wall and CPU seconds;
* a funnel read (one indicator, the latest month, the admin's view) after the refresh,
  median of ``--reads``; whether it grows with the months stored decides whether partitioning by
  period is needed for reads;
* with ``--backlog``, the months are stored one after another with no refresh between them, as
  after a network-wide resubmission of many months (a definition change) or a backfill, and
  then one drain of the whole queue as the background refresher runs it (``refresh_stale``) is
  timed: the seconds until the newest month's groups are all fresh, and until every group is;
  the per-month refresh and reads above are then not measured;
* with ``--drainers 1,2`` (and ``--backlog``), the backlog is drained instead by that many
  processes at once, each as a server worker's background refresher does it (its own runtime,
  ``refresh_stale``; PostgreSQL's advisory lock per group keeps them on different groups),
  once per count and ``--rounds`` times, every group marked stale again before each drain, so
  one count is compared with another on the same data in one run;
* after the last month, ``--corrections`` times: one practice sends a correction, and the time
  from its receipt to a funnel read that shows it (the read recomputes the one group it shows,
  as the API's and the dashboard's reads do).

Each practice's counts are drawn once and released under the network policy once; every month
signs them again as a new submission (new id, seq and period). Sizes depend on how counts are
spelled, not on their values, so this saves most of the set-up's CPU without changing what is
stored.

Usage::

    .venv/bin/python bench/capacity.py [--practices 6500] [--months 2] [--workers 2]
        [--threads 16] [--reads 5] [--corrections 5] [--upgrade] [--backlog [--drainers 1,2] [--rounds 2]]
        [--json OUT.json]
        [--admin-url postgresql://...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import ingest as bench_ingest  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from aggregator.benchmarks import service as bench_service  # noqa: E402
from aggregator.benchmarks.funnel import funnel_view  # noqa: E402
from aggregator.benchmarks.viewer import Viewer  # noqa: E402
from aggregator.runtime import Runtime, tune_gc  # noqa: E402
from aggregator.submissions.service import IngestLimits, ingest  # noqa: E402
from aggregator.users.service import add_user  # noqa: E402
from protocol.catalogue import Catalogue  # noqa: E402
from protocol.disclosure import apply_policy, policy_sha256  # noqa: E402
from protocol.envelope import sign_envelope  # noqa: E402
from protocol.keys import SigningKey  # noqa: E402
from protocol.submission import (  # noqa: E402
    CatalogueRef,
    Cell,
    IndicatorProvenance,
    Period,
    Provenance,
    Submission,
)

MB = 1024 * 1024


def released_cells(cat: Catalogue, rng: random.Random) -> tuple[Cell, ...]:
    """One practice's cells as the ingestion benchmark draws them, under the network policy."""
    return apply_policy(bench_ingest.raw_cells(cat, rng), cat.disclosure)


def month_bodies(
    cat: Catalogue,
    agents: dict[str, SigningKey],
    cells: dict[str, tuple[Cell, ...]],
    month: int,
    *,
    seq: int | None = None,
    supersedes: dict[str, str] | None = None,
    ids: dict[str, str] | None = None,
) -> list[bytes]:
    """One signed submission per practice for ``month``; with ``supersedes`` (practice ->
    submission id) a correction of it. ``ids`` collects each practice's new submission id."""
    policy = policy_sha256(cat.disclosure)
    prov = tuple(IndicatorProvenance(id=i.id, version=1, codelists=()) for i in cat.indicators)
    ref = CatalogueRef(id=cat.id, version=cat.version, sha256=cat.sha256())
    now = int(time.time())
    out = []
    for ods, key in agents.items():
        sid = str(uuid.uuid4())
        if ids is not None:
            ids[ods] = sid
        replaced = supersedes.get(ods) if supersedes else None
        sub = Submission(
            aud=bench_ingest.AUD,
            practice=ods,
            kid=key.kid,
            submission_id=sid,
            seq=seq if seq is not None else month,
            iat=now,
            nonce=bench_ingest.nonce(),
            period=period_of(month),
            catalogue=ref,
            provenance=Provenance(
                agent_version="0.1.0",
                extract_time=now,
                source="sqlite",
                disclosure_policy=policy,
                indicators=prov,
            ),
            cells=cells[ods],
            supersedes=replaced,
            reason="data_correction" if replaced else None,
        )
        out.append(sign_envelope("submission", sub.to_bytes(), [key]).to_bytes())
    return out


def table_sizes(url: str) -> tuple[dict[str, dict[str, int]], int]:
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        rows = conn.execute(
            "SELECT relname, pg_total_relation_size(relid), n_live_tup "
            "FROM pg_stat_user_tables ORDER BY 2 DESC"
        ).fetchall()
        (database,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return {name: {"bytes": size, "rows": live} for name, size, live in rows}, database


def timed_refresh(rt: Runtime) -> tuple[int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    groups = bench_service.refresh_stale(rt.db)
    return groups, time.perf_counter() - wall, time.process_time() - cpu


def timed_backlog(rt: Runtime, newest: Any) -> tuple[int, float, float]:
    """One drain of the whole stale queue, as the background refresher runs it: the groups
    recomputed, the seconds until no group of the period ending ``newest`` is stale (asked
    between groups, as the refresher asks whether to go on), and the seconds until none is."""
    start = time.perf_counter()
    newest_fresh: float | None = None

    def go_on() -> bool:
        nonlocal newest_fresh
        if newest_fresh is None:
            with rt.db.read() as s:
                if not bench_service.stale_groups(s, period_end=newest):
                    newest_fresh = time.perf_counter() - start
        return True

    groups = bench_service.refresh_stale(rt.db, go_on=go_on)
    everything = time.perf_counter() - start
    return groups, everything if newest_fresh is None else newest_fresh, everything


def _drainer(url: str, key_dir: str, ready: Any, go: Any) -> tuple[int, float]:
    """One draining process: load the runtime as a server worker does, say so, wait for the
    start, drain; returns the groups it recomputed and its CPU seconds."""
    from aggregator.settings import get_settings

    rt = Runtime.load(get_settings(db=url, key_dir=Path(key_dir)))
    tune_gc()
    ready.wait()
    go.wait()
    cpu = time.process_time()
    done = bench_service.refresh_stale(rt.db)
    rt.db.dispose()
    return done, time.process_time() - cpu


def timed_drainers(
    rt: Runtime, url: str, key_dir: Path, newest: Any, n: int
) -> tuple[int, float, float, float]:
    """Mark every group stale, then drain them with ``n`` processes at once (started and loaded
    before the clock starts): the groups recomputed, the seconds until no group of the period
    ending ``newest`` is stale (polled every 20 ms), until none is, and the drainers' CPU
    seconds together."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with rt.db.session() as s:
        bench_service.mark_all_stale(s)
    ctx = multiprocessing.get_context("spawn")
    manager = ctx.Manager()
    ready, go = manager.Barrier(n + 1), manager.Event()
    with ProcessPoolExecutor(n, mp_context=ctx) as pool:
        futures = [pool.submit(_drainer, url, str(key_dir), ready, go) for _ in range(n)]
        ready.wait(timeout=600)  # broken (an error, not a hang) if a drainer fails to start
        start = time.perf_counter()
        go.set()
        newest_fresh: float | None = None
        while not all(f.done() for f in futures):
            if newest_fresh is None:
                with rt.db.read() as s:
                    if not bench_service.stale_groups(s, period_end=newest):
                        newest_fresh = time.perf_counter() - start
            time.sleep(0.02)
        everything = time.perf_counter() - start
        results = [f.result() for f in futures]
    manager.shutdown()
    groups = sum(r[0] for r in results)
    cpu = sum(r[1] for r in results)
    return groups, everything if newest_fresh is None else newest_fresh, everything, cpu


def timed_upgrade(rt: Runtime) -> list[tuple[int, float, float]]:
    """As on a network upgraded from before cell verdicts and counts values: every stored
    verdict and counts value is cleared, then
    every stored group is marked stale and refreshed, twice, each timed and each starting with
    an empty cache of checked envelopes, as a new process does (and as a national refresh
    does: the cache holds 8,192 envelopes, about one month of the network's submissions). The
    first refresh checks every row against its envelope; what the second reads depends on
    what the first left behind."""
    from sqlalchemy import update

    from aggregator.db.models import Cell, Submission
    from aggregator.log import checks

    with rt.db.session() as s:
        s.execute(update(Cell).values(verdict=None))
        s.execute(update(Submission).values(counts=None, counts_verdict=None))
    out = []
    for _ in range(2):
        checks._SIGNED._data.clear()
        with rt.db.session() as s:
            bench_service.mark_all_stale(s)
        out.append(timed_refresh(rt))
    return out


#: The first month stored, as months after 2026-01 (negative: before it): set by main.
_FIRST = 0


def period_of(month: int) -> Period:
    """The ``month``-th month stored (1-based): 2026-01 onwards for up to 11 months, or the
    months up to 2026-11 for more (24: 2024-12 to 2026-11)."""
    k = 2026 * 12 + _FIRST + month - 1
    return Period.month(k // 12, k % 12 + 1)


def label_of(month: int) -> str:
    return period_of(month).end.isoformat()[:7]


def timed_reads(rt: Runtime, admin: Any, indicator: str, period: str, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        with rt.db.read() as session:
            viewer = Viewer.load(session, admin, rt.pseudonym_secret, rt.peer_bands)
            view = funnel_view(session, viewer, indicator, period)
        times.append(time.perf_counter() - start)
        assert view["summary"]["practices"] > 0
    return statistics.median(times)


def fresh_after_receipt(
    rt: Runtime,
    admin: Any,
    cat: Catalogue,
    agents: dict[str, SigningKey],
    cells: dict[str, tuple[Cell, ...]],
    month: int,
    current: dict[str, str],
    n: int,
) -> tuple[list[float], list[int]]:
    """``n`` times: one practice sends a correction of ``month``; time from its receipt to a
    funnel read (with the refresh that read triggers) that shows the correction."""
    limits = IngestLimits(cap=256 * 1024, iat_future=300, iat_past=7 * 86400)
    period = label_of(month)
    end = period_of(month).end
    latencies, refreshed = [], []
    for k, ods in enumerate(list(agents)[:n]):
        ids: dict[str, str] = {}
        (body,) = month_bodies(
            cat, {ods: agents[ods]}, cells, month, seq=100 + k, supersedes=current, ids=ids
        )
        res = ingest(
            rt.db.read, rt.db.session, rt.signer, rt.catalogues, body,
            now=time.time(), limits=limits, committer=rt.committer, keys=rt.keys,
        )  # fmt: skip
        assert res.created
        start = time.perf_counter()
        groups = bench_service.refresh_for_read(rt.db, "IND_00", end)
        with rt.db.read() as session:
            viewer = Viewer.load(session, admin, rt.pseudonym_secret, rt.peer_bands)
            view = funnel_view(session, viewer, "IND_00", period, detail=True)
        latencies.append(time.perf_counter() - start)
        refreshed.append(groups)
        shown = {p["id"]: p.get("submission_id") for p in view["practices"]}
        assert shown[ods] == ids[ods], "the read does not show the correction"
        current[ods] = ids[ods]
    return latencies, refreshed


def drainer_counts(ap: argparse.ArgumentParser, text: str) -> list[int]:
    """``--drainers``' comma-separated process counts, or the parser's error naming it."""
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        ap.error(f"--drainers {text!r}: use counts of 1 or more, e.g. 1,2")
    return counts


@contextlib.contextmanager
def _nothing(path: str) -> Iterator[str]:
    yield path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--practices", type=int, default=6500)
    ap.add_argument("--months", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="ingesting processes")
    ap.add_argument("--threads", type=int, default=16, help="concurrent streams per process")
    ap.add_argument("--reads", type=int, default=5, help="funnel reads per month (median)")
    ap.add_argument(
        "--corrections",
        type=int,
        default=5,
        help="after the last month: corrections, each timed from receipt to a fresh read",
    )
    ap.add_argument(
        "--upgrade",
        action="store_true",
        help="after the months: clear every cell verdict and counts value (a network upgraded "
        "from before them) and time two full refreshes",
    )
    ap.add_argument(
        "--backlog",
        action="store_true",
        help="store every month before refreshing, then time one drain of the whole queue: "
        "until the newest month is fresh, and until all is",
    )
    ap.add_argument(
        "--drainers",
        help="with --backlog: drain it with this many processes at once, for each count of a "
        "comma-separated list (e.g. 1,2), --rounds times, on the same data",
    )
    ap.add_argument("--rounds", type=int, default=2, help="with --drainers: rounds of the list")
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the database and the key directory at the end (both are printed) for "
        "measuring in other processes; drop and delete them yourself",
    )
    ap.add_argument(
        "--admin-url",
        default=os.environ.get("FEDQI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = ap.parse_args(argv)
    if not 1 <= args.months <= 24:
        ap.error(f"--months {args.months}: use 1 to 24 (up to 11: 2026-01 onwards; more: the "
                 "months up to 2026-11)")  # fmt: skip
    global _FIRST
    _FIRST = 0 if args.months <= 11 else 11 - args.months  # months after 2026-01
    if args.practices < 1:
        ap.error(f"--practices {args.practices}: use 1 or more")
    drainers: list[int] = []
    if args.drainers is not None:
        if not args.backlog:
            ap.error("--drainers: only with --backlog")
        drainers = drainer_counts(ap, args.drainers)
    if args.rounds < 1:
        ap.error(f"--rounds {args.rounds}: use 1 or more")
    try:
        import psycopg

        with psycopg.connect(args.admin_url, autocommit=True, connect_timeout=5):
            pass
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the same advice
        print(
            f"error: no PostgreSQL server answers at --admin-url {args.admin_url}: {exc}",
            file=sys.stderr,
        )
        return 2
    cat = bench_ingest.bench_catalogue()
    load_before = os.getloadavg()
    months: list[dict[str, Any]] = []
    kept = tempfile.mkdtemp(prefix="fedqi-capacity-") if args.keep else None
    with tempfile.TemporaryDirectory() if kept is None else _nothing(kept) as tmpdir:
        url, drop = bench_ingest.fresh_database("postgresql", Path(tmpdir), args.admin_url, 0)
        try:
            t0 = time.perf_counter()
            rt, agents, key_dir = bench_ingest.setup_network(url, Path(tmpdir), 0, args.practices)
            rng = random.Random(1)
            cells = {ods: released_cells(cat, rng) for ods in agents}
            with rt.db.session() as s:
                admin, _ = add_user(
                    s, "capacity admin", "admin", practice=None, group=None, now=rt.now()
                )
                s.flush()
                s.expunge(admin)
            print(
                f"set-up: {args.practices} practices enrolled in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            # As a serve worker does at start (aggregator.runtime.tune_gc): here the frozen heap
            # also holds the benchmark's own data (every practice's keys and counts), which a
            # server never holds; unfrozen, a full collection of it (up to 2 s measured) landed
            # in whichever timed step it fell on.
            tune_gc()
            before, _ = table_sizes(url)
            current: dict[str, str] = {}
            for month in range(1, args.months + 1):
                bodies = month_bodies(cat, agents, cells, month, ids=current)
                rate, cpu_ms, _, _ = bench_ingest.run_service(
                    url, key_dir, bodies, args.practices, args.workers, args.threads
                )
                if args.backlog:
                    groups, refresh_wall, refresh_cpu, read = 0, 0.0, 0.0, 0.0
                else:
                    groups, refresh_wall, refresh_cpu = timed_refresh(rt)
                    read = timed_reads(rt, admin, "IND_00", label_of(month), args.reads)
                sizes, database = table_sizes(url)
                months.append(
                    {
                        "month": month,
                        "submissions": len(bodies),
                        "body_bytes": statistics.median(len(b) for b in bodies),
                        "ingest_per_s": round(rate, 1),
                        "ingest_cpu_ms": round(cpu_ms, 2),
                        "refresh_groups": groups,
                        "refresh_wall_s": round(refresh_wall, 2),
                        "refresh_cpu_s": round(refresh_cpu, 2),
                        "funnel_read_s": round(read, 4),
                        "database_bytes": database,
                        "tables": sizes,
                    }
                )
                done = (
                    "not refreshed (--backlog)"
                    if args.backlog
                    else f"refresh of {groups} groups {refresh_wall:.1f} s wall / "
                    f"{refresh_cpu:.1f} CPU-s; funnel read {1000 * read:.0f} ms"
                )
                print(
                    f"month {month}: {len(bodies)} submissions at {rate:.0f}/s; {done}; "
                    f"database {database / MB:.0f} MB",
                    flush=True,
                )
            backlog: dict[str, float] = {}
            drains: list[dict[str, Any]] = []
            for round_ in range(1, args.rounds + 1 if drainers else 1):
                for n in drainers:
                    groups, newest, everything, cpu = timed_drainers(
                        rt, url, key_dir, period_of(args.months).end, n
                    )
                    drains.append({"round": round_, "drainers": n, "groups": groups,
                                   "newest_fresh_s": round(newest, 2),
                                   "all_fresh_s": round(everything, 2), "cpu_s": round(cpu, 2)})  # fmt: skip
                    print(
                        f"round {round_}, {n} drainer(s): {groups} groups; the newest month fresh "
                        f"after {newest:.1f} s, every group after {everything:.1f} s "
                        f"({cpu:.1f} CPU-s in the drainers)",
                        flush=True,
                    )
            if args.backlog and not drainers:
                groups, newest, everything = timed_backlog(rt, period_of(args.months).end)
                backlog = {"groups": groups, "newest_fresh_s": round(newest, 2),
                           "all_fresh_s": round(everything, 2)}  # fmt: skip
                read = timed_reads(rt, admin, "IND_00", label_of(args.months), args.reads)
                print(
                    f"backlog of {args.months} month(s), {groups} groups: the newest month fresh "
                    f"after {newest:.1f} s, every group after {everything:.1f} s; funnel read "
                    f"{1000 * read:.0f} ms",
                    flush=True,
                )
            upgrade = timed_upgrade(rt) if args.upgrade else []
            for i, (groups, wall, cpu) in enumerate(upgrade, 1):
                print(
                    f"upgraded network, verdicts cleared: refresh {i} of {groups} groups "
                    f"{wall:.1f} s wall / {cpu:.1f} CPU-s",
                    flush=True,
                )
            fresh, fresh_groups = fresh_after_receipt(
                rt, admin, cat, agents, cells, args.months, current, args.corrections
            )
            if fresh:
                print(
                    f"receipt to a fresh read: median {1000 * statistics.median(fresh):.0f} ms "
                    f"(max {1000 * max(fresh):.0f} ms) over {len(fresh)} corrections; groups "
                    f"recomputed by each read: {sorted(set(fresh_groups))}",
                    flush=True,
                )
            rt.db.dispose()
        finally:
            if args.keep:
                shown = make_url(url).render_as_string(hide_password=True)
                print(f"kept: {shown} (keys and settings in {tmpdir})", flush=True)
            else:
                drop()
    report(months, before, args, load_before)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "months": months,
                    "upgrade_refreshes": [
                        {"groups": g, "wall_s": round(w, 2), "cpu_s": round(c, 2)}
                        for g, w, c in upgrade
                    ],
                    "backlog": backlog,
                    "drains": drains,
                    "fresh_read_s": [round(x, 4) for x in fresh],
                    "fresh_read_groups": fresh_groups,
                },
                indent=1,
            )
        )
    return 0


def report(
    months: list[dict[str, Any]],
    before: dict[str, dict[str, int]],
    args: Any,
    load: tuple[float, ...],
) -> None:
    last = months[-1]
    n = sum(m["submissions"] for m in months)
    print()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; load "
        f"{load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'table':28s} {'rows':>10s} {'MB':>9s} {'bytes/submission':>17s}")
    for name, t in last["tables"].items():
        grown = t["bytes"] - before.get(name, {"bytes": 0})["bytes"]
        print(f"{name:28s} {t['rows']:10d} {t['bytes'] / MB:9.1f} {grown / n:17.0f}")
    per_month = (last["database_bytes"] - months[0]["database_bytes"]) / max(1, len(months) - 1)
    if len(months) == 1:
        per_month = last["database_bytes"]
    print(
        f"database: {last['database_bytes'] / MB:.0f} MB after {len(months)} month(s) of "
        f"{args.practices} practices; growth per month {per_month / MB:.0f} MB, "
        f"x12 = {12 * per_month / MB / 1024:.2f} GB a year"
    )


if __name__ == "__main__":
    raise SystemExit(main())
