"""FHIR R4: hand-made ndjson and Bundles with known answers, the real Synthea sample checked
against an independent count, and bad input that names the file and line and changes nothing."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sources_helpers import dump, write_ndjson

from agent.errors import SourceError
from agent.sources.common import open_store
from agent.sources.fhir import REGISTRATION_EXTENSION, load_fhir
from tests.text_helpers import without_paths

SCT, LOINC = "http://snomed.info/sct", "http://loinc.org"


def _cc(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


PATIENTS = [
    {
        "resourceType": "Patient",
        "id": "a",
        "gender": "female",
        "birthDate": "1950-03-04",
        "extension": [
            {
                "url": REGISTRATION_EXTENSION,
                "extension": [
                    {
                        "url": "registrationPeriod",
                        "valuePeriod": {"start": "2001-01-01", "end": "2024-05-31"},
                    }
                ],
            }
        ],
    },
    {
        "resourceType": "Patient",
        "id": "b",
        "gender": "male",
        "birthDate": "1940-01",
        "deceasedDateTime": "2024-02-03T10:00:00+00:00",
    },
    {"resourceType": "Patient", "id": "c", "birthDate": "2000-06-07"},
]
OTHERS = [
    # A blood-pressure panel: the components carry the values.
    {
        "resourceType": "Observation",
        "status": "final",
        "code": _cc(LOINC, "85354-9"),
        "subject": {"reference": "Patient/a"},
        "effectiveDateTime": "2024-03-01T09:30:00Z",
        "component": [
            {
                "code": {
                    "coding": [
                        {"system": LOINC, "code": "8480-6"},
                        {"system": SCT, "code": "271649006"},
                    ]
                },
                "valueQuantity": {"value": 142, "unit": "mmHg", "code": "mm[Hg]"},
            },
            {
                "code": _cc(LOINC, "8462-4"),
                "valueQuantity": {"value": 88, "unit": "mmHg", "code": "mm[Hg]"},
            },
        ],
    },
    # HbA1c in %: stored as mmol/mol.
    {
        "resourceType": "Observation",
        "status": "final",
        "code": _cc(LOINC, "4548-4"),
        "subject": {"reference": "Patient/b"},
        "effectiveDateTime": "2023-06-01",
        "valueQuantity": {"value": 8.0, "unit": "%", "code": "%"},
    },
    # A coded value: smoking status "Smoker" is a code of its own.
    {
        "resourceType": "Observation",
        "status": "final",
        "code": _cc(LOINC, "72166-2"),
        "subject": {"reference": "Patient/c"},
        "effectiveDateTime": "2024-01-05",
        "valueCodeableConcept": _cc(SCT, "77176002"),
    },
    {
        "resourceType": "Observation",
        "status": "entered-in-error",
        "code": _cc(LOINC, "8480-6"),
        "subject": {"reference": "Patient/c"},
        "effectiveDateTime": "2024-01-05",
        "valueQuantity": {"value": 200},
    },
    {
        "resourceType": "Condition",
        "code": {
            "coding": [
                {"system": SCT, "code": "38341003"},
                {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"},
                {"system": "http://example.org/local", "code": "HYP1"},
            ]
        },
        "subject": {"reference": "Patient/a"},
        "onsetDateTime": "2010-04-05",
        "recordedDate": "2011-01-01",
        "abatementDateTime": "2020-01-01",
    },
    {
        "resourceType": "Condition",
        "verificationStatus": _cc(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", "refuted"
        ),
        "code": _cc(SCT, "73211009"),
        "subject": {"reference": "Patient/a"},
        "onsetDateTime": "2012-01-01",
    },
    {
        "resourceType": "Condition",
        "code": _cc(SCT, "195967001"),
        "subject": {"reference": "Patient/c"},
        "recordedDate": "2015-05-05",
    },
    {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": _cc("http://hl7.org/fhir/sid/cvx", "140"),
        "patient": {"reference": "Patient/a"},
        "occurrenceDateTime": "2024-10-01",
    },
    {
        "resourceType": "Immunization",
        "status": "not-done",
        "vaccineCode": _cc("http://hl7.org/fhir/sid/cvx", "140"),
        "patient": {"reference": "Patient/b"},
        "occurrenceDateTime": "2023-10-01",
    },
    {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": _cc("https://dmd.nhs.uk", "703907006"),
        "subject": {"reference": "Patient/a"},
        "authoredOn": "2024-02-02",
    },
    {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "plan",
        "medicationCodeableConcept": _cc("https://dmd.nhs.uk", "703907006"),
        "subject": {"reference": "Patient/a"},
        "authoredOn": "2024-02-03",
    },
    {
        "resourceType": "MedicationStatement",
        "status": "active",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "m1",
                "code": _cc("http://www.nlm.nih.gov/research/umls/rxnorm", "314231"),
            }
        ],
        "medicationReference": {"reference": "#m1"},
        "subject": {"reference": "Patient/c"},
        "effectivePeriod": {"start": "2024-01-10"},
    },
    {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/a"}},
    {"resourceType": "Encounter", "id": "e2", "subject": {"reference": "Patient/a"}},
]


def _rows(engine: Any) -> dict[str, Any]:
    rows = dump(engine)
    refs = {r.patient_id: r.local_ref for r in rows["patients"]}
    return {
        "patients": {r.local_ref: r for r in rows["patients"]},
        "events": sorted(
            (refs[r.patient_id], r.date, r.system, r.code, r.value, r.unit) for r in rows["events"]
        ),
        "medications": sorted(
            (refs[r.patient_id], r.date, r.system, r.code) for r in rows["medications"]
        ),
    }


EXPECTED_EVENTS = sorted(
    [
        ("a", dt.date(2024, 3, 1), "loinc", "85354-9", None, None),
        ("a", dt.date(2024, 3, 1), "loinc", "8480-6", 142.0, "mm[Hg]"),
        ("a", dt.date(2024, 3, 1), "snomedct", "271649006", 142.0, "mm[Hg]"),
        ("a", dt.date(2024, 3, 1), "loinc", "8462-4", 88.0, "mm[Hg]"),
        ("b", dt.date(2023, 6, 1), "loinc", "4548-4", 63.9, "mmol/mol"),
        ("c", dt.date(2024, 1, 5), "loinc", "72166-2", None, None),
        ("c", dt.date(2024, 1, 5), "snomedct", "77176002", None, None),
        ("a", dt.date(2010, 4, 5), "snomedct", "38341003", None, None),
        ("a", dt.date(2010, 4, 5), "icd10", "I10", None, None),
        ("c", dt.date(2015, 5, 5), "snomedct", "195967001", None, None),
        ("a", dt.date(2024, 10, 1), "cvx", "140", None, None),
    ]
)


def test_ndjson_folder_known_rows(tmp_path: Path) -> None:
    d = tmp_path / "bulk"
    write_ndjson(d, "Patient.000", PATIENTS)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in OTHERS:
        by_type.setdefault(r["resourceType"], []).append(r)
    for rtype, resources in by_type.items():
        write_ndjson(d, f"{rtype}.000", resources)
    engine = open_store(tmp_path / "s.sqlite")
    report = load_fhir(d, engine)
    got = _rows(engine)
    assert got["events"] == EXPECTED_EVENTS
    assert got["medications"] == [
        ("a", dt.date(2024, 2, 2), "dmd", "703907006"),
        ("c", dt.date(2024, 1, 10), "rxnorm", "314231"),
    ]
    p = got["patients"]
    assert (p["a"].sex, p["b"].sex, p["c"].sex) == ("F", "M", "U")
    # Registration from the extension; the FHIR period end is the last registered day.
    assert p["a"].registration_start == dt.date(2001, 1, 1)
    assert p["a"].registration_end == dt.date(2024, 6, 1)
    # No extension: the first record (b: the HbA1c; c: the 2015 asthma code).
    assert p["b"].registration_start == dt.date(2023, 6, 1)
    assert p["c"].registration_start == dt.date(2015, 5, 5)
    assert p["b"].birth_date == dt.date(1940, 1, 1)  # partial date: first day
    assert p["b"].death_date == dt.date(2024, 2, 3)
    assert report.unknown_resource_types == {"Encounter": 2}
    assert report.skipped["Observation: entered-in-error"] == 1
    assert report.skipped["Condition: refuted"] == 1
    assert report.skipped["Immunization: not-done"] == 1
    assert report.skipped["MedicationRequest intent plan"] == 1
    assert report.skipped["coding in a system fedqi does not read"] == 1
    assert report.converted["HbA1c % converted to mmol/mol"] == 1
    assert sorted(got["patients"]) == ["a", "b", "c"]
    assert {r.patient_id for r in dump(engine)["patients"]} == {1, 2, 3}


def test_transaction_bundle_with_urn_references_gives_the_same_rows(tmp_path: Path) -> None:
    d = tmp_path / "bulk"
    write_ndjson(d, "Patient.000", PATIENTS)
    write_ndjson(d, "Other.000", OTHERS)
    ndjson_engine = open_store(tmp_path / "n.sqlite")
    load_fhir(d, ndjson_engine)

    urn = {
        p["id"]: f"urn:uuid:0000000{i}-0000-4000-8000-000000000000" for i, p in enumerate(PATIENTS)
    }
    entries = []
    # Other resources first: references may come before the Patient they point to.
    for r in OTHERS:
        r = json.loads(json.dumps(r))
        for field in ("subject", "patient"):
            if field in r:
                r[field]["reference"] = urn[r[field]["reference"].split("/")[1]]
        entries.append({"resource": r, "request": {"method": "POST", "url": r["resourceType"]}})
    for p in PATIENTS:
        entries.append({"fullUrl": urn[p["id"]], "resource": p})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    bundle_engine = open_store(tmp_path / "b.sqlite")
    load_fhir(path, bundle_engine)
    assert _rows(bundle_engine) == _rows(ndjson_engine)


def test_truncated_ndjson_line_names_file_and_line_and_changes_nothing(tmp_path: Path) -> None:
    engine = open_store(tmp_path / "s.sqlite")
    good = tmp_path / "good"
    write_ndjson(good, "Patient.000", PATIENTS)
    load_fhir(good, engine)
    before = dump(engine)
    bad = tmp_path / "bad"
    write_ndjson(bad, "Patient.000", PATIENTS)
    path = write_ndjson(
        bad, "Condition.000", [r for r in OTHERS if r["resourceType"] == "Condition"]
    )
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # the last line cut off mid-object
    with pytest.raises(SourceError) as info:
        load_fhir(bad, engine)
    assert f"{path} line 3: not valid JSON" in str(info.value)
    assert dump(engine) == before


def test_reference_to_a_missing_patient_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "bulk"
    write_ndjson(d, "Patient.000", PATIENTS[:1])
    write_ndjson(d, "Condition.000", [r for r in OTHERS if r["resourceType"] == "Condition"])
    engine = open_store(tmp_path / "s.sqlite")
    with pytest.raises(SourceError) as info:
        load_fhir(d, engine)
    msg = str(info.value)
    assert (
        "Condition.000.ndjson line 3 (Condition), field subject.reference: no such Patient in "
        "the data being loaded"
    ) in msg
    assert "Patient/c" not in msg  # the reference names a patient: its line says where
    assert dump(engine) == {}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_value_that_is_not_finite_is_an_error(tmp_path: Path, literal: str) -> None:
    # JSON has no NaN or Infinity, but Python's reader takes them: a NaN reading would compare
    # differently in each database (SQLite stores it as NULL), so it is refused by name.
    d = tmp_path / "bulk"
    write_ndjson(d, "Patient.000", PATIENTS[:1])
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": _cc(LOINC, "8480-6"),
        "subject": {"reference": "Patient/a"},
        "effectiveDateTime": "2024-01-05",
        "valueQuantity": {"value": 1.5, "unit": "mmHg"},
    }
    path = write_ndjson(d, "Observation.000", [obs])
    path.write_text(path.read_text().replace("1.5", literal))
    engine = open_store(tmp_path / "s.sqlite")
    with pytest.raises(SourceError) as info:
        load_fhir(d, engine)
    msg = str(info.value)
    assert "Observation.000.ndjson line 1 (Observation), field valueQuantity.value" in msg
    assert "is not a finite number" in msg
    assert dump(engine) == {}


def test_patient_without_birth_date_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "bulk"
    write_ndjson(d, "Patient.000", [PATIENTS[0], {"resourceType": "Patient", "id": "x"}])
    with pytest.raises(
        SourceError, match=r"Patient\.000\.ndjson line 2 \(Patient\), field birthDate"
    ):
        load_fhir(d, open_store(tmp_path / "s.sqlite"))


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (
            {
                "resourceType": "Observation",
                "id": "bp1",
                "status": "final",
                "code": _cc(LOINC, "8480-6"),
                "effectiveDateTime": "1999-12-31T23:00:00Z",
                "valueQuantity": {"value": 150},
            },
            "effectiveDateTime",
        ),
        (
            # a partial date: all of its month is before birth
            {
                "resourceType": "Condition",
                "id": "dx1",
                "code": _cc(SCT, "38341003"),
                "recordedDate": "1999-03",
            },
            "recordedDate",
        ),
        (
            {
                "resourceType": "MedicationRequest",
                "id": "rx1",
                "intent": "order",
                "medicationCodeableConcept": _cc("https://dmd.nhs.uk", "318420003"),
                "authoredOn": "1988",
            },
            "authoredOn",
        ),
    ],
    ids=["observation", "condition-partial-date", "medication"],
)
@pytest.mark.parametrize("registered", [False, True], ids=["no-registration", "registration"])
def test_a_record_dated_before_the_patients_birth_is_an_error(
    tmp_path: Path, record: dict[str, Any], field: str, registered: bool
) -> None:
    """Patient c (born 2000-06-07) with and without a registrationPeriod: either way a record
    dated before birth stops the load, naming the file, line, resource type, field and the
    Patient's file and line (not the dates or ids, as the other impossible dates), and nothing
    is loaded."""
    patient = dict(PATIENTS[2])
    if registered:
        patient["extension"] = PATIENTS[0]["extension"]  # registered from 2001-01-01
    d = tmp_path / "bulk"
    write_ndjson(d, "Patient.000", [PATIENTS[0], patient])
    rtype, rid = record["resourceType"], record["id"]
    write_ndjson(d, "Other.000", [OTHERS[0], {**record, "subject": {"reference": "Patient/c"}}])
    engine = open_store(tmp_path / "s.sqlite")
    with pytest.raises(SourceError) as info:
        load_fhir(d, engine)
    message = str(info.value)
    assert (
        f"Other.000.ndjson line 2 ({rtype}), field {field}: this {rtype} is dated before the "
        f"birthDate of its Patient ({d / 'Patient.000.ndjson'} line 2): a record cannot precede "
        "the patient's birth; nothing was loaded"
    ) in message, message
    # No patient's date or identifier is printed (the file's path aside, which a test's
    # folder names).
    rest = message.replace(str(d), "")
    assert "2000" not in rest and record[field][:4] not in rest, message
    assert "Patient/c" not in rest and rid not in rest, message
    assert dump(engine) == {}


def test_a_partial_date_in_the_month_of_birth_loads_and_registration_starts_at_birth(
    tmp_path: Path,
) -> None:
    """``2000-06`` may be any day of June 2000, so for a patient born 2000-06-07 it is no
    impossible date; it is stored as the birth date, not as 2000-06-01 (which would put the
    record before the birth), and does not start the registration before birth."""
    d = tmp_path / "bulk"
    write_ndjson(d, "Patient.000", [PATIENTS[2]])
    record = {
        "resourceType": "Condition",
        "code": _cc(SCT, "195967001"),
        "subject": {"reference": "Patient/c"},
        "recordedDate": "2000-06",
    }
    write_ndjson(d, "Other.000", [record])
    engine = open_store(tmp_path / "s.sqlite")
    load_fhir(d, engine)
    stored = dump(engine)
    (row,) = stored["patients"]
    assert row.birth_date == row.registration_start == dt.date(2000, 6, 7)
    (event,) = stored["events"]
    assert event.date == dt.date(2000, 6, 7)


# --- the real Synthea sample --------------------------------------------------------------


def _independent_counts(folder: Path) -> dict[str, Any]:
    """What the loader should produce, counted by a separate plain reading of the files."""
    lines: Counter[str] = Counter()
    patients = 0
    events = meds = 0
    for path in sorted(folder.glob("*.ndjson")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            rtype = r["resourceType"]
            lines[rtype] += 1
            if rtype == "Patient":
                patients += 1
            elif rtype == "Condition":
                events += len({(c["system"], c["code"]) for c in r["code"]["coding"]})
            elif rtype == "Immunization" and r["status"] != "not-done":
                events += len(r["vaccineCode"]["coding"])
            elif rtype == "MedicationRequest":
                meds += len(r["medicationCodeableConcept"]["coding"])
    return {"lines": lines, "patients": patients, "events": events, "medications": meds}


def test_synthea_bulk_sample(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "fhir-bulk-10"
    expected = _independent_counts(folder)
    engine = open_store(tmp_path / "s.sqlite")
    report = load_fhir(folder, engine)
    assert report.patients == expected["patients"] == expected["lines"]["Patient"] == 13
    assert report.events == expected["events"]
    assert report.medications == expected["medications"]
    assert report.unknown_resource_types == {
        "AllergyIntolerance": expected["lines"]["AllergyIntolerance"]
    }
    rows = dump(engine)
    # Every FHIR id kept as local_ref; ids renumbered 1..13.
    ids = {
        json.loads(line)["id"] for line in (folder / "Patient.000.ndjson").read_text().splitlines()
    }
    assert {r.local_ref for r in rows["patients"]} == ids
    assert {r.patient_id for r in rows["patients"]} == set(range(1, 14))
    # Systems kept: SNOMED conditions, CVX immunisations, RxNorm medications.
    assert {r.system for r in rows["events"]} == {"snomedct", "cvx"}
    assert {r.system for r in rows["medications"]} == {"rxnorm"}
    flu = sum(1 for r in rows["events"] if (r.system, r.code) == ("cvx", "140"))
    assert flu == 110
    deceased = sum(
        1 for line in (folder / "Patient.000.ndjson").read_text().splitlines()
        if "deceasedDateTime" in json.loads(line)
    )  # fmt: skip
    assert sum(1 for r in rows["patients"] if r.death_date is not None) == deceased


def test_synthea_sample_meets_the_default_codelists(shared_data: Path, tmp_path: Path) -> None:
    """Synthea's SNOMED CT diagnoses that are members of the national clusters count (patients
    per cluster as counted independently from the files), and its CVX and RxNorm codes, which
    no default list uses, load but are reported as not counted."""
    from agent.library import load_default_catalogue
    from agent.sources.check import check_source

    folder = shared_data / "fhir-bulk-10"
    catalogue = load_default_catalogue()
    members = {
        cl.id: {c.code for c in cl.codes if c.system == "snomedct"} for cl in catalogue.codelists
    }
    expected: dict[str, set[str]] = {}
    for line in (folder / "Condition.000.ndjson").read_text().splitlines():
        res = json.loads(line)
        for coding in res["code"]["coding"]:
            if coding["system"] == "http://snomed.info/sct":
                for cl_id, codes in members.items():
                    if coding["code"] in codes:
                        expected.setdefault(cl_id, set()).add(res["subject"]["reference"])
    engine = open_store(tmp_path / "s.sqlite")
    load_fhir(folder, engine)
    result = check_source(engine, catalogue, dt.date(2025, 1, 1))
    got = {c.id: c.patients for c in result.codelists if c.patients}
    assert got == {k: len(v) for k, v in expected.items()}
    assert got["hyp"] > 0 and got["dm"] > 0
    assert {"cvx", "rxnorm"} <= set(result.other_systems)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"deceasedDateTime": "1939-12-31T23:00:00Z"}, "deceasedDateTime: before birthDate"),
        (
            {
                "extension": [
                    {
                        "url": REGISTRATION_EXTENSION,
                        "extension": [
                            {"url": "registrationPeriod", "valuePeriod": {"start": "1939-06-01"}}
                        ],
                    }
                ]
            },
            "registrationPeriod.start: before birthDate (registered before birth)",
        ),
    ],
    ids=["died-before-birth", "registered-before-birth"],
)
def test_patient_dates_that_cannot_be_are_an_error(
    tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    d = tmp_path / "bulk"
    write_ndjson(d, "Patient.000", [PATIENTS[0], {**PATIENTS[1], **change}])
    engine = open_store(tmp_path / "s.sqlite")
    with pytest.raises(SourceError) as info:
        load_fhir(d, engine)
    assert f"Patient.000.ndjson line 2 (Patient), field {field}" in str(info.value)
    assert "1939" not in without_paths(str(info.value))  # no patient's date is printed
    assert dump(engine) == {}
