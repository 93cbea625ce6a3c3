"""The agent's ``visibility`` setting, end to end: it travels in the signed submission (and
``named`` as no field at all), the real aggregator on loopback applies it from that submission on,
and an unknown value is refused before anything is computed or signed."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from e2e_helpers import Agent, AggregatorServer

from agent.outbound.outbox import Outbox
from protocol.envelope import Envelope
from protocol.submission import Submission


def _visibility(server: AggregatorServer, ods: str) -> tuple[str, str | None]:
    db = sqlite3.connect(server.db_file)
    row = db.execute(
        "SELECT visibility, visibility_since FROM practices WHERE ods = ?", (ods,)
    ).fetchone()
    db.close()
    return row[0], row[1]


def _payloads(agent: Agent) -> list[tuple[Submission, bytes]]:
    with Outbox.open(agent.home) as outbox:
        out = []
        for m in outbox.messages(kind="submission"):
            payload = Envelope.from_bytes(m.envelope).payload_bytes()
            out.append((Submission.from_bytes(payload), payload))
        return out


def test_visibility_travels_signed_and_takes_effect_from_the_next_submission(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator)
    assert agent.json("submit", "--period", "2026-02")["state"] == "accepted"  # type: ignore[index]
    assert _visibility(aggregator, "A12345") == ("named", None)
    env = {"FEDQI_AGENT_VISIBILITY": "totals_only"}
    code, _, err = agent("submit", "--period", "2026-03", env=env)
    assert code == 0, err
    (first, first_bytes), (second, _) = _payloads(agent)
    assert first.visibility is None and b'"visibility"' not in first_bytes  # named: no field
    assert second.visibility == "totals_only"
    assert _visibility(aggregator, "A12345") == ("totals_only", second.submission_id)


def test_an_unknown_visibility_is_refused_naming_the_setting(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator)
    code, _, err = agent("submit", "--period", "2026-03", env={"FEDQI_AGENT_VISIBILITY": "hidden"})
    assert code != 0 and "FEDQI_AGENT_VISIBILITY" in err
    assert _payloads(agent) == []  # nothing signed
