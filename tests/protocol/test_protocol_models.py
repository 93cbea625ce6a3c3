"""protocol.catalogue and protocol.submission models: what they accept and what they refuse."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

from protocol.canonical import canonical_json
from protocol.catalogue import Catalogue
from protocol.errors import CanonicalFormError, SchemaError
from protocol.keys import SigningKey
from protocol.submission import (
    Cell,
    Count,
    Enrol,
    Period,
    Receipt,
    Rotate,
    Stratum,
    Submission,
    _cells_fault,
    cell_fault,
    check_count,
)

GENERATOR = Path(__file__).resolve().parents[1] / "vectors" / "generate.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fedqi_vector_generator", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
KEY = SigningKey.from_private_bytes(bytes(range(32)))


def catalogue_value() -> dict[str, Any]:
    value = json.loads(GEN.sample_catalogue().to_bytes())
    assert isinstance(value, dict)
    return value


def submission_value() -> dict[str, Any]:
    value = json.loads(GEN.sample_submission(KEY.kid, GEN.sample_catalogue()).to_bytes())
    assert isinstance(value, dict)
    return value


def _errors(model: type[Any], value: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(value)
    return str(info.value)


# --- canonical round trips ---------------------------------------------------------------------


def test_submission_canonical_round_trip() -> None:
    sub = GEN.sample_submission(KEY.kid, GEN.sample_catalogue())
    data = sub.to_bytes()
    assert data == canonical_json(json.loads(data))
    assert Submission.from_bytes(data) == sub
    assert Submission.from_bytes(data).to_bytes() == data


def test_catalogue_canonical_round_trip() -> None:
    cat = GEN.sample_catalogue()
    assert Catalogue.from_bytes(cat.to_bytes()) == cat
    assert len(cat.sha256()) == 64


def test_other_messages_round_trip() -> None:
    enrol = GEN.sample_enrol(KEY)
    assert Enrol.from_bytes(enrol.to_bytes()) == enrol
    rotate = GEN.sample_rotate(KEY, SigningKey.from_private_bytes(bytes(32)))
    assert Rotate.from_bytes(rotate.to_bytes()) == rotate


def test_defaulted_fields_must_be_left_out() -> None:
    # "v": 1 is the default, but model_bytes keeps it (only None fields are dropped); a payload
    # that leaves it out is not the canonical form of the model.
    value = submission_value()
    del value["v"]
    with pytest.raises(CanonicalFormError):
        Submission.from_bytes(canonical_json(value))


# --- unknown fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [(), ("period",), ("catalogue",), ("provenance",), ("cells", 0), ("cells", 0, "numerator")],
)
def test_submission_rejects_unknown_fields_anywhere(path: tuple[Any, ...]) -> None:
    value = submission_value()
    target: Any = value
    for part in path:
        target = target[part]
    target["patient_nhs_number"] = "9434765919"
    with pytest.raises(SchemaError, match="patient_nhs_number"):
        Submission.from_bytes(canonical_json(value))


@pytest.mark.parametrize("path", [(), ("disclosure",), ("indicators", 0), ("codelists", 0)])
def test_catalogue_rejects_unknown_fields(path: tuple[Any, ...]) -> None:
    value = catalogue_value()
    target: Any = value
    for part in path:
        target = target[part]
    target["surprise"] = 1
    assert "surprise" in _errors(Catalogue, value)


# --- counts and cells --------------------------------------------------------------------------


def _with_exclusions(value: int | None, status: str) -> dict[str, Any]:
    """The sample submission with its last cell's exclusions replaced (exclusions have no rule
    against the other counts, so only the count's own rules apply)."""
    sub = submission_value()
    sub["cells"][-1]["exclusions"] = {"status": status, "value": value}
    return sub


@pytest.mark.parametrize(
    ("value", "status", "message"),
    [
        (3, "suppressed", "a suppressed count carries no value"),
        (0, "suppressed", "a suppressed count carries no value"),
        (None, "exact", "an exact count needs a value"),
        (None, "rounded", "a rounded count needs a value"),
        (None, "zero", "a zero count needs a value"),
        (5, "zero", "a zero count has value 0"),
        (0, "exact", "an exact 0 is status 'zero'"),
    ],
)
def test_count_status_and_value_rules(value: int | None, status: str, message: str) -> None:
    sub = _with_exclusions(value, status)
    last = sub["cells"][-1]
    where = f"cells[{len(sub['cells']) - 1}] {last['indicator']} "
    where += f"{last['stratum'].get('age_band', 'all')}/{last['stratum'].get('sex', 'all')}"
    # The submission names the cell and the count; a count on its own is checked by check_count.
    assert f"{where}: exclusions: {message}" in _errors(Submission, sub)
    with pytest.raises(ValueError, match=re.escape(message)):
        check_count(Count(status=status, value=value))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "status", "message"),
    [
        (-1, "exact", "greater than or equal to 0"),
        (10_000_001, "exact", "less than or equal to 10000000"),
        (5, "approximate", "Input should be"),
    ],
)
def test_count_field_types(value: int | None, status: str, message: str) -> None:
    assert message in _errors(Submission, _with_exclusions(value, status))
    with pytest.raises(ValidationError, match=message):
        Count(status=status, value=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "status"), [(None, "suppressed"), (0, "zero"), (4, "exact"), (10, "rounded")]
)
def test_count_valid_combinations(value: int | None, status: str) -> None:
    sub = Submission.model_validate(_with_exclusions(value, status))
    assert sub.cells[-1].exclusions == Count(status=status, value=value)  # type: ignore[arg-type]
    assert check_count(Count(status=status, value=value)).status == status  # type: ignore[arg-type]


def test_exact_numerator_cannot_exceed_denominator() -> None:
    sub = submission_value()
    sub["cells"][-1]["numerator"] = {"status": "exact", "value": 200}
    assert "numerator 200 > denominator 141" in _errors(Submission, sub)
    # Rounded or suppressed counts are not compared: rounding can put a numerator above.
    sub["cells"][-1]["numerator"] = {"status": "rounded", "value": 200}
    Submission.model_validate(sub)


def test_one_pass_over_cells_agrees_with_each_cells_rules() -> None:
    """Every combination of statuses and small values: the submission's one-pass check (which
    lets the common case through inline) finds a fault exactly when cell_fault does."""
    options = [(s, v) for s in ("exact", "rounded", "suppressed", "zero") for v in (None, 0, 1, 7)]
    stratum = Stratum()
    for den, num, exc in itertools.product(options, repeat=3):
        cell = Cell(
            denominator=Count(*den),  # type: ignore[arg-type]
            exclusions=Count(*exc),  # type: ignore[arg-type]
            indicator="HYP_BP",
            numerator=Count(*num),  # type: ignore[arg-type]
            stratum=stratum,
        )
        fault = cell_fault(cell)
        found = _cells_fault((cell,))
        assert (found is None) == (fault is None), (cell, fault, found)
        if fault is not None:
            assert found == f"cells[0] HYP_BP all/all: {fault}"


def test_cells_must_be_sorted_and_unique() -> None:
    value = submission_value()
    value["cells"] = list(reversed(value["cells"]))
    assert "cells must be sorted" in _errors(Submission, value)
    value = submission_value()
    value["cells"] = [value["cells"][0], value["cells"][0]]
    assert "duplicate cell" in _errors(Submission, value)
    value = submission_value()
    value["cells"] = []
    assert "at least 1 item" in _errors(Submission, value)


def test_supersedes_and_reason_go_together() -> None:
    value = submission_value()
    other = GEN.vector_uuid("earlier")
    assert "supersedes and reason go together" in _errors(
        Submission, {**value, "supersedes": other}
    )
    assert "supersedes and reason go together" in _errors(
        Submission, {**value, "reason": "late_data"}
    )
    ok = Submission.model_validate({**value, "supersedes": other, "reason": "late_data"})
    assert ok.supersedes == other
    assert "cannot supersede itself" in _errors(
        Submission, {**value, "supersedes": value["submission_id"], "reason": "late_data"}
    )
    assert "Input should be" in _errors(
        Submission, {**value, "supersedes": other, "reason": "because I said so"}
    )


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("practice", "a81001"),
        ("aud", "Network"),
        ("kid", "short"),
        ("submission_id", "not-a-uuid"),
        ("seq", 0),
        ("iat", -1),
        ("nonce", "x"),
    ],
)
def test_submission_identifier_patterns(field: str, bad: object) -> None:
    assert field in _errors(Submission, {**submission_value(), field: bad})


def test_period_must_be_ordered() -> None:
    assert "period end before start" in _errors(
        Period, {"start": "2026-10-31", "end": "2026-10-01"}
    )
    assert Period.month(2026, 2).end.isoformat() == "2026-02-28"
    assert Period.month(2026, 12).label == "2026-12"


@pytest.mark.parametrize(
    "start,end,month",
    [
        ("2026-03-01", "2026-03-31", True),
        ("2024-02-01", "2024-02-29", True),
        ("2026-12-01", "2026-12-31", True),
        ("9999-12-01", "9999-12-31", True),
        ("2026-03-01", "2026-03-15", False),
        ("2026-03-02", "2026-04-01", False),
        ("2026-03-01", "2026-04-30", False),
        ("2026-02-01", "2026-03-01", False),
        ("9999-12-02", "9999-12-31", False),
    ],
)
def test_period_is_calendar_month(start: str, end: str, month: bool) -> None:
    """Any ordered period parses (signed history must stay readable); whether it is one
    calendar month is a property the aggregator checks before it accepts a submission."""
    period = Period.model_validate({"start": start, "end": end})
    assert period.is_calendar_month is month
    if month:
        assert period == Period.month(period.start.year, period.start.month)


def test_receipt_limits() -> None:
    value = json.loads(
        canonical_json(
            {
                "aud": "network.example",
                "checkpoint": "x",
                "envelope_sha256": "0" * 64,
                "iat": 1,
                "inclusion_proof": ["a" * 64] * 65,
                "leaf_hash": "1" * 64,
                "leaf_index": 0,
                "message_type": "submission",
                "tree_size": 1,
            }
        )
    )
    assert "inclusion_proof" in _errors(Receipt, value)


# --- catalogue consistency ---------------------------------------------------------------------


def test_catalogue_rejects_unknown_codelist_reference() -> None:
    value = catalogue_value()
    value["indicators"][0]["numerator"]["codelist"] = "no_such_list"
    assert "uses unknown codelists ['no_such_list']" in _errors(Catalogue, value)


def test_catalogue_rejects_duplicate_ids() -> None:
    value = catalogue_value()
    value["indicators"].append(value["indicators"][0])
    assert "duplicate indicator id" in _errors(Catalogue, value)
    value = catalogue_value()
    value["codelists"].append(value["codelists"][0])
    assert "duplicate codelist id" in _errors(Catalogue, value)


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        (
            [{"label": "1-39", "min": 1, "max": 39}, {"label": "40+", "min": 40}],
            "should start at 0",
        ),
        (
            [{"label": "0-39", "min": 0, "max": 39}, {"label": "41+", "min": 41}],
            "should start at 40",
        ),
        (
            [{"label": "0-39", "min": 0, "max": 39}, {"label": "30+", "min": 30}],
            "should start at 40",
        ),
        ([{"label": "0+", "min": 0}, {"label": "40+", "min": 40}], "only the last band is open"),
        ([{"label": "0-39", "min": 0, "max": 39}], "last age band must be open"),
        (
            [
                {"label": "0-39", "min": 0, "max": 39},
                {"label": "40-30", "min": 40, "max": 30},
                {"label": "31+", "min": 31},
            ],
            "max < min",
        ),
        ([], "at least 1 item"),
    ],
)
def test_catalogue_age_bands_must_partition_ages(bands: list[dict[str, Any]], message: str) -> None:
    assert message in _errors(Catalogue, {**catalogue_value(), "age_bands": bands})


def test_catalogue_rule_validation() -> None:
    value = catalogue_value()
    value["indicators"][0]["population"] = {"kind": "age"}
    assert "age rule needs min or max" in _errors(Catalogue, value)
    value["indicators"][0]["population"] = {"kind": "age", "min": 80, "max": 20}
    assert "min > max" in _errors(Catalogue, value)
    value["indicators"][0]["population"] = {"kind": "sql", "query": "select 1"}
    assert "does not match any of the expected tags" in _errors(Catalogue, value)


def test_catalogue_strata_follow_age_bands() -> None:
    cat = GEN.sample_catalogue()
    strata = cat.strata_for(cat.indicator("HYP_BP"))
    assert strata[0] == ("all", "all")
    assert len(strata) == 1 + 3 * 3
    assert cat.strata_for(cat.indicator("SMOK_REC")) == [("all", "all")]
