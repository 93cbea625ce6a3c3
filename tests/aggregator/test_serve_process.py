"""`fedqi-aggregator serve` as its own process (what production runs), on loopback."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent / "fedqi-aggregator"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_answers_and_stops_on_sigterm(network, workers):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            str(BIN),
            "serve",
            "--db",
            network.db,
            "--key-dir",
            str(network.settings.key_dir),
            "--port",
            str(port),
            "--workers",
            workers,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.time() < deadline, "serve did not answer"
                time.sleep(0.2)
        assert r.json() == {"status": "ready"}
        key = httpx.get(f"http://127.0.0.1:{port}/v1/log/key", timeout=5).json()
        assert key["aud"] == "fedqi-test"
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down cleanly, then re-raises the signal it caught (so -SIGTERM is fine)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
