"""Interop both ways with securesystemslib's independent DSSE implementation.

securesystemslib matches signatures to keys by keyid (its issue #416), so its keys carry the
fedqi kid; its PAE counts len(str) of the payloadType, so payload types stay ASCII.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import rfc8785
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from protocol.envelope import (
    Envelope,
    open_envelope,
    open_payload,
    pae,
    payload_type,
    sign_envelope,
    verify_envelope,
)
from protocol.errors import EnvelopeFormatError, SignatureError
from protocol.keys import SigningKey
from protocol.submission import Enrol


def key(label: str) -> SigningKey:
    return SigningKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


OLD, NEW = key("interop old"), key("interop new")


def sslib_key(k: SigningKey) -> SSlibKey:
    return SSlibKey.from_crypto(k._key.public_key(), keyid=k.kid)  # noqa: SLF001 (test access)


def sslib_signer(k: SigningKey) -> CryptoSigner:
    return CryptoSigner(k._key, sslib_key(k))  # noqa: SLF001


def enrol_payload() -> bytes:
    return Enrol(
        aud="network.example",
        practice="A81001",
        token="t" * 22,
        jwk=OLD.public.jwk(),
        agent_version="0.1.0",
        iat=1_793_000_000,
        nonce="n" * 22,
    ).to_bytes()


def test_securesystemslib_verifies_fedqi_envelopes() -> None:
    payload = enrol_payload()
    env = sign_envelope("enrol", payload, [OLD])
    theirs = SslibEnvelope.from_dict(json.loads(env.to_bytes()))
    assert theirs.payload == payload
    assert theirs.payload_type == "application/vnd.fedqi.enrol.v1+json"
    assert theirs.pae() == b"DSSEv1 35 application/vnd.fedqi.enrol.v1+json %d %b" % (
        len(payload),
        payload,
    )
    assert theirs.pae() == pae(env.payloadType, payload)
    accepted = theirs.verify([sslib_key(OLD)], 1)
    assert set(accepted) == {OLD.kid}


def test_securesystemslib_verifies_a_fedqi_rotation_with_both_keys() -> None:
    env = sign_envelope("rotate", b'{"v":1}', [OLD, NEW])
    theirs = SslibEnvelope.from_dict(json.loads(env.to_bytes()))
    assert set(theirs.verify([sslib_key(OLD), sslib_key(NEW)], 2)) == {OLD.kid, NEW.kid}


def test_securesystemslib_rejects_a_tampered_fedqi_envelope() -> None:
    env = json.loads(sign_envelope("enrol", enrol_payload(), [OLD]).to_bytes())
    env["payloadType"] = payload_type("submission")
    with pytest.raises(SslibVerificationError):
        SslibEnvelope.from_dict(env).verify([sslib_key(OLD)], 1)


def test_fedqi_verifies_securesystemslib_envelopes() -> None:
    payload = enrol_payload()
    theirs = SslibEnvelope(payload, payload_type("enrol"), {})
    theirs.sign(sslib_signer(OLD))
    data = rfc8785.dumps(theirs.to_dict())  # fedqi's wire form is RFC 8785 JSON
    env = open_envelope(data, kind="enrol")
    assert verify_envelope(env, [OLD.public], kind="enrol") == payload
    assert open_payload(env, [OLD.public], kind="enrol", model=Enrol).practice == "A81001"
    # Same key, same bytes: Ed25519 is deterministic, so both implementations agree exactly.
    assert env == sign_envelope("enrol", payload, [OLD])


def test_fedqi_verifies_a_securesystemslib_rotation() -> None:
    theirs = SslibEnvelope(b'{"v":1}', payload_type("rotate"), {})
    for k in sorted((OLD, NEW), key=lambda k: k.kid):  # fedqi's wire form sorts by keyid
        theirs.sign(sslib_signer(k))
    env = Envelope.from_bytes(rfc8785.dumps(theirs.to_dict()))
    assert verify_envelope(env, [OLD.public, NEW.public], kind="rotate") == b'{"v":1}'


def test_fedqi_rejects_a_securesystemslib_envelope_signed_by_another_key() -> None:
    theirs = SslibEnvelope(enrol_payload(), payload_type("enrol"), {})
    impostor = key("impostor")
    theirs.sign(
        CryptoSigner(impostor._key, SSlibKey.from_crypto(impostor._key.public_key(), keyid=OLD.kid))
    )  # noqa: SLF001
    env = Envelope.from_bytes(rfc8785.dumps(theirs.to_dict()))
    with pytest.raises(SignatureError, match=f"does not verify for kid {OLD.kid}"):
        verify_envelope(env, [OLD.public], kind="enrol")


def test_fedqi_requires_the_canonical_wire_form() -> None:
    theirs = SslibEnvelope(enrol_payload(), payload_type("enrol"), {})
    theirs.sign(sslib_signer(OLD))
    with pytest.raises(EnvelopeFormatError, match="RFC 8785"):
        Envelope.from_bytes(json.dumps(theirs.to_dict(), indent=1).encode())
