"""parse_canonical's fast path (one parse, one validation, one dump) accepts exactly what the
strict path accepts, and every rejection keeps the strict path's error."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol import canonical
from protocol.canonical import canonical_json, loads_strict, model_bytes, parse_canonical
from protocol.catalogue import DisclosurePolicy
from protocol.disclosure import RawCell, apply_policy
from protocol.errors import CanonicalFormError, SchemaError
from protocol.submission import (
    CatalogueRef,
    Enrol,
    Jwk,
    Period,
    Provenance,
    Submission,
)

LONG = os.environ.get("FEDQI_LONG") == "1"


def _strict(data: bytes, model: type) -> object:
    """The strict path alone, as parse_canonical ran before the fast path."""
    value = loads_strict(data)
    if canonical_json(value) != data:
        raise CanonicalFormError("payload bytes are not in RFC 8785 canonical form")
    try:
        obj = model.model_validate(value)
    except ValidationError as exc:
        raise SchemaError(canonical._describe(exc, model.__name__)) from None
    if model_bytes(obj) != data:
        raise CanonicalFormError(
            f"payload is canonical JSON but not the canonical form of a {model.__name__} "
            "(explicit nulls, defaulted fields or non-integer numbers)"
        )
    return obj


def _outcome(fn, data: bytes, model: type) -> tuple[str, object]:
    try:
        return ("ok", fn(data, model))
    except (CanonicalFormError, SchemaError) as exc:
        return (type(exc).__name__, str(exc))


def _submission() -> bytes:
    raw = [
        RawCell("DM020", "all", "all", 120, 80, 3),
        RawCell("DM020", "all", "F", 60, 41, 1),
        RawCell("DM020", "all", "M", 60, 39, 2),
        RawCell("HYP001", "all", "all", 0, 0, 0),
    ]
    sub = Submission(
        aud="fedqi-test",
        practice="A81001",
        kid="A" * 43,
        submission_id="0b0e8c0e-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
        seq=3,
        iat=1_780_000_000,
        nonce="B" * 22,
        period=Period.month(2026, 1),
        catalogue=CatalogueRef(id="default", version=1, sha256="c" * 64),
        provenance=Provenance(
            agent_version="0.1.0",
            extract_time=1_780_000_000,
            source="sqlite",
            disclosure_policy="d" * 64,
            indicators=(),
        ),
        cells=apply_policy(raw, DisclosurePolicy(name="default")),
    )
    return sub.to_bytes()


GOOD = _submission()


def _same(data: bytes, model: type = Submission) -> None:
    fast = _outcome(parse_canonical, data, model)
    strict = _outcome(_strict, data, model)
    assert fast[0] == strict[0], (fast, strict)
    if fast[0] == "ok":
        assert fast[1] == strict[1]
        assert model_bytes(fast[1]) == data  # type: ignore[arg-type]
    else:
        assert fast[1] == strict[1]


def test_fast_path_taken_for_a_canonical_submission() -> None:
    assert canonical._parse_fast(GOOD, Submission) is not None
    assert canonical._sorted_model(Submission)
    assert canonical._parse_sorted(GOOD, Submission) == _strict(GOOD, Submission)
    assert parse_canonical(GOOD, Submission).to_bytes() == GOOD


class _Unsorted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    b: int = Field(ge=0, le=10)
    a: int = Field(ge=0, le=10)


class _Unbounded(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


class _WithDict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    d: dict[str, int]


class _WithFloat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    z: int = Field(ge=0, le=9)
    y: int = Field(ge=0, le=9)


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: tuple[_Inner, ...]


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (_Unsorted, b'{"b":1,"a":2}'),  # the dump order, not canonical
        (_Unbounded, b'{"n":9007199254740993}'),  # beyond 2**53: no RFC 8785 form
        (_WithDict, b'{"d":{"b":1,"a":2}}'),  # dict keys keep the input's order
        (_WithFloat, b'{"x":1.0}'),  # RFC 8785 writes 1
        (_Outer, b'{"items":[{"z":1,"y":2}]}'),  # an unsorted model inside
    ],
)
def test_sorted_path_refuses_models_whose_dump_is_not_canonical(model, data) -> None:  # type: ignore[no-untyped-def]
    """Each of these dumps back to its own non-canonical bytes; the sorted path would accept
    them if its eligibility check did not refuse the model."""
    assert not canonical._sorted_model(model)
    assert model.__pydantic_serializer__.to_json(model.model_validate_json(data)) == data
    with pytest.raises(CanonicalFormError):
        parse_canonical(data, model)


@pytest.mark.parametrize(
    ("name", "old", "new", "kind", "message"),
    [
        ("whitespace", b'{"aud"', b'{ "aud"', CanonicalFormError, "not in RFC 8785"),
        ("duplicate key", b'{"aud":', b'{"aud":"x","aud":', CanonicalFormError, "duplicate key"),
        ("explicit null", b'"seq":3', b'"seq":3,"supersedes":null', CanonicalFormError, "not in"),
        ("float seq", b'"seq":3', b'"seq":3.0', CanonicalFormError, "RFC 8785"),
        ("unsafe int", b'"seq":3', b'"seq":9007199254740993', CanonicalFormError, "RFC 8785"),
        ("NaN", b'"seq":3', b'"seq":NaN', CanonicalFormError, "non-finite"),
        ("escaped letter", b'"aud":"fedqi', b'"aud":"\\u0066edqi', CanonicalFormError, "RFC 8785"),
        ("lone surrogate", b'"aud":"fedqi', b'"aud":"\\ud800fedqi', CanonicalFormError, "RFC"),
        ("non-ascii", b'"aud":"fedqi', '"aud":"f\u00e9dqi'.encode(), SchemaError, "aud"),
        ("unknown field", b'"v":1}', b'"v":1,"zz":1}', SchemaError, "zz"),
        ("bad seq", b'"seq":3', b'"seq":0', SchemaError, "seq"),
        ("numerator", b'"value":80', b'"value":800', SchemaError, "numerator 800"),
        ("not json", b'{"aud"', b"{aud", CanonicalFormError, "not JSON"),
        ("not utf-8", b'"aud":"fedqi', b'"aud":"\xfffedqi', CanonicalFormError, "UTF-8"),
    ],
)
def test_rejections_keep_the_strict_error(name, old, new, kind, message) -> None:  # type: ignore[no-untyped-def]
    assert GOOD.count(old) >= 1, name
    data = GOOD.replace(old, new, 1)
    with pytest.raises(kind, match=message):
        parse_canonical(data, Submission)
    _same(data)


def test_other_models_round_trip() -> None:
    enrol = Enrol(
        aud="fedqi-test",
        practice="A81001",
        token="t" * 22,
        jwk=Jwk(x="x" * 43),
        agent_version="0.1.0",
        iat=5,
        nonce="n" * 22,
    ).to_bytes()
    assert parse_canonical(enrol, Enrol).to_bytes() == enrol
    _same(enrol, Enrol)
    _same(enrol.replace(b'"iat":5', b'"iat":5.5'), Enrol)


@settings(max_examples=2000 if LONG else 150, derandomize=not LONG, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(GOOD) - 1),
    st.sampled_from(["delete", "replace", "insert"]),
    st.sampled_from(list(b'0129 ,:{}[]"-.eE\\nulAaz') + [0xC3, 0x7F, 0x1F]),
)
def test_mutations_agree_with_the_strict_path(pos: int, op: str, byte: int) -> None:
    b = bytes([byte])
    if op == "delete":
        data = GOOD[:pos] + GOOD[pos + 1 :]
    elif op == "replace":
        data = GOOD[:pos] + b + GOOD[pos + 1 :]
    else:
        data = GOOD[:pos] + b + GOOD[pos:]
    _same(data)
    sorted_path = canonical._parse_sorted(data, Submission)
    if sorted_path is not None:
        assert sorted_path == _strict(data, Submission)
