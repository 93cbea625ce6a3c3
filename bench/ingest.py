"""Benchmark: signed submission ingestion (40 indicators x 9 strata each) into the embedded
SQLite default and into PostgreSQL, with signature verification, every ingest check, the cell
rows, the log append (leaf + Merkle nodes), a signed checkpoint and a signed receipt included.

Two paths:

* ``service``: ``aggregator.submissions.service.ingest`` called directly by ``--workers``
  processes, each with ``--threads`` concurrent streams through its group committer (the work
  the server's processes and request threads do, minus HTTP);
* ``http``: ``fedqi-aggregator serve --workers W`` (W = ``--workers``) in its own processes,
  submissions POSTed over loopback by ``--clients`` client threads (``--http`` to enable).

Each path runs ``--runs`` times on a fresh database; the median rate is reported. Submissions are
made and signed before the clock starts (one per practice per month, seq increasing); each
practice's months go in order through one stream. The service path also reports the CPU time
of the aggregator processes per submission, the rest of the machine's busy CPU time over the
same span (the database server's, mostly; Linux only), and how many submissions shared each
write transaction. The HTTP path starts its clients once every server worker listens, and
reports how many of their connections each worker held (Linux).

Usage::

    .venv/bin/python bench/ingest.py [--backends sqlite,postgresql] [--practices 100]
        [--months 3] [--runs 3] [--workers 2] [--threads 8] [--clients 16] [--http] [--admin-url postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.library import load_default_catalogue  # noqa: E402
from aggregator.cli import main as cli  # noqa: E402
from aggregator.practices import service as practices  # noqa: E402
from aggregator.runtime import Runtime, tune_gc  # noqa: E402
from aggregator.settings import get_settings  # noqa: E402
from aggregator.submissions.service import IngestLimits, ingest  # noqa: E402
from aggregator.web.serving import connections_by_worker, spreads_connections  # noqa: E402
from protocol.catalogue import Catalogue  # noqa: E402
from protocol.disclosure import RawCell, apply_policy, policy_sha256  # noqa: E402
from protocol.envelope import sign_envelope  # noqa: E402
from protocol.keys import SigningKey  # noqa: E402
from protocol.submission import (  # noqa: E402
    CatalogueRef,
    Enrol,
    IndicatorProvenance,
    Period,
    Provenance,
    Submission,
)

AUD = "fedqi-bench"
INDICATORS = 40
HTTP_WARMUP = 2  # untimed submissions per client thread on the HTTP path
READY_SECONDS = 120  # for `serve` to answer /readyz with every worker listening
BANDS = [(0, 9), (10, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, 69), (70, None)]


def bench_catalogue() -> Catalogue:
    """40 indicators stratified by 8 age bands: 9 strata each with the total."""
    return Catalogue.model_validate(
        {
            "id": "bench",
            "version": 1,
            "title": "ingest benchmark",
            "age_bands": [
                {"label": f"{lo}-{hi}" if hi is not None else f"{lo}+", "min": lo, "max": hi}
                for lo, hi in BANDS
            ],
            "disclosure": {"name": "default"},
            # A real published list (HYP_COD), as the default catalogue carries it.
            "codelists": [
                {
                    **load_default_catalogue()
                    .codelist("hyp")
                    .model_dump(mode="json", exclude_none=True),
                    "id": "bench_codes",
                }
            ],
            "indicators": [
                {
                    "id": f"IND_{i:02d}",
                    "version": 1,
                    "title": f"indicator {i}",
                    "rationale": "benchmark",
                    "population": {"kind": "age", "min": 18},
                    "numerator": {"kind": "has_code", "codelist": "bench_codes"},
                    "strata": ["age_band"],
                }
                for i in range(INDICATORS)
            ],
        }
    )


def nonce() -> str:
    import base64

    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


def raw_cells(cat: Catalogue, rng: random.Random) -> list[RawCell]:
    """One practice's exact counts: random per stratum, each total the sum of its strata."""
    raw: list[RawCell] = []
    for ind in cat.indicators:
        parts = []
        for band, _ in cat.strata_for(ind)[1:]:
            d = rng.randint(0, 400)
            n = rng.randint(0, d)
            parts.append(RawCell(ind.id, band, "all", d, n, rng.randint(0, d - n)))
        raw += parts
        totals = (
            sum(getattr(p, f) for p in parts) for f in ("denominator", "numerator", "exclusions")
        )
        raw.append(RawCell(ind.id, "all", "all", *totals))
    return raw


def make_submissions(
    cat: Catalogue, agents: dict[str, SigningKey], months: int, seed: int
) -> list[bytes]:
    rng = random.Random(seed)
    policy = policy_sha256(cat.disclosure)
    prov_inds = tuple(IndicatorProvenance(id=i.id, version=1, codelists=()) for i in cat.indicators)
    out = []
    now = int(time.time())
    for month in range(1, months + 1):
        for ods, key in agents.items():
            raw = raw_cells(cat, rng)
            cells = apply_policy(raw, cat.disclosure)
            sub = Submission(
                aud=AUD,
                practice=ods,
                kid=key.kid,
                submission_id=str(uuid.uuid4()),
                seq=month,
                iat=now,
                nonce=nonce(),
                period=Period.month(2026, month),
                catalogue=CatalogueRef(id=cat.id, version=cat.version, sha256=cat.sha256()),
                provenance=Provenance(
                    agent_version="0.1.0",
                    extract_time=now,
                    source="sqlite",
                    disclosure_policy=policy,
                    indicators=prov_inds,
                ),
                cells=cells,
            )
            out.append(sign_envelope("submission", sub.to_bytes(), [key]).to_bytes())
    return out


def fresh_database(backend: str, tmp: Path, admin_url: str, run: int) -> tuple[str, callable]:
    if backend == "sqlite":
        path = tmp / f"bench-{run}-{uuid.uuid4().hex[:6]}.db"
        return f"sqlite:///{path}", lambda: None
    import psycopg

    name = f"fedqi_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}", drop


def setup_network(
    url: str, tmp: Path, run: int, practices_n: int
) -> tuple[object, dict[str, SigningKey], Path]:
    key_dir = tmp / f"keys-{run}-{uuid.uuid4().hex[:6]}"
    cat_file = tmp / "bench-catalogue.json"
    cat_file.write_text(bench_catalogue().model_dump_json())
    quiet = open(os.devnull, "w")  # noqa: SIM115
    saved = sys.stdout
    sys.stdout = quiet
    try:
        assert cli(["db", "upgrade", "--db", url]) == 0
        assert (
            cli(
                [
                    "init",
                    "--name",
                    "bench",
                    "--aud",
                    AUD,
                    "--catalogue",
                    str(cat_file),
                    "--db",
                    url,
                    "--key-dir",
                    str(key_dir),
                ]
            )
            == 0
        )
    finally:
        sys.stdout = saved
    settings = get_settings(db=url, key_dir=key_dir)
    rt = Runtime.load(settings)
    agents: dict[str, SigningKey] = {}
    now = rt.now()
    for i in range(practices_n):
        ods = f"B{10000 + i:05d}"
        key = SigningKey.generate()
        with rt.db.session() as s:
            practices.add_practice(
                s,
                ods,
                name=f"bench {i}",
                group=f"PCN{i % 10}",
                list_size=8000,
                imd_decile=1 + i % 10,
                now=now,
            )
            token, _ = practices.issue_enrol_token(s, ods, hours=1, now=now)
        enrol = Enrol(
            aud=AUD,
            practice=ods,
            token=token,
            jwk=key.public.jwk(),
            agent_version="0.1.0",
            iat=int(time.time()),
            nonce=nonce(),
        )
        body = sign_envelope("enrol", enrol.to_bytes(), [key]).to_bytes()
        practices.enrol(
            rt.db.session,
            rt.signer,
            body,
            now=time.time(),
            cap=1 << 20,
            iat_future=300,
            iat_past=86400,
        )
        agents[ods] = key
    return rt, agents, key_dir


def _ingest_worker(
    db_url: str, key_dir: str, streams: list[list[bytes]], ready: object = None
) -> tuple[float, float, int, float, int, float | None, float | None]:
    """One worker process (as one server process): load the runtime, warm up, wait at the
    ``ready`` barrier until every worker has (a server's processes are all up before the load
    arrives), then ingest its streams from one thread each, through the runtime's group
    committer (as the server's request threads do); returns its (start, end) wall-clock times,
    the count, the CPU seconds this process used, the number of write transactions, and the
    machine's busy CPU seconds at its start and end."""
    rt = Runtime.load(get_settings(db=db_url, key_dir=Path(key_dir)))
    limits = IngestLimits(cap=256 * 1024, iat_future=300, iat_past=7 * 86400)
    rt.warm()  # as a serve worker does: active keys and published catalogues
    if os.environ.get("FEDQI_BENCH_NO_GC_TUNING") != "1":
        tune_gc()  # as a serve worker does

    def run(stream: list[bytes]) -> None:
        for body in stream:
            res = ingest(
                rt.db.read,
                rt.db.session,
                rt.signer,
                rt.catalogues,
                body,
                now=time.time(),
                limits=limits,
                committer=rt.committer,
                keys=rt.keys,
            )
            assert res.created

    if ready is not None:
        ready.wait()  # type: ignore[attr-defined]
    busy0, start, cpu = machine_busy_seconds(), time.time(), time.process_time()
    with ThreadPoolExecutor(max(1, len(streams))) as pool:
        list(pool.map(run, streams))
    end, cpu, busy1 = time.time(), time.process_time() - cpu, machine_busy_seconds()
    rt.db.dispose()
    return start, end, sum(len(x) for x in streams), cpu, rt.committer.batches, busy0, busy1


def streams_of(bodies: list[bytes], practices: int, n: int) -> list[list[bytes]]:
    """``n`` streams, each a set of whole practices with their months in order (bodies are
    month-major, so body ``i`` is practice ``i % practices``)."""
    out: list[list[bytes]] = [[] for _ in range(n)]
    for i, b in enumerate(bodies):
        out[(i % practices) % n].append(b)
    return [x for x in out if x]


def machine_busy_seconds() -> float | None:
    """CPU seconds every core of this machine has spent busy since boot (Linux /proc/stat:
    everything but idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_service(
    url: str, key_dir: Path, bodies: list[bytes], practices: int, workers: int, threads: int
) -> tuple[float, float, int, float | None]:
    """``workers`` processes (as ``workers`` server processes would), each running ``threads``
    concurrent streams; returns the rate, the aggregator CPU ms per submission, the number of
    write transactions, and the machine's busy CPU ms per submission over the same span (the
    aggregator's, the database server's and any neighbour's)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    streams = streams_of(bodies, practices, workers * threads)
    shares = [streams[w::workers] for w in range(workers)]
    context = mp.get_context("spawn")
    with (
        context.Manager() as manager,
        ProcessPoolExecutor(len(shares), mp_context=context) as pool,
    ):
        ready = manager.Barrier(len(shares))
        futures = [pool.submit(_ingest_worker, url, str(key_dir), share, ready) for share in shares]
        spans = [f.result() for f in futures]
    start = min(sp[0] for sp in spans)
    end = max(sp[1] for sp in spans)
    count = sum(sp[2] for sp in spans)
    first, last = min(spans, key=lambda sp: sp[0]), max(spans, key=lambda sp: sp[1])
    busy = None if first[5] is None or last[6] is None else 1000 * (last[6] - first[5]) / count
    return (
        count / (end - start),
        sum(sp[3] for sp in spans) / count * 1000,
        sum(sp[4] for sp in spans),
        busy,
    )


def tree_cpu_seconds(root: int) -> float | None:
    """User + system CPU seconds of a process and its children (Linux /proc)."""
    total, found = 0, False
    tick = os.sysconf("SC_CLK_TCK")
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(pid) == root or int(fields[1]) == root:
            total += int(fields[11]) + int(fields[12])
            found = True
    return total / tick if found else None


def run_http(
    url: str, key_dir: Path, bodies: list[bytes], practices: int, workers: int, clients: int
) -> tuple[float, float | None, float, list[int]]:
    """The rate over HTTP, the server's CPU ms per submission (its processes), the
    benchmark client's own CPU ms per submission (it shares the machine), and how many of the
    clients' connections each worker process held when the clock started (Linux; empty
    elsewhere, or with one worker)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("fedqi-aggregator")),  # this interpreter's
            "serve",
            "--db",
            url,
            "--key-dir",
            str(key_dir),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        # a loaded 2-core machine (the test suite's) takes 20 to 30 s to start two workers
        deadline = time.time() + READY_SECONDS
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(
                    "server did not start: " + (proc.stderr.read().decode() if proc.stderr else "")
                )
            time.sleep(0.1)
        # /readyz answers once one worker is up; the clients connect only when every worker
        # listens, or the first ones up take every connection (Linux; see aggregator.web.serving)
        while (
            workers > 1
            and spreads_connections()
            and len(connections_by_worker(proc.pid, port)) < workers
        ):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(
                    f"not all {workers} server workers listened within {READY_SECONDS} s"
                )
            time.sleep(0.1)
        streams = streams_of(bodies, practices, clients)

        # TCP_NODELAY on the client: without it Nagle holds the body's last segment for the
        # server's delayed ACK (~40 ms a request on loopback), which measures the client's
        # socket, not the aggregator.
        nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        if os.environ.get("FEDQI_BENCH_CLIENT_NAGLE") == "1":
            nodelay = []

        # The first WARMUP submissions of each client are untimed: they reach the server
        # workers' cold first requests (imports, statement compilation, caches), which the
        # service path also leaves out of its clock.
        # Which worker holds each client's connection is read in the barrier's action: every
        # client has sent its warm-up on an open connection and none has started the timed
        # part, so a client that finishes early cannot close its connection before it is seen.
        spread: list[int] = []

        def count_connections() -> None:
            spread[:] = sorted(connections_by_worker(proc.pid, port).values(), reverse=True)

        ready = threading.Barrier(len(streams) + 1, action=count_connections)

        def work(chunk: list[bytes]) -> None:
            transport = httpx.HTTPTransport(socket_options=nodelay)
            with httpx.Client(base_url=base, timeout=60, transport=transport) as c:
                for i, body in enumerate(chunk):
                    if i == min(HTTP_WARMUP, len(chunk)):
                        ready.wait()
                    r = c.post(
                        "/v1/submissions",
                        content=body,
                        headers={"content-type": "application/json"},
                    )
                    assert r.status_code == 201, r.text
                if len(chunk) <= HTTP_WARMUP:
                    ready.wait()

        with ThreadPoolExecutor(len(streams)) as pool:
            futures = [pool.submit(work, chunk) for chunk in streams]
            ready.wait()
            start = time.perf_counter()
            server0, client0 = tree_cpu_seconds(proc.pid), time.process_time()
            for f in futures:
                f.result()
            elapsed = time.perf_counter() - start
            server1, client1 = tree_cpu_seconds(proc.pid), time.process_time()
        timed = sum(max(0, len(chunk) - HTTP_WARMUP) for chunk in streams)
        server_ms = None if None in (server0, server1) else 1000 * (server1 - server0) / timed  # type: ignore[operator]
        return timed / elapsed, server_ms, 1000 * (client1 - client0) / timed, spread
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--practices", type=int, default=100)
    ap.add_argument("--months", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="aggregator processes")
    ap.add_argument(
        "--threads", type=int, default=8, help="concurrent streams per process (service path)"
    )
    ap.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    ap.add_argument("--http", action="store_true", help="also measure over HTTP")
    ap.add_argument(
        "--admin-url",
        default=os.environ.get("FEDQI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = ap.parse_args(argv)
    if not 1 <= args.months <= 11:
        # the months are 2026-01 onwards, and the aggregator refuses one that has not ended
        ap.error(f"--months {args.months}: use 1 to 11 (2026-01 to 2026-11)")
    results: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    rest: dict[str, list[float]] = {}  # machine CPU beyond the aggregator's, per submission
    http_cpu: dict[str, list[float]] = {}  # the HTTP server's processes, per submission
    client_cpu: dict[str, list[float]] = {}  # the benchmark's HTTP client, per submission
    spreads: dict[str, list[list[int]]] = {}  # connections per server worker, each HTTP run
    txns: dict[str, list[float]] = {}
    load_before = os.getloadavg()[0]
    cat = bench_catalogue()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for backend in args.backends.split(","):
            for path in ["service", "http"] if args.http else ["service"]:
                for run in range(args.runs):
                    url, drop = fresh_database(backend, tmp, args.admin_url, run)
                    try:
                        rt, agents, key_dir = setup_network(url, tmp, run, args.practices)
                        bodies = make_submissions(cat, agents, args.months, seed=run)
                        rt.db.dispose()
                        cpu_ms = None
                        spread: list[int] = []  # connections per server worker (HTTP)
                        if path == "service":
                            rate, cpu_ms, n_txn, busy = run_service(
                                url, key_dir, bodies, args.practices, args.workers, args.threads
                            )
                            cpu.setdefault(backend, []).append(cpu_ms)
                            txns.setdefault(backend, []).append(len(bodies) / n_txn)
                            if busy is not None:
                                rest.setdefault(backend, []).append(busy - cpu_ms)
                        else:
                            rate, server_ms, client_ms, spread = run_http(
                                url, key_dir, bodies, args.practices, args.workers, args.clients
                            )
                            spreads.setdefault(backend, []).append(spread)
                            if server_ms is not None:
                                http_cpu.setdefault(backend, []).append(server_ms)
                            client_cpu.setdefault(backend, []).append(client_ms)
                    finally:
                        drop()
                    results.setdefault(f"{backend}/{path}", []).append(rate)
                    print(
                        f"{backend:10s} {path:7s} run {run + 1}: {len(bodies)} submissions "
                        f"({len(bodies[0])} bytes each), {rate:7.1f}/s"
                        + (
                            f" (connections per worker: {', '.join(map(str, spread))})"
                            if spread
                            else ""
                        ),
                        flush=True,
                    )
    print()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}"
    )
    for name, rates in results.items():
        print(
            f"{name:22s} median {statistics.median(rates):7.1f} submissions/s  (runs: {', '.join(f'{r:.1f}' for r in rates)})"
        )
    for backend, values in cpu.items():
        per = statistics.median(values)
        print(
            f"{backend:22s} median {per:.1f} ms aggregator CPU per submission "
            f"(one core's bound: {1000 / per:.0f}/s, not counting the database server)"
        )
    for backend, values in txns.items():
        print(
            f"{backend:22s} median {statistics.median(values):.1f} submissions per write transaction"
        )
    for backend, values in rest.items():
        print(
            f"{backend:22s} median {statistics.median(values):.1f} ms other CPU per submission "
            "(the machine's busy time beyond the aggregator's: the database server, the OS, neighbours)"
        )
    for backend, values in http_cpu.items():
        print(
            f"{backend:22s} median {statistics.median(values):.1f} ms server CPU per submission "
            f"over HTTP; the benchmark's client used {statistics.median(client_cpu[backend]):.1f} ms"
        )
    print(f"load average: {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print(
        json.dumps(
            {
                "rates": {k: statistics.median(v) for k, v in results.items()},
                "cpu_ms": {k: statistics.median(v) for k, v in cpu.items()},
                "other_cpu_ms": {k: statistics.median(v) for k, v in rest.items()},
                "http_server_cpu_ms": {k: statistics.median(v) for k, v in http_cpu.items()},
                "http_client_cpu_ms": {k: statistics.median(v) for k, v in client_cpu.items()},
                "http_connections_per_worker": spreads,
                "submissions_per_transaction": {k: statistics.median(v) for k, v in txns.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
