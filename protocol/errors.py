"""Errors raised by the protocol package.

The tree::

    ProtocolError
     +-- VerificationError          a check on a message, key, proof or checkpoint failed
     |    +-- EnvelopeFormatError   the envelope is not a well-formed DSSE envelope
     |    +-- PayloadTypeError      payloadType is not on the allowlist
     |    +-- SignatureError        no signature verifies for the key(s) required
     |    +-- CanonicalFormError    payload bytes differ from their RFC 8785 form
     |    +-- SchemaError           the payload does not fit the message's model
     |    +-- ProofError            a Merkle inclusion or consistency proof does not verify
     |    +-- CheckpointError       a signed checkpoint is malformed or its signature fails
     +-- UnsupportedVersionError    a protocol major version this code does not know
     +-- DisclosureError            cells break the disclosure policy, or a policy loosens another

Every verification function returns nothing (or the verified object) and raises one of these,
with a message naming the check that failed; none returns a bare bool.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`protocol`."""

    #: A short stable machine-readable code, e.g. for RFC 9457 problem types.
    code: str = "protocol-error"


class VerificationError(ProtocolError):
    code = "verification-failed"


class EnvelopeFormatError(VerificationError):
    code = "envelope-format"


class PayloadTypeError(VerificationError):
    code = "payload-type"


class SignatureError(VerificationError):
    code = "signature"


class CanonicalFormError(VerificationError):
    code = "canonical-form"


class SchemaError(VerificationError):
    code = "schema"


class ProofError(VerificationError):
    code = "proof"


class CheckpointError(VerificationError):
    code = "checkpoint"


class UnsupportedVersionError(ProtocolError):
    code = "unsupported-version"


class DisclosureError(ProtocolError):
    code = "disclosure"
