"""`fedqi-aggregator serve --workers N` on Linux: each worker process listens on a socket of its
own (SO_REUSEPORT), so a burst of kept-open connections is spread over the workers instead of
landing on whichever woke first; a worker that dies is started again; a port already taken is a
clear error. Real processes on loopback; which process holds which connection is read from
/proc (``connections_by_worker``, which the ingest benchmark reports too)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from agg_helpers import serve_on_a_free_port, wait_ready

from aggregator.errors import ExitCode
from aggregator.web.serving import connections_by_worker, spreads_connections

pytestmark = pytest.mark.skipif(
    not spreads_connections(), reason="SO_REUSEPORT spreads connections on Linux only"
)
BIN = Path(sys.executable).parent / "fedqi-aggregator"
CONNECTIONS = 16  # as the ingest benchmark's clients; all on one worker: about 1 in 30,000


def _serve(network, port: int, workers: int) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        [str(BIN), "serve", "--db", network.db, "--key-dir", str(network.settings.key_dir),
         "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _serving(network, workers: int) -> tuple[subprocess.Popen[bytes], int]:  # type: ignore[no-untyped-def]
    """serve --workers N on a free port, once every worker listens and it answers."""
    return serve_on_a_free_port(
        network,
        "--workers",
        str(workers),
        also=lambda proc, port: len(_workers(proc, port)) == workers,
    )


def _workers(serve: subprocess.Popen[bytes], port: int) -> dict[int, int]:
    return connections_by_worker(serve.pid, port)


def _wait_ready(serve: subprocess.Popen[bytes], port: int, workers: int) -> None:
    wait_ready(
        serve, f"http://127.0.0.1:{port}", also=lambda: len(_workers(serve, port)) == workers
    )


def _stop(serve: subprocess.Popen[bytes]) -> None:
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=60) == 0


def test_a_burst_of_kept_open_connections_reaches_every_worker(network) -> None:  # type: ignore[no-untyped-def]
    serve, port = _serving(network, workers=2)
    clients = [
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) for _ in range(CONNECTIONS)
    ]
    try:
        start = threading.Barrier(CONNECTIONS)

        def connect(client: httpx.Client) -> None:
            start.wait()
            assert client.get("/healthz").status_code == 200  # the connection stays open

        threads = [threading.Thread(target=connect, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        held = _workers(serve, port)
        assert len(held) == 2
        assert sum(held.values()) == CONNECTIONS
        assert all(n > 0 for n in held.values()), held
    finally:
        for c in clients:
            c.close()
        _stop(serve)
    assert not any(_workers(serve, port)), "a worker outlived serve"


def test_a_worker_that_dies_is_started_again(network) -> None:  # type: ignore[no-untyped-def]
    serve, port = _serving(network, workers=2)
    try:
        first = set(_workers(serve, port))
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        # the new worker is a fresh interpreter (spawned), as slow to start as serve itself
        deadline = time.time() + 120
        while True:
            now = set(_workers(serve, port))
            if len(now) == 2 and victim not in now:
                break
            assert time.time() < deadline, f"no new worker: {now}"
            time.sleep(0.2)
        assert now - first and first - now == {victim}
        _wait_ready(serve, port, workers=2)
    finally:
        _stop(serve)


def test_a_port_already_taken_is_a_clear_error(network) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = _serve(network, port, workers=2)
        try:
            code = serve.wait(timeout=60)
        finally:
            if serve.poll() is None:
                serve.kill()
        err = serve.stderr.read().decode() if serve.stderr else ""
    assert code != 0
    assert f"cannot listen on 127.0.0.1:{port}" in err, err
    assert "Traceback" not in err


@pytest.mark.skipif(not spreads_connections(), reason="workers share one socket here")
def test_a_second_serve_with_workers_refuses_a_port_another_serves(network) -> None:  # type: ignore[no-untyped-def]
    """Each worker's socket has SO_REUSEPORT, which a second ``serve --workers`` on the same
    port could join, splitting the connections between two aggregators. It refuses instead."""
    first, port = _serving(network, workers=2)
    try:
        second = _serve(network, port, workers=2)
        try:
            code = second.wait(timeout=60)
        finally:
            if second.poll() is None:
                second.kill()
        err = second.stderr.read().decode() if second.stderr else ""
        assert code == ExitCode.PORT_IN_USE, err
        assert f"error: serve: cannot listen on 127.0.0.1:{port}: Address already in use" in err
        assert (
            set(_workers(first, port)) and httpx.get(f"http://127.0.0.1:{port}/healthz").is_success
        )
    finally:
        _stop(first)
