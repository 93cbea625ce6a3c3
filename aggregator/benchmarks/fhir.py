"""A FHIR R4 MeasureReport (type summary) of one practice's indicator for one period: the
populations of its whole-practice cell and one stratifier by age band and sex. A FHIR resource
is JSON of FHIR's own shape (``dict[str, Any]``), built here and served as application/fhir+json.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from ..db.cells import stored_cells
from ..errors import NotFoundError
from . import areas, entries_store, service
from .listing import resolve
from .viewer import Viewer

POP_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
DISCLOSURE_EXT = "urn:fedqi:fhir:disclosure-status"


def _population(code: str, value: int | None, status: str) -> dict[str, Any]:
    pop: dict[str, Any] = {"code": {"coding": [{"system": POP_SYSTEM, "code": code}]}}
    if value is None:
        pop["extension"] = [{"url": DATA_ABSENT, "valueCode": "masked"}]
    else:
        pop["count"] = int(value)
        if status == "rounded":
            pop["extension"] = [{"url": DISCLOSURE_EXT, "valueCode": "rounded"}]
    return pop


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _populations(
    num: int | None, ns: str, den: int | None, ds: str, exc: int | None, es: str
) -> list[dict[str, Any]]:
    # FHIR counts the denominator before exclusions; the catalogue's denominator is after them.
    fhir_den = _add(den, exc)
    ds_all = "suppressed" if fhir_den is None else ("rounded" if "rounded" in (ds, es) else "exact")
    return [
        _population("initial-population", fhir_den, ds_all),
        _population("denominator", fhir_den, ds_all),
        _population("denominator-exclusion", exc, es),
        _population("numerator", num, ns),
    ]


def _score(num: int | None, den: int | None) -> dict[str, Any] | None:
    if num is None or den is None or den == 0:
        return None
    return {"value": round(min(num / den, 1.0), 6)}


def _fhir_datetime(value: dt.datetime) -> str:
    # SQLite hands back naive datetimes; they were written in UTC. FHIR needs the offset.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


def measure_report(
    session: Session, viewer: Viewer, ods: str, indicator: str, period: str | None = None
) -> dict[str, Any]:
    """A FHIR R4 MeasureReport (type summary) of one practice's indicator for one period: the
    populations of its whole-practice cell and one stratifier by age band and sex."""
    p = viewer.require(ods)
    start, end = resolve(session, period, indicator)
    row = service.practice_row(session, indicator, start, end, ods)
    if row is None:
        raise NotFoundError(
            f"{ods} sent no {indicator} cell for period ending {end}", code="no-cell"
        )
    # An unverified row (its stored cells are not the signed ones) shows no stratum either.
    stored = (
        None
        if row.status == service.UNVERIFIED
        else entries_store.sealed_cell(session, row.submission_id, indicator)
    )
    strata = sorted(
        (c for c in (stored_cells(stored) if stored is not None else []) if not c.is_total),
        key=lambda c: (c.age_band, c.sex),
    )
    group: dict[str, Any] = {
        "code": {"coding": [{"system": "urn:fedqi:indicator", "code": indicator}]},
        "population": _populations(row.numerator, row.numerator_status, row.denominator, row.denominator_status, row.exclusions, row.exclusions_status),
    }  # fmt: skip
    # Out of season (areas.in_season) the counts are what the practice sent, but no score is a
    # measure: a 0.0 read as a practice that vaccinated nobody.
    measured = areas.in_season(indicator, end)
    score = _score(row.numerator, row.denominator) if measured else None
    if score:
        group["measureScore"] = score
    if strata:
        group["stratifier"] = [
            {
                "code": [{"text": "age band"}, {"text": "sex"}],
                "stratum": [
                    {
                        "component": [
                            {"code": {"text": "age band"}, "value": {"text": c.age_band}},
                            {
                                "code": {"text": "sex"},
                                "value": {
                                    "coding": [
                                        {
                                            "system": "http://hl7.org/fhir/administrative-gender",
                                            "code": {
                                                "F": "female",
                                                "M": "male",
                                                "U": "unknown",
                                            }.get(c.sex, "unknown"),
                                        }
                                    ],
                                    "text": c.sex,
                                },
                            },
                        ],
                        "population": _populations(
                            c.numerator,
                            c.numerator_status,
                            c.denominator,
                            c.denominator_status,
                            c.exclusions,
                            c.exclusions_status,
                        ),
                        **(
                            {"measureScore": s}
                            if measured and (s := _score(c.numerator, c.denominator))
                            else {}
                        ),
                    }  # fmt: skip
                    for c in strata
                ],
            }
        ]
    summ = service.summary_row(session, indicator, start, end)
    version = row.indicator_version
    return {
        "resourceType": "MeasureReport",
        "id": f"{ods}-{indicator}-{end.isoformat()}".lower().replace("_", "-"),
        "status": "complete",
        "type": "summary",
        "measure": f"urn:fedqi:measure:{indicator}" + (f"|{version}" if version else ""),
        "date": _fhir_datetime(summ.computed_at if summ else dt.datetime.now(dt.UTC)),
        "reporter": {"identifier": {"system": ODS_SYSTEM, "value": ods}, "display": p.name},
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "improvementNotation": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/measure-improvement-notation",
                    "code": "increase",
                }
            ]
        },
        "group": [group],
    }
