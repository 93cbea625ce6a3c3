"""parse_canonical's fast path (one parse, one validation, one dump) accepts exactly what the
strict path accepts, and every rejection keeps the strict path's error."""

from __future__ import annotations

import os

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol import canonical, submission
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
    scanned = submission._parse_submission(data)
    if scanned is not None:
        assert scanned == _strict(data, Submission)


# --- the submission's cell scanner (protocol.submission._parse_submission) ----------------------


def _scanned(data: bytes) -> object:
    return submission._parse_submission(data)


def _big_submission() -> bytes:
    """Many strata per indicator, every disclosure status among them."""
    raw = []
    for k, ind in enumerate(("AF001", "DM020", "HYP001")):
        parts = [
            RawCell(ind, band, sex, d, min(d, n), e)
            for (band, sex, d, n, e) in (
                ("0-39", "F", 3 + k, 1, 0),
                ("0-39", "M", 40, 12, 2),
                ("40-59", "F", 0, 0, 0),
                ("40-59", "M", 125, 119, 7),
                ("60+", "F", 9_999_000, 5_000_000, 11),
                ("60+", "M", 17, 17, 0),
            )
        ]
        raw += parts
        raw.append(
            RawCell(
                ind,
                "all",
                "all",
                sum(p.denominator for p in parts),
                sum(p.numerator for p in parts),
                sum(p.exclusions for p in parts),
            )
        )
    value = loads_strict(GOOD)
    value["cells"] = [
        c.__pydantic_serializer__.to_python(c, exclude_none=True)
        for c in apply_policy(raw, DisclosurePolicy(name="default"))
    ]
    return canonical_json(value)


BIG = _big_submission()


def test_scanner_reads_a_canonical_submission_as_the_strict_path_does() -> None:
    for data in (GOOD, BIG):
        scanned = _scanned(data)
        assert scanned is not None
        assert scanned == _strict(data, Submission)
        assert model_bytes(scanned) == data  # type: ignore[arg-type]
        statuses = {
            getattr(c, k).status for c in scanned.cells for k in ("numerator", "exclusions")
        }  # type: ignore[attr-defined]
    assert statuses == {"exact", "rounded", "suppressed", "zero"}  # BIG has every status


def _first_cell(data: bytes) -> bytes:
    start = data.index(b'"cells":[') + len(b'"cells":[')
    return data[start : data.index(b"}},", start) + 2]


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("value above the bound", b'"value":120}', b'"value":10000001}'),
        ("nine digits", b'"value":120}', b'"value":100000000}'),
        ("leading zero", b'"value":120}', b'"value":0120}'),
        ("negative", b'"value":3}', b'"value":-3}'),
        ("explicit null", b'"status":"suppressed"}', b'"status":"suppressed","value":null}'),
        ("unknown status", b'"status":"exact"', b'"status":"approx"'),
        ("keys out of order", b'{"status":"exact","value":3}', b'{"value":3,"status":"exact"}'),
        ("whitespace", b'"exclusions":{', b'"exclusions": {'),
        ("bad age band", b'"age_band":"all","sex":"F"', b'"age_band":"1000-2","sex":"F"'),
        ("bad sex", b'"sex":"F"', b'"sex":"X"'),
        ("lower-case indicator", b'"indicator":"DM020"', b'"indicator":"dm020"'),
        ("exact zero", b'"status":"exact","value":3}', b'"status":"exact","value":0}'),
        (
            "suppressed with a value",
            b'{"status":"suppressed"}',
            b'{"status":"suppressed","value":4}',
        ),
        ("numerator above denominator", b'"value":80', b'"value":800'),
        ("trailing comma", b'}}],"iat"', b'}},],"iat"'),
        ("empty cells", None, b"[]"),
        ("duplicate cell", None, b"dup"),
        ("cells out of order", None, b"swap"),
        ("escaped letter", b'"indicator":"DM020"', b'"indicator":"\\u0044M020"'),
    ],
)
def test_scanner_refuses_what_the_strict_path_refuses(name, old, new) -> None:  # type: ignore[no-untyped-def]
    if old is not None:
        assert GOOD.count(old) >= 1, name
        data = GOOD.replace(old, new, 1)
    else:
        start = GOOD.index(b'"cells":[') + len(b'"cells":')
        end = GOOD.index(b'],"iat"') + 1
        first = _first_cell(GOOD)
        rest = GOOD[start + 1 + len(first) + 1 : end - 1]
        array = {
            b"[]": b"[]",
            b"dup": b"[" + first + b"," + first + b"," + rest + b"]",
            b"swap": b"[" + rest + b"," + first + b"]",
        }[new]
        data = GOOD[:start] + array + GOOD[end:]
    with pytest.raises((CanonicalFormError, SchemaError)):
        _strict(data, Submission)
    assert _scanned(data) is None
    _same(data)


def test_scanner_accepts_the_largest_count() -> None:
    data = GOOD.replace(b'"status":"exact","value":120}', b'"status":"exact","value":10000000}', 1)
    data = data.replace(b'"status":"exact","value":80}', b'"status":"exact","value":10000000}', 1)
    scanned = _scanned(data)
    assert scanned is not None
    assert scanned == _strict(data, Submission)


def test_scanner_caches_stay_correct_when_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submission, "_CACHE_LIMIT", 2)
    for cache in ("_COUNTS", "_STRATA", "_INDICATORS"):
        monkeypatch.setattr(submission, cache, {})
    for data in (GOOD, BIG, GOOD, BIG):
        assert _scanned(data) == _strict(data, Submission)
    assert 1 <= len(submission._COUNTS) <= 2
    assert 1 <= len(submission._STRATA) <= 2


# Mostly valid parts, so that many generated submissions are accepted; now and then one that
# is not (a draw of 0 in 8 takes from the second list).
_COUNTS = (
    [("exact", 5), ("exact", 120), ("exact", 10_000_000), ("rounded", 0), ("rounded", 10)]
    + [("zero", 0), ("suppressed", None)],
    [("exact", 0), ("zero", 3), ("suppressed", 4), ("approx", 5), ("exact", 10_000_001)]
    + [("exact", -1), ("exact", True), ("exact", 2.5), ("exact", "7"), ("zero", None)],
)
_INDICATORS = (["DM020", "HYP001", "AF001"], ["dm020", "X", "A" * 33, "DM 20"])
_BANDS = (["all", "0-39", "60+"], ["1000-1", "", "60-", "all "])
_SEXES = (["all", "F", "M", "U"], ["X", "f", ""])


@st.composite
def _cell_lists(draw: st.DrawFn) -> list[dict[str, object]]:
    def pick(pools: tuple[list, list]) -> object:  # type: ignore[type-arg]
        return draw(st.sampled_from(pools[draw(st.integers(0, 7)) == 0]))

    def count() -> dict[str, object]:
        status, value = pick(_COUNTS)  # type: ignore[misc]
        out: dict[str, object] = {"status": status}
        if value is not None or draw(st.integers(0, 7)) == 0:  # now and then an explicit null
            out["value"] = value
        return out

    cells = []
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        cells.append(
            {
                "denominator": count(),
                "exclusions": count(),
                "indicator": pick(_INDICATORS),
                "numerator": count(),
                "stratum": {"age_band": pick(_BANDS), "sex": pick(_SEXES)},
            }
        )
    if draw(st.integers(0, 7)) != 0:
        cells.sort(
            key=lambda c: (c["indicator"], c["stratum"]["age_band"], c["stratum"]["sex"])  # type: ignore[index]
        )
    return cells


@settings(max_examples=3000 if LONG else 300, derandomize=not LONG, deadline=None)
@given(_cell_lists())
def test_scanner_agrees_with_the_strict_path_on_generated_cells(cells) -> None:  # type: ignore[no-untyped-def]
    value = loads_strict(GOOD)
    value["cells"] = cells
    try:
        data = canonical_json(value)
    except Exception:  # noqa: BLE001 - e.g. a float RFC 8785 writes differently: not a case
        return
    scanned = _scanned(data)
    try:
        strict = _strict(data, Submission)
    except (CanonicalFormError, SchemaError):
        event("refused")
        assert scanned is None
        return
    event("accepted")
    assert scanned == strict  # every valid canonical submission is scanned
    _same(data)
