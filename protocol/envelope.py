"""DSSE envelopes: how every fedqi message is signed.

An envelope is the JSON object::

    {"payload": "<standard base64 of the payload bytes>",
     "payloadType": "application/vnd.fedqi.<kind>.v<major>+json",
     "signatures": [{"keyid": "<kid>", "sig": "<standard base64 of the Ed25519 signature>"}]}

Each signature is Ed25519 over the DSSE pre-authentication encoding (PAE)::

    "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where LEN is the ASCII decimal byte length. The signed bytes are exactly the payload bytes: no
canonicalisation happens on the verification path. The payload is separately required to be the
RFC 8785 form of its message model (:func:`open_payload`, or :func:`protocol.canonical.parse_canonical`).

The wire form of an envelope is unique: RFC 8785 JSON, padded standard base64, signatures sorted
by keyid with no keyid repeated. :meth:`Envelope.from_bytes` rejects any other form, so an
envelope's SHA-256 identifies it, and a retry resends identical bytes.

Errors: :class:`EnvelopeFormatError` (malformed envelope), :class:`PayloadTypeError` (unknown
message kind, or the wrong kind for the caller), :class:`UnsupportedVersionError` (a known kind at
a major version this code does not know), :class:`SignatureError` (a required signature missing or
not verifying, or an unexpected one present), :class:`VerificationError` (nothing to verify with).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

import pybase64
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from .canonical import canonical_json, parse_canonical, parse_int
from .errors import (
    EnvelopeFormatError,
    PayloadTypeError,
    SignatureError,
    UnsupportedVersionError,
    VerificationError,
)
from .keys import SigningKey, VerifyingKey

M = TypeVar("M", bound=BaseModel)

MESSAGE_KINDS = ("submission", "enrol", "rotate", "receipt", "catalogue")
#: The protocol major versions this code can decode, per message kind.
SUPPORTED_MAJORS: dict[str, tuple[int, ...]] = {kind: (1,) for kind in MESSAGE_KINDS}
#: Rotation needs two signatures; nothing needs more than a few.
MAX_SIGNATURES = 4

_PAYLOAD_TYPE = re.compile(r"application/vnd\.fedqi\.([a-z]+)\.v([1-9][0-9]{0,5})\+json")
_KID = re.compile(r"[A-Za-z0-9_\-]{43}")
_FIELDS = ("payload", "payloadType", "signatures")
_SIGNATURE_FIELDS = ("keyid", "sig")


def payload_type(kind: str, major: int = 1) -> str:
    """``application/vnd.fedqi.<kind>.v<major>+json`` for a known kind and supported major."""
    if kind not in MESSAGE_KINDS:
        raise PayloadTypeError(f"unknown message kind {kind!r}; known: {', '.join(MESSAGE_KINDS)}")
    if major not in SUPPORTED_MAJORS[kind]:
        raise UnsupportedVersionError(_version_message(kind, major))
    return f"application/vnd.fedqi.{kind}.v{major}+json"


def parse_payload_type(value: str) -> tuple[str, int]:
    """The (kind, major) of a payloadType on the allowlist.

    :class:`PayloadTypeError` if it is not of the fedqi form or names an unknown kind;
    :class:`UnsupportedVersionError` if the kind is known but the major version is not.
    """
    match = _PAYLOAD_TYPE.fullmatch(value)
    if match is None:
        raise PayloadTypeError(
            f"payloadType {value!r} is not on the allowlist "
            "(application/vnd.fedqi.<kind>.v<major>+json)"
        )
    kind, major = match.group(1), int(match.group(2))
    if kind not in MESSAGE_KINDS:
        raise PayloadTypeError(
            f"payloadType {value!r} names unknown message kind {kind!r}; "
            f"known: {', '.join(MESSAGE_KINDS)}"
        )
    if major not in SUPPORTED_MAJORS[kind]:
        raise UnsupportedVersionError(_version_message(kind, major))
    return kind, major


def _version_message(kind: str, major: int) -> str:
    known = ", ".join(f"v{m}" for m in SUPPORTED_MAJORS[kind])
    return (
        f"{kind} message is protocol major version v{major}, which this fedqi does not support "
        f"(supported: {known}); upgrade fedqi to read it"
    )


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: the exact bytes every signature covers."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def _b64decode(text: str, *, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 section 4, padded): one text per byte string.

    The text must be exactly ``b64encode`` of what it decodes to. Validating decoding (pybase64,
    SIMD: a submission's payload text is ~100 KB) refuses any character outside the alphabet;
    what it lets through that encoding would not give back is misplaced padding, a wrong length
    or non-zero unused bits in the last group, so the length is checked and only the last group
    is encoded again (a test checks this against encoding the whole text again)."""
    try:
        raw = pybase64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise EnvelopeFormatError(f"{what} is not standard base64") from None
    n, tail = len(raw), len(raw) % 3
    if len(text) != 4 * ((n + 2) // 3) or (
        tail and base64.b64encode(raw[n - tail :]).decode("ascii") != text[-4:]
    ):
        raise EnvelopeFormatError(f"{what} is not canonical padded standard base64")
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class EnvelopeSignature(BaseModel):
    """One DSSE signature: ``keyid`` is the signer's kid, ``sig`` standard base64."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keyid: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{43}$")]
    sig: Annotated[str, Field(max_length=200)]

    @model_validator(mode="after")
    def _sig_is_base64(self) -> EnvelopeSignature:
        try:
            _b64decode(self.sig, what=f"sig of keyid {self.keyid}")
        except EnvelopeFormatError as exc:  # pydantic reports ValueErrors as validation errors
            raise ValueError(str(exc)) from None
        return self

    def sig_bytes(self) -> bytes:
        return _b64decode(self.sig, what=f"sig of keyid {self.keyid}")


class Envelope(BaseModel):
    """A DSSE envelope. Build one with :func:`sign_envelope`, read one with :meth:`from_bytes`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    payloadType: Annotated[str, Field(min_length=1, max_length=200)]  # noqa: N815 (wire name)
    payload: str
    signatures: tuple[EnvelopeSignature, ...] = Field(min_length=1, max_length=MAX_SIGNATURES)
    # (payload text, its decoding), kept from validation: a submission's payload is ~75 KB.
    # Used only while ``payload`` is that very string (a model_copy with another payload
    # decodes again).
    _decoded: tuple[str, bytes] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _well_formed(self, info: ValidationInfo) -> Envelope:
        text, raw = (info.context or {}).get("payload", (None, None))
        if raw is None or text != self.payload:
            try:
                raw = _b64decode(self.payload, what="payload")
            except EnvelopeFormatError as exc:
                raise ValueError(str(exc)) from None
        self._decoded = (self.payload, raw)
        keyids = [s.keyid for s in self.signatures]
        if len(set(keyids)) != len(keyids):
            raise ValueError("duplicate keyid in signatures")
        if keyids != sorted(keyids):
            raise ValueError("signatures must be sorted by keyid")
        return self

    def to_bytes(self) -> bytes:
        """The RFC 8785 bytes: what goes on the wire and is stored."""
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse envelope bytes strictly; :class:`EnvelopeFormatError` names what is wrong.

        Does not look at the payloadType (see :attr:`kind` and :func:`open_envelope`) nor at
        the signatures' validity (see :func:`verify_envelope`).
        """
        value = _loads(data)
        if not isinstance(value, dict):
            raise EnvelopeFormatError("envelope is not a JSON object")
        _check_fields(value, _FIELDS, "envelope")
        if not isinstance(value["payloadType"], str):
            raise EnvelopeFormatError("envelope field 'payloadType' is not a string")
        if not isinstance(value["payload"], str):
            raise EnvelopeFormatError("envelope field 'payload' is not a string")
        payload_raw = _b64decode(value["payload"], what="payload")
        signatures = value["signatures"]
        if not isinstance(signatures, list):
            raise EnvelopeFormatError("envelope field 'signatures' is not a list")
        if not signatures:
            raise EnvelopeFormatError("envelope has no signatures")
        if len(signatures) > MAX_SIGNATURES:
            raise EnvelopeFormatError(
                f"envelope has {len(signatures)} signatures, at most {MAX_SIGNATURES} allowed"
            )
        keyids: list[str] = []
        for i, sig in enumerate(signatures):
            where = f"signatures[{i}]"
            if not isinstance(sig, dict):
                raise EnvelopeFormatError(f"{where} is not a JSON object")
            _check_fields(sig, _SIGNATURE_FIELDS, where)
            keyid, sig_text = sig["keyid"], sig["sig"]
            if not isinstance(keyid, str) or not _KID.fullmatch(keyid):
                raise EnvelopeFormatError(f"{where}.keyid is not a kid (43 base64url characters)")
            if not isinstance(sig_text, str):
                raise EnvelopeFormatError(f"{where}.sig is not a string")
            _b64decode(sig_text, what=f"{where}.sig")
            if keyid in keyids:
                raise EnvelopeFormatError(f"duplicate keyid {keyid} in signatures")
            keyids.append(keyid)
        if keyids != sorted(keyids):
            raise EnvelopeFormatError("signatures are not sorted by keyid")
        if not _is_canonical(value, data):
            raise EnvelopeFormatError("envelope bytes are not in RFC 8785 canonical form")
        try:
            return cls.model_validate(value, context={"payload": (value["payload"], payload_raw)})
        except ValidationError as exc:  # the checks above should have caught everything
            raise EnvelopeFormatError(f"envelope: {exc.errors()[0]['msg']}") from None

    def payload_bytes(self) -> bytes:
        if self._decoded is not None and self._decoded[0] is self.payload:
            return self._decoded[1]
        return _b64decode(self.payload, what="payload")

    @property
    def kind(self) -> str:
        """The message kind named by payloadType (:func:`parse_payload_type` errors)."""
        return parse_payload_type(self.payloadType)[0]

    @property
    def keyids(self) -> tuple[str, ...]:
        """The keyids of the signatures. Unauthenticated hints until :func:`verify_envelope`."""
        return tuple(s.keyid for s in self.signatures)


_HEAD = b'{"payload":"'


def _is_canonical(value: dict[str, Any], data: bytes) -> bool:
    """Whether ``data`` is the RFC 8785 form of the envelope ``value``, whose payload text has
    passed the strict base64 check.

    Without encoding the payload again: standard base64 text is letters, digits, ``+``, ``/``
    and ``=``, which JSON writes as they are, so its canonical form is the text in quotes; and
    ``payload`` sorts first of the envelope's keys. So ``data`` is canonical exactly when it
    starts ``{"payload":"<the text>"`` and the rest is the canonical form of the envelope with
    an empty payload, from its closing quote on (a test checks this against encoding it all)."""
    text = value["payload"].encode("ascii")
    empty = canonical_json({**value, "payload": ""})  # b'{"payload":""' + the rest
    head = len(_HEAD)
    return (
        empty[: head + 1] == _HEAD + b'"'
        and data[:head] == _HEAD
        and data[head : head + len(text)] == text
        and data[head + len(text) :] == empty[head:]
    )


_ENVELOPE_INT = parse_int(EnvelopeFormatError, "envelope JSON")


def _loads(data: bytes) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, val in pairs:
            if key in obj:
                raise EnvelopeFormatError(f"duplicate key {key!r} in envelope JSON")
            obj[key] = val
        return obj

    def no_constants(name: str) -> Any:
        raise EnvelopeFormatError(f"envelope JSON contains {name}")

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeFormatError("envelope is not valid UTF-8") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=no_duplicates,
            parse_constant=no_constants,
            parse_int=_ENVELOPE_INT,
        )
    except json.JSONDecodeError as exc:
        raise EnvelopeFormatError(f"envelope is not JSON: {exc}") from None
    except RecursionError:
        raise EnvelopeFormatError("envelope JSON is nested too deeply") from None


def _check_fields(obj: dict[str, Any], fields: tuple[str, ...], where: str) -> None:
    for name in fields:
        if name not in obj:
            raise EnvelopeFormatError(f"{where} is missing field {name!r}")
    for name in obj:
        if name not in fields:
            raise EnvelopeFormatError(f"{where} has unexpected field {name!r}")


def sign_envelope(kind: str, payload: bytes, keys: Sequence[SigningKey]) -> Envelope:
    """Sign ``payload`` as a ``kind`` message (current major version) with every key given."""
    if not keys:
        raise ValueError("sign_envelope needs at least one key")
    kids = [k.kid for k in keys]
    if len(set(kids)) != len(kids):
        raise ValueError("sign_envelope was given the same key twice")
    ptype = payload_type(kind)
    message = pae(ptype, payload)
    signatures = sorted(
        (EnvelopeSignature(keyid=k.kid, sig=_b64encode(k.sign(message))) for k in keys),
        key=lambda s: s.keyid,
    )
    return Envelope(payloadType=ptype, payload=_b64encode(payload), signatures=tuple(signatures))


def open_envelope(data: bytes, *, kind: str) -> Envelope:
    """Parse envelope bytes and require a ``kind`` message at a supported version."""
    env = Envelope.from_bytes(data)
    _check_kind(env, kind)
    return env


def _check_kind(env: Envelope, kind: str) -> None:
    if kind not in MESSAGE_KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    found = env.kind
    if found != kind:
        raise PayloadTypeError(f"payloadType {env.payloadType!r} is not a {kind} message")


def verify_envelope(env: Envelope, keys: Sequence[VerifyingKey], *, kind: str) -> bytes:
    """Verify that every key given signed ``env`` (a ``kind`` message); return the payload bytes.

    A rotation passes the old and the new key. Raises :class:`VerificationError` for an empty
    key list, :class:`PayloadTypeError`/:class:`UnsupportedVersionError` for the payloadType, and
    :class:`SignatureError` naming the kid when a key has no signature, its signature does not
    verify, or the envelope carries a signature from a key not given.
    """
    if not keys:
        raise VerificationError("no keys to verify against: an empty key list verifies nothing")
    kids = [k.kid for k in keys]
    if len(set(kids)) != len(kids):
        raise VerificationError("the same key was given twice to verify_envelope")
    _check_kind(env, kind)
    payload = env.payload_bytes()
    message = pae(env.payloadType, payload)
    by_kid = {s.keyid: s for s in env.signatures}
    for key in keys:
        sig = by_kid.get(key.kid)
        if sig is None:
            raise SignatureError(f"envelope has no signature for kid {key.kid}")
        key.verify(sig.sig_bytes(), message)
    unexpected = sorted(set(by_kid) - set(kids))
    if unexpected:
        raise SignatureError(f"envelope carries a signature from unexpected kid {unexpected[0]}")
    return payload


def open_payload(env: Envelope, keys: Sequence[VerifyingKey], *, kind: str, model: type[M]) -> M:
    """:func:`verify_envelope`, then parse the payload as ``model`` in canonical form only
    (:class:`CanonicalFormError`, :class:`SchemaError`)."""
    return parse_canonical(verify_envelope(env, keys, kind=kind), model)
