"""A plain submission the aggregator refuses because the network already holds its month (409
``period-already-submitted``): ``send`` records the month as held under the id the refusal's
``current_submission_id`` member names, falls back to the detail's prose only for an aggregator
from before that member, and guesses nothing otherwise.

No aggregator: the answer comes from an ``httpx.MockTransport`` (a real aggregator answers the
same in tests/integration/test_agent_lost_key_recovery.py and
tests/aggregator/test_rejections.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_helpers import uniform_cells

from agent.home.keystore import Keystore, PinnedKey, Trust
from agent.home.settings import get_settings
from agent.library import load_default_catalogue
from agent.outbound.outbox import Message, NewMessage, Outbox
from agent.outbound.release import build_submission, effective_policy, parse_period, sign
from agent.outbound.submitter import (
    ALREADY_HELD,
    CURRENT_SUBMISSION,
    due_periods,
    network_holds,
    send,
)
from agent.outbound.transport import AggregatorClient, RefusedError
from protocol.checkpoint import Checkpoint, sign_checkpoint
from protocol.keys import SigningKey

PRACTICE, AUD = "A12345", "test-net"  # what the agent_home fixture initialises
PERIOD = "2026-03"
HELD = "0b7c9a4e-1f2d-4c3b-9a8e-5d6f7a8b9c0d"  # the network's submission for the month
OTHER = "11111111-2222-4333-8444-555555555555"
ORIGIN = "test-net/log/v1"
LOG_KEY = SigningKey.from_private_bytes(hashlib.sha256(b"held test").digest())
TRUST = Trust(
    aud=AUD,
    practice=PRACTICE,
    aggregator_url="https://agg.example.nhs.uk",
    log_origin=ORIGIN,
    log_key=PinnedKey(name=ORIGIN, jwk=LOG_KEY.public.jwk()),
)
#: What the aggregator enrolled with answers GET /v1/log/checkpoint with: a checkpoint under
#: the pinned origin, signed by the pinned log key (what ``send`` checks before it posts).
CHECKPOINT = sign_checkpoint(Checkpoint(ORIGIN, 1, bytes(32)), ORIGIN, LOG_KEY)


def _queued(home: Path) -> Message:
    """A plain submission for :data:`PERIOD`, signed with the home's key and queued."""
    catalogue = load_default_catalogue()
    key = Keystore(home).active()

    def build(seq: int) -> NewMessage:
        sub = build_submission(
            catalogue=catalogue,
            raw_cells=uniform_cells(catalogue, 20),
            period=parse_period(PERIOD),
            practice=PRACTICE,
            aud=AUD,
            kid=key.kid,
            seq=seq,
            now=int(time.time()),
            policy=effective_policy(catalogue, get_settings(home, {})),
            source_kind="sqlite",
            submission_id=str(uuid.uuid4()),
        )
        signed = sign("submission", sub.to_bytes(), [key])
        return NewMessage(
            "submission", signed.envelope, signed.sha256, key.kid, seq, sub.submission_id, PERIOD
        )

    with Outbox.open(home) as outbox:
        return outbox.add_signed(build, "queued")


def _refused(home: Path, problem: dict[str, Any]) -> tuple[RefusedError, Message]:
    """Send the queued message to an aggregator that answers 409 with ``problem``: the
    refusal and the message as stored after it."""
    message = _queued(home)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v1/log/checkpoint":
            return httpx.Response(200, text=CHECKPOINT)
        return httpx.Response(
            409, json=problem, headers={"content-type": "application/problem+json"}
        )

    client = AggregatorClient(TRUST.aggregator_url, transport=httpx.MockTransport(handler))
    with client, Outbox.open(home) as outbox, pytest.raises(RefusedError) as caught:
        send(client, outbox, TRUST, message)
    with Outbox.open(home) as outbox:
        return caught.value, outbox.get(message.id)


def _problem(detail: str, **members: object) -> dict[str, Any]:
    return {
        "type": "urn:fedqi:problem:period-already-submitted",
        "title": "Conflict",
        "status": 409,
        "detail": detail,
        **members,
    }


def _detail(submission_id: str) -> str:
    """The detail the aggregator writes (aggregator/submissions/commit.py)."""
    return (
        f"corrections: practice {PRACTICE} already submitted {PERIOD} ({submission_id}); send a "
        f"correction with supersedes={submission_id} and a reason"
    )


@pytest.mark.parametrize(
    "detail",
    [_detail(OTHER), "the month is held already"],
    ids=["detail-names-another-id", "detail-names-none"],
)
def test_the_member_names_the_submission_the_network_holds(agent_home: Path, detail: str) -> None:
    """The member is what counts: the detail's prose is not read when it is there, whatever it
    says. The month is recorded as held under the member's id, and is no longer due."""
    error, stored = _refused(agent_home, _problem(detail, **{CURRENT_SUBMISSION: HELD}))
    assert stored.state == "refused" and stored.state_note.startswith(f"{ALREADY_HELD}{HELD}.")
    assert network_holds(stored) == HELD
    assert f"--supersedes {HELD}" in str(error) and OTHER not in str(error)
    settings = get_settings(agent_home, {"FEDQI_AGENT_FIRST_PERIOD": PERIOD})
    with Outbox.open(agent_home) as outbox:
        due = due_periods(settings, outbox, dt.date(2026, 5, 2), [])
    assert [p.label for p in due] == ["2026-04"]


def test_an_aggregator_from_before_the_member_is_read_from_its_detail(agent_home: Path) -> None:
    """No member (an aggregator not yet upgraded): the id its detail names, as before."""
    error, stored = _refused(agent_home, _problem(_detail(HELD)))
    assert network_holds(stored) == HELD
    assert f"--supersedes {HELD}" in str(error)


@pytest.mark.parametrize(
    "problem",
    [
        _problem("the month is held already"),
        _problem(_detail(OTHER), **{CURRENT_SUBMISSION: "not-a-submission-id"}),
        _problem(_detail(OTHER), **{CURRENT_SUBMISSION: None}),
    ],
    ids=["no-member-no-id", "member-not-an-id", "member-null"],
)
def test_a_refusal_naming_no_usable_id_still_counts_the_month_as_held(
    agent_home: Path, problem: dict[str, Any]
) -> None:
    """No id the agent can use (and a member that is there but is no submission id is not
    second-guessed from the detail): the month is still recorded as held, so ``run`` does not
    send it again, with SUBMISSION_ID in the note and the advice where the id would be, and no
    id offered to a correction."""
    error, stored = _refused(agent_home, problem)
    assert stored.state == "refused" and stored.state_note.startswith(ALREADY_HELD)
    assert network_holds(stored) == ""  # held, by a submission not named
    assert "--supersedes SUBMISSION_ID" in str(error) and OTHER not in str(error)
    settings = get_settings(agent_home, {"FEDQI_AGENT_FIRST_PERIOD": PERIOD})
    with Outbox.open(agent_home) as outbox:
        due = due_periods(settings, outbox, dt.date(2026, 5, 2), [])
    assert [p.label for p in due] == ["2026-04"]
