"""End-to-end fixtures: a real aggregator (``fedqi-aggregator`` db upgrade, init, practice add,
enrol-token, then ``serve`` as a uvicorn subprocess on loopback) and real agents."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_helpers import AUD, Agent, AggregatorServer

from agent.sources.synth import generate_practice


@pytest.fixture
def aggregator_factory(tmp_path: Path) -> Iterator[Callable[..., AggregatorServer]]:
    made: list[AggregatorServer] = []

    def make(
        name: str = "agg",
        practices: tuple[str, ...] = ("A12345",),
        db_url: str | None = None,
        origin: str | None = None,
    ) -> AggregatorServer:
        server = AggregatorServer(tmp_path / name, db_url=db_url)
        server.setup(practices, origin=origin)
        server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.kill(signal.SIGTERM)


@pytest.fixture
def aggregator(aggregator_factory: Callable[..., AggregatorServer]) -> AggregatorServer:
    return aggregator_factory()


@pytest.fixture(scope="session")
def practice_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-patient synthetic practice whose records end on 2026-03-31: a month ending more
    than 31 days later is refused by submit and run unless --allow-stale (docs/agent.md)."""
    path = tmp_path_factory.mktemp("practice") / "practice.db"
    generate_practice(path, patients=300, seed=11)
    return path


@pytest.fixture
def agent_factory(tmp_path: Path, practice_db: Path) -> Callable[..., Agent]:
    def make(
        server: AggregatorServer,
        ods: str = "A12345",
        name: str = "agent",
        enrol: bool = True,
        **settings: str,
    ) -> Agent:
        home = tmp_path / name
        env = {
            "FEDQI_AGENT_HOME": str(home),
            "FEDQI_AGENT_TRANSPORT__BACKOFF": "0.05",
            "FEDQI_AGENT_TRANSPORT__RETRIES": "2",
            # no background resends racing the tests' own (a test turns it on where it looks)
            "FEDQI_AGENT_TRANSPORT__BACKGROUND_RESEND": "false",
            **{f"FEDQI_AGENT_{k.upper()}": v for k, v in settings.items()},
        }
        agent = Agent(home, env)
        agent.ok(
            "init",
            "--practice",
            ods,
            "--aud",
            AUD,
            "--aggregator-url",
            server.url,
            "--source-url",
            str(practice_db),
        )
        if enrol:
            agent.ok("enrol", "--token", server.token(ods))
        return agent

    return make
