"""Malformed FHIR through the real ``fedqi-agent load-fhir``: each is one line on stderr naming
the file, the line (or Bundle entry) and the field, exit 4, no traceback, no patient's value
(identifier, date or reading), and the store as it was. Found by fuzzing the loader."""

from __future__ import annotations

import copy
import gzip
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sources_helpers import dump

from agent.cli import main
from agent.errors import SourceError
from agent.sources.common import open_store
from agent.sources.fhir import REGISTRATION_EXTENSION, load_fhir

LOINC = "http://loinc.org"
# The patient-level values of the fixtures: none may appear in an error.
PATIENT_ID, BIRTH = "zq9pat", "1951-07-23"
OTHER_ID, OTHER_BIRTH = "kx4pat", "1962-03-19"
SECRETS = (PATIENT_ID, OTHER_ID, "1951", "07-23", "1962", "03-19", "142", "zz")

PATIENT = {"resourceType": "Patient", "id": PATIENT_ID, "birthDate": BIRTH, "gender": "female"}
OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
    "subject": {"reference": f"Patient/{PATIENT_ID}"},
    "effectiveDateTime": "2020-01-01",
    "valueQuantity": {"value": 142, "unit": "mmHg"},
}
MEDICATION_REQUEST = {
    "resourceType": "MedicationRequest",
    "status": "active",
    "intent": "order",
    "subject": {"reference": f"Patient/{PATIENT_ID}"},
    "authoredOn": "2020-02-02",
    "medicationReference": {"reference": "#m1"},
    "contained": [
        {
            "resourceType": "Medication",
            "id": "m1",
            "code": {"coding": [{"system": "https://dmd.nhs.uk", "code": "318420003"}]},
        }
    ],
}


def _registered(period: Any) -> dict[str, Any]:
    """The other patient, with a GP Connect registration whose period is ``period``."""
    return {
        "resourceType": "Patient",
        "id": OTHER_ID,
        "birthDate": OTHER_BIRTH,
        "extension": [
            {
                "url": REGISTRATION_EXTENSION,
                "extension": [{"url": "registrationPeriod", "valuePeriod": period}],
            }
        ],
    }


def _line(resource: Any) -> bytes:
    return json.dumps(resource).encode()


def _then(bad: bytes, name: str = "Other.ndjson") -> Callable[[Path], Path]:
    """A folder with ``name`` holding the valid Patient on line 1 and ``bad`` on line 2."""

    def make(folder: Path) -> Path:
        (folder / name).write_bytes(_line(PATIENT) + b"\n" + bad + b"\n")
        return folder

    return make


def _gzip_damaged(at: Callable[[int], int]) -> Callable[[Path], Path]:
    """A bulk file compressed, with the byte at ``at(size)`` of the compressed data flipped:
    early, the stream is no deflate stream (zlib.error); in the middle, it inflates to garbled
    text (which fails as JSON first) and a checksum that does not match."""

    def make(folder: Path) -> Path:
        text = b"\n".join([_line(PATIENT)] + [_line(OBSERVATION)] * 2000) + b"\n"
        data = bytearray(gzip.compress(text))
        data[at(len(data))] ^= 0xFF
        (folder / "Other.ndjson.gz").write_bytes(bytes(data))
        return folder

    return make


def _gzip_cut(folder: Path) -> Path:
    """A Bundle, compressed and cut short, given as PATH itself."""
    bundle = {"resourceType": "Bundle", "entry": [{"resource": PATIENT}] * 50}
    data = gzip.compress(json.dumps(bundle).encode())
    path = folder / "bundle.json.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_gzip(folder: Path) -> Path:
    (folder / "Patient.ndjson.gz").write_bytes(_line(PATIENT) + b"\n")
    return folder


def _bundle_not_utf8(folder: Path) -> Path:
    bundle = {"resourceType": "Bundle", "entry": [{"resource": PATIENT}]}
    text = json.dumps(bundle, indent=1).encode().replace(b"female", b"fem\xe9le")
    path = folder / "bundle.json"
    path.write_bytes(text)
    return path


def _files(files: dict[str, bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return folder

    return make


def _obs(**change: Any) -> bytes:
    return _line({**OBSERVATION, **change})


def _med(**change: Any) -> bytes:
    return _line({**MEDICATION_REQUEST, **change})


HOME = {"FEDQI_AGENT_HOME": "unused-home"}


@pytest.fixture
def good_store(tmp_path: Path) -> Path:
    """A store holding a good load, which a failed load must leave as it was."""
    good = tmp_path / "good"
    good.mkdir()
    (good / "Patient.ndjson").write_bytes(_line(PATIENT) + b"\n" + _line(OBSERVATION) + b"\n")
    store = tmp_path / "practice.sqlite"
    assert main(["load-fhir", str(good), "--into", str(store)], HOME) == 0
    return store


def _assert_one_clean_line(err: str, folder: Path, says: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and "Aborted" not in err, err
    rest = err.replace(str(folder), "<folder>")
    assert says in rest, rest
    for secret in SECRETS:
        assert secret not in rest, (secret, rest)


# (id, what to load, what the error says, with the folder written <folder>)
CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    # A field of another JSON type than FHIR's, at any depth the loader reads: named by its path.
    (
        "status-array",
        _then(_obs(status=["final"])),
        "Other.ndjson line 2 (Observation), field status: an array where FHIR has a string",
    ),
    (
        "status-object",
        _then(_obs(status={"a": 1})),
        "line 2 (Observation), field status: an object where FHIR has a string",
    ),
    (
        "intent-array",
        _then(_med(intent=["order"])),
        "line 2 (MedicationRequest), field intent: an array where FHIR has a string",
    ),
    (
        "component-number",
        _then(_obs(component=5)),
        "line 2 (Observation), field component: a number where FHIR has an array",
    ),
    (
        "component-item",
        _then(_obs(component=[{}, "x"])),
        "line 2 (Observation), field component[1]: a string where FHIR has an object",
    ),
    (
        "coding-number",
        _then(_obs(code={"coding": 5})),
        "line 2 (Observation), field code.coding: a number where FHIR has an array",
    ),
    (
        "coding-item",
        _then(_obs(code={"coding": [7]})),
        "line 2 (Observation), field code.coding[0]: a number where FHIR has an object",
    ),
    (
        "code-number",
        _then(_obs(code={"coding": [{"system": LOINC, "code": 8480}]})),
        "field code.coding[0].code: a number where FHIR has a string",
    ),
    (
        "subject-string",
        _then(_obs(subject="Patient/zz")),
        "line 2 (Observation), field subject: a string where FHIR has an object",
    ),
    (
        "date-number",
        _then(_obs(effectiveDateTime=20200101)),
        "field effectiveDateTime: a number where FHIR has a string",
    ),
    (
        "value-string",
        _then(_obs(valueQuantity={"value": "142"})),
        "field valueQuantity.value: a string where FHIR has a number",
    ),
    (
        "contained-number",
        _then(_med(contained=5)),
        "line 2 (MedicationRequest), field contained: a number where FHIR has an array",
    ),
    (
        "extension-number",
        _then(_line({**_registered({}), "extension": 5})),
        "line 2 (Patient), field extension: a number where FHIR has an array",
    ),
    (
        "sub-extension-number",
        _then(
            _line(
                {
                    **_registered({}),
                    "extension": [{"url": REGISTRATION_EXTENSION, "extension": [7]}],
                }
            )
        ),
        "line 2 (Patient), field extension[0].extension[0]: a number where FHIR has an object",
    ),
    (
        "valuePeriod-string",
        _then(_line(_registered("2000"))),
        "line 2 (Patient), field extension[0].extension[0].valuePeriod: a string where FHIR has an object",
    ),
    (
        "deceased-flag-string",
        _then(_line({**PATIENT, "id": OTHER_ID, "deceasedBoolean": "yes"})),
        "line 2 (Patient), field deceasedBoolean: a string where FHIR has true or false",
    ),
    (
        "bundle-resource-string",
        _then(_line({"resourceType": "Bundle", "entry": [{"resource": "oops"}]})),
        "Other.ndjson line 2 (Bundle), field entry[0].resource: a string where FHIR has an object",
    ),
    (
        "bundle-resource-array",
        _then(_line({"resourceType": "Bundle", "entry": [{"resource": [PATIENT]}]})),
        "line 2 (Bundle), field entry[0].resource: an array where FHIR has an object",
    ),
    (
        "bundle-entry-number",
        _then(_line({"resourceType": "Bundle", "entry": [3]})),
        "line 2 (Bundle), field entry[0]: a number where FHIR has an object",
    ),
    (
        "resource-type-not-a-name",
        _then(_line({**OBSERVATION, "resourceType": "Obs ervation"})),
        "Other.ndjson line 2, field resourceType: not a FHIR resource type",
    ),
    # Past what Python reads: nesting, digits, doubles.
    (
        "nested-100000",
        _then(b"[" * 100_000 + b"]" * 100_000),
        "Other.ndjson line 2: not a FHIR resource (arrays or objects nested too deeply to read)",
    ),
    (
        "bundle-nested-100000",
        _then(
            b'{"resourceType":"Bundle","entry":[{"resource":' * 100_000 + b"{}" + b"}]}" * 100_000
        ),
        "Other.ndjson line 2: not a FHIR resource (arrays or objects nested too deeply to read)",
    ),
    (
        "bundle-nested-9",
        _then(b'{"resourceType":"Bundle","entry":[{"resource":' * 9 + b"{}" + b"}]}" * 9),
        "entry 0 entry 0 entry 0 (Bundle), field resourceType: a Bundle inside more than 8 Bundles",
    ),
    (
        "value-5000-digits",
        _then(_obs().replace(b'"value": 142', b'"value": ' + b"9" * 5000)),
        "line 2 (Observation), field valueQuantity.value: the value is not a finite number",
    ),
    (
        "value-10e400",
        _then(_obs(valueQuantity={"value": 10**400})),
        "line 2 (Observation), field valueQuantity.value: the value is not a finite number",
    ),
    (  # a line cut short inside a string: the reader's words, then where (a new-user run)
        "cut-inside-a-string",
        _then(b'{"resourceType": "Observation", "status": "fin\x01al"}'),
        "line 2: not valid JSON (Invalid control character at column 47); a truncated export?",
    ),
    (  # cut after a key: the reader's error was placed past the line break, "column 1"
        "cut-after-a-key",
        _then(b'{"resourceType": "Observation", "status"'),
        "line 2: not valid JSON (Expecting ':' delimiter at column 41); a truncated export?",
    ),
    (  # HbA1c in %: finite, but its conversion to mmol/mol is not (found by fuzzing)
        "hba1c-percent-overflows",
        _then(
            _obs(
                code={"coding": [{"system": LOINC, "code": "4548-4"}]},
                valueQuantity={"value": 1e308, "unit": "%", "code": "%"},
            )
        ),  # fmt: skip
        "line 2 (Observation), field valueQuantity.value: not a finite number once converted from % to mmol/mol",
    ),
    (
        "value-nan",
        _then(_obs().replace(b'"value": 142', b'"value": NaN')),
        "field valueQuantity.value: the value is not a finite number",
    ),
    # Control characters, which a database refuses (NUL) or a staged file splits (line breaks).
    (
        "id-nul",
        _then(_line({**PATIENT, "id": "kx\x00pat"})),
        "Other.ndjson line 2 (Patient), field id: holds a control character",
    ),
    (
        "id-newline",
        _then(_line({**PATIENT, "id": "kx\npat"})),
        "line 2 (Patient), field id: holds a control character",
    ),
    (
        "id-carriage-return",
        _then(_line({**PATIENT, "id": "kx\rpat"})),
        "line 2 (Patient), field id: holds a control character",
    ),
    (
        "id-lone-surrogate",
        _then(_line({**PATIENT, "id": "kx\ud800pat"})),
        "line 2 (Patient), field id: holds a control character",
    ),
    (
        "reference-nul",
        _then(_obs(subject={"reference": f"Patient/{PATIENT_ID}\x00"})),
        "line 2 (Observation), field subject.reference: holds a control character",
    ),
    (
        "unit-tab",
        _then(_obs(valueQuantity={"value": 1, "unit": "mm\tHg"})),
        "line 2 (Observation), field valueQuantity.unit: holds a control character",
    ),
    # Dates: matched whole, in FHIR's forms only, and never quoted.
    *[
        (
            f"birthDate-{name}",
            _then(_line({**PATIENT, "id": OTHER_ID, "birthDate": text})),
            "line 2 (Patient), field birthDate: not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)",
        )
        for name, text in [
            ("one-digit-day", OTHER_BIRTH[:-1]),
            ("one-digit-month", "1962-3-19"),
            ("trailing-text", OTHER_BIRTH + "garbage"),
            ("no-dashes", "19620319"),
            ("with-a-time", OTHER_BIRTH + "T10:00:00Z"),
            ("wide-digits", "\uff11\uff19\uff16\uff12"),
            ("empty", ""),
        ]
    ],
    (
        "birthDate-no-such-day",
        _then(_line({**PATIENT, "id": OTHER_ID, "birthDate": "1962-02-30"})),
        "line 2 (Patient), field birthDate: not a valid date (day is out of range for month)",
    ),
    *[
        (
            f"dateTime-{name}",
            _then(_obs(effectiveDateTime=text)),
            "line 2 (Observation), field effectiveDateTime: not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss with a zone)",
        )
        for name, text in [
            ("trailing-text", "2020-01-01garbage"),
            ("space-before-time", "2020-01-01 10:00:00"),
            ("no-seconds", "2020-01-01T10:00Z"),
            ("hour-25", "2020-01-01T25:00:00Z"),
            ("zone-15", "2020-01-01T10:00:00+15:00"),
        ]
    ],
    # Registration periods that cannot be.
    (
        "registration-ends-before-it-starts",
        _then(_line(_registered({"start": "2000-01-01", "end": "1990-12-31"}))),
        "line 2 (Patient), field registrationPeriod.end: before registrationPeriod.start (a registration cannot end before it starts)",
    ),
    (
        "registration-ends-on-the-last-day",
        _then(_line(_registered({"start": "2000-01-01", "end": "9999-12-31"}))),
        "line 2 (Patient), field registrationPeriod.end: the last day a date can hold",
    ),
    (
        "registration-ends-before-birth",
        _then(_line(_registered({"end": "1960-12-31"}))),
        "line 2 (Patient), field registrationPeriod.end: before birthDate",
    ),
    (
        "registration-ends-before-first-record",
        _then(
            _line(_registered({"end": "2010-12-31"}))
            + b"\n"
            + _obs(subject={"reference": f"Patient/{OTHER_ID}"})
        ),
        "Other.ndjson line 2 (Patient), field registrationPeriod.end: before the patient's first record, which starts the registration (the period has no start)",
    ),
    # Patients named by where they are, never by their identifiers or dates.
    (
        "duplicate-patient-id",
        _then(_line(PATIENT)),
        "Other.ndjson line 2 (Patient), field id: duplicate Patient id (the first is <folder>/Other.ndjson line 1)",
    ),
    (
        "reference-to-no-patient",
        _then(_obs(subject={"reference": "Patient/zz"})),
        "line 2 (Observation), field subject.reference: no such Patient in the data being loaded",
    ),
    (
        "reference-not-to-a-patient",
        _then(_obs(subject={"reference": "Group/zz"})),
        "line 2 (Observation), field subject.reference: does not refer to a Patient",
    ),
    (
        "dated-before-birth",
        _then(_obs(id="zz", effectiveDateTime="1951-06")),
        "line 2 (Observation), field effectiveDateTime: this Observation is dated before the birthDate of its Patient (<folder>/Other.ndjson line 1)",
    ),
    # No Patient at all: a load would empty the store.
    (
        "zero-byte-patient-file",
        _files({"Patient.ndjson": b""}),
        "<folder>: no Patient in the data (an export of a practice has its patients; a load replaces the store's contents); nothing was loaded",
    ),
    (
        "no-patient-resource",
        _files({"AllergyIntolerance.ndjson": _line({"resourceType": "AllergyIntolerance"})}),
        "<folder>: no Patient in the data",
    ),
    (
        "empty-bundle",
        _files({"bundle.json": _line({"resourceType": "Bundle", "entry": []})}),
        "<folder>: no Patient in the data",
    ),
    # Files that cannot be read as gzip or as UTF-8.
    (
        "gzip-no-deflate-stream",
        _gzip_damaged(lambda size: 11),
        "<folder>/Other.ndjson.gz: not a readable gzip file (damaged, cut short, or not gzip); nothing was loaded",
    ),
    (
        "gzip-garbled",
        _gzip_damaged(lambda size: size // 2),
        "<folder>/Other.ndjson.gz: not a readable gzip file (damaged, cut short, or not gzip); nothing was loaded",
    ),
    ("gzip-cut-short", _gzip_cut, "<folder>/bundle.json.gz: not a readable gzip file"),
    ("gzip-not-gzip", _not_gzip, "<folder>/Patient.ndjson.gz: not a readable gzip file"),
    (
        "ndjson-not-utf8",
        _then(_obs().replace(b"final", b"fin\xffal")),
        "<folder>/Other.ndjson line 2: not UTF-8 text (column 47)",
    ),
    (
        "bundle-not-utf8",
        _bundle_not_utf8,
        "<folder>/bundle.json line 9: not UTF-8 text (column 19)",
    ),
]


@pytest.mark.parametrize(("make", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_fhir_is_one_line_naming_file_line_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    good_store: Path,
    make: Callable[[Path], Path],
    says: str,
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    path = make(folder)
    before = dump(open_store(good_store))
    capsys.readouterr()
    code = main(["load-fhir", str(path), "--into", str(good_store)], HOME)
    err = capsys.readouterr().err
    assert code == 4, err
    _assert_one_clean_line(err, folder, says)
    assert dump(open_store(good_store)) == before
    # Into a new store: none is left behind.
    new = tmp_path / "new.duckdb"
    assert main(["load-fhir", str(path), "--into", str(new)], HOME) == 4
    _assert_one_clean_line(capsys.readouterr().err, folder, says)
    assert not new.exists()


ODD_IDS = ["\\N", "NULL", 'a"b,c', "ünï-ĉode", " spaced ", "x" * 64]


@pytest.mark.parametrize("store", ["sqlite", "duckdb", "postgresql"])
def test_any_id_without_a_control_character_is_kept_exactly(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """Ids a staged CSV file could read as NULL (``\\N``, ``NULL``), or as other fields (quotes,
    commas), are kept as written in every store; a number past what Python reads, in a field
    the loader does not read, is no error."""
    if store == "postgresql":
        into = request.getfixturevalue("pg_database_factory")()
    else:
        into = str(tmp_path / f"p.{store}")
    patients = [{**PATIENT, "id": odd} for odd in ODD_IDS]
    patients[0]["multipleBirthInteger"] = 0
    folder = tmp_path / "bulk"
    folder.mkdir()
    text = b"\n".join(_line(p) for p in patients)
    text = text.replace(b'"multipleBirthInteger": 0', b'"multipleBirthInteger": ' + b"9" * 5000)
    (folder / "Patient.ndjson").write_bytes(text + b"\n")
    assert main(["load-fhir", str(folder), "--into", into], HOME) == 0
    engine = open_store(into)
    assert sorted(r.local_ref for r in dump(engine)["patients"]) == sorted(ODD_IDS)
    engine.dispose()


def test_dates_in_the_forms_fhir_gives_load(tmp_path: Path) -> None:
    """A time with or without fraction and zone reads as its date as written; a partial
    registration end is the last day of its month."""
    folder = tmp_path / "bulk"
    folder.mkdir()
    forms = ["2020-01-02", "2020-01-02T23:59:60", "2020-01-02T10:00:00.123456+14:00", "2020-01"]
    lines = [_line(_registered({"start": "2001", "end": "2024-02"}))]
    for text in forms:
        lines.append(_obs(subject={"reference": f"Patient/{OTHER_ID}"}, effectiveDateTime=text))
    (folder / "Patient.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    store = tmp_path / "p.sqlite"
    assert main(["load-fhir", str(folder), "--into", str(store)], HOME) == 0
    rows = dump(open_store(store))
    assert sorted(str(r.date) for r in rows["events"]) == ["2020-01-01"] + ["2020-01-02"] * 3
    (patient,) = rows["patients"]
    assert (str(patient.registration_start), str(patient.registration_end)) == (
        "2001-01-01",
        "2024-03-01",
    )


# --- any JSON value in any field read -------------------------------------------------------

REGISTERED = _registered({"start": "2001-01-01", "end": "2024-05-31"})
BUNDLE = {"resourceType": "Bundle", "entry": [{"fullUrl": "urn:uuid:1", "resource": OBSERVATION}]}
CONDITION = {
    "resourceType": "Condition",
    "verificationStatus": {"coding": [{"code": "confirmed"}]},
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
    "subject": {"reference": f"Patient/{PATIENT_ID}"},
    "onsetPeriod": {"start": "2010-01-01"},
    "abatementDateTime": "2011-01-01",
}
IMMUNIZATION = {
    "resourceType": "Immunization",
    "status": "completed",
    "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
    "patient": {"reference": f"Patient/{PATIENT_ID}"},
    "occurrenceDateTime": "2020-10-01",
}
OBSERVATION_PANEL = {
    **OBSERVATION,
    "component": [{"code": OBSERVATION["code"], "valueQuantity": {"value": 80, "code": "mm[Hg]"}}],
    "valueCodeableConcept": OBSERVATION["code"],
}
# (a valid resource, the path of a field the loader reads in it)
FIELDS: list[tuple[dict[str, Any], tuple[str | int, ...]]] = [
    (REGISTERED, path)
    for path in [
        ("resourceType",), ("id",), ("birthDate",), ("gender",), ("deceasedDateTime",),
        ("deceasedBoolean",), ("extension",), ("extension", 0), ("extension", 0, "url"),
        ("extension", 0, "extension"), ("extension", 0, "extension", 0),
        ("extension", 0, "extension", 0, "url"), ("extension", 0, "extension", 0, "valuePeriod"),
        ("extension", 0, "extension", 0, "valuePeriod", "start"),
        ("extension", 0, "extension", 0, "valuePeriod", "end"),
    ]
] + [
    (OBSERVATION_PANEL, path)
    for path in [
        ("status",), ("code",), ("code", "coding"), ("code", "coding", 0),
        ("code", "coding", 0, "system"), ("code", "coding", 0, "code"), ("subject",),
        ("subject", "reference"), ("effectiveDateTime",), ("effectivePeriod",),
        ("valueQuantity",), ("valueQuantity", "value"), ("valueQuantity", "unit"),
        ("component",), ("component", 0), ("component", 0, "valueQuantity", "value"),
        ("valueCodeableConcept",),
    ]
] + [
    (MEDICATION_REQUEST, path)
    for path in [
        ("intent",), ("status",), ("medicationReference",), ("medicationReference", "reference"),
        ("contained",), ("contained", 0), ("contained", 0, "id"), ("contained", 0, "code"),
        ("medicationCodeableConcept",),
    ]
] + [
    (CONDITION, path)
    for path in [
        ("verificationStatus",), ("verificationStatus", "coding"), ("onsetPeriod",),
        ("onsetPeriod", "start"), ("abatementDateTime",),
    ]
] + [
    (IMMUNIZATION, path) for path in [("patient",), ("vaccineCode",), ("occurrenceDateTime",)]
] + [
    (BUNDLE, path)
    for path in [("entry",), ("entry", 0), ("entry", 0, "resource"), ("entry", 0, "fullUrl")]
]  # fmt: skip

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["final", "order", "2020-01-01", "1951-07", f"Patient/{PATIENT_ID}", "#m1"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _replaced(resource: dict[str, Any], path: tuple[str | int, ...], value: Any) -> Any:
    out = copy.deepcopy(resource)
    node: Any = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_any_json_value_in_a_field_read_loads_or_is_one_clean_line(
    field: tuple[dict[str, Any], tuple[str | int, ...]], value: Any
) -> None:
    """Whatever JSON value stands in a field the loader reads, the load succeeds or stops with
    the loader's own one-line error, no patient's identifier or date in it, and nothing in the
    store."""
    resource, path = field
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bulk"
        folder.mkdir()
        lines = [PATIENT, _replaced(resource, path, value)]
        (folder / "Other.ndjson").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
        engine = open_store(Path(tmp) / "p.sqlite")
        try:
            load_fhir(folder, engine)
        except SourceError as exc:
            message = str(exc).replace(str(folder), "<folder>")
            assert "\n" not in message and "\r" not in message, message
            assert "<folder>/Other.ndjson line 2" in message, message
            assert PATIENT_ID not in message and BIRTH not in message, message
            assert dump(engine) == {}
        finally:
            engine.dispose()
