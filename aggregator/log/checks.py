"""The named checks that bind what the aggregator shows to the signed bytes it stored.

One set of functions, used by ``fedqi-aggregator log verify`` (every leaf, every envelope, every
checkpoint and tree node; :mod:`aggregator.log.verify`), by the IG officer's payload page (one
submission at a time) and, for the cells benchmarks read, by the benchmark refresh
(:func:`signed_cells`: stored, hashed, signed by the practice key, and the same rows). Each check returns the :class:`Finding` it makes, or ``None``: nothing is
trusted that can be re-derived, so a leaf's hash is recomputed from its JSON, an envelope's from
its bytes, and a submission's cells from its signed payload.

The check names (:data:`LABELS`) are what reports and tests name a failure by.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from threading import Lock
from typing import Any

from protocol import merkle
from protocol.checkpoint import verify_checkpoint
from protocol.envelope import Envelope as ProtocolEnvelope
from protocol.envelope import verify_envelope
from protocol.errors import ProtocolError
from protocol.keys import VerifyingKey
from protocol.submission import Cell as ProtocolCell
from protocol.submission import Submission as ProtocolSubmission

from ..db.cells import cell_rows, protocol_cells

#: Every check, by name, with what it establishes when it passes.
LABELS: dict[str, str] = {
    "leaf-hash": "the leaf's stored hash is the hash of its stored JSON",
    "leaf-order": "the leaves are numbered without gaps and the log size matches them",
    "leaf-json": "the leaf data is JSON",
    "envelope-stored": "the envelope the leaf names is stored",
    "envelope-hash": "the stored envelope bytes hash to the SHA-256 the leaf records",
    "envelope-leaf": "the stored envelope points back at this leaf",
    "payload-hash": "the envelope's payload hashes to the SHA-256 the leaf records",
    "signature": "the envelope's Ed25519 signature verifies with the practice key",
    "leaf-submission": "the leaf and the stored submission agree (id, practice, key, seq)",
    "cells": "the stored cells are exactly the cells of the signed payload",
    "checkpoint-signature": "the checkpoint note is signed by the log key",
    "checkpoint-root": "the checkpoint's signed root is the root of the stored leaves",
    "inclusion": "the leaf is included in the signed tree",
    "tree-node": "a stored interior node matches the leaves under it",
}


@dataclass(frozen=True)
class Finding:
    """One failed check: its name, where (a leaf, checkpoint, node or cell) and what differs."""

    check: str
    where: str
    detail: str
    practice: str | None = None
    period: str | None = None
    indicator: str | None = None

    def __str__(self) -> str:
        return f"{self.check}: {self.where}: {self.detail}"

    def as_dict(self) -> dict[str, str | None]:
        return {
            "check": self.check,
            "where": self.where,
            "detail": self.detail,
            "practice": self.practice,
            "period": self.period,
            "indicator": self.indicator,
        }


def leaf_hash(idx: int, leaf_data: bytes, stored_hash: bytes) -> Finding | None:
    if merkle.leaf_hash(leaf_data) != stored_hash:
        return Finding("leaf-hash", f"leaf {idx}", "stored hash does not match its leaf data")
    return None


def leaf_json(idx: int, leaf_data: bytes) -> dict[str, Any] | Finding:
    try:
        leaf = json.loads(leaf_data)
    except ValueError:
        return Finding("leaf-json", f"leaf {idx}", "leaf data is not JSON")
    if not isinstance(leaf, dict):
        return Finding("leaf-json", f"leaf {idx}", "leaf data is not a JSON object")
    return leaf


def envelope_hash(idx: int, body: bytes | None, sha: str) -> Finding | None:
    if body is None:
        return Finding("envelope-stored", f"leaf {idx}", f"envelope {sha} is not stored")
    if hashlib.sha256(body).hexdigest() != sha:
        return Finding(
            "envelope-hash", f"leaf {idx}", f"stored envelope bytes do not hash to {sha}"
        )
    return None


def envelope_leaf(idx: int, sha: str, stored_leaf_index: int) -> Finding | None:
    if stored_leaf_index != idx:
        return Finding(
            "envelope-leaf", f"leaf {idx}", f"envelope {sha} claims leaf {stored_leaf_index}"
        )
    return None


def payload_hash(idx: int, body: bytes, payload_sha: str) -> Finding | None:
    try:
        payload = ProtocolEnvelope.from_bytes(body).payload_bytes()
    except ProtocolError as exc:
        return Finding("payload-hash", f"leaf {idx}", f"envelope does not parse: {exc}")
    if hashlib.sha256(payload).hexdigest() != payload_sha:
        return Finding(
            "payload-hash", f"leaf {idx}", "envelope payload does not hash to the leaf's"
        )
    return None


def signature(idx: int, body: bytes, kid: str, public_key: bytes | None) -> Finding | None:
    if public_key is None:
        return Finding("signature", f"leaf {idx}", f"key {kid} is not stored")
    try:
        verify_envelope(
            ProtocolEnvelope.from_bytes(body),
            [VerifyingKey.from_public_bytes(public_key)],
            kind="submission",
        )
    except (ProtocolError, ValueError) as exc:
        return Finding("signature", f"leaf {idx}", f"signature by {kid} does not verify: {exc}")
    return None


def leaf_submission(idx: int, leaf: dict[str, Any], sub: Any | None) -> Finding | None:
    """The leaf's JSON against the stored ``submissions`` row it names."""
    sid = leaf.get("submission_id")
    if sub is None:
        return Finding("leaf-submission", f"leaf {idx}", f"submission {sid} is not stored")
    pairs = (
        ("submission_id", sub.submission_id),
        ("practice", sub.practice_ods),
        ("kid", sub.kid),
        ("seq", sub.seq),
        ("envelope_sha256", sub.envelope_sha256),
    )
    for name, stored in pairs:
        if leaf.get(name) != stored:
            return Finding(
                "leaf-submission",
                f"leaf {idx}",
                f"leaf says {name}={leaf.get(name)!r}, the stored submission {stored!r}",
                practice=sub.practice_ods,
            )
    if sub.leaf_index != idx:
        return Finding(
            "leaf-submission", f"leaf {idx}", f"submission {sid} claims leaf {sub.leaf_index}"
        )
    return None


def _period(sub: Any) -> str:
    return f"{sub.period_start}..{sub.period_end}"


def _differences(stored: Sequence[ProtocolCell], signed: Sequence[ProtocolCell]) -> list[str]:
    by_key_stored = {c.stratum: c for c in stored}
    by_key_signed = {c.stratum: c for c in signed}
    out: list[str] = []
    for stratum in sorted(
        set(by_key_stored) | set(by_key_signed), key=lambda s: (s.age_band, s.sex)
    ):
        where = (
            "whole practice"
            if (stratum.age_band, stratum.sex) == ("all", "all")
            else f"stratum {stratum.age_band}/{stratum.sex}"
        )
        a, b = by_key_stored.get(stratum), by_key_signed.get(stratum)
        if a is None or b is None:
            out.append(f"{where}: {'not stored' if a is None else 'not in the signed payload'}")
            continue
        for name in ("numerator", "denominator", "exclusions"):
            x, y = getattr(a, name), getattr(b, name)
            if (x.value, x.status) != (y.value, y.status):
                out.append(
                    f"{where} {name}: stored {x.value} ({x.status}), signed {y.value} ({y.status})"
                )
    return out


def cells(sub: Any, signed: ProtocolSubmission, stored_rows: Iterable[Any]) -> list[Finding]:
    """Every difference between a submission's stored ``cells`` rows and its signed payload,
    by practice, period and indicator."""
    stored = protocol_cells(stored_rows)
    found: list[Finding] = []
    ours: dict[str, list[ProtocolCell]] = {}
    theirs: dict[str, list[ProtocolCell]] = {}
    for c in stored:
        ours.setdefault(c.indicator, []).append(c)
    for c in signed.cells:
        theirs.setdefault(c.indicator, []).append(c)
    period = _period(sub)
    for ind in sorted(set(ours) | set(theirs)):
        if ind not in ours:
            diffs = ["the signed payload has this indicator; no cells are stored"]
        elif ind not in theirs:
            diffs = ["cells are stored for an indicator the signed payload does not have"]
        else:
            diffs = _differences(ours[ind], theirs[ind])
        for d in diffs:
            found.append(
                Finding(
                    "cells",
                    f"practice {sub.practice_ods}, period {period}, indicator {ind}",
                    d,
                    practice=sub.practice_ods,
                    period=period,
                    indicator=ind,
                )
            )
    return found


def signed_submission(idx: int, body: bytes) -> ProtocolSubmission | Finding:
    try:
        return ProtocolSubmission.from_bytes(ProtocolEnvelope.from_bytes(body).payload_bytes())
    except (ProtocolError, ValueError) as exc:
        return Finding("cells", f"leaf {idx}", f"the signed payload does not parse: {exc}")


def checkpoint(
    size: int,
    note: str,
    stored_root: bytes,
    key_name: str,
    key: VerifyingKey,
    origin: str | None = None,
    rebuilt_root: bytes | None = None,
) -> Finding | None:
    where = f"checkpoint of size {size}"
    try:
        parsed = verify_checkpoint(note, key_name, key, origin=origin)
    except ProtocolError as exc:
        return Finding("checkpoint-signature", where, str(exc))
    if parsed.size != size or parsed.root != stored_root:
        return Finding("checkpoint-root", where, "note and stored row disagree")
    if rebuilt_root is not None and parsed.root != rebuilt_root:
        return Finding("checkpoint-root", where, "its signed root does not match the leaves stored")
    return None


def inclusion(
    idx: int, size: int, leaf_data: bytes, proof: Sequence[bytes], root: bytes
) -> Finding | None:
    """The leaf (hashed from its JSON, not its stored hash) is in the signed tree of ``size``."""
    try:
        merkle.verify_inclusion(idx, size, merkle.leaf_hash(leaf_data), list(proof), root)
    except (ProtocolError, ValueError) as exc:
        return Finding("inclusion", f"leaf {idx}", f"not in the tree of size {size}: {exc}")
    return None


# --- the signed cells the benchmarks read ---------------------------------------------------------

#: One indicator's stored ``cells`` row without its keys: denominator, status, numerator, status,
#: exclusions, status, and the strata (compact JSON, as :func:`aggregator.db.cells.cell_rows`
#: writes it).
SignedRow = tuple[int | None, str, int | None, str, int | None, str, str]


@dataclass(frozen=True)
class SignedCells:
    """What a signed submission says, as the benchmarks compare it with the stored rows: who
    sent it, for which period, and each indicator's row."""

    submission_id: str
    practice: str
    kid: str
    period_start: str
    period_end: str
    rows: dict[str, SignedRow]


class _SignedCache:
    """Signed cells by (envelope SHA-256, public key): bytes that hash to their key and a
    signature that verified never change, so an entry never goes stale. Bounded, least recently
    used out first."""

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        self._lock = Lock()
        self._data: OrderedDict[tuple[str, bytes], SignedCells] = OrderedDict()

    def get(self, key: tuple[str, bytes]) -> SignedCells | None:
        with self._lock:
            got = self._data.get(key)
            if got is not None:
                self._data.move_to_end(key)
            return got

    def put(self, key: tuple[str, bytes], value: SignedCells) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._size:
                self._data.popitem(last=False)


_SIGNED = _SignedCache()


def signed_cells(
    sha: str, body: bytes | None, kid: str, public_key: bytes | None
) -> SignedCells | None:
    """The cells of the signed submission in ``body``, or ``None`` unless ``body`` is stored,
    hashes to ``sha``, verifies with ``public_key`` (the practice key it names) and parses: the
    ``envelope-stored``, ``envelope-hash``, ``signature`` and ``cells`` checks of ``log verify``,
    run by every benchmark refresh, so that neither edited cells nor a replaced envelope is
    shown as fact."""
    if public_key is None:
        return None
    got = _SIGNED.get((sha, public_key))
    if got is not None:
        return got
    if body is None or envelope_hash(-1, body, sha) is not None:
        return None
    if signature(-1, body, kid, public_key) is not None:
        return None
    sub = signed_submission(-1, body)
    if isinstance(sub, Finding):
        return None
    try:
        rows = cell_rows(sub.submission_id, sub.cells)
    except ValueError:
        return None
    value = SignedCells(
        submission_id=sub.submission_id,
        practice=sub.practice,
        kid=sub.kid,
        period_start=sub.period.start.isoformat(),
        period_end=sub.period.end.isoformat(),
        rows={str(r[1]): r[2:] for r in rows},  # type: ignore[misc]
    )
    _SIGNED.put((sha, public_key), value)
    return value
