"""Re-verify the whole transparency log from what the database holds.

Run after a restore from backup (``fedqi-aggregator log verify``), or at any time: it trusts
nothing derived. Every leaf hash is recomputed from its leaf data, every stored envelope is
hashed again and matched to its leaf, the tree is rebuilt from the leaves alone, every stored
checkpoint's signature is checked with the network's log public key and its root compared with
the rebuilt tree at that size, and every stored interior node is compared with the rebuilt one
(those are what inclusion and consistency proofs are served from).

A failure raises :class:`LogIntegrityError` naming the leaf, envelope, checkpoint or node.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol import merkle
from protocol.checkpoint import verify_checkpoint
from protocol.errors import ProtocolError
from protocol.keys import VerifyingKey

from ..db.models import Checkpoint as CheckpointRow
from ..db.models import Envelope, LogLeaf, LogNode, LogState, Network
from ..errors import AggregatorError


class LogIntegrityError(AggregatorError):
    """The stored log does not verify."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 500)


@dataclass(frozen=True)
class LogReport:
    size: int
    root_hex: str
    envelopes_checked: int
    checkpoints_checked: int
    nodes_checked: int
    latest_checkpoint_size: int


def verify_log(session: Session) -> LogReport:
    network = session.execute(select(Network)).scalar_one_or_none()
    if network is None:
        raise LogIntegrityError("the database holds no network (run `fedqi-aggregator init`)")
    log_key = VerifyingKey.from_public_bytes(bytes(network.log_public_key))

    state = session.execute(select(LogState.size)).scalar_one_or_none() or 0
    tree = merkle.MemoryTree()
    envelopes_checked = 0
    for row in session.execute(select(LogLeaf).order_by(LogLeaf.idx)).scalars():
        if row.idx != tree.size:
            raise LogIntegrityError(f"leaf {tree.size} is missing (next stored leaf is {row.idx})")
        data = bytes(row.leaf_data)
        if merkle.leaf_hash(data) != bytes(row.leaf_hash):
            raise LogIntegrityError(f"leaf {row.idx}: stored hash does not match its leaf data")
        envelopes_checked += _check_envelope(session, row.idx, data)
        tree.append(merkle.leaf_hash(data))
    if tree.size != state:
        raise LogIntegrityError(f"log_state says size {state} but {tree.size} leaves are stored")

    checkpoints = 0
    latest = 0
    for cp in session.execute(select(CheckpointRow).order_by(CheckpointRow.size)).scalars():
        try:
            parsed = verify_checkpoint(
                cp.note, network.log_key_name, log_key, origin=network.origin
            )
        except ProtocolError as exc:
            raise LogIntegrityError(f"checkpoint of size {cp.size}: {exc}") from None
        if parsed.size != cp.size or parsed.root != bytes(cp.root):
            raise LogIntegrityError(f"checkpoint of size {cp.size}: note and stored row disagree")
        if cp.size > tree.size:
            raise LogIntegrityError(
                f"checkpoint of size {cp.size} is larger than the stored log ({tree.size} leaves)"
            )
        if cp.size and tree.root(cp.size) != parsed.root:
            raise LogIntegrityError(
                f"checkpoint of size {cp.size}: its signed root does not match the leaves stored"
            )
        checkpoints += 1
        latest = cp.size

    nodes = 0
    for level, idx, h in session.execute(select(LogNode.level, LogNode.idx, LogNode.hash)):
        start, end = idx << level, (idx + 1) << level
        if end > tree.size:
            raise LogIntegrityError(f"log node ({level}, {idx}) covers leaves beyond the log")
        if tree.range_hash(start, end) != bytes(h):
            raise LogIntegrityError(f"log node ({level}, {idx}) does not match the leaves")
        nodes += 1

    root = tree.root() if tree.size else hashlib.sha256(b"").digest()
    return LogReport(
        size=tree.size,
        root_hex=root.hex(),
        envelopes_checked=envelopes_checked,
        checkpoints_checked=checkpoints,
        nodes_checked=nodes,
        latest_checkpoint_size=latest,
    )


def _check_envelope(session: Session, idx: int, leaf_data: bytes) -> int:
    try:
        leaf = json.loads(leaf_data)
    except ValueError:
        raise LogIntegrityError(f"leaf {idx}: leaf data is not JSON") from None
    sha = leaf.get("envelope_sha256")
    if not sha:
        return 0
    env = session.get(Envelope, sha)
    if env is None:
        raise LogIntegrityError(f"leaf {idx}: envelope {sha} is not stored")
    body = bytes(env.body)
    if hashlib.sha256(body).hexdigest() != sha:
        raise LogIntegrityError(f"leaf {idx}: stored envelope bytes do not hash to {sha}")
    if env.leaf_index != idx:
        raise LogIntegrityError(f"leaf {idx}: envelope {sha} claims leaf {env.leaf_index}")
    payload_sha = leaf.get("payload_sha256")
    if payload_sha:
        payload = base64.b64decode(json.loads(body)["payload"])
        if hashlib.sha256(payload).hexdigest() != payload_sha:
            raise LogIntegrityError(f"leaf {idx}: envelope payload does not hash to the leaf's")
    return 1
