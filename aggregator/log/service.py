"""Appending to the log, signing checkpoints and issuing receipts.

Leaf data is RFC 8785 JSON holding only hashes and metadata::

    {"envelope_sha256", "kid", "payload_sha256", "practice", "seq", "status",
     "submission_id", "supersedes", "ts_ms", "type"}

``type`` is ``submission`` or ``key_event``; ``status`` is ``accepted`` for a submission and
``enrolled`` / ``rotated`` / ``retired`` / ``revoked`` for a key event. Absent values are ``null``
so every leaf has the same fields. Leaf hash = SHA-256(0x00 || leaf_data).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol import merkle
from protocol.canonical import canonical_json
from protocol.checkpoint import Checkpoint, sign_checkpoint
from protocol.envelope import sign_envelope
from protocol.keys import SigningKey
from protocol.submission import Receipt

from ..db.bulk import insert_rows
from ..db.models import Checkpoint as CheckpointRow
from ..db.models import LogLeaf, LogState, table_of
from ..errors import BadRequestError, NotFoundError
from . import tree, verdict

LeafType = Literal["submission", "key_event"]


@dataclass(frozen=True)
class LogSigner:
    """What the log signs with: the checkpoint origin and key name, and the log key."""

    origin: str
    key_name: str
    key: SigningKey
    aud: str

    @cached_property
    def verdict_key(self) -> bytes:
        """The key the ingest seals each stored cells row with (:mod:`.verdict`)."""
        return verdict.derive_key(self.key)


@dataclass(frozen=True)
class Appended:
    index: int
    leaf_hash: bytes
    size: int  # the tree size after the append this leaf was part of
    # The root at ``size`` and this leaf's inclusion proof in it, worked out while appending
    # (the nodes they need are read in the same query as the append's).
    root: bytes
    proof: tuple[bytes, ...]


def make_leaf_data(
    *,
    type: LeafType,
    ts_ms: int,
    practice: str,
    kid: str,
    status: str,
    submission_id: str | None = None,
    seq: int | None = None,
    envelope_sha256: str | None = None,
    payload_sha256: str | None = None,
    supersedes: str | None = None,
) -> bytes:
    return canonical_json(
        {
            "type": type,
            "ts_ms": ts_ms,
            "practice": practice,
            "kid": kid,
            "submission_id": submission_id,
            "seq": seq,
            "envelope_sha256": envelope_sha256,
            "payload_sha256": payload_sha256,
            "status": status,
            "supersedes": supersedes,
        }
    )


def log_size(session: Session) -> int:
    # Core on the session's connection (no ORM statement layer): a write batch reads it under
    # the sequencer.
    t = LogState.__table__.c
    return int(session.connection().execute(select(t.size).where(t.id == 1)).scalar() or 0)


def append_leaf(
    session: Session, leaf_data: bytes, *, kind: LeafType, practice: str, now: dt.datetime
) -> Appended:
    """Append one leaf (the caller holds the sequencer: see db.session.lock_sequencer)."""
    return append_leaves(session, [(leaf_data, kind, practice, now)])[0]


def append_leaves(
    session: Session, leaves: Sequence[tuple[bytes, LeafType, str, dt.datetime]]
) -> list[Appended]:
    """Append leaves ``(leaf_data, kind, practice, created_at)`` in order (the caller holds
    the sequencer): their rows, the Merkle nodes they complete and the new size, in the
    caller's transaction. Each :class:`Appended` carries the root at the new size and the
    leaf's inclusion proof in that tree (one query reads every stored node they need)."""
    index = log_size(session)
    hashes = [merkle.leaf_hash(data) for data, *_ in leaves]
    insert_rows(
        session,
        table_of(LogLeaf),
        ("idx", "leaf_data", "leaf_hash", "kind", "practice_ods", "created_at"),
        [
            (index + k, data, h, kind, practice, now)
            for k, ((data, kind, practice, now), h) in enumerate(zip(leaves, hashes, strict=True))
        ],
    )
    root, proofs = tree.append_many_and_prove(session, index, hashes)
    size = index + len(leaves)
    t = table_of(LogState)
    session.connection().execute(t.update().where(t.c.id == 1).values(size=size))
    return [
        Appended(index=index + k, leaf_hash=h, size=size, root=root, proof=tuple(proofs[k]))
        for k, h in enumerate(hashes)
    ]


def sign_and_store_checkpoint(
    session: Session, signer: LogSigner, size: int, now: dt.datetime, root: bytes
) -> str:
    """Sign and store the checkpoint of the tree of ``size`` with ``root`` (the caller has it
    from the append: :class:`Appended`)."""
    note = sign_checkpoint(
        Checkpoint(origin=signer.origin, size=size, root=root), signer.key_name, signer.key
    )
    session.connection().execute(
        table_of(CheckpointRow).insert(),
        [{"size": size, "root": root, "note": note, "created_at": now}],
    )
    return note


def issue_receipt(
    session: Session,
    signer: LogSigner,
    appended: Appended,
    *,
    message_type: Literal["submission", "enrol", "rotate"],
    envelope_sha256: str,
    submission_id: str | None,
    now: dt.datetime,
) -> bytes:
    """Checkpoint the tree at this leaf and return the signed receipt envelope's bytes."""
    note = sign_and_store_checkpoint(session, signer, appended.size, now, appended.root)
    return receipt_for(
        signer,
        message_type=message_type,
        envelope_sha256=envelope_sha256,
        submission_id=submission_id,
        leaf_index=appended.index,
        leaf_hash=appended.leaf_hash,
        tree_size=appended.size,
        proof=appended.proof,
        checkpoint=note,
        now=now,
    )


def receipt_for(
    signer: LogSigner,
    *,
    message_type: Literal["submission", "enrol", "rotate"],
    envelope_sha256: str,
    submission_id: str | None,
    leaf_index: int,
    leaf_hash: bytes,
    tree_size: int,
    proof: Sequence[bytes],
    checkpoint: str,
    now: dt.datetime,
) -> bytes:
    """The signed receipt envelope's bytes: this leaf, its inclusion proof in the tree of
    ``tree_size`` and the signed checkpoint of that tree."""
    receipt = Receipt(
        aud=signer.aud,
        message_type=message_type,
        submission_id=submission_id,
        envelope_sha256=envelope_sha256,
        leaf_index=leaf_index,
        leaf_hash=leaf_hash.hex(),
        tree_size=tree_size,
        inclusion_proof=tuple(h.hex() for h in proof),
        checkpoint=checkpoint,
        iat=int(now.timestamp()),
    )
    return sign_envelope("receipt", receipt.to_bytes(), [signer.key]).to_bytes()


# --- reads -------------------------------------------------------------------------------------


def latest_checkpoint(session: Session) -> CheckpointRow | None:
    return session.scalars(
        select(CheckpointRow).order_by(CheckpointRow.size.desc()).limit(1)
    ).first()


def checkpoint_at(session: Session, size: int) -> CheckpointRow:
    row = session.get(CheckpointRow, size)
    if row is None:
        raise NotFoundError(f"no checkpoint was signed at tree size {size}", code="no-checkpoint")
    return row


def _check_size(session: Session, size: int, what: str) -> int:
    current = log_size(session)
    if not 0 <= size <= current:
        raise BadRequestError(
            f"{what}={size} is outside the log (size {current})", code="bad-tree-size"
        )
    return current


def inclusion(session: Session, index: int, size: int) -> dict[str, object]:
    _check_size(session, size, "size")
    if not 0 <= index < size:
        raise BadRequestError(f"index={index} is not below size={size}", code="bad-leaf-index")
    leaf = session.get(LogLeaf, index)
    assert leaf is not None
    return {
        "index": index,
        "size": size,
        "leaf_hash": bytes(leaf.leaf_hash).hex(),
        "proof": [h.hex() for h in tree.inclusion_proof(session, index, size)],
        "root": tree.root(session, size).hex(),
    }


def consistency(session: Session, old: int, new: int) -> dict[str, object]:
    _check_size(session, new, "new")
    if not 0 <= old <= new:
        raise BadRequestError(f"old={old} must be between 0 and new={new}", code="bad-tree-size")
    return {
        "old": old,
        "new": new,
        "proof": [h.hex() for h in tree.consistency_proof(session, old, new)],
        "old_root": tree.root(session, old).hex(),
        "new_root": tree.root(session, new).hex(),
    }


def entries(session: Session, start: int, end: int) -> list[LogLeaf]:
    current = log_size(session)
    if not 0 <= start < end or end > current:
        raise BadRequestError(
            f"entries need 0 <= start < end <= {current}, got start={start}, end={end}",
            code="bad-range",
        )
    if end - start > 1000:
        raise BadRequestError("at most 1000 entries per request", code="bad-range")
    return list(
        session.scalars(
            select(LogLeaf).where(LogLeaf.idx >= start, LogLeaf.idx < end).order_by(LogLeaf.idx)
        )
    )
