"""Checking the aggregator: receipts, checkpoints, inclusion and consistency proofs.

Everything the aggregator says is checked against the keys pinned at enrolment:

* a **receipt** must be signed by the log key, name this envelope's sha256 and the network, and
  carry a checkpoint signed by the log key whose root the receipt's inclusion proof reaches;
* every **checkpoint** the agent sees is checked for consistency with the ones it saw before
  (RFC 9162 consistency proofs fetched from the aggregator) and then recorded in the outbox;
* ``audit verify`` re-checks all of it against the aggregator's *current* checkpoint: every
  stored receipt's leaf must still be in the tree, every checkpoint ever seen must be a prefix of
  the current one, and the leaf hash the aggregator now stores for each receipt's index must
  still be the receipt's;
* before anything signed is posted, the aggregator at ``aggregator_url`` must show it is the one
  this agent enrolled with, by the check ``audit verify`` starts with (its current checkpoint
  under the pinned origin, signed by the pinned log key: :func:`check_enrolled_aggregator`);
  another network's aggregator is sent nothing.

A failure means the aggregator dropped or rewrote history (or answered with something forged):
it raises :class:`LogIntegrityError`, which the CLI prints loudly with a non-zero exit.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import AgentUserError, ConfigError, ExitCode, TransportError
from agent.home.keystore import Trust
from agent.outbound.outbox import Message, Outbox, SeenCheckpoint
from agent.outbound.transport import AggregatorClient, RefusedError
from protocol.canonical import sha256_hex
from protocol.checkpoint import Checkpoint, verify_checkpoint
from protocol.envelope import Envelope, open_envelope, verify_envelope
from protocol.errors import ProtocolError
from protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from protocol.submission import Receipt


class LogIntegrityError(AgentUserError):
    """The aggregator's log or receipts do not verify: history dropped, rewritten or forged."""

    exit_code = ExitCode.AUDIT_FAILED


@dataclass(frozen=True)
class VerifiedReceipt:
    receipt: Receipt
    checkpoint: Checkpoint
    note: str


def verify_receipt(
    data: bytes,
    trust: Trust,
    envelope_sha256: str,
    *,
    kind: str | None = None,
    submission_id: str | None = None,
) -> VerifiedReceipt:
    """Verify a receipt envelope offline against the pinned log key; raise if anything fails."""
    try:
        env = open_envelope(data, kind="receipt")
        payload = verify_envelope(env, [trust.log_key.verifying_key()], kind="receipt")
        receipt = Receipt.from_bytes(payload)
    except ProtocolError as exc:
        raise LogIntegrityError(
            f"receipt does not verify against the pinned log key: {exc}"
        ) from None
    if receipt.aud != trust.aud:
        raise LogIntegrityError(f"receipt is for network {receipt.aud!r}, not {trust.aud!r}")
    if receipt.envelope_sha256 != envelope_sha256:
        raise LogIntegrityError(
            f"receipt names envelope {receipt.envelope_sha256}, not the one sent ({envelope_sha256})"
        )
    if kind is not None and receipt.message_type != kind:
        raise LogIntegrityError(f"receipt is for a {receipt.message_type} message, not a {kind}")
    if submission_id is not None and receipt.submission_id != submission_id:
        raise LogIntegrityError(
            f"receipt names submission {receipt.submission_id}, not {submission_id}"
        )
    cp = _checkpoint(receipt.checkpoint, trust, "the receipt's checkpoint")
    if cp.size != receipt.tree_size:
        raise LogIntegrityError(
            f"receipt says tree size {receipt.tree_size} but its checkpoint has size {cp.size}"
        )
    try:
        verify_inclusion(
            receipt.leaf_index,
            receipt.tree_size,
            bytes.fromhex(receipt.leaf_hash),
            [bytes.fromhex(h) for h in receipt.inclusion_proof],
            cp.root,
        )
    except ProtocolError as exc:
        raise LogIntegrityError(f"receipt's inclusion proof fails: {exc}") from None
    return VerifiedReceipt(receipt, cp, receipt.checkpoint)


def _checkpoint(note: str, trust: Trust, what: str) -> Checkpoint:
    try:
        return verify_checkpoint(
            note, trust.log_key.name, trust.log_key.verifying_key(), origin=trust.log_origin
        )
    except ProtocolError as exc:
        raise LogIntegrityError(f"{what} does not verify: {exc}") from None


#: The problem type of the aggregator's answer to ``GET /v1/log/checkpoint`` while its log is
#: empty: no enrolment yet, so not the log this agent enrolled in (its enrolment is a leaf).
NO_CHECKPOINT = "urn:fedqi:problem:no-checkpoint"


def fetch_checkpoint(
    client: Any, trust: Trust, *, tries: int | None = None, consequence: str = ""
) -> tuple[str, Checkpoint]:
    """The aggregator's current checkpoint, which must name the pinned log origin and be signed
    by the pinned log key. One that does not (another log's origin, another key's signature, an
    empty log) is no evidence about this network's log: it means ``aggregator_url`` points to
    another aggregator than the one this agent enrolled with, a :class:`ConfigError` (exit 3)
    naming the URL, what it serves, what this agent enrolled with and what to do;
    ``consequence`` says what the caller therefore did not do ("nothing was sent"). ``tries``
    overrides the configured retries."""
    try:
        data = client.get_bytes("/v1/log/checkpoint", tries=tries)
    except RefusedError as exc:
        if exc.problem.get("type") == NO_CHECKPOINT:
            raise _another_aggregator(
                client, trust, "serves an empty log (no checkpoint yet)", consequence
            ) from None
        raise
    note = _note_text(data)
    # Another network's log (aggregator_url pointing at the wrong aggregator) is a configuration
    # mistake, not evidence against this network's log: say so before checking the signature.
    origin = note.split("\n", 1)[0]
    if trust.log_origin and origin != trust.log_origin:
        raise _another_aggregator(client, trust, f"serves the log {origin[:80]!r}", consequence)
    key = trust.log_key.verifying_key()
    try:
        return note, verify_checkpoint(note, trust.log_key.name, key, origin=trust.log_origin)
    except ProtocolError as exc:
        # Anyone can serve an unsigned note: it is no evidence about this network's log, only
        # that this server is not the aggregator the agent enrolled with.
        raise _another_aggregator(
            client,
            trust,
            f"does not sign its checkpoint with the pinned log key, kid {key.kid} ({exc})",
            consequence,
        ) from None


def _another_aggregator(client: Any, trust: Trust, serves: str, consequence: str) -> ConfigError:
    """``aggregator_url`` answers as another aggregator than the one this agent enrolled with:
    one line naming the URL, what it serves, what this agent enrolled with, and what to do."""
    where = str(getattr(client, "base_url", "the aggregator"))
    log = f"the log {trust.log_origin!r} of network" if trust.log_origin else "network"
    at = (
        f" (at {trust.aggregator_url})"
        if trust.aggregator_url.rstrip("/") != where.rstrip("/")
        else ""
    )
    then = f"; {consequence}" if consequence else ""
    return ConfigError(
        f"aggregator_url {where} {serves}, but this agent is enrolled in {log} {trust.aud!r}"
        f"{at}: it is another aggregator{then}. Set aggregator_url (in agent.toml, or "
        "FEDQI_AGENT_AGGREGATOR_URL) to the aggregator this agent enrolled with; `fedqi-agent "
        "trust show` lists the keys pinned at enrolment"
    )


def check_enrolled_aggregator(
    client: AggregatorClient, trust: Trust, *, consequence: str, tries: int | None = None
) -> None:
    """Before anything signed is posted: the aggregator at ``aggregator_url`` must be the one
    this agent enrolled with, checked as ``audit verify`` checks it (:func:`fetch_checkpoint`:
    one GET of the current checkpoint, its origin and signature against ``trust.json``). Raises
    :class:`ConfigError` (exit 3) when it answers as another aggregator; ``consequence`` says
    what the caller did not do. Asked once per client (``client.enrolled_here``): every later
    request of the client goes to the same URL. Not asked when the client has given up on the
    aggregator (every try of an earlier request failed): it sends nothing more either.

    An aggregator that cannot be asked raises :class:`TransportError` (exit 5): never
    :class:`RefusedError`, even for a 4xx answer to the GET, so that no caller marks a message
    refused for good over an answer that was not about the message."""
    if client.enrolled_here or client.unreachable is not None:
        return
    try:
        fetch_checkpoint(client, trust, tries=tries, consequence=consequence)
    except RefusedError as exc:
        raise TransportError(
            f"{client.base_url} could not be checked to be the aggregator this agent enrolled "
            f"with ({exc}); {consequence}"
        ) from None
    client.enrolled_here = True


def _note_text(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    if text.startswith("{"):
        try:
            value = json.loads(text)
            return str(value["checkpoint"])
        except (ValueError, KeyError, TypeError):
            raise TransportError(
                "/v1/log/checkpoint: the answer is not a fedqi checkpoint (check aggregator_url)"
            ) from None
    return text


def _hashes(value: Any, what: str) -> list[bytes]:
    if isinstance(value, dict):
        value = value.get("proof", value.get("hashes"))
    try:
        return [bytes.fromhex(h) for h in value]
    except (TypeError, ValueError):
        raise LogIntegrityError(f"{what}: the aggregator's proof is malformed") from None


def check_consistency(client: Any, old: Checkpoint, new: Checkpoint) -> None:
    """``old`` and ``new`` must be views of one append-only log: fetch and verify the proof."""
    first, second = (old, new) if old.size <= new.size else (new, old)
    if first.size == second.size:
        if first.root != second.root:
            raise LogIntegrityError(
                f"two checkpoints of size {first.size} have different roots: the log forked"
            )
        return
    if first.size == 0:
        return
    proof = _hashes(
        client.get_json("/v1/log/proof/consistency", {"old": first.size, "new": second.size}),
        "consistency proof",
    )
    try:
        verify_consistency(first.size, second.size, first.root, second.root, proof)
    except ProtocolError as exc:
        raise LogIntegrityError(
            f"checkpoint of size {first.size} is not a prefix of checkpoint of size "
            f"{second.size} ({exc}): the aggregator rewrote or forked its log"
        ) from None


def record_checkpoint(outbox: Outbox, client: Any, trust: Trust, note: str, cp: Checkpoint) -> None:
    """Check a newly seen checkpoint against the largest one seen before, then keep it."""
    seen = outbox.checkpoints()
    if seen:
        latest = max(seen, key=lambda c: c.size)
        check_consistency(client, _as_checkpoint(latest), cp)
    outbox.add_checkpoint(note, cp.origin, cp.size, cp.root)


def accept_receipt(
    outbox: Outbox, client: Any, trust: Trust, message: Message, answer: bytes
) -> Receipt:
    verified = verify_receipt(
        answer, trust, message.sha256, kind=message.kind, submission_id=message.submission_id
    )
    record_checkpoint(outbox, client, trust, verified.note, verified.checkpoint)
    outbox.add_receipt(message.id, answer)
    return verified.receipt


def _as_checkpoint(seen: SeenCheckpoint) -> Checkpoint:
    return Checkpoint(origin=seen.origin, size=seen.size, root=seen.root)


# --- audit verify -------------------------------------------------------------------------------


@dataclass
class AuditReport:
    checkpoint_size: int = 0
    receipts: int = 0
    checkpoints: int = 0
    passed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.receipts > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checkpoint_size": self.checkpoint_size,
            "receipts_checked": self.receipts,
            "checkpoints_checked": self.checkpoints,
            "passed": self.passed,
            "failures": self.failures,
        }


def read_token(path: Path) -> str:
    """The IG officer's API token from its file (owner-only on POSIX, like a key)."""
    try:
        if os.name == "posix" and path.stat().st_mode & 0o077:
            raise ConfigError(f"audit_token_file {path}: readable by others; chmod 600 it")
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"audit_token_file {path}: cannot read: {exc.strerror}") from None
    if not token or any(c.isspace() for c in token):
        raise ConfigError(f"audit_token_file {path}: does not hold one API token")
    return token


#: Roles whose token may read a practice's leaf data and stored envelopes (the aggregator's
#: users.service.can_read_envelope): the practice's own practice or IG officer users, or admin.
OWN_PRACTICE_ROLES = ("practice", "ig_officer")


def check_token_practice(client: Any, token: str, practice: str, where: str) -> None:
    """Ask the aggregator whose ``token`` is (``GET /v1/me``) and refuse (exit 3) one that is
    not this practice's: the aggregator would serve it only leaf hashes and no envelope, which
    is no evidence about the log. ``where`` names the token's file in the message."""
    me = client.get_json("/v1/me", token=token)
    if not isinstance(me, dict):
        raise TransportError("GET /v1/me: the aggregator's answer is not a user")
    role, owner = str(me.get("role") or "?"), me.get("practice")
    if role == "admin" or (role in OWN_PRACTICE_ROLES and owner == practice):
        return
    whose = f", practice {owner}" if owner else f", group {me['group']}" if me.get("group") else ""
    raise ConfigError(
        f"the audit token in {where} is not for practice {practice}: it belongs to "
        f"{str(me.get('name') or '?')!r} (role {role}{whose}), who may not read practice "
        f"{practice}'s leaf data and envelopes; put practice {practice}'s IG officer token in "
        "audit_token_file; nothing was verified"
    )


def verify_all(
    outbox: Outbox, client: Any, trust: Trust, *, token: str | None = None
) -> AuditReport:
    """Every stored receipt and checkpoint against the aggregator's current log; with an IG
    officer's ``token``, also each leaf's full data and the envelope bytes the aggregator keeps."""
    report = AuditReport()
    note, current = fetch_checkpoint(client, trust, consequence="nothing was verified")
    report.checkpoint_size = current.size
    report.passed.append(
        f"current checkpoint (size {current.size}) is signed by the pinned log key"
    )

    for seen in outbox.checkpoints():
        report.checkpoints += 1
        old = _as_checkpoint(seen)
        if old.size > current.size:
            report.failures.append(
                f"the log shrank: a checkpoint of size {old.size} was seen, now size "
                f"{current.size}: the aggregator dropped history"
            )
            continue
        # A TransportError (unreachable, refused, not an aggregator) ends the audit: it is no
        # evidence about the log, so it is never reported as a failed check.
        try:
            check_consistency(client, old, current)
        except LogIntegrityError as exc:
            report.failures.append(str(exc))

    for message in outbox.messages():
        if message.receipt is None:
            continue
        report.receipts += 1
        label = f"#{message.id} ({message.kind}{' ' + message.period if message.period else ''})"
        try:
            _verify_message(client, trust, message, current, label)
            if token is not None:
                _verify_stored(client, token, message)
        except LogIntegrityError as exc:
            report.failures.append(f"{label}: {exc}")
        else:
            extra = ", leaf data and stored envelope bytes" if token is not None else ""
            report.passed.append(
                f"{label}: receipt, inclusion in size {current.size}, leaf hash{extra}"
            )

    if report.ok:
        outbox.add_checkpoint(note, current.origin, current.size, current.root)
    return report


def _verify_message(
    client: Any, trust: Trust, message: Message, current: Checkpoint, label: str
) -> None:
    if sha256_hex(message.envelope) != message.sha256:
        raise LogIntegrityError("the stored envelope's bytes no longer match their sha256")
    assert message.receipt is not None
    verified = verify_receipt(
        message.receipt,
        trust,
        message.sha256,
        kind=message.kind,
        submission_id=message.submission_id,
    )
    r = verified.receipt
    if r.leaf_index >= current.size:
        raise LogIntegrityError(
            f"leaf {r.leaf_index} is beyond the current tree size {current.size}: dropped"
        )
    answer = client.get_json(
        "/v1/log/proof/inclusion", {"index": r.leaf_index, "size": current.size}
    )
    served = answer.get("leaf_hash") if isinstance(answer, dict) else None
    if served is not None and served != r.leaf_hash:
        raise LogIntegrityError(
            f"leaf {r.leaf_index}: the aggregator now stores leaf hash {served}, but its receipt "
            f"said {r.leaf_hash}: the stored leaf was modified"
        )
    proof = _hashes(answer, "inclusion proof")
    try:
        verify_inclusion(
            r.leaf_index, current.size, bytes.fromhex(r.leaf_hash), proof, current.root
        )
    except ProtocolError as exc:
        raise LogIntegrityError(
            f"leaf {r.leaf_index} is not in the current log of size {current.size} ({exc}): "
            "history was rewritten"
        ) from None


def _verify_stored(client: Any, token: str, message: Message) -> None:
    """With the IG officer's token: the leaf's full data still hashes to the receipt's leaf hash
    and names this envelope, and the aggregator's stored envelope is byte for byte ours."""
    assert message.receipt is not None
    receipt = Receipt.from_bytes(Envelope.from_bytes(message.receipt).payload_bytes())
    i = receipt.leaf_index
    entries = client.get_json("/v1/log/entries", {"start": i, "end": i + 1}, token=token)
    if (
        isinstance(entries, list)
        and len(entries) == 1
        and isinstance(entries[0], dict)
        and "leaf_data" not in entries[0]
        and entries[0].get("leaf_hash") == receipt.leaf_hash
    ):
        # The leaf's hash (already checked above) without its data: what the aggregator serves
        # a token that may not read this practice's data (an admin's, for a practice that is
        # not "named"). No evidence about the log, so not an audit failure.
        raise ConfigError(
            f"leaf {i}: the aggregator serves the audit token only this leaf's hash, not its "
            "data: the token may not read this practice's leaf data (put the practice's IG "
            "officer token in audit_token_file); audit verify stopped"
        )
    try:
        (entry,) = entries
        data = base64.b64decode(entry["leaf_data"], validate=True)
        leaf = json.loads(data)
    except (KeyError, TypeError, ValueError):
        raise LogIntegrityError(f"leaf {i}: the aggregator did not serve its data") from None
    if leaf_hash(data).hex() != receipt.leaf_hash:
        raise LogIntegrityError(
            f"leaf {i}: the stored leaf data no longer hashes to the receipt's leaf hash: "
            "the aggregator's copy was modified"
        )
    if leaf.get("envelope_sha256") not in (None, message.sha256):
        raise LogIntegrityError(
            f"leaf {i} names envelope {leaf.get('envelope_sha256')}, not {message.sha256}"
        )
    stored = client.get_bytes(f"/v1/envelopes/{message.sha256}", token=token)
    if stored != message.envelope:
        raise LogIntegrityError(
            f"the aggregator's stored envelope {message.sha256} differs from the bytes sent"
        )
