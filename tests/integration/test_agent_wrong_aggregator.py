"""An agent whose aggregator_url is edited to point at another network's aggregator sends it
nothing signed: every command that posts first checks, as `audit verify` does, that the
aggregator signs its checkpoint with the pinned log key under the pinned origin, and stops with
one line (exit 3) naming the URL, what it serves and what the agent enrolled with. Queued
messages stay queued, held ones held, and no key rotation starts; pointed back, they go out.
Real aggregators on loopback."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from e2e_helpers import Agent, AggregatorServer

from agent.outbound.outbox import Outbox

#: What an aggregator keeps of what it was sent: envelopes, submissions, log leaves, keys.
STORED = ("envelopes", "submissions", "log_leaves", "practice_keys")


def _stored(server: AggregatorServer) -> dict[str, int]:
    db = sqlite3.connect(server.db_file)
    try:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in STORED}
    finally:
        db.close()


def _states(agent: Agent) -> dict[int, str]:
    with Outbox.open(agent.home) as outbox:
        return {m.id: m.state for m in outbox.messages()}


def _point_at(agent: Agent, server: AggregatorServer) -> None:
    """What the practice does: edit aggregator_url in agent.toml."""
    config = agent.home / "agent.toml"
    lines = config.read_text().splitlines()
    edited = [
        f'aggregator_url = "{server.url}"' if line.startswith("aggregator_url") else line
        for line in lines
    ]
    assert edited != lines, lines
    config.write_text("\n".join(edited) + "\n")


def _one_line(code: int, out: str, err: str) -> str:
    assert code == 3, (code, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_queued_and_held_messages_wait_for_the_enrolled_aggregator(
    aggregator_factory: Callable[..., AggregatorServer],
    agent_factory: Callable[..., Agent],
) -> None:
    home = aggregator_factory("home")
    agent = agent_factory(home)
    agent.ok("submit", "--period", "2026-01")
    # While the aggregator is down: one month queued, the next held for approval.
    home.kill()
    code, out, err = agent("submit", "--period", "2026-02")
    assert code == 5, (out, err)
    queued_id = max(_states(agent))
    out = agent.ok("submit", "--period", "2026-03", "--json", env={"FEDQI_AGENT_RELEASE": "hold"})
    held_id = json.loads(out)["message"]
    assert _states(agent)[queued_id] == "queued" and _states(agent)[held_id] == "held"

    # Another network's aggregator, with a practice of its own (its log is not empty).
    other = aggregator_factory("other", origin="other-net/log/v1")
    agent_factory(other, name="other-agent")
    before = _stored(other)
    states = _states(agent)
    _point_at(agent, other)

    line = _one_line(*agent("run"))
    assert f"aggregator_url {other.url} serves the log 'other-net/log/v1'" in line, line
    assert "enrolled in the log 'test-net/log/v1' of network 'test-net'" in line, line
    assert f"(at {home.url}): it is another aggregator" in line, line
    assert f"nothing was sent: submission #{queued_id} (period 2026-02) stays queued" in line
    assert "Set aggregator_url" in line, line

    # The background resend's command stops at once too, rather than keep trying.
    line = _one_line(*agent("run", "--queued-only", "--keep-trying", "30"))
    assert "serves the log 'other-net/log/v1'" in line, line

    # submit checks before it computes or signs anything, naming the aggregator rather than
    # failing on its catalogue (which the pinned catalogue key does not verify).
    line = _one_line(*agent("submit", "--period", "2026-04"))
    assert "serves the log 'other-net/log/v1'" in line, line
    assert "nothing was computed, signed or sent for period 2026-04" in line, line

    line = _one_line(*agent("approve", str(held_id)))
    assert "serves the log 'other-net/log/v1'" in line, line
    assert f"#{held_id} stays held" in line, line

    assert _stored(other) == before  # it was sent nothing
    assert _states(agent) == states  # nothing new signed; queued stays queued, held held
    shown = agent.json("audit", "show", str(queued_id))
    assert shown["state"] == "queued", shown  # type: ignore[index]

    # Pointed back at the aggregator it enrolled with, everything goes out.
    home.start()
    _point_at(agent, home)
    # (submit of the queued month resends its stored bytes, and nothing else: a `run` would
    # also sign the months after it, ahead of the held one)
    resent = agent.json("submit", "--period", "2026-02")
    assert (resent["message"], resent["state"]) == (queued_id, "accepted")  # type: ignore[index]
    approved = agent.json("approve", str(held_id))
    assert approved["state"] == "accepted", approved  # type: ignore[index]
    assert agent.json("audit", "verify")["ok"] is True  # type: ignore[index]
    assert _stored(other) == before


def test_rotate_key_starts_no_rotation_against_another_aggregator(
    aggregator_factory: Callable[..., AggregatorServer],
    agent_factory: Callable[..., Agent],
) -> None:
    home = aggregator_factory("home")
    agent = agent_factory(home)
    agent.ok("submit", "--period", "2026-01")
    keys_dir = agent.home / "keys"
    keys = sorted(p.name for p in keys_dir.iterdir())
    messages = _states(agent)

    # Same network name and origin, but its own log key: first with an empty log, then with
    # a practice enrolled (a checkpoint not signed by the pinned key).
    other = aggregator_factory("other")
    _point_at(agent, other)
    line = _one_line(*agent("rotate-key"))
    assert f"aggregator_url {other.url} serves an empty log" in line, line
    assert "no key rotation was started" in line, line

    agent_factory(other, name="other-agent")
    before = _stored(other)
    line = _one_line(*agent("rotate-key"))
    assert f"aggregator_url {other.url} does not sign its checkpoint with the pinned log key" in (
        line
    )
    assert "enrolled in the log 'test-net/log/v1'" in line and "Set aggregator_url" in line
    assert "no key rotation was started" in line, line

    assert not (keys_dir / "pending").exists()
    assert sorted(p.name for p in keys_dir.iterdir()) == keys  # no new key made
    assert _states(agent) == messages  # no rotate message signed
    assert _stored(other) == before

    _point_at(agent, home)
    rotated = agent.json("rotate-key")
    assert rotated["old_kid"] != rotated["new_kid"]  # type: ignore[index]
    assert not (keys_dir / "pending").exists()
    agent.ok("submit", "--period", "2026-02")
