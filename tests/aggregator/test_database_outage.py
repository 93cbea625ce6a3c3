"""PostgreSQL goes away under a stream of submissions and comes back.

The test makes its own throwaway cluster (initdb + pg_ctl from /usr/lib/postgresql/*/bin, in a
temporary directory, on a free port), serves the aggregator on it over real loopback HTTP, and
stops and starts the cluster while two agents send. Every submission is either stored once or
refused with 503 problem+json and a Retry-After; /readyz reports the outage; the aggregator
reconnects by itself (no restart) and the agents' resends of the refused bytes complete.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aggregator.cli import main as cli
from aggregator.db import models
from protocol.submission import Period
from tests.ports import PortInUse, on_a_free_port, says_port_in_use

BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
BIN = next((d for d in reversed(BINDIRS) if os.path.exists(f"{d}/initdb")), None)

pytestmark = pytest.mark.skipif(BIN is None, reason="initdb/pg_ctl not installed")


class Cluster:
    def __init__(self, root: Path) -> None:
        self.dir = root / "pgdata"
        #: Chosen by the first start (on a free port); a restart keeps it (the aggregator's URL).
        self.port: int | None = None
        self.log = root / "pg.log"
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root

    def _run(self, *args: str) -> None:
        cmd = [f"{BIN}/{args[0]}", *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if self.as_postgres:
            shutil.chown(self.dir.parent, "postgres", "postgres")
        self._run("initdb", "-D", str(self.dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        """The first start takes a free port (another if that one is taken before PostgreSQL
        binds it); a restart uses the same port again."""
        if self.port is None:
            self.port = on_a_free_port(self._start_on)
        else:
            self._start_on(self.port)

    def _start_on(self, port: int) -> int:
        opts = f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        logged = self.log.stat().st_size if self.log.exists() else 0  # pg_ctl -l appends
        try:
            self._run("pg_ctl", "-D", str(self.dir), "-o", opts, "-l", str(self.log), "-w", "start")
        except subprocess.CalledProcessError as exc:
            said = (
                self.log.read_bytes()[logged:].decode(errors="replace") if self.log.exists() else ""
            )
            if says_port_in_use(said):
                raise PortInUse(said[-2000:]) from exc
            raise
        return port

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # Its own directory under /tmp (pytest's is private to root, where the server runs as the
    # postgres user when the tests run as root).
    root = Path(tempfile.mkdtemp(prefix="fedqi-pg-"))
    c = Cluster(root)
    try:
        c.init()
        c.start()
        yield c
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def db_url(cluster: Cluster) -> str:  # overrides tests/aggregator/conftest.py's
    assert cli(["db", "upgrade", "--db", cluster.url]) == 0
    return cluster.url


def test_postgres_restart_under_a_stream_of_submissions(cluster, server, agent_factory) -> None:  # type: ignore[no-untyped-def]
    agents = [agent_factory("A81001"), agent_factory("A81002")]
    per_agent = 10
    outcomes: dict[str, list[int]] = {}  # submission id -> every status it got
    problems: list[str] = []
    lock = threading.Lock()
    outage = threading.Event()
    # Per agent: its first three months are stored (it then waits for the outage), and it has
    # had a submission refused while the database was down.
    before = {a.ods: threading.Event() for a in agents}
    refused_once = {a.ods: threading.Event() for a in agents}

    def send(agent) -> None:  # type: ignore[no-untyped-def]
        for month in range(1, per_agent + 1):
            model = agent.submission_model(period=Period.month(2026, month))
            body = agent.sign(model.to_bytes())
            deadline = time.monotonic() + 120
            while True:
                r = server.post("/v1/submissions", body)
                with lock:
                    outcomes.setdefault(model.submission_id, []).append(r.status_code)
                if r.status_code in (200, 201):
                    break
                if r.status_code != 503:
                    with lock:
                        problems.append(
                            f"{r.status_code} {r.headers.get('content-type')} {r.text[:200]}"
                        )
                    return
                if (
                    r.headers.get("content-type") != "application/problem+json"
                    or not r.headers.get("retry-after", "").isdigit()
                ):
                    with lock:
                        problems.append(f"503 without problem+json/Retry-After: {r.headers}")
                    return
                refused_once[agent.ods].set()
                if time.monotonic() > deadline:
                    with lock:
                        problems.append("resend did not complete in 120 s")
                    return
                time.sleep(0.2)  # the agent's own backoff is longer; the test is impatient
            if month == 3:
                before[agent.ods].set()
                # the rest of the stream runs into the outage (which starts once both agents
                # are here: longer than the test waits for the slower one)
                outage.wait(timeout=180)

    threads = [threading.Thread(target=send, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    # Conditions, not sleeps: a loaded machine may take longer than any fixed wait to send the
    # first months, or to send anything at all while the database is down.
    for ods, stored in before.items():
        assert stored.wait(timeout=120), (ods, problems)
    cluster.stop()
    outage.set()
    for ods, met in refused_once.items():  # submissions arrive while the database is down
        assert met.wait(timeout=120), (f"{ods} sent nothing while the database was down", problems)
    ready = server.client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.headers["content-type"] == "application/problem+json"
    assert ready.headers["retry-after"].isdigit()
    cluster.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads)
    assert problems == [], problems
    assert server.client.get("/readyz").status_code == 200

    assert len(outcomes) == 2 * per_agent
    refused = sum(s.count(503) for s in outcomes.values())
    assert refused > 0, "no submission met the outage"
    assert all(s[-1] in (200, 201) for s in outcomes.values()), outcomes
    with server.network.database.read() as s:
        stored = dict(
            s.execute(
                select(models.Submission.submission_id, func.count()).group_by(
                    models.Submission.submission_id
                )
            ).all()
        )
    assert stored == {sid: 1 for sid in outcomes}
    assert cli(["log", "verify", "--db", cluster.url]) == 0
