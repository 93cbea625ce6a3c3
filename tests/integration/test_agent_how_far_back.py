"""How far back the agent sends, with the real CLI against a real aggregator on loopback: a
month before first_period (or, without it, more than 24 months before the last complete month)
is refused by submit before anything is signed, and run never starts further back than that
because of one stray old month (docs/agent.md, "How far back")."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from typing import Any, cast

from e2e_helpers import Agent, AggregatorServer

from agent.outbound.outbox import Outbox
from agent.periods import earliest_period, last_complete_period, months_before

STRAY = "2016-11"  # a mistyped 2026-11


def _sent_periods(server: AggregatorServer, ods: str) -> list[str]:
    db = sqlite3.connect(server.db_file)
    rows = db.execute(
        "SELECT period_start FROM submissions WHERE practice_ods = ? ORDER BY period_start",
        (ods,),
    ).fetchall()
    db.close()
    return [str(r[0])[:7] for r in rows]


def test_submit_refuses_a_month_before_the_backfill_and_signs_nothing(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    today = dt.date.today()
    last = last_complete_period(today).label
    earliest = earliest_period(None, today)
    agent = agent_factory(aggregator, guard="off")
    just_before = months_before(earliest, 1).label
    for period in (STRAY, just_before):
        code, out, err = agent("submit", "--period", period)
        assert code == 2 and out == "", (period, out, err)
        assert err.count("\n") == 1 and " ".join(err.split()) == (
            f"error: period {period} is before {earliest.label}, the first of the last 24 "
            f"complete months (to {last}), the earliest sent without first_period: nothing was "
            "computed, signed or sent for it (a mistyped year?). To send it on purpose, set "
            f'first_period = "{period}" (or earlier; in agent.toml, or FEDQI_AGENT_FIRST_PERIOD)'
        ), err
    # With first_period set, a month before it is refused the same way.
    code, out, err = agent(
        "submit", "--period", "2026-02", env={"FEDQI_AGENT_FIRST_PERIOD": "2026-03"}
    )
    assert code == 2 and out == "", out
    assert err.startswith(
        "error: period 2026-02 is before first_period (2026-03), the first month this practice "
        "sends: nothing was computed, signed or sent for it"
    ), err
    with Outbox.open(agent.home) as outbox:
        assert outbox.messages(kind="submission") == []
    assert _sent_periods(aggregator, "A12345") == []
    # preview sends nothing, so it computes any month that has ended
    code, _, err = agent("preview", "--period", STRAY)
    assert code == 0, err

    # Sent on purpose, with first_period set back as the refusal says; a correction of a
    # month the network holds is no new month, so it needs no setting.
    on_purpose = {"FEDQI_AGENT_FIRST_PERIOD": STRAY}
    code, out, err = agent("submit", "--period", STRAY, "--json", env=on_purpose)
    assert code == 0 and json.loads(out)["state"] == "accepted", err
    fixed = cast(
        dict[str, Any], agent.json("submit", "--period", STRAY, "--correction", "late_data")
    )
    assert fixed["state"] == "accepted", fixed
    # the earliest month without first_period goes through
    assert agent.json("submit", "--period", earliest.label, "--allow-stale")["state"] == "accepted"  # type: ignore[index]
    assert _sent_periods(aggregator, "A12345") == [STRAY, STRAY, earliest.label]


def test_run_after_a_stray_old_month_goes_no_further_back_than_first_period(
    aggregator_factory: Callable[..., AggregatorServer], agent_factory: Callable[..., Agent]
) -> None:
    """A home whose only month is a stray old one (sent before submit refused it, or on
    purpose with first_period set back for one command) is, for run, a new home: without
    first_period it sends the last complete month, with it the months from first_period, and
    says why it does not go on from the stray month."""
    server = aggregator_factory(practices=("A12345", "B12345"))
    last = last_complete_period(dt.date.today()).label
    on_purpose = {"FEDQI_AGENT_FIRST_PERIOD": STRAY}

    fresh = agent_factory(server, guard="off")
    fresh.ok("submit", "--period", STRAY, env=on_purpose)
    # records end 2026-03-31: the last complete month is sent as asked
    code, out, err = fresh("run", "--json", "--allow-stale")
    assert code == 0, err
    assert [(o["period"], o["state"]) for o in json.loads(out)] == [(last, "accepted")]
    assert (
        f"warning: the latest month submitted, {STRAY}, is before "
        f"{earliest_period(None, dt.date.today()).label}, the earliest month run sends without "
        f"first_period (24 months back): run starts from {last} as a new agent home would"
    ) in " ".join(err.split()), err
    assert _sent_periods(server, "A12345") == [STRAY, last]
    code, out, err = fresh("run", "--json")
    assert (code, json.loads(out), err) == (0, [], "")

    since = agent_factory(server, ods="B12345", name="since", guard="off", first_period="2026-08")
    since.ok("submit", "--period", STRAY, env=on_purpose)
    code, out, err = since("run", "--json", "--allow-stale")
    assert code == 0, err
    periods = [o["period"] for o in json.loads(out)]
    assert periods[0] == "2026-08" and periods[-1] == last and len(set(periods)) == len(periods)
    assert "is before first_period (2026-08): run starts from 2026-08" in " ".join(err.split())
    assert _sent_periods(server, "B12345") == [STRAY, *periods]
