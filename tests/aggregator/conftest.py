"""Fixtures for the aggregator tests: a fresh database per test (SQLite file and PostgreSQL),
a network set up through the real CLI, and a real uvicorn server on loopback."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from agg_helpers import AUD, SimAgent, default_catalogue
from sqlalchemy import MetaData, create_engine, func, select, text

from aggregator.cli import main as cli
from aggregator.db import models
from aggregator.db.session import Database
from aggregator.runtime import Runtime
from aggregator.settings import Settings, get_settings
from aggregator.web.app import create_app

COUNTED = (
    models.Envelope,
    models.Submission,
    models.Cell,
    models.LogLeaf,
    models.LogNode,
    models.Checkpoint,
    models.PracticeKey,
    models.AccessAudit,
)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "aggregator.db"
    assert cli(["db", "upgrade", "--db", f"sqlite:///{path}"]) == 0
    return path


@pytest.fixture(scope="session")
def _pg_migrated(pg_database_factory: Callable[[], str]) -> str:
    url = pg_database_factory()
    assert cli(["db", "upgrade", "--db", url]) == 0
    return url


def _truncate(url: str) -> None:
    """Empty every table (a fresh database, minus the cost of creating and migrating one)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            meta = MetaData()
            meta.reflect(conn)
            for table in reversed(meta.sorted_tables):  # children first
                if table.name != "alembic_version":
                    conn.execute(table.delete())
            conn.execute(text("INSERT INTO log_state (id, size) VALUES (1, 0)"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database for this test: a copy of a migrated SQLite file, or the
    session's PostgreSQL database emptied."""
    if request.param == "sqlite":
        path = tmp_path / "aggregator.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("_pg_migrated")
    _truncate(url)
    return url


class Clock:
    """The server's clock: real time plus an offset a test can move, or an instant a test
    holds it at (where a check's boundary is a second wide, a slow machine must not cross it
    between the test setting the time and the server reading it)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.held: float | None = None

    def __call__(self) -> float:
        return self.held if self.held is not None else time.time() + self.offset


@dataclass
class Network:
    settings: Settings
    tmp: Path
    clock: Clock = field(default_factory=Clock)

    @property
    def db(self) -> str:
        return self.settings.db

    def cli(self, *args: str) -> int:
        return cli([*args, "--db", self.db])

    _db: Database | None = None

    @property
    def database(self) -> Database:
        if self._db is None:
            self._db = Database(self.db)
        return self._db

    def runtime(self) -> Runtime:
        """A runtime sharing this network's engine (don't dispose it)."""
        return Runtime.load(self.settings, clock=self.clock, db=self.database)

    def add_practice(self, ods: str, group: str = "PCN1") -> None:
        assert (
            self.cli(
                "practice",
                "add",
                ods,
                "--name",
                f"Practice {ods}",
                "--group",
                group,
                "--list-size",
                "8000",
                "--imd-decile",
                "5",
            )
            == 0
        )

    def token(self, ods: str) -> str:
        from aggregator.practices.service import issue_enrol_token

        rt = self.runtime()
        with rt.db.session() as s:
            token, _ = issue_enrol_token(s, ods, hours=72, now=rt.now())
        return token

    def user(self, role: str, practice: str | None = None, group: str | None = None) -> str:
        from aggregator.users.service import add_user

        rt = self.runtime()
        with rt.db.session() as s:
            _, token = add_user(
                s,
                f"{role}-{practice or group or 'x'}",
                role,
                practice=practice,
                group=group,
                now=rt.now(),
            )
        return token

    def counts(self) -> dict[str, int]:
        with self.database.read() as s:
            out = {
                m.__tablename__: int(s.scalar(select(func.count()).select_from(m)) or 0)
                for m in COUNTED
            }
            out["log_size"] = int(s.scalar(select(models.LogState.size)) or 0)
            out["tokens_used"] = int(
                s.scalar(
                    select(func.count())
                    .select_from(models.EnrolToken)
                    .where(models.EnrolToken.used_at.is_not(None))
                )
                or 0
            )
        return out


@pytest.fixture
def network(db_url: str, tmp_path: Path) -> Iterator[Network]:
    key_dir = tmp_path / "keys"
    assert (
        cli(
            [
                "init",
                "--name",
                "Test network",
                "--aud",
                AUD,
                "--db",
                db_url,
                "--key-dir",
                str(key_dir),
            ]
        )
        == 0
    )
    settings = get_settings(db=db_url, key_dir=key_dir)
    net = Network(settings=settings, tmp=tmp_path)
    yield net
    if net._db is not None:
        net._db.dispose()


@dataclass
class Server:
    url: str
    network: Network
    client: httpx.Client

    def post(self, path: str, body: bytes, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
        return self.client.post(
            path, content=body, headers={"content-type": "application/json"}, **kw
        )

    def get(self, path: str, token: str | None = None, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return self.client.get(path, headers=headers, **kw)


def _free_socket() -> socket.socket:
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (else Nagle plus delayed
    # ACK add ~40 ms to every response).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def server(network: Network) -> Iterator[Server]:
    """The app served by a real uvicorn on a free loopback port, in a thread."""
    runtime = Runtime.load(network.settings, clock=network.clock)  # the server's own engine
    app = create_app(network.settings, runtime=runtime)
    sock = _free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=120) as client:
        yield Server(url=url, network=network, client=client)
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()
    runtime.db.dispose()


@pytest.fixture
def agent_factory(server: Server) -> Callable[..., SimAgent]:
    """Register a practice, issue a token, enrol a SimAgent over HTTP."""
    catalogue = default_catalogue()

    def make(ods: str, group: str = "PCN1") -> SimAgent:
        server.network.add_practice(ods, group)
        agent = SimAgent(ods=ods, catalogue=catalogue)
        r = server.post("/v1/enrol", agent.enrol(server.network.token(ods)))
        assert r.status_code == 201, r.text
        return agent

    return make
