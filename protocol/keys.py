"""Ed25519 keys and their identifiers.

A key's ``kid`` is its RFC 7638 JWK thumbprint: base64url (no padding) of SHA-256 over the JSON
of the required members of its RFC 8037 OKP JWK, in lexicographic order and without whitespace::

    {"crv":"Ed25519","kty":"OKP","x":"<base64url of the 32 public key bytes>"}

Keys are thin wrappers over :mod:`cryptography`; a :class:`SigningKey` never shows its private
bytes in ``repr``.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from .errors import SchemaError, SignatureError
from .submission import Jwk

KEY_BYTES = 32
SIGNATURE_BYTES = 64


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, what: str) -> bytes:
    """Strict inverse of :func:`b64url_encode`: rejects padding, other alphabets and
    non-canonical trailing bits (so each byte string has exactly one text form)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"{what} is not base64url: {exc}") from None
    if b64url_encode(raw) != text:
        raise SchemaError(f"{what} is not canonical unpadded base64url")
    return raw


def jwk_thumbprint(jwk: Jwk) -> str:
    """The RFC 7638 thumbprint of an Ed25519 JWK: the key's ``kid``."""
    # Required members only, sorted, no whitespace: written out rather than serialised so the
    # bytes cannot drift with a JSON library's defaults (x is base64url: nothing to escape).
    members = f'{{"crv":"{jwk.crv}","kty":"{jwk.kty}","x":"{jwk.x}"}}'
    return b64url_encode(hashlib.sha256(members.encode("ascii")).digest())


class VerifyingKey:
    """An Ed25519 public key."""

    __slots__ = ("_key", "_raw", "_kid")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._kid = jwk_thumbprint(Jwk(x=b64url_encode(self._raw)))

    @classmethod
    def from_public_bytes(cls, raw: bytes) -> VerifyingKey:
        """From the 32 raw public key bytes; :class:`SchemaError` if they are not 32 bytes."""
        if len(raw) != KEY_BYTES:
            raise SchemaError(f"an Ed25519 public key is {KEY_BYTES} bytes, not {len(raw)}")
        return cls(Ed25519PublicKey.from_public_bytes(raw))

    @classmethod
    def from_jwk(cls, jwk: Jwk) -> VerifyingKey:
        """From an RFC 8037 OKP JWK; ``x`` must be canonical unpadded base64url."""
        return cls.from_public_bytes(b64url_decode(jwk.x, what="jwk.x"))

    def public_bytes(self) -> bytes:
        return self._raw

    def jwk(self) -> Jwk:
        return Jwk(x=b64url_encode(self._raw))

    @property
    def kid(self) -> str:
        """RFC 7638 thumbprint of :meth:`jwk`, base64url without padding (43 characters)."""
        return self._kid

    def verify(self, signature: bytes, data: bytes) -> None:
        """Return if ``signature`` is this key's Ed25519 signature over ``data``; otherwise raise
        :class:`SignatureError` naming the kid."""
        if len(signature) != SIGNATURE_BYTES:
            raise SignatureError(
                f"signature for kid {self._kid} is {len(signature)} bytes, "
                f"an Ed25519 signature is {SIGNATURE_BYTES}"
            )
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            raise SignatureError(f"signature does not verify for kid {self._kid}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyingKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"VerifyingKey(kid={self._kid!r})"


class SigningKey:
    """An Ed25519 private key."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._public = VerifyingKey(key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> SigningKey:
        """From the 32-byte Ed25519 seed (RFC 8032 private key)."""
        if len(raw) != KEY_BYTES:
            raise ValueError(f"an Ed25519 private key is {KEY_BYTES} bytes, not {len(raw)}")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def public(self) -> VerifyingKey:
        return self._public

    @property
    def kid(self) -> str:
        return self._public.kid

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature over ``data``."""
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"
