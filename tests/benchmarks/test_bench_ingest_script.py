"""bench/ingest.py runs end to end at a tiny scale, so the benchmark behind docs/benchmarks.md
keeps working: both paths, real worker processes and a real server, every submission accepted
(the script asserts each answer), and the figures it reports are present and plausible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.web.serving import spreads_connections

REPO = Path(__file__).resolve().parents[2]


def _run(backend: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        [sys.executable, str(REPO / "bench/ingest.py"), "--backends", backend,
         "--practices", "6", "--months", "2", "--runs", "1", "--workers", "2",
         "--threads", "3", "--clients", "3", "--http"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=os.environ.copy(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _check(result: dict, backend: str) -> None:  # type: ignore[type-arg]
    assert result["rates"][f"{backend}/service"] > 0
    assert result["rates"][f"{backend}/http"] > 0
    assert result["cpu_ms"][backend] > 0
    assert 1 <= result["submissions_per_transaction"][backend] <= 12
    if spreads_connections():  # both workers listen; the 3 clients' connections are among them
        [spread] = result["http_connections_per_worker"][backend]
        assert len(spread) == 2 and sum(spread) == 3


def test_ingest_benchmark_runs_on_sqlite() -> None:
    _check(_run("sqlite"), "sqlite")


@pytest.mark.postgres
def test_ingest_benchmark_runs_on_postgresql(pg_database_factory) -> None:  # type: ignore[no-untyped-def]
    # (the fixture only skips where no server answers; the script makes and drops its own)
    _check(_run("postgresql"), "postgresql")
