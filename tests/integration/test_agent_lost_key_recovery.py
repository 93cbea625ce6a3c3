"""A practice that lost its key, against a real aggregator on loopback (docs/operations.md
section 6): the new agent home names the old one in ``previous_homes``, and the scheduled
``run`` sends only the months after the last one any of its homes had accepted; the months the
network already holds are never sent again as plain submissions (the aggregator would refuse
each with 409, every night). The shared practice's records end on 2026-03-31, so every submit
and run passes --allow-stale (docs/agent.md, "Stale records"); staleness is tested elsewhere."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

from e2e_helpers import Agent, AggregatorServer

from agent.outbound.outbox import Outbox
from agent.outbound.release import payload_of
from agent.periods import last_complete_period, next_period, parse_period


def _months_before(last: str, count: int) -> list[str]:
    """The ``count`` months before ``last``, oldest first."""
    start = parse_period(last).start
    year, month = start.year, start.month - count
    while month < 1:
        year, month = year - 1, month + 12
    first = parse_period(f"{year:04d}-{month:02d}")
    months = [first]
    for _ in range(count - 1):
        months.append(next_period(months[-1]))
    return [p.label for p in months]


def _revoke_the_lost_key(aggregator: AggregatorServer) -> None:
    keys = json.loads(aggregator.cli("key", "list", "--db", aggregator.db, "--json"))
    (kid,) = [k["kid"] for k in keys if k["status"] == "active"]
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    aggregator.cli("key", "revoke", kid, "--compromised-since", yesterday, "--db", aggregator.db,
                   "--key-dir", str(aggregator.key_dir))  # fmt: skip


def _submitted(agent: Agent) -> list[tuple[str | None, str]]:
    with Outbox.open(agent.home) as outbox:
        return [(m.period, m.state) for m in outbox.messages(kind="submission")]


def test_run_in_a_new_home_sends_only_the_months_after_the_previous_homes(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """The old home had three months accepted, then its key was lost and revoked. The new home
    (``previous_homes`` naming the old one, and the same ``first_period`` as the old config)
    submits only the latest complete month and exits 0; a second ``run`` sends nothing."""
    last = last_complete_period(dt.date.today()).label
    earlier = _months_before(last, 3)
    old = agent_factory(aggregator, name="old")
    for month in earlier:
        assert old.json("submit", "--allow-stale", "--period", month)["state"] == "accepted"  # type: ignore[index]
    _revoke_the_lost_key(aggregator)

    new = agent_factory(
        aggregator,
        name="new",
        first_period=earlier[0],
        previous_homes=json.dumps([str(old.home)]),
    )
    code, out, err = new("run", "--allow-stale", "--json")
    assert code == 0, (out, err)
    outcomes = json.loads(out)
    assert [(o["period"], o["state"]) for o in outcomes] == [(last, "accepted")], outcomes
    assert _submitted(new) == [(last, "accepted")]

    code, out, err = new("run", "--allow-stale")
    assert code == 0, (out, err)
    assert out.strip() == "nothing due", out
    assert _submitted(new) == [(last, "accepted")]  # nothing signed, nothing sent
    new.ok("audit", "verify")
    # A plain submit of a month the old home sent is refused before anything is signed; a
    # correction supersedes what the old home sent without being told its id.
    with Outbox.open(old.home) as outbox:
        first = outbox.for_period(earlier[0])[-1]
    code, _, err = new("submit", "--allow-stale", "--period", earlier[0])
    assert code == 2 and str(old.home) in err and f"--supersedes {first.submission_id}" in err
    assert _submitted(new) == [(last, "accepted")]
    fixed = new.json(
        "submit", "--allow-stale", "--period", earlier[0], "--correction", "data_correction"
    )
    assert fixed["state"] == "accepted", fixed  # type: ignore[index]
    with Outbox.open(new.home) as outbox:
        assert payload_of(outbox.for_period(earlier[0])[-1]).supersedes == first.submission_id


def test_run_in_a_new_home_sends_nothing_when_the_old_home_sent_the_latest_month(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """The old home had the latest complete month accepted before its key was lost: the new
    home's first ``run`` (no ``first_period``: the latest month) has nothing due."""
    last = last_complete_period(dt.date.today()).label
    old = agent_factory(aggregator, name="old")
    assert old.json("submit", "--allow-stale", "--period", last)["state"] == "accepted"  # type: ignore[index]
    _revoke_the_lost_key(aggregator)
    new = agent_factory(aggregator, name="new", previous_homes=json.dumps([str(old.home)]))
    code, out, err = new("run", "--allow-stale")
    assert code == 0, (out, err)
    assert out.strip() == "nothing due", out
    assert _submitted(new) == []


def test_a_month_the_network_already_holds_is_refused_once_then_not_sent_again(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """Without ``previous_homes`` the new home cannot know the old one sent the latest month:
    the aggregator refuses the plain submission (409). ``run`` says so once (exit 6), naming
    the submission the network holds, the correction command and ``previous_homes``, and
    records the month as held by the network: the next ``run`` sends nothing and exits 0."""
    last = last_complete_period(dt.date.today()).label
    old = agent_factory(aggregator, name="old")
    assert old.json("submit", "--allow-stale", "--period", last)["state"] == "accepted"  # type: ignore[index]
    with Outbox.open(old.home) as outbox:
        (sent,) = outbox.messages(kind="submission")
    _revoke_the_lost_key(aggregator)
    new = agent_factory(aggregator, name="new")

    code, out, err = new("run", "--allow-stale")
    assert code == 6, (out, err)
    assert sent.submission_id in out and "already holds" in out, out
    assert f"--supersedes {sent.submission_id}" in out and "previous_homes" in out, out
    assert _submitted(new) == [(last, "refused")]

    code, out, err = new("run", "--allow-stale")
    assert code == 0, (out, err)
    assert out.strip() == "nothing due", out
    assert _submitted(new) == [(last, "refused")]
    # A plain submit of the month is refused locally now, naming the correction; the
    # correction supersedes the submission the aggregator named.
    code, _, err = new("submit", "--allow-stale", "--period", last)
    assert code == 2 and f"--supersedes {sent.submission_id}" in err, err
    fixed = new.json("submit", "--allow-stale", "--period", last, "--correction", "data_correction")
    assert fixed["state"] == "accepted", fixed  # type: ignore[index]
    with Outbox.open(new.home) as outbox:
        correction = outbox.for_period(last)[-1]
    assert correction.state == "accepted"
    assert payload_of(correction).supersedes == sent.submission_id
    code, out, err = new("run", "--allow-stale")
    assert code == 0 and out.strip() == "nothing due", (out, err)


def test_a_previous_home_that_cannot_be_read_stops_run_before_anything_is_sent(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """A previous home whose outbox cannot be read: ``run`` says so in one line, naming it and
    the setting, and signs and sends nothing rather than months the network may already
    hold."""
    old = agent_factory(aggregator, name="old", enrol=False)
    (old.home / "outbox.sqlite").write_bytes(b"not an outbox " * 100)
    new = agent_factory(aggregator, name="new", previous_homes=json.dumps([str(old.home)]))
    code, out, err = new("run", "--allow-stale")
    assert code == 3, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert str(old.home) in err and "previous_homes" in err, err
    assert _submitted(new) == []
