"""Envelope keeps the payload it decoded while parsing, and only for that payload text."""

from __future__ import annotations

import base64

from protocol.envelope import Envelope, sign_envelope
from protocol.keys import SigningKey


def test_payload_bytes_follow_the_payload_after_a_copy() -> None:
    key = SigningKey.generate()
    env = Envelope.from_bytes(sign_envelope("submission", b'{"a":1}', [key]).to_bytes())
    assert env.payload_bytes() == b'{"a":1}'
    other = env.model_copy(update={"payload": base64.b64encode(b'{"a":2}').decode()})
    assert other.payload_bytes() == b'{"a":2}'


# Strict base64: the decoder re-encodes only the last group. Against the plain definition
# (decode strictly, encode the whole result again, compare), on canonical texts, texts with a
# character changed or inserted, and short random strings: the same verdict and bytes.


def _plain_b64decode(text: str) -> bytes | None:
    import base64
    import binascii

    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def test_strict_base64_agrees_with_encoding_the_whole_text_again() -> None:
    import base64
    import os
    import random

    from protocol.envelope import _b64decode
    from protocol.errors import EnvelopeFormatError

    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n\u00e9"
    verdicts = {True: 0, False: 0}
    for _ in range(20000):
        if rng.random() < 0.4:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        else:
            chars = list(base64.b64encode(os.urandom(rng.randint(0, 10))).decode())
            for _ in range(rng.randint(0, 2)):
                if chars and rng.random() < 0.7:
                    chars[rng.randrange(len(chars))] = rng.choice(alphabet)
                else:
                    chars.insert(rng.randint(0, len(chars)), rng.choice(alphabet))
            text = "".join(chars)
        expected = _plain_b64decode(text)
        try:
            got: bytes | None = _b64decode(text, what="payload")
        except EnvelopeFormatError:
            got = None
        assert got == expected, text
        verdicts[got is not None] += 1
    assert min(verdicts.values()) > 2000  # both verdicts well represented


def test_envelope_canonical_check_agrees_with_encoding_the_whole_envelope() -> None:
    """Envelope.from_bytes checks canonical form without encoding the payload text again
    (_is_canonical); on envelopes edited byte by byte its verdict is the full encoding's."""
    import json
    import random

    from protocol.canonical import canonical_json
    from protocol.envelope import _b64decode, _is_canonical
    from protocol.errors import EnvelopeFormatError

    rng = random.Random(11)
    keys = [SigningKey.from_private_bytes(bytes([i]) * 32) for i in (1, 2)]
    edits = [b" ", b"\n", b'"', b"\\", b"A", b"=", b"/", b",", b"}", b"\\u0041", b"\xc3\xa9"]
    verdicts = {True: 0, False: 0}
    for _ in range(6000):
        payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        signers = keys[: rng.randint(1, 2)]
        data = bytearray(sign_envelope("submission", payload, signers).to_bytes())
        for _ in range(rng.choice((0, 1, 1, 2))):
            at = rng.randint(0, len(data))
            if rng.random() < 0.5 and at < len(data):
                del data[at]
            data[at:at] = rng.choice(edits)
        try:
            value = json.loads(bytes(data))
            _b64decode(value["payload"], what="payload")
        except (ValueError, TypeError, KeyError, EnvelopeFormatError):
            continue  # refused before the canonical check
        if not isinstance(value, dict) or not isinstance(value.get("payloadType"), str):
            continue
        expected = canonical_json(value) == bytes(data)
        assert _is_canonical(value, bytes(data)) == expected, bytes(data)
        verdicts[expected] += 1
    assert min(verdicts.values()) > 250, verdicts  # both verdicts well represented
