"""Ed25519 keys and RFC 7638 kids, checked against the RFCs' own examples."""

from __future__ import annotations

import hashlib

import pytest

from protocol.errors import SchemaError, SignatureError
from protocol.keys import SigningKey, VerifyingKey, b64url_decode, jwk_thumbprint
from protocol.submission import Jwk

# RFC 8032 section 7.1 TEST 1 (the RFC 8037 appendix A key).
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# RFC 8037 appendix A.2 (public JWK) and A.3 (its RFC 7638 thumbprint).
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_rfc8032_key_and_signature() -> None:
    key = SigningKey.from_private_bytes(RFC8032_SEED)
    assert key.public.public_bytes() == RFC8032_PUBLIC
    assert key.sign(b"") == RFC8032_SIG_EMPTY
    key.public.verify(RFC8032_SIG_EMPTY, b"")


def test_kid_is_the_rfc8037_thumbprint() -> None:
    key = SigningKey.from_private_bytes(RFC8032_SEED)
    assert key.public.jwk() == Jwk(x=RFC8037_X)
    assert jwk_thumbprint(Jwk(x=RFC8037_X)) == RFC8037_THUMBPRINT
    assert key.kid == key.public.kid == RFC8037_THUMBPRINT


def test_thumbprint_is_sha256_of_the_required_members() -> None:
    key = SigningKey.generate()
    members = f'{{"crv":"Ed25519","kty":"OKP","x":"{key.public.jwk().x}"}}'.encode()
    assert b64url_decode(key.kid, what="kid") == hashlib.sha256(members).digest()
    assert len(key.kid) == 43


def test_keys_round_trip_through_bytes_and_jwk() -> None:
    key = SigningKey.generate()
    again = SigningKey.from_private_bytes(key.private_bytes())
    assert again.kid == key.kid
    assert VerifyingKey.from_jwk(key.public.jwk()) == key.public
    assert VerifyingKey.from_public_bytes(key.public.public_bytes()) == key.public
    assert hash(VerifyingKey.from_jwk(key.public.jwk())) == hash(key.public)


def test_verify_failure_names_the_kid() -> None:
    key = SigningKey.generate()
    sig = key.sign(b"data")
    with pytest.raises(SignatureError, match=f"does not verify for kid {key.kid}"):
        key.public.verify(sig, b"datA")
    with pytest.raises(SignatureError, match="is 63 bytes"):
        key.public.verify(sig[:-1], b"data")


def test_bad_key_material_is_rejected() -> None:
    with pytest.raises(SchemaError, match="32 bytes, not 31"):
        VerifyingKey.from_public_bytes(b"\x01" * 31)
    with pytest.raises(ValueError, match="32 bytes, not 33"):
        SigningKey.from_private_bytes(b"\x01" * 33)
    # 43 base64url characters carry 258 bits: the 2 spare bits must be zero.
    last = RFC8037_X[-1]
    other = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    twin = RFC8037_X[:-1] + other[other.index(last) + 1]
    with pytest.raises(SchemaError, match="not canonical"):
        VerifyingKey.from_jwk(Jwk(x=twin))


def test_signing_key_repr_hides_the_private_key() -> None:
    key = SigningKey.from_private_bytes(RFC8032_SEED)
    assert RFC8032_SEED.hex() not in repr(key)
    assert key.kid in repr(key)
