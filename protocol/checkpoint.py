"""Signed checkpoints: C2SP tlog-checkpoint bodies in the C2SP signed-note format.

A checkpoint note is::

    <origin>\\n
    <tree size, decimal>\\n
    <root hash, standard base64>\\n
    \\n
    — <key name> <base64(key ID || Ed25519 signature)>\\n      (one line per signer)

The signature covers the body (the first three lines, final newline included). The line starts
with an em dash (U+2014) and a space. For Ed25519 the 4-byte key ID is
``SHA-256(key name || 0x0A || 0x01 || public key)[:4]``. A key name is non-empty and has no
whitespace and no ``+``. fedqi checkpoints carry no extension lines.

Verification requires a valid signature from the named key and ignores well-formed lines from
other keys (e.g. witness cosignatures); a line from the named key that does not verify rejects
the note. Every failure is a :class:`CheckpointError` saying what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from .errors import CheckpointError, SignatureError
from .keys import SigningKey, VerifyingKey

HASH_BYTES = 32
ED25519_SIGNATURE_TYPE = b"\x01"
MAX_NOTE_CHARS = 64 * 1024
MAX_SIGNATURE_LINES = 100
_SIG_PREFIX = "\u2014 "
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin line, its size and its RFC 9162 root hash."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL.search(self.origin):
            raise CheckpointError("checkpoint origin must be one non-empty line of text")
        if not 0 <= self.size < 2**64:
            raise CheckpointError(f"checkpoint size {self.size} is not a uint64")
        if len(self.root) != HASH_BYTES:
            raise CheckpointError(f"checkpoint root is {len(self.root)} bytes, not {HASH_BYTES}")

    def body(self) -> str:
        """The note text the signatures cover."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n"


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" for c in name) or _CONTROL.search(name):
        raise CheckpointError(f"key name {name!r} must be non-empty, without spaces or '+'")


def note_key_id(key_name: str, key: VerifyingKey) -> bytes:
    """The 4-byte signed-note key ID of an Ed25519 key under ``key_name``."""
    _check_key_name(key_name)
    data = key_name.encode("utf-8") + b"\n" + ED25519_SIGNATURE_TYPE + key.public_bytes()
    return hashlib.sha256(data).digest()[:4]


def signature_line(body: str, key_name: str, key: SigningKey) -> str:
    """One signed-note signature line (newline included) by ``key`` over ``body``."""
    blob = note_key_id(key_name, key.public) + key.sign(body.encode("utf-8"))
    return f"{_SIG_PREFIX}{key_name} {base64.b64encode(blob).decode('ascii')}\n"


def sign_checkpoint(cp: Checkpoint, key_name: str, key: SigningKey) -> str:
    """The signed note text of ``cp``, signed by ``key`` under ``key_name``."""
    body = cp.body()
    return body + "\n" + signature_line(body, key_name, key)


def cosign_note(note: str, key_name: str, key: SigningKey) -> str:
    """Add a signature line (e.g. a witness's) to an already signed note. The note's existing
    signatures are not checked here: verify it first."""
    body, _ = _split_note(note)
    return note + signature_line(body, key_name, key)


def _split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(body, [(key name, key ID || signature)]) of a syntactically valid signed note."""
    if not isinstance(note, str):
        raise CheckpointError("checkpoint note must be text")
    if len(note) > MAX_NOTE_CHARS:
        raise CheckpointError(f"checkpoint note is longer than {MAX_NOTE_CHARS} characters")
    bad = _CONTROL.search(note)
    if bad:
        raise CheckpointError(f"checkpoint note has a control character at offset {bad.start()}")
    if not note.endswith("\n"):
        raise CheckpointError("checkpoint note does not end with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise CheckpointError("checkpoint note has no blank line before its signatures")
    body, sig_block = note[: cut + 1], note[cut + 2 :]
    lines = sig_block[:-1].split("\n") if sig_block else []
    if not lines:
        raise CheckpointError("checkpoint note has no signature lines")
    if len(lines) > MAX_SIGNATURE_LINES:
        raise CheckpointError(f"checkpoint note has more than {MAX_SIGNATURE_LINES} signatures")
    sigs: list[tuple[str, bytes]] = []
    for number, line in enumerate(lines, start=1):
        where = f"signature line {number}"
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError(f"{where} does not start with an em dash and a space")
        parts = line[len(_SIG_PREFIX) :].split(" ")
        if len(parts) != 2:
            raise CheckpointError(f"{where} is not '— <key name> <signature>'")
        name, text = parts
        _check_key_name(name)
        try:
            blob = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise CheckpointError(f"{where} signature is not standard base64") from None
        if base64.b64encode(blob).decode("ascii") != text:
            raise CheckpointError(f"{where} signature is not canonical standard base64")
        if len(blob) < 5:
            raise CheckpointError(f"{where} signature is too short for a key ID and a signature")
        sigs.append((name, blob))
    return body, sigs


def verify_checkpoint(
    note: str, key_name: str, key: VerifyingKey, *, origin: str | None = None
) -> Checkpoint:
    """Verify a checkpoint note's signature by ``key`` under ``key_name`` and return the
    checkpoint it commits to. With ``origin``, the origin line must equal it."""
    body, sigs = _split_note(note)
    key_id = note_key_id(key_name, key)
    mine = [blob[4:] for name, blob in sigs if name == key_name and blob[:4] == key_id]
    if not mine:
        raise CheckpointError(
            f"checkpoint has no signature by key {key_name} (key ID {key_id.hex()})"
        )
    for sig in mine:
        try:
            key.verify(sig, body.encode("utf-8"))
        except SignatureError:
            raise CheckpointError(
                f"checkpoint signature by key {key_name} (key ID {key_id.hex()}) does not verify"
            ) from None
    cp = _parse_body(body)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint origin {cp.origin!r} is not the expected {origin!r}")
    return cp


def _parse_body(body: str) -> Checkpoint:
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint body needs three lines: origin, size, root hash")
    if len(lines) > 3:
        raise CheckpointError("checkpoint body has extension lines, which fedqi does not use")
    origin, size_text, root_text = lines
    if not _SIZE.fullmatch(size_text):
        raise CheckpointError(f"checkpoint size {size_text!r} is not a decimal without leading 0")
    try:
        root = base64.b64decode(root_text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CheckpointError("checkpoint root hash is not standard base64") from None
    if base64.b64encode(root).decode("ascii") != root_text:
        raise CheckpointError("checkpoint root hash is not canonical standard base64")
    return Checkpoint(origin=origin, size=int(size_text), root=root)
