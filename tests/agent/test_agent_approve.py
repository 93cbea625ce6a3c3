"""Approving held messages: one approval sends a message once, whatever runs beside it.

No aggregator: the held messages are signed with the home's own key and ``send`` is replaced by
one that records what would go on the wire and stores a receipt as an accepted send does."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import agent.outbound.submitter as submitter
from agent.errors import AgentUserError
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
from protocol.disclosure import RawCell
from protocol.keys import SigningKey

PRACTICE, AUD = "A12345", "test-net"  # what the agent_home fixture initialises
LOG_KEY = SigningKey.from_private_bytes(hashlib.sha256(b"approve test log key").digest())


@pytest.fixture
def home(agent_home: Path) -> Path:
    """An agent home that looks enrolled (trust pinned) with its aggregator out of reach."""
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


def _raw(value: int) -> list[RawCell]:
    cells = []
    catalogue = load_default_catalogue()
    for ind in catalogue.indicators:
        strata = catalogue.strata_for(ind)[1:]
        n = max(len(strata), 1)
        cells.append(RawCell(ind.id, "all", "all", 3 * value * n, value * n, 0))
        cells += [RawCell(ind.id, band, sex, 3 * value, value, 0) for band, sex in strata]
    return cells


def hold(home: Path, period: str, *, supersedes: str | None = None) -> Message:
    """Sign a submission for ``period`` with the home's key and store it held (a correction
    with a reason when it ``supersedes`` a submission id)."""
    catalogue = load_default_catalogue()
    settings = get_settings(home, {})
    key = Keystore(home).active()

    def build(seq: int) -> NewMessage:
        sub = build_submission(
            catalogue=catalogue,
            raw_cells=_raw(20),
            period=parse_period(period),
            practice=PRACTICE,
            aud=AUD,
            kid=key.kid,
            seq=seq,
            now=int(time.time()),
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
