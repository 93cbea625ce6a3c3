"""canonical_json's fast path gives exactly rfc8785's bytes (and its errors)."""

from __future__ import annotations

import os

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.canonical import canonical_json
from protocol.errors import CanonicalFormError

EXAMPLES = 2000 if os.environ.get("FEDQI_LONG") == "1" else 150

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=EXAMPLES, derandomize=True)
@given(json_values)
def test_fast_path_matches_rfc8785(value):
    try:
        expected = rfc8785.dumps(value)
    except Exception:
        with pytest.raises(CanonicalFormError):
            canonical_json(value)
        return
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "value",
    [2**53, -(2**53), 1.5, {"\U0001f600": 1, "\uffff": 2}, "\ud800", {"k": [0.1, 1e21]}],
    ids=["big-int", "big-negative", "float", "astral-keys", "lone-surrogate", "nested-floats"],
)
def test_values_outside_the_fast_domain_still_match(value):
    try:
        expected = rfc8785.dumps(value)
    except Exception:
        with pytest.raises(CanonicalFormError):
            canonical_json(value)
        return
    assert canonical_json(value) == expected
