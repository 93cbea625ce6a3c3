"""Receipt and checkpoint verification against the pinned log key (no server: a log in memory
behind httpx.MockTransport)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import httpx
import pytest

from agent.home.keystore import PinnedKey, Trust
from agent.home.settings import TransportSettings
from agent.outbound.audit import (
    LogIntegrityError,
    accept_receipt,
    check_consistency,
    verify_all,
    verify_receipt,
)
from agent.outbound.outbox import NewMessage, Outbox
from agent.outbound.transport import AggregatorClient
from protocol.checkpoint import Checkpoint, sign_checkpoint
from protocol.envelope import sign_envelope
from protocol.keys import SigningKey
from protocol.merkle import MemoryTree, leaf_hash
from protocol.submission import Receipt

ORIGIN = "test-net/log/v1"
LOG_KEY = SigningKey.from_private_bytes(hashlib.sha256(b"log key").digest())


class FakeLog:
    """An append-only log in memory, serving the aggregator's read endpoints."""

    def __init__(self, key: SigningKey = LOG_KEY) -> None:
        self.key = key
        self.tree = MemoryTree()
        self.leaves: list[bytes] = []

    def note(self, size: int | None = None) -> str:
        size = self.tree.size if size is None else size
        cp = Checkpoint(origin=ORIGIN, size=size, root=self.tree.root(size))
        return sign_checkpoint(cp, ORIGIN, self.key)

    def append(self, data: bytes) -> int:
        self.leaves.append(leaf_hash(data))
        return self.tree.append(leaf_hash(data))

    def receipt(
        self, envelope_sha256: str, data: bytes, aud: str = "test-net", sid: str | None = None
    ) -> bytes:
        index = self.append(data)
        size = self.tree.size
        r = Receipt(
            aud=aud,
            message_type="submission",
            submission_id=sid,
            envelope_sha256=envelope_sha256,
            leaf_index=index,
            leaf_hash=self.leaves[index].hex(),
            tree_size=size,
            inclusion_proof=tuple(h.hex() for h in self.tree.inclusion_proof(index, size)),
            checkpoint=self.note(),
            iat=1_800_000_000,
        )
        return sign_envelope("receipt", r.to_bytes(), [self.key]).to_bytes()

    def handler(self, request: httpx.Request) -> httpx.Response:
        q = request.url.params
        if request.url.path == "/v1/log/checkpoint":
            return httpx.Response(200, text=self.note())
        if request.url.path == "/v1/log/proof/consistency":
            old, new = int(q["old"]), int(q["new"])
            proof = self.tree.consistency_proof(old, new)
            return httpx.Response(200, json={"proof": [h.hex() for h in proof]})
        if request.url.path == "/v1/log/proof/inclusion":
            index, size = int(q["index"]), int(q["size"])
            proof = self.tree.inclusion_proof(index, size)
            return httpx.Response(
                200, json={"leaf_hash": self.leaves[index].hex(), "proof": [h.hex() for h in proof]}
            )
        return httpx.Response(404)


def _trust(key: SigningKey = LOG_KEY) -> Trust:
    return Trust(
        aud="test-net",
        practice="A12345",
        aggregator_url="https://agg.example",
        log_origin=ORIGIN,
        log_key=PinnedKey(name=ORIGIN, jwk=key.public.jwk()),
    )


def _client(log: FakeLog) -> AggregatorClient:
    return AggregatorClient(
        "https://agg.example",
        TransportSettings(retries=0),
        transport=httpx.MockTransport(log.handler),
    )


def _store(outbox: Outbox, body: bytes) -> object:
    sha = hashlib.sha256(body).hexdigest()
    return outbox.add_signed(
        lambda seq: NewMessage(
            "submission", body, sha, "k" * 43, seq, str(uuid.UUID(int=seq)), "2026-01"
        ),
        "queued",
    )


def test_a_good_receipt_verifies() -> None:
    log = FakeLog()
    log.append(b"enrol")
    verified = verify_receipt(log.receipt("ab" * 32, b"leaf"), _trust(), "ab" * 32)
    assert verified.receipt.leaf_index == 1 and verified.checkpoint.size == 2


def test_receipt_for_another_envelope_is_refused() -> None:
    with pytest.raises(LogIntegrityError, match="names envelope"):
        verify_receipt(FakeLog().receipt("ab" * 32, b"x"), _trust(), "cd" * 32)


def test_receipt_signed_by_another_key_is_refused() -> None:
    forger = FakeLog(SigningKey.generate())
    with pytest.raises(LogIntegrityError, match="pinned log key"):
        verify_receipt(forger.receipt("ab" * 32, b"x"), _trust(), "ab" * 32)


def test_receipt_for_another_network_is_refused() -> None:
    with pytest.raises(LogIntegrityError, match="network"):
        verify_receipt(FakeLog().receipt("ab" * 32, b"x", aud="other-net"), _trust(), "ab" * 32)


def test_consistency_detects_a_rewritten_prefix() -> None:
    honest, forked = FakeLog(), FakeLog()
    for data in (b"a", b"b", b"c"):
        honest.append(data)
    for data in (b"a", b"B", b"c", b"d"):
        forked.append(data)
    old = Checkpoint(ORIGIN, 3, honest.tree.root())
    new = Checkpoint(ORIGIN, 4, forked.tree.root())
    with pytest.raises(LogIntegrityError, match="not a prefix"):
        check_consistency(_client(forked), old, new)
    check_consistency(_client(honest), old, old)  # the same view is consistent
    with pytest.raises(LogIntegrityError, match="forked"):
        check_consistency(_client(forked), old, Checkpoint(ORIGIN, 3, forked.tree.root(3)))


def test_accept_receipt_and_verify_all(tmp_path: Path) -> None:
    log = FakeLog()
    with Outbox(tmp_path / "o.sqlite") as outbox:
        for body in (b"first", b"second"):
            m = _store(outbox, body)
            accept_receipt(
                outbox, _client(log), _trust(), m, log.receipt(m.sha256, body, sid=m.submission_id)
            )  # type: ignore[attr-defined]
        log.append(b"someone else")
        report = verify_all(outbox, _client(log), _trust())
        assert report.ok and report.receipts == 2 and report.checkpoint_size == 3

        # The log is rewritten under the agent: same size, other content, re-signed.
        rewritten = FakeLog()
        for data in (b"FIRST", b"second", b"someone else"):
            rewritten.append(data)
        report = verify_all(outbox, _client(rewritten), _trust())
        assert not report.ok and any("forked" in f or "prefix" in f for f in report.failures)
        assert any("modified" in f or "not in the current log" in f for f in report.failures)


def test_verify_all_with_no_receipts_is_not_ok(tmp_path: Path) -> None:
    log = FakeLog()
    log.append(b"x")
    with Outbox(tmp_path / "o.sqlite") as outbox:
        assert not verify_all(outbox, _client(log), _trust()).ok


def test_receipt_for_another_message_is_refused() -> None:
    sid = str(uuid.uuid4())
    data = FakeLog().receipt("ab" * 32, b"x", sid=sid)
    verify_receipt(data, _trust(), "ab" * 32, kind="submission", submission_id=sid)
    with pytest.raises(LogIntegrityError, match="enrol"):
        verify_receipt(data, _trust(), "ab" * 32, kind="enrol")
    with pytest.raises(LogIntegrityError, match="names submission"):
        verify_receipt(data, _trust(), "ab" * 32, submission_id=str(uuid.uuid4()))
