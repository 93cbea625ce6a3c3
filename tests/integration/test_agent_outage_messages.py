"""What the agent says when the aggregator is down or the URL is not an aggregator at all: at
once, naming the stored message, which stays queued (real servers on loopback)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator

import pytest
from e2e_helpers import Agent, AggregatorServer

from agent.outbound.outbox import Outbox


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def plain_http_server() -> Iterator[str]:
    """Something that answers HTTP on loopback but is not a fedqi aggregator."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _queued(agent: Agent) -> list[int]:
    with Outbox.open(agent.home) as outbox:
        return [m.id for m in outbox.messages(kind="submission", state="queued")]


def test_submit_to_a_stopped_aggregator_names_the_queued_message_at_each_try(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator)
    aggregator.kill()
    code, out, err = agent("submit", "--period", "2026-02")
    assert code == 5, (out, err)
    (queued,) = _queued(agent)
    lines = err.strip().splitlines()
    # The first failed try is told at once (before any wait), not after the last one.
    assert "did not answer" in lines[0] and "try 1 of 3 failed" in lines[0], err
    assert (
        f"submission #{queued} (period 2026-02) is stored in the outbox and stays queued"
        in (lines[-1])
    )
    assert "fedqi-agent run" in lines[-1] and "Traceback" not in err
    # The catalogue fetch found it down: the send did not wait through the backoff again.
    assert sum("try 1 of 3" in line for line in lines) == 1, err

    aggregator.start()
    resent = agent.json("run")
    assert [o["message"] for o in resent][:1] == [queued]  # type: ignore[index,union-attr]
    assert resent[0]["state"] == "accepted"  # type: ignore[index]


def test_submit_to_a_url_that_is_not_an_aggregator_says_what_answered(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent], plain_http_server: str
) -> None:
    agent = agent_factory(aggregator)
    env = {"FEDQI_AGENT_AGGREGATOR_URL": plain_http_server}
    code, out, err = agent("submit", "--period", "2026-02", env=env)
    assert code == 5, (out, err)
    last = err.strip().splitlines()[-1]
    assert f"{plain_http_server} is not a fedqi aggregator" in last, err
    assert "application/problem+json" in last and "aggregator_url" in last
    assert "text/html" in last  # what it reached: the plain server's HTML error page
    # Not refused for ever: the message is kept queued for the right URL.
    (queued,) = _queued(agent)
    assert f"#{queued}" in last
    code, out, err = agent("run", "--json")
    assert code == 0 and "accepted" in out, err
