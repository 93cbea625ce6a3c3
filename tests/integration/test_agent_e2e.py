"""The agent against a real aggregator on loopback: enrol, submit, receipts, audit, hold policy,
key rotation, idempotent resends."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from e2e_helpers import Agent, AggregatorServer

from agent.outbound.outbox import Outbox
from protocol.canonical import sha256_hex
from protocol.envelope import Envelope
from protocol.submission import Receipt, Submission


def _stored_envelope(server: AggregatorServer, sha: str) -> bytes | None:
    db = sqlite3.connect(server.db_file)
    row = db.execute("SELECT body FROM envelopes WHERE sha256 = ?", (sha,)).fetchone()
    db.close()
    return None if row is None else bytes(row[0])


def test_init_enrol_submit_receipt_and_audit_verify(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator, enrol=False)
    token = aggregator.token("A12345")
    said = " ".join(agent.ok("enrol", "--token", token).split())
    log, catalogue = aggregator.init_info["log_key"], aggregator.init_info["catalogue_key"]
    assert (
        f"pinned: the log key {log['name']} (kid {log['kid']}) and the catalogue key (kid "
        f"{catalogue['kid']}); `fedqi-agent trust show` lists them"
    ) in said
    code, _, err = agent("enrol", "--token", token)
    assert code == 3 and "already enrolled" in err
    # The token is single use: a second agent home presenting it is refused by the aggregator.
    intruder = agent_factory(aggregator, name="intruder", enrol=False)
    code, _, err = intruder("enrol", "--token", token)
    assert code == 6 and "refused" in err and len(err.strip().splitlines()) == 1, err
    assert not (intruder.home / "trust.json").exists()
    code, _, err = intruder("enrol", "--token", token, env={"FEDQI_AGENT_AUD": "other-net"})
    assert code == 3 and "serves network 'test-net'" in err
    code, _, err = agent("submit", "--period", "2026-03", env={"FEDQI_AGENT_PRACTICE": "B81001"})
    assert code == 3 and "enrolled as 'A12345'" in err
    trust = json.loads((agent.home / "trust.json").read_text())
    assert trust["log_key"]["name"] == "test-net/log/v1" and trust["catalogue_key"]

    result = agent.json("submit", "--period", "2026-03")
    assert result["state"] == "accepted"  # type: ignore[index]

    with Outbox.open(agent.home) as outbox:
        (message,) = outbox.messages(kind="submission")
    assert message.receipt is not None
    receipt = Receipt.from_bytes(Envelope.from_bytes(message.receipt).payload_bytes())
    assert receipt.envelope_sha256 == message.sha256 == sha256_hex(message.envelope)
    # The aggregator stored exactly the bytes the agent stored and sent.
    assert _stored_envelope(aggregator, message.sha256) == message.envelope
    sub = Submission.from_bytes(Envelope.from_bytes(message.envelope).payload_bytes())
    assert sub.period.label == "2026-03" and sub.seq == message.seq

    report = agent.json("audit", "verify")
    assert report["ok"] is True and report["failures"] == []  # type: ignore[index]
    assert report["receipts_checked"] == 2  # enrol + submission  # type: ignore[index]

    listing = agent.json("audit", "list")
    assert [m["kind"] for m in listing] == ["enrol", "submission"]  # type: ignore[union-attr,index]
    shown = agent.json("audit", "show", str(message.id))
    assert shown["envelope"].encode() == message.envelope  # type: ignore[index]
    assert any("2026-03" in line for line in shown["plain_words"])  # type: ignore[index]

    # Submitting the same period again is refused locally; a correction supersedes it.
    code, _, err = agent("submit", "--period", "2026-03")
    assert code != 0 and "already submitted" in err
    # --supersedes names a submission another home sent: only with --correction, only an id
    code, _, err = agent("submit", "--period", "2026-03", "--supersedes", message.submission_id)
    assert code == 2 and "--supersedes: only with --correction" in err
    code, _, err = agent(
        "submit", "--period", "2026-03", "--correction", "late_data", "--supersedes", "x"
    )
    assert code == 2 and "not a submission id" in err
    code, _, err = agent("submit", "--period", "2026-04", "--correction", "late_data")
    assert code == 2 and "--supersedes SUBMISSION_ID" in err  # nothing sent for April here
    # preview of a sent month says so, and shows the cells the correction then sends (the
    # disclosure guard run on the same earlier releases as submit runs it).
    code, out, _ = agent("preview", "--period", "2026-03")
    assert code == 0 and f"was sent already (message #{message.id}" in out
    code, out, _ = agent("preview", "--period", "2026-03", "--json")
    assert code == 0
    previewed = Submission.from_bytes(out.strip().encode())
    fixed = agent.json("submit", "--period", "2026-03", "--correction", "late_data")
    assert fixed["state"] == "accepted"  # type: ignore[index]
    with Outbox.open(agent.home) as outbox:
        first, second = outbox.messages(kind="submission")
    payload = Submission.from_bytes(Envelope.from_bytes(second.envelope).payload_bytes())
    assert payload.supersedes == first.submission_id and payload.reason == "late_data"
    assert payload.cells == previewed.cells


def test_hold_policy_pending_approve_reject(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator, release="hold")
    held = agent.json("submit", "--period", "2026-02")
    assert held["state"] == "held"  # type: ignore[index]
    # The same request again is answered with the held message; another one (a correction)
    # is refused, not silently answered with the plain submission.
    again = agent.json("submit", "--period", "2026-02")
    assert again["state"] == "held" and again["message"] == held["message"]  # type: ignore[index]
    code, _, err = agent("submit", "--period", "2026-02", "--correction", "late_data")
    assert code == 2, err
    assert f"message #{held['message']}, a plain submission, is already held" in err  # type: ignore[index]
    assert "reject it" in err
    second = agent.json("submit", "--period", "2026-03")
    pending = agent.json("pending")
    assert [p["period"] for p in pending] == ["2026-02", "2026-03"]  # type: ignore[union-attr,index]
    assert any("Only these counts leave" in line for line in pending[0]["plain_words"])  # type: ignore[index]
    text = agent.ok("pending")
    assert "would send" in text and "approve" in text

    # Nothing has left yet.
    with Outbox.open(agent.home) as outbox:
        held_messages = outbox.messages(state="held")
    assert all(_stored_envelope(aggregator, m.sha256) is None for m in held_messages)

    # Approving the newer one first makes the older one unsendable (seq must rise): said
    # locally, before anything is sent; it can still be rejected.
    approved = agent.json("approve", str(second["message"]))  # type: ignore[index]
    assert approved["state"] == "accepted"  # type: ignore[index]
    code, _, err = agent("approve", str(held["message"]))  # type: ignore[index]
    assert code == 2 and "older than a message already accepted" in err
    rejected = agent.json("reject", str(held["message"]))  # type: ignore[index]
    assert rejected["state"] == "rejected"  # type: ignore[index]

    with Outbox.open(agent.home) as outbox:
        by_id = {m.id: m for m in outbox.messages()}
    sent = by_id[second["message"]]  # type: ignore[index]
    kept = by_id[held["message"]]  # type: ignore[index]
    assert _stored_envelope(aggregator, sent.sha256) == sent.envelope  # the approved bytes
    assert kept.state == "rejected" and kept.envelope  # marked, not deleted
    assert _stored_envelope(aggregator, kept.sha256) is None
    assert agent.json("pending") == []
    code, _, err = agent("approve", str(kept.id))
    assert code != 0 and "not held" in err
    assert agent.json("audit", "verify")["ok"] is True  # type: ignore[index]


def test_run_with_release_hold_says_what_waits_for_approval(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """With release "hold", a held month counts as submitted, so the next run has nothing new
    to do; it says what is held and how to review it rather than only "nothing due"."""
    agent = agent_factory(aggregator, release="hold")
    # the last complete month, after the end of the practice's records (2026-03-31)
    first = agent.ok("run", "--allow-stale")
    assert "held for approval as #" in first, first
    (held,) = cast(list[dict[str, Any]], agent.json("pending"))
    # The month this run held is counted and listed with the others held.
    assert f"1 submission(s) held for approval, not sent: #{held['id']} ({held['period']})" in (
        " ".join(first.split())
    ), first
    code, out, err = agent("run")
    assert code == 0, err
    assert out.splitlines()[0] == "nothing new due", out
    text = " ".join(out.split())
    assert f"1 submission(s) held for approval, not sent: #{held['id']} ({held['period']})" in text
    assert "`fedqi-agent pending`" in text and "`fedqi-agent approve ID`" in text
    assert f"the oldest, #{held['id']}, was signed less than a day ago" in text
    assert agent.json("run") == []  # the JSON stays the list of this run's outcomes
    from agent.commands.send import held_note

    with Outbox.open(agent.home) as outbox:
        messages = outbox.messages(state="held")
    week_later = int(time.time()) + 7 * 86400
    assert "1 of them signed more than 6 days ago can no longer be approved: reject" in (
        held_note(messages, week_later)
    )
    agent.ok("approve", str(held["id"]))
    assert agent.ok("run").splitlines() == ["nothing due"]


def test_a_release_hold_run_that_leaves_a_guard_hold_exits_0(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """With release "hold" every month waits for a person, so a run that leaves months held
    exits 0, one the disclosure guard held (the months after it waiting for it) included: its
    reason is shown by run and pending. Only release "auto" makes that exit 9."""
    agent = agent_factory(aggregator, release="hold", first_period="2026-06")
    code, out, err = agent("run", "--allow-stale", "--json")
    assert code == 0, err
    outcomes = cast(list[dict[str, Any]], json.loads(out))
    assert {o["state"] for o in outcomes} == {"held"}, outcomes
    guarded = outcomes[-1]
    assert guarded["detail"].startswith("disclosure guard: "), outcomes
    assert guarded["detail"].endswith("; later months wait for it"), guarded
    assert "error" not in err, err
    code, out, err = agent("run", "--allow-stale")
    assert code == 0 and "error" not in err, err
    assert f"#{guarded['message']} ({guarded['period']})" in " ".join(out.split()), out


def test_key_rotation_then_submit_with_the_new_key(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator)
    agent.ok("submit", "--period", "2026-01")

    # The aggregator goes away: the submission is stored and reported unreachable (exit 5);
    # rotation is refused while a message signed with the current key waits.
    aggregator.kill()
    code, _, err = agent("submit", "--period", "2026-02")
    assert code == 5 and "unreachable" in err
    code, _, err = agent("rotate-key")
    assert code == 2 and "fedqi-agent run" in err
    aggregator.start()
    # Submitting the same period again resends the stored message, byte for byte.
    with Outbox.open(agent.home) as outbox:
        (waiting,) = outbox.messages(state="queued")
    resent = agent.json("submit", "--period", "2026-02")
    assert resent["message"] == waiting.id and resent["state"] == "accepted"  # type: ignore[index]
    assert _stored_envelope(aggregator, waiting.sha256) == waiting.envelope

    # A rotation interrupted by an outage resumes with the same stored rotate message.
    aggregator.kill()
    code, _, err = agent("rotate-key")
    assert code == 5 and "unreachable" in err
    with Outbox.open(agent.home) as outbox:
        (pending_rotate,) = outbox.messages(kind="rotate")
    aggregator.start()
    rotated = agent.json("rotate-key")
    old, new = rotated["old_kid"], rotated["new_kid"]  # type: ignore[index]
    assert old != new
    with Outbox.open(agent.home) as outbox:
        (rotate,) = outbox.messages(kind="rotate")
    assert rotate.id == pending_rotate.id and rotate.state == "accepted"
    assert set(Envelope.from_bytes(rotate.envelope).keyids) == {old, new}

    agent.ok("submit", "--period", "2026-03")
    with Outbox.open(agent.home) as outbox:
        subs = outbox.messages(kind="submission")
    assert [m.kid for m in subs] == [old, old, new]
    keys = json.loads(aggregator.cli("key", "list", "--db", aggregator.db, "--json"))
    status = {k["kid"]: k["status"] for k in keys}
    assert status[new] == "active" and status[old] != "active"
    assert agent.json("audit", "verify")["ok"] is True  # type: ignore[index]


def test_run_queued_only_submits_nothing_new(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """`run --queued-only` resends what is queued and submits no new month, as its help says,
    with or without --keep-trying (without it, the option was not passed on and the run
    submitted every due month; found by a helper session)."""
    agent = agent_factory(aggregator, first_period="2026-06")

    def submissions() -> list[Any]:
        listed = cast(list[dict[str, Any]], agent.json("audit", "list"))
        return [m for m in listed if m["kind"] == "submission"]

    code, out, err = agent("run", "--queued-only", "--allow-stale", "--json")
    assert (code, json.loads(out)) == (0, []), err
    assert submissions() == []
    code, out, err = agent("run", "--queued-only", "--keep-trying", "5", "--allow-stale")
    assert code == 0, err
    assert submissions() == []
    code, out, err = agent("run", "--queued-only", "--allow-stale")  # and says what it skipped
    assert (code, out.strip()) == (0, "nothing queued (--queued-only: due months not submitted)")
    code, out, err = agent("run", "--allow-stale", "--json")  # without it, the months go out
    assert json.loads(out) and submissions(), err


def test_run_submits_every_due_period_then_nothing(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    agent = agent_factory(aggregator, first_period="2026-06")
    # Every due month is sent in order. A month the disclosure guard holds waits for the
    # practice's approval, with the guard's reason, and the months after it wait for it (this
    # practice has such a month; docs/disclosure.md); approved, the next run goes on. With
    # release auto a run that leaves such a month exits 9, so a scheduler that alerts only on
    # failure sees that the months stopped going out.
    sent: list[str] = []
    held_seen = 0
    for _ in range(12):
        # The practice's records end on 2026-03-31: the months after are sent as asked.
        code, out, err = agent("run", "--allow-stale", "--json")
        outcomes = cast(list[dict[str, Any]], json.loads(out))
        if not outcomes:
            assert code == 0, err
            break
        *before, last = outcomes
        assert all(o["state"] == "accepted" for o in before)
        sent += [o["period"] for o in before]
        if last["state"] != "held":
            assert code == 0, err
            assert last["state"] == "accepted"
            sent.append(last["period"])
            continue
        held_seen += 1
        assert last["detail"].startswith("disclosure guard: ")
        assert last["detail"].endswith("; later months wait for it")
        m = last["message"]
        assert code == 9, err
        # the last line of stderr, after the --allow-stale warnings of the months it sent
        assert err.splitlines()[-1] == (
            f"error: release is auto, but the disclosure guard held #{m} (period "
            f"{last['period']}) for approval: it is not sent, nor any month due after it, until "
            f"approved or rejected. Review with `fedqi-agent pending`, then `fedqi-agent approve "
            f"{m}` or `fedqi-agent reject {m}`"
        ), err
        pending = cast(list[dict[str, Any]], agent.json("pending"))
        assert [p["id"] for p in pending] == [m]
        assert last["detail"].startswith(pending[0]["why_held"])
        # while it waits, every run sends nothing more, says so and exits 9 again
        code, out, err = agent("run", "--allow-stale", "--json")
        assert code == 9 and f"the disclosure guard held #{m} (period" in err, err
        assert [(o["message"], o["state"]) for o in json.loads(out)] == [(m, "held")]
        code, out, _ = agent("run", "--allow-stale")
        assert code == 9 and "later months wait for it" in out, out
        # a resend alone submits nothing new: not its to report
        assert agent("run", "--queued-only")[0] == 0
        # with release hold the practice reviews every month anyway: the same wait is exit 0
        code, out, err = agent("run", "--allow-stale", env={"FEDQI_AGENT_RELEASE": "hold"})
        assert code == 0 and err == "", err
        assert f"1 submission(s) held for approval, not sent: #{m} ({last['period']})" in (
            " ".join(out.split())
        ), out
        approved = cast(dict[str, Any], agent.json("approve", str(m)))
        assert approved["state"] == "accepted"
        sent.append(last["period"])
    assert held_seen >= 1
    assert sent[0] == "2026-06" and len(sent) >= 4
    assert sent == sorted(set(sent))
    assert agent.json("run") == []
    assert agent.json("pending") == []
    assert agent.json("audit", "verify")["ok"] is True  # type: ignore[index]


@pytest.mark.postgres
def test_submit_and_audit_with_a_postgresql_aggregator(
    pg_database_factory: Callable[[], str],
    aggregator_factory: Callable[..., AggregatorServer],
    agent_factory: Callable[..., Agent],
) -> None:
    server = aggregator_factory("agg-pg", db_url=pg_database_factory())
    agent = agent_factory(server)
    for period in ("2026-01", "2026-02"):
        assert agent.json("submit", "--period", period)["state"] == "accepted"  # type: ignore[index]
    report = agent.json("audit", "verify")
    assert report["ok"] is True and report["receipts_checked"] == 3  # type: ignore[index]


def test_a_period_that_has_not_ended_is_refused_before_anything_is_signed(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    today = dt.date.today()
    this_month = today.strftime("%Y-%m")
    later = dt.date(today.year + 1, 1, 1).strftime("%Y-%m")  # e.g. 2027-01
    last = (today.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    agent = agent_factory(aggregator)
    for period in (this_month, later):
        for command in ("submit", "preview"):
            code, out, err = agent(command, "--period", period)
            assert code == 2 and out == "", (command, period, err)
            line = err.strip()
            assert len(line.splitlines()) == 1, err
            assert f"period {period} has not ended" in line, line
            assert f"the latest complete period is {last}" in line, line
    with Outbox.open(agent.home) as outbox:
        assert outbox.messages(kind="submission") == []
    db = sqlite3.connect(aggregator.db_file)
    assert db.execute("SELECT count(*) FROM submissions").fetchone() == (0,)
    db.close()
    # the latest complete period goes through (after the records' end, 2026-03-31: as asked)
    sent = agent.json("submit", "--period", last, "--allow-stale")
    assert sent["state"] == "accepted"  # type: ignore[index]


def test_a_re_enrolled_practice_corrects_what_its_revoked_key_sent(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """docs/operations.md section 6: the admin revokes a key as compromised; the practice
    enrols a fresh agent home and corrects each suspect month, naming the submission the old
    home sent with --supersedes. The correction is accepted, in the log, and the month's value
    in the benchmarks again."""
    old = agent_factory(aggregator, name="old")
    sent = old.json("submit", "--period", "2026-03")
    assert sent["state"] == "accepted"  # type: ignore[index]
    with Outbox.open(old.home) as outbox:
        (message,) = outbox.messages(kind="submission")
    kid = json.loads(aggregator.cli("key", "list", "--db", aggregator.db, "--json"))[0]["kid"]
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    aggregator.cli("key", "revoke", kid, "--compromised-since", yesterday, "--db", aggregator.db,
                   "--key-dir", str(aggregator.key_dir))  # fmt: skip
    # The old home, sending again, is told what to do next (it said only "kid ... was revoked").
    code, _, err = old("submit", "--period", "2026-04")
    assert (
        code == 6 and "kid " in err and " was revoked. The network revoked this agent's key" in err
    )
    assert "Enrol again in a new agent home" in err and "docs/operations.md section 6" in err
    fresh = agent_factory(aggregator, name="fresh")
    code, _, err = fresh("submit", "--period", "2026-03")  # a plain resubmission: refused
    assert code != 0 and message.submission_id in err, err
    fixed = fresh.json("submit", "--period", "2026-03", "--correction", "data_correction",
                       "--supersedes", message.submission_id)  # fmt: skip
    assert fixed["state"] == "accepted", fixed  # type: ignore[index]
    fresh.ok("audit", "verify")


def test_a_fresh_home_is_guarded_with_what_its_previous_home_released(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """A practice that re-enrols from a fresh home (a lost key) names its old home in
    previous_homes: the disclosure guard then audits a new submission with what the old home
    released (the same period's and adjacent periods' latest), as with its own outbox; a path
    that holds no outbox is a configuration error."""
    from agent.home.settings import get_settings
    from agent.outbound.release import guard_history
    from protocol.submission import Period

    old = agent_factory(aggregator, name="old")
    assert old.json("submit", "--period", "2026-03")["state"] == "accepted"  # type: ignore[index]
    fresh = agent_factory(aggregator, name="fresh", enrol=False)
    with Outbox.open(fresh.home) as mine, Outbox.open(old.home) as before:
        history = guard_history(mine, Period.month(2026, 4), {}, [(old.home, before)])
        assert [(r.label.startswith(str(old.home)), r.period.label) for r in history] == [
            (True, "2026-03")
        ]
        assert guard_history(mine, Period.month(2026, 4), {}) == []  # without it: nothing
    env = {"FEDQI_AGENT_PREVIOUS_HOMES": json.dumps([str(old.home)])}
    settings = get_settings(fresh.home, env)
    assert settings.previous_homes == (old.home,)
    code, out, _ = fresh("preview", "--period", "2026-04", env=env)
    assert code == 0, out
    code, _, err = fresh(
        "preview",
        "--period",
        "2026-04",
        env={"FEDQI_AGENT_PREVIOUS_HOMES": json.dumps([str(tmp_path)])},
    )
    assert code == 3 and "holds no outbox" in err, err


def test_submit_and_run_refuse_a_month_the_records_stop_before(
    aggregator: AggregatorServer, agent_factory: Callable[..., Agent]
) -> None:
    """The practice's records end on 2026-03-31. A month ending more than 31 days later would
    be signed counts of an extract that stopped: submit refuses it before signing anything
    (exit 2), run sends the months before it then stops there, and --allow-stale sends it,
    saying so."""
    agent = agent_factory(aggregator, first_period="2026-03", guard="off")
    code, out, err = agent("submit", "--period", "2026-11")
    assert code == 2 and out == "", out
    assert " ".join(err.split()) == (
        "error: period 2026-11 ends on 2026-11-30, 244 days after the newest dated record in "
        "the practice database (2026-03-31): its counts would miss everything recorded since "
        "(is the extract still being updated?); nothing was signed or sent for it. Load a "
        "current extract into the practice database; if the practice has truly recorded "
        "nothing since, send it anyway with --allow-stale"
    )
    with Outbox.open(agent.home) as outbox:
        assert outbox.messages(kind="submission") == []

    # April ends 30 days after the newest record: sent; May, 61 days: the run stops there.
    code, out, err = agent("run", "--json")
    assert code == 2, err
    assert [(o["period"], o["state"]) for o in json.loads(out)] == [
        ("2026-03", "accepted"),
        ("2026-04", "accepted"),
    ]
    assert " ".join(err.split()).startswith(
        "error: run stopped at period 2026-05 (the months before it were sent; it and any later "
        "month wait): period 2026-05 ends on 2026-05-31, 61 days after the newest dated record"
    ), err
    code, out, err = agent("run")
    assert code == 2 and "nothing due" not in out
    assert "error: run stopped at period 2026-05 (it and any later month wait)" in err

    sent = cast(dict[str, Any], agent.json("submit", "--period", "2026-05", "--allow-stale"))
    assert sent["state"] == "accepted"
    code, _, err = agent("submit", "--period", "2026-06", "--allow-stale")
    assert code == 0 and " ".join(err.split()).endswith(
        "(is the extract still being updated?); sent anyway, as --allow-stale asks"
    ), err
