"""Client-side verification of what the aggregator returns (what an agent or IG officer does)."""

from __future__ import annotations

import base64

import httpx

from protocol.checkpoint import verify_checkpoint
from protocol.envelope import Envelope, open_payload
from protocol.keys import VerifyingKey
from protocol.merkle import verify_inclusion
from protocol.submission import Receipt


def log_key(client: httpx.Client) -> tuple[str, VerifyingKey]:
    info = client.get("/v1/log/key").json()
    return info["key_name"], VerifyingKey.from_public_bytes(base64.b64decode(info["public_key"]))


def verify_receipt(
    client: httpx.Client, receipt_bytes: bytes, envelope_bytes: bytes | None = None
) -> Receipt:
    """Receipt signature, checkpoint signature, inclusion proof against the checkpoint root."""
    name, key = log_key(client)
    receipt = open_payload(Envelope.from_bytes(receipt_bytes), [key], kind="receipt", model=Receipt)
    cp = verify_checkpoint(receipt.checkpoint, name, key)
    assert cp.size == receipt.tree_size
    verify_inclusion(
        receipt.leaf_index,
        receipt.tree_size,
        bytes.fromhex(receipt.leaf_hash),
        [bytes.fromhex(h) for h in receipt.inclusion_proof],
        cp.root,
    )
    if envelope_bytes is not None:
        import hashlib

        assert receipt.envelope_sha256 == hashlib.sha256(envelope_bytes).hexdigest()
    return receipt
