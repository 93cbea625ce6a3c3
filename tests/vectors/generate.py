"""Generate the fedqi protocol golden vectors (``make vectors``).

Everything is deterministic: keys come from fixed seeds (SHA-256 of a label: test keys only,
never use them anywhere else), nonces are derived from labels, times are fixed. Running this
again must reproduce the committed JSON files byte for byte (tests/vectors/test_vectors.py).

    python tests/vectors/generate.py [--out DIR]      # default: this directory

Files:
  keys.json        the vector keys: seed, public key, JWK, kid, checkpoint key ID
  catalogue.json   a small catalogue signed by the network key
  enrol.json       an enrol envelope signed by the new practice key
  submission.json  a submission envelope
  rotate.json      a rotate envelope signed by the old and the new key (two signatures)
  receipt.json     the aggregator's receipt for the submission, with its log and checkpoint
  checkpoint.json  signed checkpoint notes (log key alone, and with a witness cosignature)
  merkle.json      the CT reference leaves: roots, every inclusion and consistency proof to 8
  invalid.json     envelopes every verifier must reject, each with the error class expected
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protocol.canonical import canonical_json, model_bytes, sha256_hex
from protocol.catalogue import (
    AgeBand,
    All,
    Catalogue,
    CodeEntry,
    Codelist,
    CodelistSource,
    DisclosurePolicy,
    HasCode,
    Indicator,
    LatestValue,
    OnRegister,
    Window,
)
from protocol.checkpoint import Checkpoint, cosign_note, note_key_id, sign_checkpoint
from protocol.envelope import Envelope, EnvelopeSignature, pae, payload_type, sign_envelope
from protocol.keys import SigningKey
from protocol.merkle import MemoryTree, leaf_hash
from protocol.submission import (
    CatalogueRef,
    Cell,
    CodelistRef,
    Count,
    Enrol,
    IndicatorProvenance,
    Period,
    Provenance,
    Receipt,
    Rotate,
    Stratum,
    Submission,
)

HERE = Path(__file__).resolve().parent
AUD = "network.example"
PRACTICE = "A81001"
IAT = 1_793_000_000  # 2026-10-26T10:13:20Z
LOG_ORIGIN = "fedqi.network.example/log/v1"
WITNESS_NAME = "witness.example/w1"
KEY_LABELS = ("practice-old", "practice-new", "network", "aggregator-log", "witness")
CT_LEAVES = (
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)


def vector_key(label: str) -> SigningKey:
    """A deterministic TEST key: the seed is SHA-256 of a public label."""
    return SigningKey.from_private_bytes(
        hashlib.sha256(f"fedqi vector key {label}".encode()).digest()
    )


def vector_nonce(label: str) -> str:
    raw = hashlib.sha256(f"fedqi vector nonce {label}".encode()).digest()[:16]
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def vector_uuid(label: str) -> str:
    h = bytearray(hashlib.sha256(f"fedqi vector uuid {label}".encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x40  # version 4 layout
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _vector_codelist(cl_id: str, code: str, title: str) -> Codelist:
    source = CodelistSource(
        cluster="TEST",
        publisher_id="fedqi-vectors",
        version="1",
        file="golden vector",
        file_sha1="0" * 40,
        repository="fedqi tests/vectors",
        commit="0000000",
        rows=1,
    )
    entry = CodeEntry(system="snomedct", code=code, term=title)
    return Codelist.of(cl_id, title, [entry], source)


def sample_catalogue() -> Catalogue:
    bp = _vector_codelist("systolic_bp", "271649006", "Systolic blood pressure")
    hyp = _vector_codelist("hypertension", "38341003", "Hypertension")
    smoking = _vector_codelist("smoking_status", "77176002", "Smoking status recorded")
    return Catalogue(
        id="vector-catalogue",
        version=1,
        title="Golden-vector catalogue",
        age_bands=(
            AgeBand(label="0-39", min=0, max=39),
            AgeBand(label="40-79", min=40, max=79),
            AgeBand(label="80+", min=80),
        ),
        disclosure=DisclosurePolicy(name="default"),
        codelists=(bp, hyp, smoking),
        indicators=(
            Indicator(
                id="HYP_BP",
                version=1,
                title="Hypertension: latest systolic BP 140 or less",
                rationale="Blood pressure control in people with hypertension.",
                population=OnRegister(codelist="hypertension"),
                numerator=LatestValue(
                    codelist="systolic_bp", window=Window(months=12), op="<=", value=140
                ),
            ),
            Indicator(
                id="SMOK_REC",
                version=2,
                title="Smoking status recorded",
                rationale="Smoking status recorded in the last 24 months.",
                population=All(of=(HasCode(codelist="hypertension"),)),
                numerator=HasCode(codelist="smoking_status", window=Window(months=24)),
                strata=(),
            ),
        ),
    )


def _count(value: int | None, status: str) -> Count:
    return Count(status=status, value=value)  # type: ignore[arg-type]


def sample_submission(practice_kid: str, catalogue: Catalogue) -> Submission:
    def cell(ind: str, band: str, sex: str, den: Count, num: Count, exc: Count) -> Cell:
        stratum = Stratum(age_band=band, sex=sex)  # type: ignore[arg-type]
        return Cell(indicator=ind, stratum=stratum, denominator=den, numerator=num, exclusions=exc)

    cells = [
        cell(
            "HYP_BP",
            "0-39",
            "F",
            _count(None, "suppressed"),
            _count(None, "suppressed"),
            _count(0, "zero"),
        ),
        cell(
            "HYP_BP",
            "40-79",
            "F",
            _count(60, "rounded"),
            _count(45, "rounded"),
            _count(None, "suppressed"),
        ),
        cell(
            "HYP_BP",
            "40-79",
            "M",
            _count(75, "rounded"),
            _count(50, "rounded"),
            _count(10, "rounded"),
        ),
        cell(
            "HYP_BP", "all", "all", _count(141, "exact"), _count(97, "exact"), _count(12, "exact")
        ),
        cell(
            "SMOK_REC", "all", "all", _count(141, "exact"), _count(120, "exact"), _count(0, "zero")
        ),
    ]
    cells.sort(key=lambda c: c.key)
    return Submission(
        aud=AUD,
        practice=PRACTICE,
        kid=practice_kid,
        submission_id=vector_uuid("submission"),
        seq=1,
        iat=IAT,
        nonce=vector_nonce("submission"),
        period=Period.month(2026, 9),
        catalogue=CatalogueRef(
            id=catalogue.id, version=catalogue.version, sha256=catalogue.sha256()
        ),
        provenance=Provenance(
            agent_version="0.1.0",
            extract_time=IAT - 600,
            source="sqlite",
            disclosure_policy=sha256_hex(model_bytes(catalogue.disclosure)),
            indicators=tuple(
                IndicatorProvenance(
                    id=ind.id,
                    version=ind.version,
                    codelists=tuple(
                        CodelistRef(id=cl, sha256=catalogue.codelist(cl).sha256())
                        for cl in sorted(ind.codelist_ids())
                    ),
                )
                for ind in catalogue.indicators
            ),
        ),
        cells=tuple(cells),
    )


def sample_enrol(key: SigningKey) -> Enrol:
    return Enrol(
        aud=AUD,
        practice=PRACTICE,
        token=vector_nonce("enrolment token") + "TOKEN",
        jwk=key.public.jwk(),
        agent_version="0.1.0",
        iat=IAT - 86_400,
        nonce=vector_nonce("enrol"),
    )


def sample_rotate(old: SigningKey, new: SigningKey) -> Rotate:
    return Rotate(
        aud=AUD,
        practice=PRACTICE,
        old_kid=old.kid,
        new_jwk=new.public.jwk(),
        seq=2,
        iat=IAT + 3600,
        nonce=vector_nonce("rotate"),
    )


def _text(data: bytes) -> str:
    return data.decode("utf-8")


def _message_vector(
    kind: str, payload: bytes, env: Envelope, signers: Sequence[str]
) -> dict[str, Any]:
    return {
        "kind": kind,
        "payloadType": env.payloadType,
        "payload": _text(payload),
        "payload_sha256": sha256_hex(payload),
        "pae_sha256": sha256_hex(pae(env.payloadType, payload)),
        "signers": list(signers),
        "envelope": _text(env.to_bytes()),
        "envelope_sha256": sha256_hex(env.to_bytes()),
    }


def _signed(
    kind: str, payload: bytes, labels: Sequence[str], keys: dict[str, SigningKey]
) -> tuple[Envelope, dict[str, Any]]:
    env = sign_envelope(kind, payload, [keys[label] for label in labels])
    return env, _message_vector(kind, payload, env, labels)


def _leaf_data(kind: str, envelope_sha256: str) -> bytes:
    # Illustrative leaf data for the vector log; the aggregator defines the real leaf format.
    return canonical_json({"envelope_sha256": envelope_sha256, "type": kind})


def _resign(env: Envelope, ptype: str, payload: bytes, key: SigningKey) -> bytes:
    """An envelope over arbitrary (possibly bad) payloadType/payload, properly signed."""
    sig = EnvelopeSignature(
        keyid=key.kid, sig=base64.b64encode(key.sign(pae(ptype, payload))).decode()
    )
    bad = Envelope(payloadType=ptype, payload=base64.b64encode(payload).decode(), signatures=(sig,))
    return bad.to_bytes()


def build() -> dict[str, Any]:
    """Every vector file's content, by file name."""
    keys = {label: vector_key(label) for label in KEY_LABELS}
    old, new, log_key, witness = (
        keys["practice-old"],
        keys["practice-new"],
        keys["aggregator-log"],
        keys["witness"],
    )
    files: dict[str, Any] = {}
    files["keys.json"] = {
        label: {
            "seed_hex": key.private_bytes().hex(),
            "public_hex": key.public.public_bytes().hex(),
            "jwk": key.public.jwk().model_dump(mode="json"),
            "kid": key.kid,
            "note_key_id_hex": note_key_id(
                LOG_ORIGIN if label == "aggregator-log" else WITNESS_NAME, key.public
            ).hex()
            if label in ("aggregator-log", "witness")
            else None,
        }
        for label, key in keys.items()
    }

    catalogue = sample_catalogue()
    _, files["catalogue.json"] = _signed("catalogue", catalogue.to_bytes(), ["network"], keys)
    enrol_env, files["enrol.json"] = _signed(
        "enrol", sample_enrol(old).to_bytes(), ["practice-old"], keys
    )
    submission = sample_submission(old.kid, catalogue)
    sub_env, files["submission.json"] = _signed(
        "submission", submission.to_bytes(), ["practice-old"], keys
    )
    rot_env, files["rotate.json"] = _signed(
        "rotate", sample_rotate(old, new).to_bytes(), ["practice-old", "practice-new"], keys
    )

    # The vector log: two other leaves, then the enrol, the submission and the rotation.
    leaves = [
        _leaf_data("filler", sha256_hex(b"other practice 1")),
        _leaf_data("filler", sha256_hex(b"other practice 2")),
        _leaf_data("enrol", sha256_hex(enrol_env.to_bytes())),
        _leaf_data("submission", sha256_hex(sub_env.to_bytes())),
        _leaf_data("rotate", sha256_hex(rot_env.to_bytes())),
    ]
    tree = MemoryTree.from_leaf_hashes([leaf_hash(d) for d in leaves])
    index, size = 3, 4  # the receipt is issued when the submission is appended
    cp = Checkpoint(origin=LOG_ORIGIN, size=size, root=tree.root(size))
    note = sign_checkpoint(cp, LOG_ORIGIN, log_key)
    receipt = Receipt(
        aud=AUD,
        message_type="submission",
        submission_id=submission.submission_id,
        envelope_sha256=sha256_hex(sub_env.to_bytes()),
        leaf_index=index,
        leaf_hash=tree.leaf(index).hex(),
        tree_size=size,
        inclusion_proof=tuple(h.hex() for h in tree.inclusion_proof(index, size)),
        checkpoint=note,
        iat=IAT + 1,
    )
    _, receipt_vector = _signed("receipt", receipt.to_bytes(), ["aggregator-log"], keys)
    receipt_vector["log"] = {
        "origin": LOG_ORIGIN,
        "leaf_data": [_text(d) for d in leaves],
        "leaf_hashes": [tree.leaf(i).hex() for i in range(tree.size)],
        "roots": {str(n): tree.root(n).hex() for n in range(tree.size + 1)},
        "consistency_4_to_5": [h.hex() for h in tree.consistency_proof(4, 5)],
    }
    files["receipt.json"] = receipt_vector

    final = Checkpoint(origin=LOG_ORIGIN, size=tree.size, root=tree.root())
    final_note = sign_checkpoint(final, LOG_ORIGIN, log_key)
    files["checkpoint.json"] = {
        "origin": LOG_ORIGIN,
        "key_name": LOG_ORIGIN,
        "signer": "aggregator-log",
        "witness_name": WITNESS_NAME,
        "witness": "witness",
        "size": final.size,
        "root_hex": final.root.hex(),
        "body": final.body(),
        "note": final_note,
        "cosigned_note": cosign_note(final_note, WITNESS_NAME, witness),
    }

    ct = MemoryTree.from_leaf_hashes([leaf_hash(bytes.fromhex(x)) for x in CT_LEAVES])
    files["merkle.json"] = {
        "leaves_hex": list(CT_LEAVES),
        "leaf_hashes": [ct.leaf(i).hex() for i in range(ct.size)],
        "roots": {str(n): ct.root(n).hex() for n in range(ct.size + 1)},
        "inclusion": [
            {"index": i, "size": n, "proof": [h.hex() for h in ct.inclusion_proof(i, n)]}
            for n in range(1, ct.size + 1)
            for i in range(n)
        ],
        "consistency": [
            {"old": m, "new": n, "proof": [h.hex() for h in ct.consistency_proof(m, n)]}
            for n in range(1, ct.size + 1)
            for m in range(0, n + 1)
        ],
    }
    files["invalid.json"] = _invalid_vectors(sub_env, submission, old)
    return files


def _invalid_vectors(
    env: Envelope, submission: Submission, key: SigningKey
) -> list[dict[str, Any]]:
    good = env.to_bytes()
    payload = submission.to_bytes()
    ptype = payload_type("submission")
    value = json.loads(payload)
    cases: list[tuple[str, bytes, str]] = [
        ("not-json", good[:-1], "EnvelopeFormatError"),
        ("extra-field", good[:-1] + b',"x":1}', "EnvelopeFormatError"),
        ("whitespace-in-envelope", good.replace(b'","', b'", "', 1), "EnvelopeFormatError"),
        (
            "payload-byte-changed",
            _swap_payload(good, payload.replace(b'"seq":1', b'"seq":7')),
            "SignatureError",
        ),
        (
            "unknown-payload-type",
            _resign(env, "application/vnd.fedqi.sample.v1+json", payload, key),
            "PayloadTypeError",
        ),
        (
            "unknown-major-version",
            _resign(env, "application/vnd.fedqi.submission.v2+json", payload, key),
            "UnsupportedVersionError",
        ),
        (
            "payload-whitespace",
            _resign(env, ptype, json.dumps(value, sort_keys=True).encode(), key),
            "CanonicalFormError",
        ),
        (
            "payload-key-order",
            _resign(
                env,
                ptype,
                json.dumps(dict(reversed(list(value.items()))), separators=(",", ":")).encode(),
                key,
            ),
            "CanonicalFormError",
        ),
        (
            "payload-duplicate-key",
            _resign(env, ptype, payload.replace(b'"aud":', b'"aud":"x","aud":', 1), key),
            "CanonicalFormError",
        ),
        (
            "payload-explicit-null",
            _resign(env, ptype, canonical_json({**value, "supersedes": None}), key),
            "CanonicalFormError",
        ),
        (
            "payload-unknown-field",
            _resign(env, ptype, canonical_json({**value, "note": "free text"}), key),
            "SchemaError",
        ),
    ]
    return [
        {
            "name": name,
            "kind": "submission",
            "signer": "practice-old",
            "envelope": _text(data),
            "error": error,
        }
        for name, data, error in cases
    ]


def _swap_payload(envelope: bytes, payload: bytes) -> bytes:
    value = json.loads(envelope)
    value["payload"] = base64.b64encode(payload).decode()
    return canonical_json(value)


def dump(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=HERE, help="directory to write (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, value in build().items():
        (args.out / name).write_bytes(dump(value))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
