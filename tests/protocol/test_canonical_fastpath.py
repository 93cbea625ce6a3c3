"""canonical_json's fast path gives exactly rfc8785's bytes (and its errors)."""

from __future__ import annotations

import copy
import os

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.canonical import _canonical, canonical_json
from protocol.errors import CanonicalFormError

EXAMPLES = 2000 if os.environ.get("FEDQI_LONG") == "1" else 150

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)
# Floats of every kind: whole and not, tiny, huge, negative zero, and the edges of the range
# that json writes as ECMAScript does ([1e-4, 1e16)).
floats = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e17, max_value=1e17, allow_nan=False)
    | st.floats(min_value=-1e-3, max_value=1e-3, allow_nan=False)
    | st.integers(-(2**60), 2**60).map(float)
    | st.sampled_from([1e-4, -1e-4, 9.999999999999999e-05, 1e16, 9999999999999998.0, -0.0, 0.1,
                      7.5, 140.0, 2.0**53, 2.0**53 - 1, 1e21, 5e-324])
)  # fmt: skip
json_with_floats = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text() | floats,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def _matches_rfc8785(value) -> bytes | None:
    """Assert ``canonical_json(value)`` gives rfc8785's bytes (or, where rfc8785 refuses the
    value, raises CanonicalFormError); rfc8785's bytes, or None where it refused."""
    try:
        expected = rfc8785.dumps(value)
    except Exception:
        with pytest.raises(CanonicalFormError):
            canonical_json(value)
        return None
    assert canonical_json(value) == expected
    return expected


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None)
@given(json_values)
def test_fast_path_matches_rfc8785(value):
    _matches_rfc8785(value)


@pytest.mark.parametrize(
    "value",
    [2**53, -(2**53), 1.5, {"\U0001f600": 1, "\uffff": 2}, "\ud800", {"k": [0.1, 1e21]}],
    ids=["big-int", "big-negative", "float", "astral-keys", "lone-surrogate", "nested-floats"],
)
def test_values_outside_the_fast_domain_still_match(value):
    _matches_rfc8785(value)


@settings(max_examples=EXAMPLES * 4, derandomize=True, deadline=None)
@given(json_with_floats)
def test_floats_match_rfc8785_whether_or_not_the_value_may_be_changed(value):
    """``canonical_json`` (the caller's value, left as it is) and ``model_bytes``'s path (a
    private dump, whole floats turned into ints in place) both give rfc8785's bytes."""
    before = copy.deepcopy(value)
    expected = _matches_rfc8785(value)
    assert value == before and repr(value) == repr(before)  # not changed
    if expected is not None:
        assert _canonical(copy.deepcopy(value), owned=True) == expected


def test_a_catalogue_with_whole_and_fractional_thresholds_takes_the_fast_path() -> None:
    """The catalogue's value thresholds (140.0, 7.5) no longer send its hash to rfc8785."""
    from agent.library import load_default_catalogue
    from protocol.canonical import _is_fast_domain

    dump = load_default_catalogue().model_dump(mode="json", exclude_none=True)
    assert not _is_fast_domain(copy.deepcopy(dump))  # whole floats: not as the caller gave them
    assert _is_fast_domain(dump, owned=True)
    assert _canonical(dump, owned=True) == rfc8785.dumps(dump)
