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
