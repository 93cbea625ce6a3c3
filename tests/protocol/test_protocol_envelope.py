"""DSSE envelopes: PAE, strict parsing, verification, tampering, payload types and versions."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.canonical import canonical_json, parse_canonical
from protocol.envelope import (
    MAX_SIGNATURES,
    MESSAGE_KINDS,
    Envelope,
    EnvelopeSignature,
    open_envelope,
    open_payload,
    pae,
    parse_payload_type,
    payload_type,
    sign_envelope,
    verify_envelope,
)
from protocol.errors import (
    CanonicalFormError,
    EnvelopeFormatError,
    PayloadTypeError,
    ProtocolError,
    SchemaError,
    SignatureError,
    UnsupportedVersionError,
    VerificationError,
)
from protocol.keys import SigningKey
from protocol.submission import Enrol, Jwk, Receipt

EXAMPLES = 1000 if os.environ.get("FEDQI_LONG") == "1" else 50


def key(label: str) -> SigningKey:
    return SigningKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


OLD, NEW, OTHER = key("old"), key("new"), key("other")


def enrol_payload(signer: SigningKey = OLD) -> bytes:
    return Enrol(
        aud="network.example",
        practice="A81001",
        token="t" * 22,
        jwk=signer.public.jwk(),
        agent_version="0.1.0",
        iat=1_793_000_000,
        nonce="n" * 22,
    ).to_bytes()


def signed(ptype: str, payload: bytes, *keys: SigningKey) -> Envelope:
    """An envelope over any payloadType and payload bytes, properly signed (to reach the later
    checks with inputs sign_envelope would refuse)."""
    sigs = sorted(
        (
            EnvelopeSignature(
                keyid=k.kid, sig=base64.b64encode(k.sign(pae(ptype, payload))).decode()
            )
            for k in keys
        ),
        key=lambda s: s.keyid,
    )
    return Envelope(
        payloadType=ptype, payload=base64.b64encode(payload).decode(), signatures=tuple(sigs)
    )


def test_pae_matches_the_dsse_specification_example() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "


def test_payload_types_of_every_kind() -> None:
    for kind in MESSAGE_KINDS:
        ptype = payload_type(kind)
        assert ptype == f"application/vnd.fedqi.{kind}.v1+json"
        assert parse_payload_type(ptype) == (kind, 1)


def test_sign_verify_round_trip() -> None:
    payload = enrol_payload()
    env = sign_envelope("enrol", payload, [OLD])
    data = env.to_bytes()
    assert json.loads(data)["payloadType"] == "application/vnd.fedqi.enrol.v1+json"
    parsed = open_envelope(data, kind="enrol")
    assert parsed == env
    assert parsed.to_bytes() == data
    assert parsed.kind == "enrol"
    assert parsed.keyids == (OLD.kid,)
    assert verify_envelope(parsed, [OLD.public], kind="enrol") == payload
    enrol = open_payload(parsed, [OLD.public], kind="enrol", model=Enrol)
    assert enrol.jwk == OLD.public.jwk()


def test_rotate_needs_both_signatures() -> None:
    payload = b'{"v":1}'
    both = sign_envelope("rotate", payload, [NEW, OLD])
    assert both.keyids == tuple(sorted((OLD.kid, NEW.kid)))
    assert verify_envelope(both, [OLD.public, NEW.public], kind="rotate") == payload
    only_new = sign_envelope("rotate", payload, [NEW])
    with pytest.raises(SignatureError, match=f"no signature for kid {OLD.kid}"):
        verify_envelope(only_new, [OLD.public, NEW.public], kind="rotate")
    # A signature nobody asked for is not silently carried along.
    with pytest.raises(SignatureError, match=f"unexpected kid {NEW.kid}"):
        verify_envelope(both, [OLD.public], kind="rotate")


def test_empty_key_list_verifies_nothing() -> None:
    env = sign_envelope("enrol", enrol_payload(), [OLD])
    with pytest.raises(VerificationError, match="empty key list") as info:
        verify_envelope(env, [], kind="enrol")
    assert type(info.value) is VerificationError


def test_wrong_key_is_named() -> None:
    env = sign_envelope("enrol", enrol_payload(), [OLD])
    with pytest.raises(SignatureError, match=f"no signature for kid {OTHER.kid}"):
        verify_envelope(env, [OTHER.public], kind="enrol")
    # A signature under the right keyid made by another key.
    forged = Envelope(
        payloadType=env.payloadType,
        payload=env.payload,
        signatures=(
            EnvelopeSignature(
                keyid=OLD.kid,
                sig=base64.b64encode(OTHER.sign(pae(env.payloadType, enrol_payload()))).decode(),
            ),
        ),
    )
    with pytest.raises(SignatureError, match=f"does not verify for kid {OLD.kid}"):
        verify_envelope(forged, [OLD.public], kind="enrol")


def test_kind_must_match() -> None:
    data = sign_envelope("enrol", enrol_payload(), [OLD]).to_bytes()
    with pytest.raises(PayloadTypeError, match="is not a submission message"):
        open_envelope(data, kind="submission")
    with pytest.raises(PayloadTypeError, match="is not a submission message"):
        verify_envelope(Envelope.from_bytes(data), [OLD.public], kind="submission")


# --- each failure its own error class ----------------------------------------------------------


def _raised(data: bytes, kind: str = "enrol") -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        env = open_envelope(data, kind=kind)
        open_payload(env, [OLD.public], kind=kind, model=Enrol)
    return info.value


@pytest.mark.parametrize(
    "ptype",
    [
        "application/vnd.fedqi.evil.v1+json",
        "application/json",
        "application/vnd.fedqi.enrol.v1+json ",
        "application/vnd.fedqi.enrol.v01+json",
        "application/vnd.fedqi.enrol.V1+json",
        "application/vnd.fedqi.enrol.v1+xml",
    ],
)
def test_unknown_payload_type_is_a_payload_type_error(ptype: str) -> None:
    err = _raised(signed(ptype, enrol_payload(), OLD).to_bytes())
    assert type(err) is PayloadTypeError
    with pytest.raises(PayloadTypeError):
        parse_payload_type(ptype)


@pytest.mark.parametrize("major", [2, 3, 10])
def test_unknown_major_version_is_an_unsupported_version_error(major: int) -> None:
    ptype = f"application/vnd.fedqi.enrol.v{major}+json"
    err = _raised(signed(ptype, enrol_payload(), OLD).to_bytes())
    assert type(err) is UnsupportedVersionError
    assert f"v{major}" in str(err) and "supported: v1" in str(err) and "upgrade" in str(err)
    with pytest.raises(UnsupportedVersionError):
        payload_type("enrol", major)
    with pytest.raises(PayloadTypeError):
        payload_type("evil")


def _enrol_value() -> dict[str, object]:
    value = json.loads(enrol_payload())
    assert isinstance(value, dict)
    return value


NON_CANONICAL = {
    "whitespace": lambda: json.dumps(_enrol_value(), sort_keys=True).encode(),
    "trailing-newline": lambda: enrol_payload() + b"\n",
    "key-order": lambda: json.dumps(
        dict(reversed(list(_enrol_value().items()))), separators=(",", ":")
    ).encode(),
    "duplicate-key": lambda: enrol_payload().replace(b'"aud":', b'"aud":"x.example","aud":', 1),
    "escaped-character": lambda: enrol_payload().replace(b'"aud"', b'"\\u0061ud"', 1),
    "float-for-integer": lambda: enrol_payload().replace(b'"iat":1793000000', b'"iat":1.793e9'),
}


@pytest.mark.parametrize("case", sorted(NON_CANONICAL))
def test_non_canonical_payload_is_a_canonical_form_error(case: str) -> None:
    payload = NON_CANONICAL[case]()
    assert payload != enrol_payload()
    env = signed(payload_type("enrol"), payload, OLD)
    assert verify_envelope(env, [OLD.public], kind="enrol") == payload  # the signature is fine
    with pytest.raises(CanonicalFormError) as info:
        open_payload(env, [OLD.public], kind="enrol", model=Enrol)
    assert type(info.value) is CanonicalFormError


def _receipt_value() -> dict[str, object]:
    return {
        "aud": "network.example",
        "checkpoint": "note",
        "envelope_sha256": "0" * 64,
        "iat": 1,
        "inclusion_proof": [],
        "leaf_hash": "1" * 64,
        "leaf_index": 0,
        "message_type": "enrol",
        "status": "accepted",
        "tree_size": 1,
        "v": 1,
    }


def test_explicit_null_is_a_canonical_form_error() -> None:
    good = canonical_json(_receipt_value())
    assert parse_canonical(good, Receipt).submission_id is None
    with_null = canonical_json({**_receipt_value(), "submission_id": None})
    env = signed(payload_type("receipt"), with_null, OLD)
    with pytest.raises(CanonicalFormError, match="explicit nulls") as info:
        open_payload(env, [OLD.public], kind="receipt", model=Receipt)
    assert type(info.value) is CanonicalFormError


def test_unknown_payload_field_is_a_schema_error() -> None:
    extra = canonical_json({**_enrol_value(), "comment": "free text"})
    env = signed(payload_type("enrol"), extra, OLD)
    with pytest.raises(SchemaError, match="comment") as info:
        open_payload(env, [OLD.public], kind="enrol", model=Enrol)
    assert type(info.value) is SchemaError


# --- strict envelope parsing -------------------------------------------------------------------


def _good() -> dict[str, object]:
    value = json.loads(sign_envelope("enrol", enrol_payload(), [OLD]).to_bytes())
    assert isinstance(value, dict)
    return value


def _sig() -> dict[str, str]:
    sigs = _good()["signatures"]
    assert isinstance(sigs, list)
    return dict(sigs[0])


B64_SIG = base64.b64encode(b"\0" * 64).decode()
FORMAT_CASES: dict[str, tuple[bytes, str]] = {
    "not-json": (b'{"payload":', "not JSON"),
    "not-utf8": (b'{"payload":"\xff"}', "not valid UTF-8"),
    "not-object": (b"[]", "not a JSON object"),
    "missing-field": (
        canonical_json({k: v for k, v in _good().items() if k != "payload"}),
        "missing field 'payload'",
    ),
    "extra-field": (canonical_json({**_good(), "z": 1}), "unexpected field 'z'"),
    "duplicate-json-key": (b'{"payload":"","payload":""}', "duplicate key 'payload'"),
    "payload-not-string": (canonical_json({**_good(), "payload": 5}), "'payload' is not a string"),
    "bad-base64": (canonical_json({**_good(), "payload": "e30"}), "payload is not standard base64"),
    "base64url-payload": (
        canonical_json({**_good(), "payload": "-_-_"}),
        "payload is not standard base64",
    ),
    "non-canonical-base64": (
        canonical_json({**_good(), "payload": "e31="}),
        "not canonical padded",
    ),
    "no-signatures": (canonical_json({**_good(), "signatures": []}), "no signatures"),
    "signatures-not-list": (canonical_json({**_good(), "signatures": {}}), "not a list"),
    "too-many-signatures": (
        canonical_json(
            {**_good(), "signatures": [{"keyid": c * 43, "sig": B64_SIG} for c in "ABCDE"]}
        ),
        f"at most {MAX_SIGNATURES}",
    ),
    "duplicate-keyids": (
        canonical_json({**_good(), "signatures": [_sig(), _sig()]}),
        "duplicate keyid",
    ),
    "unsorted-keyids": (
        canonical_json(
            {
                **_good(),
                "signatures": [
                    {"keyid": "B" * 43, "sig": B64_SIG},
                    {"keyid": "A" * 43, "sig": B64_SIG},
                ],
            }
        ),
        "not sorted by keyid",
    ),
    "signature-extra-field": (
        canonical_json({**_good(), "signatures": [{**_sig(), "x": "y"}]}),
        "signatures[0] has unexpected field 'x'",
    ),
    "signature-missing-keyid": (
        canonical_json({**_good(), "signatures": [{"sig": B64_SIG}]}),
        "signatures[0] is missing field 'keyid'",
    ),
    "keyid-not-kid": (
        canonical_json({**_good(), "signatures": [{**_sig(), "keyid": "short"}]}),
        "keyid is not a kid",
    ),
    "sig-bad-base64": (
        canonical_json({**_good(), "signatures": [{**_sig(), "sig": "!!"}]}),
        "signatures[0].sig is not standard base64",
    ),
    "whitespace": (json.dumps(_good()).encode(), "not in RFC 8785 canonical form"),
    "nan": (b'{"payload":NaN}', "NaN"),
}


@pytest.mark.parametrize("case", sorted(FORMAT_CASES))
def test_malformed_envelope_is_an_envelope_format_error(case: str) -> None:
    data, message = FORMAT_CASES[case]
    with pytest.raises(
        EnvelopeFormatError, match=message.replace("[", "\\[").replace("]", "\\]")
    ) as info:
        Envelope.from_bytes(data)
    assert type(info.value) is EnvelopeFormatError


def test_tampered_byte_at_every_position_is_rejected() -> None:
    data = sign_envelope("enrol", b'{"v":1}', [OLD]).to_bytes()
    assert len(data) < 300
    for position in range(len(data)):
        for mask in (0x01, 0x02, 0x20, 0x80):
            tampered = bytearray(data)
            tampered[position] ^= mask
            # VerificationError subclasses, or UnsupportedVersionError for "v1" -> "v3".
            with pytest.raises(ProtocolError):
                verify_envelope(
                    open_envelope(bytes(tampered), kind="enrol"), [OLD.public], kind="enrol"
                )


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None)
@given(st.data())
def test_tampered_byte_anywhere_in_a_real_envelope_is_rejected(data: st.DataObject) -> None:
    env_bytes = sign_envelope("rotate", enrol_payload(), [OLD, NEW]).to_bytes()
    position = data.draw(st.integers(0, len(env_bytes) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != env_bytes[position]))
    tampered = env_bytes[:position] + bytes([value]) + env_bytes[position + 1 :]
    with pytest.raises(ProtocolError):
        env = open_envelope(tampered, kind="rotate")
        verify_envelope(env, [OLD.public, NEW.public], kind="rotate")


def test_sign_envelope_refuses_misuse() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        sign_envelope("enrol", b"{}", [])
    with pytest.raises(ValueError, match="same key twice"):
        sign_envelope("enrol", b"{}", [OLD, OLD])
    with pytest.raises(PayloadTypeError):
        sign_envelope("evil", b"{}", [OLD])


def test_envelope_model_rejects_bad_values_directly() -> None:
    good = _good()
    with pytest.raises(ValueError, match="duplicate keyid"):
        Envelope.model_validate({**good, "signatures": [_sig(), _sig()]})
    with pytest.raises(ValueError):
        Envelope.model_validate({**good, "payload": "%%%"})
    assert Jwk(x=OLD.public.jwk().x) == OLD.public.jwk()
