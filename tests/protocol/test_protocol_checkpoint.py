"""C2SP signed-note checkpoints: the Go sumdb/note reference example, round trips, rejections."""

from __future__ import annotations

import base64
import hashlib

import pytest

from protocol.checkpoint import (
    Checkpoint,
    cosign_note,
    note_key_id,
    sign_checkpoint,
    signature_line,
    verify_checkpoint,
)
from protocol.errors import CheckpointError
from protocol.keys import SigningKey
from protocol.merkle import MemoryTree, leaf_hash

# The example of golang.org/x/mod/sumdb/note (and the C2SP signed-note ecosystem): signer key
# "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz", whose last
# field is base64(0x01 || Ed25519 seed).
GO_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_LINE = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"

ORIGIN = "fedqi.network.example/log/v1"


def key(label: str) -> SigningKey:
    return SigningKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


LOG, WITNESS, OTHER = key("log"), key("witness"), key("other")


def checkpoint(size: int = 5) -> Checkpoint:
    tree = MemoryTree.from_leaf_hashes([leaf_hash(bytes([i])) for i in range(size)])
    return Checkpoint(origin=ORIGIN, size=size, root=tree.root())


def test_go_sumdb_note_example_signature_line() -> None:
    go_key = SigningKey.from_private_bytes(GO_SEED)
    assert note_key_id("PeterNeumann", go_key.public).hex() == "c74f20a3"
    assert signature_line(GO_TEXT, "PeterNeumann", go_key) == GO_LINE


def test_note_layout() -> None:
    cp = checkpoint()
    note = sign_checkpoint(cp, ORIGIN, LOG)
    body = f"{ORIGIN}\n5\n{base64.b64encode(cp.root).decode()}\n"
    assert note.startswith(body + "\n\u2014 " + ORIGIN + " ")
    assert note.endswith("\n") and note.count("\n") == 5
    blob = base64.b64decode(note.splitlines()[-1].split(" ")[2])
    expected_id = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + LOG.public.public_bytes()).digest()[
        :4
    ]
    assert blob[:4] == expected_id
    LOG.public.verify(blob[4:], body.encode())


def test_round_trip_and_origin_check() -> None:
    cp = checkpoint()
    note = sign_checkpoint(cp, ORIGIN, LOG)
    assert verify_checkpoint(note, ORIGIN, LOG.public) == cp
    assert verify_checkpoint(note, ORIGIN, LOG.public, origin=ORIGIN) == cp
    with pytest.raises(CheckpointError, match="not the expected"):
        verify_checkpoint(note, ORIGIN, LOG.public, origin="other.example/log")


def test_empty_tree_checkpoint() -> None:
    cp = Checkpoint(origin=ORIGIN, size=0, root=hashlib.sha256(b"").digest())
    assert verify_checkpoint(sign_checkpoint(cp, ORIGIN, LOG), ORIGIN, LOG.public) == cp


def test_witness_cosignature_is_ignored_by_log_verifier_and_checked_by_witness_verifier() -> None:
    note = cosign_note(sign_checkpoint(checkpoint(), ORIGIN, LOG), "witness.example/w1", WITNESS)
    assert verify_checkpoint(note, ORIGIN, LOG.public).size == 5
    assert verify_checkpoint(note, "witness.example/w1", WITNESS.public).size == 5


def test_missing_signature_from_the_named_key() -> None:
    note = sign_checkpoint(checkpoint(), ORIGIN, OTHER)
    with pytest.raises(CheckpointError, match=f"no signature by key {ORIGIN}"):
        verify_checkpoint(note, ORIGIN, LOG.public)
    with pytest.raises(CheckpointError, match="no signature by key"):
        verify_checkpoint(sign_checkpoint(checkpoint(), "other-name", LOG), ORIGIN, LOG.public)


def test_bad_signature_from_the_named_key_rejects_the_note() -> None:
    good = sign_checkpoint(checkpoint(), ORIGIN, LOG)
    # Sign a different body but keep the checkpoint's body: right key ID, wrong signature.
    forged_line = signature_line(checkpoint(6).body(), ORIGIN, LOG)
    forged = checkpoint().body() + "\n" + forged_line
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(forged, ORIGIN, LOG.public)
    # Even if another, valid line from the same key is present.
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(good + forged_line, ORIGIN, LOG.public)


def test_changed_body_fails() -> None:
    cp = checkpoint()
    note = sign_checkpoint(cp, ORIGIN, LOG)
    for old, new in [("\n5\n", "\n6\n"), (ORIGIN + "\n", ORIGIN + "x\n")]:
        with pytest.raises(CheckpointError, match="does not verify|no signature"):
            verify_checkpoint(note.replace(old, new, 1), ORIGIN, LOG.public)


def test_every_single_byte_change_is_rejected() -> None:
    note = sign_checkpoint(checkpoint(), ORIGIN, LOG)
    data = note.encode()
    for position in range(len(data)):
        tampered = bytearray(data)
        tampered[position] ^= 0x01
        try:
            text = tampered.decode()
        except UnicodeDecodeError:
            continue  # not text at all: cannot even be handed over as a note
        with pytest.raises(CheckpointError):
            verify_checkpoint(text, ORIGIN, LOG.public)


def _resigned(body: str) -> str:
    return body + "\n" + signature_line(body, ORIGIN, LOG)


ROOT64 = base64.b64encode(bytes(32)).decode()
MALFORMED = {
    "no-final-newline": (sign_checkpoint(checkpoint(), ORIGIN, LOG)[:-1], "newline"),
    "no-blank-line": (f"{ORIGIN}\n5\n{ROOT64}\n— x y\n", "no blank line"),
    "no-signatures": (f"{ORIGIN}\n5\n{ROOT64}\n\n", "no signature lines"),
    "hyphen-not-em-dash": (f"{ORIGIN}\n5\n{ROOT64}\n\n- {ORIGIN} AAAAAAAA\n", "em dash"),
    "signature-not-base64": (f"{ORIGIN}\n5\n{ROOT64}\n\n— {ORIGIN} ***\n", "not standard base64"),
    "signature-too-short": (f"{ORIGIN}\n5\n{ROOT64}\n\n— {ORIGIN} AAAA\n", "too short"),
    "control-character": (f"{ORIGIN}\n5\t\n{ROOT64}\n\n— {ORIGIN} AAAA\n", "control character"),
    "too-many-lines": (f"{ORIGIN}\n5\n{ROOT64}\n\n" + "— w AAAAAAAA\n" * 101, "more than 100"),
    "two-line-body": (_resigned(f"{ORIGIN}\n5\n"), "three lines"),
    "extension-line": (_resigned(f"{ORIGIN}\n5\n{ROOT64}\nextra\n"), "extension lines"),
    "leading-zero-size": (_resigned(f"{ORIGIN}\n05\n{ROOT64}\n"), "leading 0"),
    "negative-size": (_resigned(f"{ORIGIN}\n-5\n{ROOT64}\n"), "not a decimal"),
    "root-not-base64": (_resigned(f"{ORIGIN}\n5\n{ROOT64[:-2]}\n"), "not standard base64"),
    "root-wrong-length": (
        _resigned(f"{ORIGIN}\n5\n{base64.b64encode(bytes(31)).decode()}\n"),
        "31 bytes",
    ),
    "empty-origin": (_resigned(f"\n5\n{ROOT64}\n"), "no blank line|origin"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_notes_are_rejected(case: str) -> None:
    note, message = MALFORMED[case]
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(note, ORIGIN, LOG.public)


def test_bad_checkpoint_values_and_key_names() -> None:
    with pytest.raises(CheckpointError, match="origin"):
        Checkpoint(origin="two\nlines", size=1, root=bytes(32))
    with pytest.raises(CheckpointError, match="uint64"):
        Checkpoint(origin=ORIGIN, size=-1, root=bytes(32))
    with pytest.raises(CheckpointError, match="key name"):
        sign_checkpoint(checkpoint(), "has space", LOG)
    with pytest.raises(CheckpointError, match="key name"):
        sign_checkpoint(checkpoint(), "has+plus", LOG)
