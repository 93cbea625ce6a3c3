"""``run`` with a key the network revoked, against a real aggregator on loopback: it stops at
the first refusal naming the revocation, says once what to do (docs/operations.md section 6)
and signs nothing more. A new-user run found it signing and sending every due month, each
refused "kid ... was revoked", with a stale-records warning for each (exit 6). The shared
practice's records end on 2026-03-31, so every run passes --allow-stale."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

from e2e_helpers import Agent, AggregatorServer
from test_agent_lost_key_recovery import _months_before

from agent.outbound.outbox import Outbox
from agent.periods import last_complete_period

WHAT_TO_DO = "docs/operations.md section 6"


def _revoke(aggregator: AggregatorServer) -> str:
    keys = json.loads(aggregator.cli("key", "list", "--db", aggregator.db, "--json"))
    (kid,) = [k["kid"] for k in keys if k["status"] == "active"]
    aggregator.cli("key", "revoke", kid, "--db", aggregator.db,
                   "--key-dir", str(aggregator.key_dir))  # fmt: skip
    return str(kid)


def _submissions(agent: Agent) -> list[tuple[str | None, str]]:
    with Outbox.open(agent.home) as outbox:
        return [(m.period, m.state) for m in outbox.messages(kind="submission")]


def test_run_stops_at_the_first_refusal_of_a_revoked_key(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    last = last_complete_period(dt.date.today()).label
    months = [*_months_before(last, 4), last]
    agent = agent_factory(aggregator, first_period=months[0])
    assert agent.json("submit", "--allow-stale", "--period", months[0])["state"] == "accepted"  # type: ignore[index]
    kid = _revoke(aggregator)

    code, out, err = agent("run", "--allow-stale")
    assert code == 6, (out, err)
    said = out + err
    assert f"kid {kid} was revoked" in said, said
    assert said.count(WHAT_TO_DO) == 1, said  # what to do, once
    assert said.count("was revoked") == 1, said  # one refusal, not one per month
    assert said.count("warning:") <= 1, said  # the stale warning of the one month signed
    assert "signed nothing more" in said and "revoked" in err, said
    # the first due month was signed and refused; no later month was computed or signed
    assert _submissions(agent) == [(months[0], "accepted"), (months[1], "refused")]

    # Run again: the outbox holds the refusal for this key, so nothing is signed or sent and
    # what to do is said once (the new-user run saw a month signed and refused every night).
    code, out, err = agent("run", "--allow-stale")
    assert code == 6, (out, err)
    assert (out + err).count(WHAT_TO_DO) == 1 and "sent and signed nothing" in err, (out, err)
    assert "warning:" not in out + err, (out, err)
    assert _submissions(agent) == [(months[0], "accepted"), (months[1], "refused")]


def test_run_sends_no_queued_message_after_a_revoked_key_is_refused(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """Messages queued while the aggregator was away, then the key revoked: the first queued
    one is refused, the others stay queued unsent, and no due month is computed or signed."""
    last = last_complete_period(dt.date.today()).label
    months = [*_months_before(last, 3), last]
    agent = agent_factory(aggregator, first_period=months[0])
    aggregator.kill()
    for month in months[:2]:
        code, out, err = agent("submit", "--allow-stale", "--period", month)
        assert code == 5, (out, err)  # stored, queued
    aggregator.start()
    _revoke(aggregator)
    code, out, err = agent("run", "--allow-stale", "--json")
    assert code == 6, (out, err)
    outcomes = json.loads(out)
    assert [(o["period"], o["state"]) for o in outcomes] == [(months[0], "refused")], outcomes
    assert err.count(WHAT_TO_DO) + out.count(WHAT_TO_DO) == 1, (out, err)
    assert _submissions(agent) == [(months[0], "refused"), (months[1], "queued")]
