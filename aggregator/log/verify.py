"""Re-verify the whole transparency log, and the cells derived from it, from what the database
holds.

Run after a restore from backup (``fedqi-aggregator log verify``), on a schedule
(docs/operations.md, "The evidence check"), or at any time: it trusts nothing derived. Every
leaf hash is recomputed from its leaf data, every stored envelope is hashed again and matched to
its leaf, each submission's signature is checked with its practice key and its leaf compared with
the stored submission row, every stored ``cells`` row is re-derived from the signed payload,
the tree is rebuilt from the leaves alone, every stored checkpoint's signature is checked with
the network's log public key and its root compared with the rebuilt tree at that size, and every
stored interior node is compared with the rebuilt one (those are what inclusion and consistency
proofs are served from).

Every failure is a :class:`~aggregator.log.checks.Finding` naming its check, and the leaf,
envelope, checkpoint, node or (practice, period, indicator) cell; the report lists them all.
The checks are the functions of :mod:`aggregator.log.checks`; :func:`verify_submission` runs
them for one submission, as the IG officer's dashboard page does.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from protocol import merkle
from protocol.keys import VerifyingKey

from ..db.models import Cell, Envelope, LogLeaf, LogNode, LogState, Network, PracticeKey
from ..db.models import Checkpoint as CheckpointRow
from ..db.models import Submission as SubmissionRow
from ..errors import AggregatorError
from . import checks, tree
from .checks import Finding


class LogIntegrityError(AggregatorError):
    """The stored log cannot be checked at all (no network)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 500)


@dataclass(frozen=True)
class LogReport:
    size: int
    root_hex: str
    envelopes_checked: int
    submissions_checked: int
    cells_checked: int
    checkpoints_checked: int
    nodes_checked: int
    latest_checkpoint_size: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root_hex": self.root_hex,
            "envelopes_checked": self.envelopes_checked,
            "submissions_checked": self.submissions_checked,
            "cells_checked": self.cells_checked,
            "checkpoints_checked": self.checkpoints_checked,
            "nodes_checked": self.nodes_checked,
            "latest_checkpoint_size": self.latest_checkpoint_size,
            "findings": [f.as_dict() for f in self.findings],
        }


def verify_log(
    session: Session, pinned: bytes | None = None, pinned_source: str = "the pinned key"
) -> LogReport:
    """Every check of ``log verify``. ``pinned``: the log's public key as the network knows it
    apart from this database (its key directory, or the key init printed); the checkpoints
    are checked against it, and a database whose stored key differs is a finding: a restored
    or edited database could carry a key of its own with checkpoints re-signed by it."""
    network = session.execute(select(Network)).scalar_one_or_none()
    if network is None:
        raise LogIntegrityError("the database holds no network (run `fedqi-aggregator init`)")
    stored_key = bytes(network.log_public_key)
    log_key = VerifyingKey.from_public_bytes(pinned if pinned is not None else stored_key)
    found: list[Finding] = []
    if pinned is not None and pinned != stored_key:
        found.append(
            Finding(
                "log-key",
                "network",
                f"the database's log public key is not {pinned_source}: its checkpoints are "
                f"checked against {pinned_source}",
            )
        )
    keys = {
        kid: bytes(pk)
        for kid, pk in session.execute(select(PracticeKey.kid, PracticeKey.public_key))
    }

    state = session.execute(select(LogState.size)).scalar_one_or_none() or 0
    tree = merkle.MemoryTree()
    envelopes = submissions = cells_checked = 0
    for row in session.execute(select(LogLeaf).order_by(LogLeaf.idx)).scalars():
        if row.idx != tree.size:
            found.append(
                Finding(
                    "leaf-order",
                    f"leaf {tree.size}",
                    f"leaf {tree.size} is missing (next stored leaf is {row.idx})",
                )
            )
            break
        data = bytes(row.leaf_data)
        if (f := checks.leaf_hash(row.idx, data, bytes(row.leaf_hash))) is not None:
            found.append(f)
        before = len(found)
        e, s, c = _check_leaf(session, keys, row.idx, data, found)
        _name_the_submission(session, data, found, before)
        envelopes, submissions, cells_checked = envelopes + e, submissions + s, cells_checked + c
        tree.append(merkle.leaf_hash(data))
    if tree.size != state:
        found.append(
            Finding(
                "leaf-order",
                "log_state",
                f"log_state says size {state} but {tree.size} leaves are stored",
            )
        )

    checkpoints = latest = 0
    for cp in session.execute(select(CheckpointRow).order_by(CheckpointRow.size)).scalars():
        if cp.size > tree.size:
            found.append(
                Finding(
                    "checkpoint-root",
                    f"checkpoint of size {cp.size}",
                    f"larger than the stored log ({tree.size} leaves)",
                )
            )
            continue
        rebuilt = tree.root(cp.size) if cp.size else None
        f = checks.checkpoint(
            cp.size, cp.note, bytes(cp.root), network.log_key_name, log_key, network.origin, rebuilt
        )
        if f is not None:
            found.append(f)
        checkpoints += 1
        latest = cp.size

    nodes = 0
    for level, idx, h in session.execute(select(LogNode.level, LogNode.idx, LogNode.hash)):
        start, end = idx << level, (idx + 1) << level
        where = f"log node ({level}, {idx})"
        if end > tree.size:
            found.append(Finding("tree-node", where, "covers leaves beyond the log"))
        elif tree.range_hash(start, end) != bytes(h):
            found.append(Finding("tree-node", where, "does not match the leaves"))
        nodes += 1

    root = tree.root() if tree.size else hashlib.sha256(b"").digest()
    return LogReport(
        size=tree.size,
        root_hex=root.hex(),
        envelopes_checked=envelopes,
        submissions_checked=submissions,
        cells_checked=cells_checked,
        checkpoints_checked=checkpoints,
        nodes_checked=nodes,
        latest_checkpoint_size=latest,
        findings=found,
    )


def _check_leaf(
    session: Session, keys: dict[str, bytes], idx: int, data: bytes, found: list[Finding]
) -> tuple[int, int, int]:
    """The checks of one leaf's envelope, submission and cells; (envelopes, submissions,
    cells rows) checked."""
    leaf = checks.leaf_json(idx, data)
    if isinstance(leaf, Finding):
        found.append(leaf)
        return 0, 0, 0
    sha = leaf.get("envelope_sha256")
    if not sha:
        return 0, 0, 0
    env = session.get(Envelope, sha)
    body = bytes(env.body) if env is not None else None
    if (f := checks.envelope_hash(idx, body, sha)) is not None:
        found.append(f)
        return 0, 0, 0
    assert env is not None and body is not None
    before = len(found)
    if (f := checks.envelope_leaf(idx, sha, env.leaf_index)) is not None:
        found.append(f)
    if (
        leaf.get("payload_sha256")
        and (f := checks.payload_hash(idx, body, leaf["payload_sha256"])) is not None
    ):
        found.append(f)
    if leaf.get("type") != "submission":
        return 1, 0, 0
    kid = str(leaf.get("kid"))
    if (f := checks.signature(idx, body, kid, keys.get(kid))) is not None:
        found.append(f)
    sub = session.get(SubmissionRow, leaf.get("submission_id"))
    if (f := checks.leaf_submission(idx, leaf, sub)) is not None:
        found.append(f)
    if sub is None or len(found) > before:
        return 1, 0, 0
    signed = checks.signed_submission(idx, body)
    if isinstance(signed, Finding):
        found.append(signed)
        return 1, 1, 0
    rows = list(session.scalars(select(Cell).where(Cell.submission_id == sub.submission_id)))
    found.extend(checks.cells(sub, signed, rows))
    return 1, 1, len(rows)


def _name_the_submission(session: Session, data: bytes, found: list[Finding], since: int) -> None:
    """Give the findings of one leaf from ``since`` on the practice and period of the stored
    submission the leaf names, so that the benchmarks built on it are rechecked (an envelope
    that no longer verifies makes every indicator of that period suspect, not only one)."""
    if len(found) == since:
        return
    leaf = checks.leaf_json(-1, data)
    sub = (
        session.get(SubmissionRow, leaf.get("submission_id"))
        if isinstance(leaf, dict) and leaf.get("type") == "submission"
        else None
    )
    if sub is None:
        return
    period = f"{sub.period_start}..{sub.period_end}"
    for i in range(since, len(found)):
        if found[i].period is None:
            found[i] = replace(found[i], practice=sub.practice_ods, period=period)


#: In :func:`groups_with_differences`, every indicator of the period.
EVERY_INDICATOR = "*"


def groups_with_differences(findings: list[Finding]) -> dict[tuple[str, str], set[str]]:
    """(period start, end) -> indicators whose stored cells may not be the signed ones: those a
    ``cells`` finding names, and :data:`EVERY_INDICATOR` for a period whose submission's
    envelope, signature or leaf failed a check."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for f in findings:
        if f.period:
            start, end = f.period.split("..")
            out[(start, end)].add(
                f.indicator if f.check == "cells" and f.indicator else EVERY_INDICATOR
            )
    return out


class CheckResult(NamedTuple):
    """One named check of one submission: passed or not, and what it found."""

    name: str
    ok: bool
    detail: str


def verify_submissions(
    session: Session,
    subs: Sequence[SubmissionRow],
    checkpoint: CheckpointRow | None,
    log_key_name: str,
    log_key: VerifyingKey,
) -> list[list[CheckResult]]:
    """:func:`verify_submission` for each of ``subs`` (a page of the payload audit), with what
    they read fetched together: their leaves, envelopes and keys in one query each (into the
    session, where each check's ``session.get`` finds them), their stored cells in one, and the
    checkpoint's signature verified once. The same checks, the same results."""
    if not subs:
        return []
    ids = [s.submission_id for s in subs]
    held = [
        *session.scalars(select(LogLeaf).where(LogLeaf.idx.in_([s.leaf_index for s in subs]))),
        *session.scalars(
            select(Envelope).where(Envelope.sha256.in_({s.envelope_sha256 for s in subs}))
        ),
        *session.scalars(select(PracticeKey).where(PracticeKey.kid.in_({s.kid for s in subs}))),
    ]
    cells: dict[str, list[Cell]] = {i: [] for i in ids}
    for c in session.scalars(select(Cell).where(Cell.submission_id.in_(ids))):
        cells[c.submission_id].append(c)
    signed = (
        checks.checkpoint(
            checkpoint.size, checkpoint.note, bytes(checkpoint.root), log_key_name, log_key
        )
        if checkpoint is not None
        else None
    )
    proofs = (
        tree.inclusion_proofs(
            session, [s.leaf_index for s in subs if s.leaf_index < checkpoint.size], checkpoint.size
        )
        if checkpoint is not None
        else {}
    )
    out = [
        verify_submission(session, s, checkpoint, log_key_name, log_key,
                          cells=cells[s.submission_id], checkpoint_finding=signed,
                          proof=proofs.get(s.leaf_index))
        for s in subs
    ]  # fmt: skip
    del held  # kept referenced until every check has read them from the session
    return out


_UNSET: Any = object()


def verify_submission(
    session: Session,
    sub: SubmissionRow,
    checkpoint: CheckpointRow | None,
    log_key_name: str,
    log_key: VerifyingKey,
    *,
    cells: Sequence[Cell] | None = None,
    checkpoint_finding: Finding | None = _UNSET,
    proof: Sequence[bytes] | None = None,
) -> list[CheckResult]:
    """The named checks ``log verify`` runs, for one submission: leaf hash from its JSON,
    envelope hash, payload hash, signature, leaf against the stored submission, the stored cells
    re-derived from the signed payload, inclusion of the leaf (hashed from its JSON) in
    ``checkpoint`` (the latest) and the checkpoint's signature. A check whose input an earlier
    one found wanting is not run. ``cells`` (the submission's stored cells) and
    ``checkpoint_finding`` (the checkpoint's own check) and ``proof`` (the leaf's inclusion proof
    in ``checkpoint``), when given, are used instead of reading and checking them again
    (:func:`verify_submissions`)."""
    out: list[CheckResult] = []

    def record(name: str, finding: Finding | None, ok_text: str) -> bool:
        out.append(
            CheckResult(name, finding is None, ok_text if finding is None else finding.detail)
        )
        return finding is None

    idx = sub.leaf_index
    leaf_row = session.get(LogLeaf, idx)
    if leaf_row is None:
        return [CheckResult("leaf-hash", False, f"leaf {idx} is not stored")]
    data = bytes(leaf_row.leaf_data)
    record(
        "leaf-hash",
        checks.leaf_hash(idx, data, bytes(leaf_row.leaf_hash)),
        "the leaf's hash is recomputed from its JSON",
    )
    leaf = checks.leaf_json(idx, data)
    if isinstance(leaf, Finding):
        record("leaf-json", leaf, "")
        return out
    env = session.get(Envelope, sub.envelope_sha256)
    body = bytes(env.body) if env is not None else None
    if not record(
        "envelope-hash",
        checks.envelope_hash(idx, body, sub.envelope_sha256),
        "SHA-256 of the stored bytes matches",
    ):
        return out
    assert body is not None
    key = session.get(PracticeKey, sub.kid)
    record(
        "payload-hash",
        checks.payload_hash(idx, body, str(leaf.get("payload_sha256"))),
        "the payload hashes to the leaf's payload_sha256",
    )
    record(
        "signature",
        checks.signature(idx, body, sub.kid, bytes(key.public_key) if key else None),
        f"Ed25519 signature by {sub.kid[:12]}… verifies",
    )
    record(
        "leaf-submission",
        checks.leaf_submission(idx, leaf, sub),
        "the leaf names this submission, practice, key and seq",
    )
    signed = checks.signed_submission(idx, body)
    if isinstance(signed, Finding):
        record("cells", signed, "")
    else:
        rows = (
            list(cells)
            if cells is not None
            else list(session.scalars(select(Cell).where(Cell.submission_id == sub.submission_id)))
        )
        diffs = checks.cells(sub, signed, rows)
        detail = "; ".join(f"{d.indicator}: {d.detail}" for d in diffs[:5])
        out.append(
            CheckResult("cells", not diffs, detail or "every stored cell is the signed payload's")
        )
    if checkpoint is None or idx >= checkpoint.size:
        out.append(CheckResult("inclusion", False, f"no checkpoint covers leaf {idx} yet"))
        return out
    record(
        "inclusion",
        checks.inclusion(
            idx,
            checkpoint.size,
            data,
            list(proof)
            if proof is not None
            else tree.inclusion_proof(session, idx, checkpoint.size),
            bytes(checkpoint.root),
        ),
        f"leaf {idx} is in the tree of size {checkpoint.size}",
    )
    record(
        "checkpoint-signature",
        checks.checkpoint(
            checkpoint.size, checkpoint.note, bytes(checkpoint.root), log_key_name, log_key
        )
        if checkpoint_finding is _UNSET
        else checkpoint_finding,
        "signed by the log key",
    )
    return out
