"""Approving held messages: one approval sends a message once, whatever runs beside it.

No aggregator: the held messages are signed with the home's own key and ``send`` is replaced by
one that records what would go on the wire and stores a receipt as an accepted send does."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from agent_helpers import uniform_cells

import agent.outbound.submitter as submitter
from agent.errors import AgentUserError, TransportError
from agent.home.keystore import Keystore, PinnedKey, Trust, save_trust
from agent.home.settings import get_settings
from agent.library import load_default_catalogue
from agent.outbound.outbox import Message, NewMessage, Outbox
from agent.outbound.release import (
    build_submission,
    effective_policy,
    parse_period,
    payload_of,
    sign,
)
from agent.outbound.submitter import Outcome, approve
from agent.outbound.transport import RefusedError
from protocol.keys import SigningKey

PRACTICE, AUD = "A12345", "test-net"  # what the agent_home fixture initialises
LOG_KEY = SigningKey.from_private_bytes(hashlib.sha256(b"approve test log key").digest())


@pytest.fixture
def home(agent_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An agent home that looks enrolled (trust pinned) with its aggregator out of reach, and
    taken to be the one enrolled with: approve's check of that before the message leaves
    ``held`` (submitter.check_before_sending) is not asked here, where ``send`` is stubbed
    (tests/integration/test_agent_wrong_aggregator.py checks it against real aggregators)."""
    monkeypatch.setattr(submitter, "check_before_sending", lambda *_a, **_k: None)
    save_trust(
        agent_home,
        Trust(
            aud=AUD,
            practice=PRACTICE,
            aggregator_url="http://127.0.0.1:9",
            log_origin="test-net/log/v1",
            log_key=PinnedKey(name="test-net/log/v1", jwk=LOG_KEY.public.jwk()),
        ),
    )
    return agent_home


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the messages ``send`` was asked to put on the wire, in order."""
    calls: list[int] = []

    def fake_send(_client: object, outbox: Outbox, _trust: object, message: Message) -> Outcome:
        calls.append(message.id)
        time.sleep(0.05)  # a send takes a while: a second approval may look meanwhile
        outbox.add_receipt(message.id, b"receipt")
        return Outcome(message.id, message.period, "accepted", leaf_index=len(calls))

    monkeypatch.setattr(submitter, "send", fake_send)
    return calls


def hold(
    home: Path, period: str, *, supersedes: str | None = None, iat: int | None = None
) -> Message:
    """Sign a submission for ``period`` with the home's key and store it held (a correction
    with a reason when it ``supersedes`` a submission id; signed at ``iat``, else now)."""
    catalogue = load_default_catalogue()
    settings = get_settings(home, {})
    key = Keystore(home).active()

    def build(seq: int) -> NewMessage:
        sub = build_submission(
            catalogue=catalogue,
            raw_cells=uniform_cells(load_default_catalogue(), 20),
            period=parse_period(period),
            practice=PRACTICE,
            aud=AUD,
            kid=key.kid,
            seq=seq,
            now=int(time.time()) if iat is None else iat,
            policy=effective_policy(catalogue, settings),
            source_kind="sqlite",
            submission_id=str(uuid.uuid4()),
            supersedes=supersedes,
            reason="data_correction" if supersedes else None,
        )
        signed = sign("submission", sub.to_bytes(), [key])
        return NewMessage(
            "submission", signed.envelope, signed.sha256, key.kid, seq, sub.submission_id, period
        )

    with Outbox.open(home) as outbox:
        return outbox.add_signed(build, "held")


def test_two_approvals_at_once_send_the_message_once(
    home: Path, sent: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both approvals have seen the message held before either acts (a barrier holds them
    there): exactly one sends it; the other is refused, told it was already approved."""
    message = hold(home, "2026-02")
    settings = get_settings(home, {})
    barrier = threading.Barrier(2, timeout=10)
    real_payload_of = payload_of
    waited = threading.local()

    def payload_of_after_both_looked(m: Message):  # type: ignore[no-untyped-def]
        if not getattr(waited, "done", False):
            waited.done = True
            barrier.wait()  # both approvals have read the message as held
        return real_payload_of(m)

    monkeypatch.setattr(submitter, "payload_of", payload_of_after_both_looked)
    outcomes: list[Outcome] = []
    refusals: list[AgentUserError] = []

    def approve_it() -> None:
        try:
            outcomes.append(approve(settings, message.id, now=int(time.time())))
        except AgentUserError as exc:
            refusals.append(exc)

    threads = [threading.Thread(target=approve_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sent == [message.id]
    assert [o.state for o in outcomes] == ["accepted"]
    (refusal,) = refusals
    assert refusal.exit_code == 2
    assert f"message #{message.id} is " in str(refusal) and ", not held: it was already " in (
        str(refusal)
    ), refusal
    with Outbox.open(home) as outbox:
        states = [s for s, _, _ in outbox.history(message.id)]
    assert states == ["held", "queued", "accepted"]  # one approval recorded, not two


def test_a_second_approval_after_the_first_is_refused_saying_it_was_sent(
    home: Path,
    sent: list[int],
    cli: Callable[..., object],
) -> None:
    message = hold(home, "2026-02")
    first = cli("approve", str(message.id), "--home", str(home))
    assert first.code == 0, first.err  # type: ignore[attr-defined]
    again = cli("approve", str(message.id), "--home", str(home))
    assert again.code == 2  # type: ignore[attr-defined]
    assert (
        f"message #{message.id} is accepted, not held: it was already sent and the aggregator "
        "accepted it; nothing to approve"
    ) in again.err  # type: ignore[attr-defined]
    rejected = cli("reject", str(message.id), "--home", str(home))
    assert rejected.code == 2 and "nothing to reject" in rejected.err  # type: ignore[attr-defined]
    assert sent == [message.id]


def test_a_resend_beside_an_approval_posts_the_same_bytes_and_is_recorded_once(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exclusive approval does not mean one POST: a `run --queued-only` (the background
    resend) that finds the approved message queued while the approval is sending it posts the
    same stored bytes again. The aggregator answers that identical retry with the same
    receipt, and the outbox keeps one receipt and one accepted state (docs/agent.md)."""
    message = hold(home, "2026-02")
    settings = get_settings(home, {})
    posted: list[bytes] = []

    def send_with_a_resend_beside(
        _client: object, outbox: Outbox, _trust: object, m: Message
    ) -> Outcome:
        posted.append(m.envelope)
        if len(posted) == 1:  # the approval's POST is on the wire: the resend runs meanwhile
            resent = submitter.run_due(
                settings, now=int(time.time()), today=date.today(), queued_only=True
            )
            assert [(o.message_id, o.state) for o in resent] == [(m.id, "accepted")]
        outbox.add_receipt(m.id, b"the same receipt")
        return Outcome(m.id, m.period, "accepted", leaf_index=1)

    monkeypatch.setattr(submitter, "send", send_with_a_resend_beside)
    outcome = approve(settings, message.id, now=int(time.time()))
    assert outcome.state == "accepted"
    assert posted == [message.envelope, message.envelope]  # two POSTs of the same bytes
    with Outbox.open(home) as outbox:
        states = [s for s, _, _ in outbox.history(message.id)]
        assert outbox.get(message.id).receipt == b"the same receipt"
    assert states == ["held", "queued", "accepted"]


def test_reject_after_an_approval_took_the_message_is_refused(home: Path) -> None:
    """An approval that has taken the message (queued, sending) is not undone by a reject
    that looked a moment before: the reject is refused rather than marking a sent message."""
    message = hold(home, "2026-02")
    with Outbox.open(home) as outbox:
        assert outbox.change_state(message.id, "held", "queued", "approved") == "held"
        assert outbox.change_state(message.id, "held", "rejected") == "queued"  # not moved
        assert outbox.get(message.id).state == "queued"
    with pytest.raises(AgentUserError, match="is queued, not held: it was already approved"):
        submitter.reject(get_settings(home, {}), message.id)


# --- order: earlier held months, and corrections before their originals ----------------------


def test_approving_a_later_month_first_warns_naming_the_earlier_held_message(
    home: Path,
    sent: list[int],
    cli: Callable[..., object],
) -> None:
    feb, mar = hold(home, "2026-02"), hold(home, "2026-03")
    r = cli("approve", str(mar.id), "--home", str(home))
    assert r.code == 0, r.err  # type: ignore[attr-defined]
    warning = " ".join(r.err.split())  # type: ignore[attr-defined]
    assert warning.startswith(
        f"warning: approving #{mar.id} (period 2026-03) ahead of earlier held message(s) "
        f"#{feb.id} (2026-02): once #{mar.id} is accepted they can no longer be sent"
    ), warning
    assert f"approve in order, oldest first (`fedqi-agent approve {feb.id}`)" in warning
    assert sent == [mar.id]  # a warning, not a refusal: the later month is sent
    r = cli("approve", str(feb.id), "--home", str(home))
    assert r.code == 2 and "older than a message already accepted" in r.err  # type: ignore[attr-defined]
    assert cli("reject", str(feb.id), "--home", str(home)).code == 0  # type: ignore[attr-defined]

    # In order: no warning.
    apr, may = hold(home, "2026-04"), hold(home, "2026-05")
    for message in (apr, may):
        r = cli("approve", str(message.id), "--home", str(home))
        assert r.code == 0 and r.err == "", r.err  # type: ignore[attr-defined]

    # An earlier month signed after the later one (resubmitted, say) can still be sent after
    # it: said so, and then it is.
    jul, jun = hold(home, "2026-07"), hold(home, "2026-06")
    r = cli("approve", str(jul.id), "--home", str(home))
    assert r.code == 0, r.err  # type: ignore[attr-defined]
    assert (
        f"warning: approving #{jul.id} (period 2026-07) ahead of held message(s) for an earlier "
        f"month #{jun.id} (2026-06): they can still be approved after it"
    ) in " ".join(r.err.split())  # type: ignore[attr-defined]
    r = cli("approve", str(jun.id), "--home", str(home))
    assert r.code == 0 and r.err == "", r.err  # type: ignore[attr-defined]
    assert sent == [mar.id, apr.id, may.id, jul.id, jun.id]


def test_the_advice_to_approve_in_order_leaves_out_messages_that_can_no_longer_be_sent(
    home: Path,
    sent: list[int],
    cli: Callable[..., object],
) -> None:
    """A held message signed before the one approved but already past sending (older than
    the aggregator's iat window allows, or below a seq already accepted) is not the one the
    practice is told to approve first: its approve is refused. It is named apart, to be
    rejected and submitted again."""
    old = hold(home, "2025-12", iat=int(time.time()) - 7 * 86400)  # past the iat window
    jan, feb = hold(home, "2026-01"), hold(home, "2026-02")
    r = cli("approve", str(feb.id), "--home", str(home))
    assert r.code == 0, r.err  # type: ignore[attr-defined]
    assert f"(`fedqi-agent approve {jan.id}`)" in " ".join(r.err.split())  # type: ignore[attr-defined]
    # Now #jan is below an accepted seq as well.
    mar, apr = hold(home, "2026-03"), hold(home, "2026-04")
    r = cli("approve", str(apr.id), "--home", str(home))
    assert r.code == 0, r.err  # type: ignore[attr-defined]
    warning = " ".join(r.err.split())  # type: ignore[attr-defined]
    assert (
        f"warning: approving #{apr.id} (period 2026-04) ahead of earlier held message(s) "
        f"#{mar.id} (2026-03): once #{apr.id} is accepted they can no longer be sent"
    ) in warning, warning
    assert f"approve in order, oldest first (`fedqi-agent approve {mar.id}`)" in warning
    assert (
        f"warning: held message(s) #{old.id} (2025-12), #{jan.id} (2026-01), signed before "
        f"#{apr.id} (period 2026-04), can no longer be sent whatever is approved"
    ) in warning, warning
    assert (
        f"reject them (`fedqi-agent reject {old.id}`, `fedqi-agent reject {jan.id}`) and submit "
        "their periods again"
    ) in warning
    for message in (old, jan):  # as said: their approve is refused
        r = cli("approve", str(message.id), "--home", str(home))
        assert r.code == 2 and "reject it and run `fedqi-agent submit" in r.err  # type: ignore[attr-defined]
    assert sent == [feb.id, apr.id]


def test_approve_sends_the_keys_earlier_queued_messages_first(
    home: Path,
    sent: list[int],
    cli: Callable[..., object],
) -> None:
    """An approval whose send failed leaves its message queued for the background resend or
    `run`; approving a later message sends those queued with a lower seq first, oldest seq
    first, as `run` would: sent after it, they would be refused for good (seq-not-increasing).
    A queued message signed after the approved one is left to the resend."""
    jan, feb, mar = hold(home, "2026-01"), hold(home, "2026-02"), hold(home, "2026-03")
    with Outbox.open(home) as outbox:
        for m in (feb, jan):  # approved, and the send hit a transport error
            assert outbox.change_state(m.id, "held", "queued", "approved") == "held"
    r = cli("approve", str(mar.id), "--home", str(home))
    assert r.code == 0, r.err  # type: ignore[attr-defined]
    assert sent == [jan.id, feb.id, mar.id]
    told = " ".join(r.err.split())  # type: ignore[attr-defined]
    assert (
        f"note: sending #{jan.id} (period 2026-01) first: it is queued from an earlier send "
        f"and was signed before #{mar.id} (period 2026-03), and once #{mar.id} (period 2026-03) "
        "is accepted it could no longer be sent"
    ) in told, told
    assert f"note: sending #{feb.id} (period 2026-02) first" in told
    assert "warning" not in told
    with Outbox.open(home) as outbox:
        assert [outbox.get(m.id).state for m in (jan, feb, mar)] == ["accepted"] * 3

    apr, may = hold(home, "2026-04"), hold(home, "2026-05")
    with Outbox.open(home) as outbox:
        assert outbox.change_state(may.id, "held", "queued", "approved") == "held"
    r = cli("approve", str(apr.id), "--home", str(home))
    assert r.code == 0 and r.err == "", r.err  # type: ignore[attr-defined]
    assert sent == [jan.id, feb.id, mar.id, apr.id]  # May waits for its resend


def test_approve_behind_a_queued_message_that_cannot_be_sent_stays_queued(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The earlier queued message cannot be sent now (the aggregator is unreachable): the
    approved one is not sent ahead of it but stays queued behind it, for the same resend, and
    the error says so. One the aggregator refuses is told, and the approved one is sent."""
    jan, feb, mar = hold(home, "2026-01"), hold(home, "2026-02"), hold(home, "2026-03")
    with Outbox.open(home) as outbox:
        assert outbox.change_state(jan.id, "held", "queued", "approved") == "held"
    tried: list[int] = []

    def unreachable(_client: object, _outbox: Outbox, _trust: object, m: Message) -> Outcome:
        tried.append(m.id)
        raise TransportError(f"submission #{m.id}: the aggregator did not answer")

    monkeypatch.setattr(submitter, "send", unreachable)
    settings = get_settings(home, {})
    with pytest.raises(TransportError) as caught:
        approve(settings, feb.id, now=int(time.time()))
    assert tried == [jan.id]
    assert (
        f"Approved #{feb.id} (period 2026-02) stays queued behind it and is sent after it"
    ) in str(caught.value)
    with Outbox.open(home) as outbox:
        assert outbox.get(feb.id).state == "queued"
        assert outbox.get(feb.id).state_note == "approved"

    def refuse_the_first(_client: object, outbox: Outbox, _trust: object, m: Message) -> Outcome:
        tried.append(m.id)
        if m.id != mar.id:
            outbox.set_state(m.id, "refused", "iat-window")
            raise RefusedError(f"submission #{m.id}: refused (iat-window)", 422)
        outbox.add_receipt(m.id, b"receipt")
        return Outcome(m.id, m.period, "accepted", leaf_index=1)

    monkeypatch.setattr(submitter, "send", refuse_the_first)
    warnings: list[str] = []
    outcome = approve(settings, mar.id, now=int(time.time()), on_warning=warnings.append)
    assert tried == [jan.id, jan.id, feb.id, mar.id] and outcome.state == "accepted"
    assert warnings == [
        f"#{jan.id} (period 2026-01) was refused: submission #{jan.id}: refused (iat-window)",
        f"#{feb.id} (period 2026-02) was refused: submission #{feb.id}: refused (iat-window)",
    ]


def test_a_correction_is_not_approved_before_its_original(
    home: Path,
    sent: list[int],
    cli: Callable[..., object],
) -> None:
    original = hold(home, "2026-02")
    correction = hold(home, "2026-02", supersedes=original.submission_id)
    r = cli("approve", str(correction.id), "--home", str(home))
    assert r.code == 2, r.err  # type: ignore[attr-defined]
    assert (
        f"message #{correction.id} is a correction of message #{original.id} (period 2026-02), "
        "which is still held for approval, not sent: the aggregator accepts a correction only "
        f"of a submission it has accepted. Approve #{original.id} first"
    ) in r.err, r.err  # type: ignore[attr-defined]
    assert sent == []
    with Outbox.open(home) as outbox:
        assert outbox.get(correction.id).state == "held"  # nothing changed
    for message in (original, correction):
        r = cli("approve", str(message.id), "--home", str(home))
        assert r.code == 0 and r.err == "", r.err  # type: ignore[attr-defined]
    assert sent == [original.id, correction.id]


def test_a_correction_of_a_rejected_message_is_refused_at_approve_and_at_submit(
    home: Path,
    sent: list[int],
    cli: Callable[..., object],
) -> None:
    rejected = hold(home, "2026-03")
    assert cli("reject", str(rejected.id), "--home", str(home)).code == 0  # type: ignore[attr-defined]
    correction = hold(home, "2026-03", supersedes=rejected.submission_id)
    r = cli("approve", str(correction.id), "--home", str(home))
    assert r.code == 2, r.err  # type: ignore[attr-defined]
    assert "which was rejected by the practice and never sent" in r.err  # type: ignore[attr-defined]
    assert f"reject #{correction.id} (`fedqi-agent reject {correction.id}`)" in r.err  # type: ignore[attr-defined]
    assert "submit period 2026-03 again without --correction" in r.err  # type: ignore[attr-defined]
    assert sent == []

    # submit refuses to sign such a correction in the first place.
    other = hold(home, "2026-01")
    assert cli("reject", str(other.id), "--home", str(home)).code == 0  # type: ignore[attr-defined]
    with Outbox.open(home) as outbox:
        before = len(outbox.messages())
    r = cli(
        "submit",
        "--home",
        str(home),
        "--period",
        "2026-01",
        "--correction",
        "late_data",
        "--supersedes",
        str(other.submission_id),
    )
    assert r.code == 2, r.err  # type: ignore[attr-defined]
    assert (
        f"--supersedes {other.submission_id} is message #{other.id} (period 2026-01), which was "
        "rejected by the practice and never sent"
    ) in r.err  # type: ignore[attr-defined]
    with Outbox.open(home) as outbox:
        assert len(outbox.messages()) == before  # nothing signed
