"""``Submission.visibility``: optional, absent meaning ``named``, so the published test vector
(made before the field) still parses to the same bytes; present, it is the last key in canonical
order and the fast parser reads it exactly as the strict path does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol.canonical import loads_strict
from protocol.errors import ProtocolError
from protocol.submission import VISIBILITIES, Submission

VECTOR = Path(__file__).resolve().parents[1] / "vectors" / "submission.json"


def _vector() -> bytes:
    return json.loads(VECTOR.read_text())["payload"].encode()


def test_the_vector_made_before_the_field_is_unchanged() -> None:
    data = _vector()
    sub = Submission.from_bytes(data)
    assert sub.visibility is None
    assert sub.to_bytes() == data and b"visibility" not in data


@pytest.mark.parametrize("visibility", VISIBILITIES)
def test_each_level_round_trips_as_the_last_key(visibility: str) -> None:
    sub = Submission.from_bytes(_vector()).model_copy(update={"visibility": visibility})
    data = sub.to_bytes()
    assert data.endswith(f',"v":1,"visibility":"{visibility}"}}'.encode())
    parsed = Submission.from_bytes(data)  # the fast path
    assert parsed == sub and parsed.visibility == visibility
    assert Submission.model_validate(loads_strict(data)) == parsed  # the strict path agrees


@pytest.mark.parametrize("bad", ['"hidden"', '""', "null", '"Named"'])
def test_an_unknown_or_explicit_null_visibility_is_refused(bad: str) -> None:
    data = _vector()
    tampered = data[:-1] + b',"visibility":' + bad.encode() + b"}"
    with pytest.raises(ProtocolError):
        Submission.from_bytes(tampered)
