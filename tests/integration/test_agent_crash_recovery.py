"""SIGKILL the aggregator in the middle of a stream of submissions, restart it, and check that
nothing acknowledged was lost, nothing was duplicated, and the outbox resent identical bytes."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable

from e2e_helpers import Agent, AggregatorServer

from agent.outbound.outbox import Outbox


def _accepted(agent: Agent) -> int:
    if not (agent.home / "outbox.sqlite").exists():
        return 0
    with Outbox.open(agent.home) as outbox:
        return len([m for m in outbox.messages(kind="submission") if m.state == "accepted"])


def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    # Many periods due: every month from January 2025 to the last complete month. The
    # disclosure guard is off here: what is under test is the transport's crash recovery, and
    # a month the guard holds for approval (test_agent_e2e covers that) would not be sent.
    agent = agent_factory(aggregator, first_period="2025-01", guard="off")
    # The practice's records end on 2026-03-31: the later months are sent as --allow-stale asks.
    run = agent.subprocess("run", "--json", "--allow-stale")
    deadline = time.monotonic() + 120
    while _accepted(agent) < 4 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert run.poll() is None, "the run finished before the aggregator could be killed"
    aggregator.kill(signal.SIGKILL)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 5, err  # aggregator unreachable: one line, non-zero
    assert b"unreachable" in err and b"Traceback" not in err

    with Outbox.open(agent.home) as outbox:
        before = {m.id: m for m in outbox.messages(kind="submission")}
    acked = {m.submission_id for m in before.values() if m.state == "accepted"}
    queued = [m for m in before.values() if m.state == "queued"]
    assert len(acked) >= 4 and len(queued) == 1  # the one in flight, stored before sending

    aggregator.start()
    # Everything the agent holds a receipt for survived the kill.
    db = sqlite3.connect(aggregator.db_file)
    stored = {r[0] for r in db.execute("SELECT submission_id FROM submissions")}
    db.close()
    assert acked <= stored

    outcomes = agent.json("run", "--allow-stale")
    assert all(o["state"] == "accepted" for o in outcomes)  # type: ignore[union-attr,index]
    assert outcomes[0]["message"] == queued[0].id  # type: ignore[index]  # resent first

    with Outbox.open(agent.home) as outbox:
        after = outbox.messages(kind="submission")
    assert all(m.state == "accepted" for m in after)
    # The in-flight message was resent byte for byte (same id, same bytes, same hash).
    resent = next(m for m in after if m.id == queued[0].id)
    assert resent.envelope == queued[0].envelope

    db = sqlite3.connect(aggregator.db_file)
    rows = db.execute(
        "SELECT s.submission_id, s.period_start, e.body FROM submissions s "
        "JOIN envelopes e ON e.sha256 = s.envelope_sha256"
    ).fetchall()
    (leaves,) = db.execute("SELECT COUNT(*) FROM log_leaves WHERE kind = 'submission'").fetchone()
    db.close()
    periods = [r[1] for r in rows]
    assert len(periods) == len(set(periods)) == len(after)  # one per period, no duplicates
    assert leaves == len(after)
    bodies = {r[0]: bytes(r[2]) for r in rows}
    assert all(bodies[m.submission_id] == m.envelope for m in after)
    assert agent.json("audit", "verify")["ok"] is True  # type: ignore[index]
