"""The committed golden vectors: regenerating them changes nothing, and each one verifies."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import protocol.errors
from protocol.canonical import parse_canonical, sha256_hex
from protocol.catalogue import Catalogue
from protocol.checkpoint import verify_checkpoint
from protocol.envelope import open_envelope, open_payload, verify_envelope
from protocol.errors import ProtocolError
from protocol.keys import SigningKey, VerifyingKey
from protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from protocol.submission import Enrol, Jwk, Receipt, Rotate, Submission

HERE = Path(__file__).resolve().parent
MODELS: dict[str, type[BaseModel]] = {
    "catalogue": Catalogue,
    "enrol": Enrol,
    "submission": Submission,
    "rotate": Rotate,
    "receipt": Receipt,
}


def load(name: str) -> Any:
    return json.loads((HERE / name).read_text(encoding="utf-8"))


def public(label: str) -> VerifyingKey:
    return VerifyingKey.from_public_bytes(bytes.fromhex(load("keys.json")[label]["public_hex"]))


def test_regeneration_reproduces_committed_files_byte_for_byte(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("fedqi_vector_generator", HERE / "generate.py")
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.main(["--out", str(tmp_path)]) == 0
    made = sorted(p.name for p in tmp_path.glob("*.json"))
    committed = sorted(p.name for p in HERE.glob("*.json"))
    assert made == committed
    for name in made:
        assert (tmp_path / name).read_bytes() == (HERE / name).read_bytes(), name


def test_keys_derive_from_their_seeds() -> None:
    for label, entry in load("keys.json").items():
        key = SigningKey.from_private_bytes(bytes.fromhex(entry["seed_hex"]))
        assert key.public.public_bytes().hex() == entry["public_hex"], label
        assert key.public.jwk() == Jwk.model_validate(entry["jwk"]), label
        assert key.kid == entry["kid"], label


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_message_vector_verifies(kind: str) -> None:
    vector = load(f"{kind}.json")
    data = vector["envelope"].encode("utf-8")
    assert sha256_hex(data) == vector["envelope_sha256"]
    env = open_envelope(data, kind=kind)
    assert env.payloadType == vector["payloadType"]
    keys = [public(label) for label in vector["signers"]]
    assert sorted(env.keyids) == sorted(k.kid for k in keys)
    payload = verify_envelope(env, keys, kind=kind)
    assert payload == vector["payload"].encode("utf-8")
    assert sha256_hex(payload) == vector["payload_sha256"]
    message = open_payload(env, keys, kind=kind, model=MODELS[kind])
    assert message.model_dump(mode="json", exclude_none=True) == json.loads(payload)


def test_messages_are_bound_to_each_other() -> None:
    keys = load("keys.json")
    catalogue = load("catalogue.json")
    submission = parse_canonical(load("submission.json")["payload"].encode(), Submission)
    assert submission.kid == keys["practice-old"]["kid"]
    assert submission.catalogue.sha256 == catalogue["payload_sha256"]
    enrol = parse_canonical(load("enrol.json")["payload"].encode(), Enrol)
    assert enrol.jwk.model_dump() == keys["practice-old"]["jwk"]
    rotate = parse_canonical(load("rotate.json")["payload"].encode(), Rotate)
    assert rotate.old_kid == keys["practice-old"]["kid"]
    assert rotate.new_jwk.model_dump() == keys["practice-new"]["jwk"]
    assert len(load("rotate.json")["signers"]) == 2


def test_receipt_proves_the_submission_is_in_the_log() -> None:
    vector = load("receipt.json")
    receipt = parse_canonical(vector["payload"].encode(), Receipt)
    submission = load("submission.json")
    assert receipt.envelope_sha256 == submission["envelope_sha256"]
    log = vector["log"]
    leaf_data = log["leaf_data"][receipt.leaf_index].encode()
    assert json.loads(leaf_data)["envelope_sha256"] == submission["envelope_sha256"]
    assert leaf_hash(leaf_data).hex() == receipt.leaf_hash
    cp = verify_checkpoint(receipt.checkpoint, log["origin"], public("aggregator-log"))
    assert (cp.origin, cp.size) == (log["origin"], receipt.tree_size)
    verify_inclusion(
        receipt.leaf_index,
        receipt.tree_size,
        bytes.fromhex(receipt.leaf_hash),
        [bytes.fromhex(h) for h in receipt.inclusion_proof],
        cp.root,
    )
    final = load("checkpoint.json")
    later = verify_checkpoint(final["note"], final["key_name"], public(final["signer"]))
    verify_consistency(
        cp.size,
        later.size,
        cp.root,
        later.root,
        [bytes.fromhex(h) for h in log["consistency_4_to_5"]],
    )


def test_checkpoint_vector_verifies() -> None:
    vector = load("checkpoint.json")
    cp = verify_checkpoint(vector["note"], vector["key_name"], public(vector["signer"]))
    assert (cp.size, cp.root.hex(), cp.body()) == (
        vector["size"],
        vector["root_hex"],
        vector["body"],
    )
    cosigned = vector["cosigned_note"]
    assert verify_checkpoint(cosigned, vector["key_name"], public(vector["signer"])) == cp
    assert verify_checkpoint(cosigned, vector["witness_name"], public(vector["witness"])) == cp


def test_merkle_vectors_verify() -> None:
    vector = load("merkle.json")
    hashes = [leaf_hash(bytes.fromhex(x)) for x in vector["leaves_hex"]]
    assert [h.hex() for h in hashes] == vector["leaf_hashes"]
    roots = {int(n): bytes.fromhex(r) for n, r in vector["roots"].items()}
    for case in vector["inclusion"]:
        proof = [bytes.fromhex(h) for h in case["proof"]]
        verify_inclusion(
            case["index"], case["size"], hashes[case["index"]], proof, roots[case["size"]]
        )
    for case in vector["consistency"]:
        proof = [bytes.fromhex(h) for h in case["proof"]]
        verify_consistency(case["old"], case["new"], roots[case["old"]], roots[case["new"]], proof)
    assert len(vector["inclusion"]) == 36 and len(vector["consistency"]) == 44


@pytest.mark.parametrize("case", load("invalid.json"), ids=lambda c: c["name"])
def test_invalid_vector_is_rejected_with_its_error(case: dict[str, Any]) -> None:
    expected = getattr(protocol.errors, case["error"])
    with pytest.raises(ProtocolError) as info:
        env = open_envelope(case["envelope"].encode("utf-8"), kind=case["kind"])
        open_payload(env, [public(case["signer"])], kind=case["kind"], model=MODELS[case["kind"]])
    assert type(info.value) is expected, info.value
