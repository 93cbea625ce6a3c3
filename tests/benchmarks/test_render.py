"""The JSON the refresh stores for each practice (aggregator/benchmarks/render.py) is spliced into
the funnel views: it must parse back to exactly the fields it was made from."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aggregator.benchmarks import render

# (ods, num, num_status, den, den_status, status, rate, lo95, hi95, lo998, hi998, approximate,
#  z, band, None, note, None, None): render.Flat
FLATS = [
    ("A81001", 123, "exact", 456, "exact", "included", 0.269737, 0.229, 0.31, 0.2, 0.34, False,
     -1.234567, "within", None, None, None, None),
    ("A81002", 1, "exact", 1_000_000, "exact", "included", 1e-06, 0.0, 5.6e-06, 0.0, 1e-05, True,
     -12.5, "below_998", None, "rate shown to 6 decimals: 1e-06", None, None),
    ("A81003", None, "suppressed", 40, "rounded", "suppressed", None, None, None, None, None,
     True, None, None, None, "small numbers — not shown", None, None),
    ("A81004", 0, "zero", 0, "zero", "empty", None, None, None, None, None, False, None, None,
     None, None, None, None),
]  # fmt: skip


@pytest.mark.parametrize("flat", FLATS, ids=[f[0] for f in FLATS])
@pytest.mark.parametrize("view", [render.identified_fields, render.peer_fields])
def test_stored_json_parses_back_to_its_fields(flat: render.Flat, view: object) -> None:
    fields = view(flat)  # type: ignore[operator]
    body = render.as_json(fields)
    assert not body.startswith("{") and not body.endswith("}")
    parsed = json.loads("{" + body + "}")
    assert parsed == json.loads(json.dumps(fields))
    assert list(parsed) == list(fields)  # the order the views show


def test_numpy_scalars_encode_as_their_values() -> None:
    fields = {"rate": np.float64(0.125), "numerator": np.int64(3), "approximate": np.bool_(True)}
    assert json.loads("{" + render.as_json(fields) + "}") == {
        "rate": 0.125,
        "numerator": 3,
        "approximate": True,
    }


def test_a_non_finite_float_is_never_written_as_invalid_json() -> None:
    # The standard library would write NaN, which no JSON parser in a browser accepts.
    body = render.as_json({"z": math.nan, "rate": math.inf})
    assert json.loads("{" + body + "}") == {"z": None, "rate": None}


def test_a_withheld_peer_is_noted_for_whoever_looks() -> None:
    """A network lead is no peer: the note of a practice whose counts the peer rule withholds
    said 'small numbers: not shown to peers' in the lead's view too. It says what is withheld."""
    small = ("A81005", 3, "exact", 40, "exact", "included", 0.075, 0.02, 0.2, 0.01, 0.3, False,
             -2.0, "low_95", None, None, None, None)  # fmt: skip
    lead = render.peer_fields(small)  # type: ignore[arg-type]
    practice = render.coarse_peer_fields(small)  # type: ignore[arg-type]
    for fields in (lead, practice):
        assert fields["note"] == "small numbers (a count from 1 to 7): withheld", fields
        assert fields["rate"] is None
