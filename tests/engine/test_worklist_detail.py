"""The worklist's detail: each patient's last reading (value and date) of what the numerator
measures and the date the patient falls due, on a tiny practice whose answers are known."""

from __future__ import annotations

import csv
import io

import sqlalchemy as sa
from engine_spec_helpers import (
    D,
    E,
    catalogue,
    codelist,
    ev,
    indicator,
    load,
    med,
    patient,
    practice,
)

from agent.engine import worklist_patients
from agent.engine.worklist import Last, Target, build_worklist, due_date, targets_of
from protocol.catalogue import All, Any_, HasCode, LatestValue, Not, OnRegister, Window

BP = All(
    of=(
        LatestValue(codelist="sbp", window=Window(months=12), op="<=", value=140),
        LatestValue(codelist="dbp", window=Window(months=12), op="<=", value=90),
    )
)
STATIN = Any_(
    of=(
        HasCode(codelist="statin", table="medications", window=Window(months=6)),
        HasCode(codelist="other", table="medications", window=Window(months=6)),
    )
)
CODES = [codelist("hyp", "38341003"), codelist("sbp", "1001"), codelist("dbp", "1002"),
         codelist("statin", "S1", system="dmd"), codelist("other", "S2", system="dmd")]  # fmt: skip


def _engine(tmp_path, prac):  # type: ignore[no-untyped-def]
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    load(engine, prac)
    return engine


def test_last_readings_and_due_dates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ind = indicator(OnRegister(codelist="hyp"), BP, ind_id="HYP_BP")
    cat = catalogue(ind, codelists=CODES)
    pts = [patient(i) for i in (1, 2, 3, 4)]
    rows = [ev(i, D(2010, 1, 1), "38341003") for i in (1, 2, 3, 4)]
    rows += [
        # 1: controlled (not on the list)
        ev(1, D(2024, 1, 5), "1001", 130), ev(1, D(2024, 1, 5), "1002", 80),
        # 2: high reading in the window; same day, the lowest systolic decides (150)
        ev(2, D(2023, 11, 30), "1001", 150), ev(2, D(2023, 11, 30), "1001", 162),
        ev(2, D(2023, 11, 30), "1002", 85), ev(2, D(2024, 4, 2), "1001", 120),  # after E: ignored
        # 3: last readings out of the window (lapsed)
        ev(3, D(2022, 8, 31), "1001", 128), ev(3, D(2022, 2, 1), "1002", 70),
        # 4: never a reading (a code with no value does not count as one)
        ev(4, D(2023, 6, 1), "1001"),
    ]  # fmt: skip
    engine = _engine(tmp_path, practice(pts, rows))
    patients = worklist_patients(engine, cat, "HYP_BP", E)
    assert [p for p, _ in patients] == [2, 3, 4]
    wl = build_worklist(engine, cat, "HYP_BP", E, patients)
    got = list(csv.DictReader(io.StringIO(wl.to_csv())))
    assert list(got[0]) == ["patient_id", "local_ref", "last_sbp", "last_sbp_date",
                            "last_dbp", "last_dbp_date", "due", "why"]  # fmt: skip
    two, three, four = got
    assert (two["last_sbp"], two["last_sbp_date"], two["last_dbp"]) == ("150", "2023-11-30", "85")
    # in the window but above target: on the list now, falls due when the reading lapses
    assert (two["due"], two["why"]) == ("2024-11-30", "out of target")
    # lapsed: the earliest of the two lapses (All: both must hold)
    assert (three["last_sbp_date"], three["last_dbp_date"], three["due"]) == (
        "2022-08-31",
        "2022-02-01",
        "2023-02-01",
    )
    assert three["why"] == "last record too old"
    assert (four["last_sbp"], four["last_sbp_date"], four["due"]) == ("", "", "now")
    assert four["why"] == "no record"
    assert two["local_ref"] == "ref2"


def test_a_medication_indicator_falls_due_at_the_latest_alternative(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ind = indicator(OnRegister(codelist="hyp"), STATIN, ind_id="ST")
    cat = catalogue(ind, codelists=CODES)
    pts = [patient(1), patient(2)]
    rows = [ev(i, D(2010, 1, 1), "38341003") for i in (1, 2)]
    meds = [med(1, D(2023, 5, 31), "S1"), med(1, D(2023, 8, 31), "S2"), med(1, D(2023, 2, 1), "S1")]
    engine = _engine(tmp_path, practice(pts, rows, meds))
    wl = build_worklist(engine, cat, "ST", E, worklist_patients(engine, cat, "ST", E))
    got = {r["patient_id"]: r for r in csv.DictReader(io.StringIO(wl.to_csv()))}
    assert (
        got["1"]["last_statin_date"] == "2023-05-31" and got["1"]["last_other_date"] == "2023-08-31"
    )
    assert (
        got["1"]["due"] == "2024-02-29"
    )  # Any: the later issue lapses last (31 Aug + 6 months, clipped)
    assert (
        got["2"]["due"] == "now" and "last_statin" not in got["2"]
    )  # no value column for an issue


def test_targets_skip_what_a_recall_cannot_change() -> None:
    rule = All(of=(BP, Not(rule=HasCode(codelist="other")), OnRegister(codelist="hyp")))
    assert [t.codelist for t in targets_of(rule)] == ["sbp", "dbp"]
    assert due_date(OnRegister(codelist="hyp"), {}) is None
    lasts = {("sbp", "events"): Last(D(2023, 5, 1), 150.0)}
    assert due_date(BP, lasts) is None  # no dbp: due now
    assert Target("sbp", "events", 12, "<=", 140).label == "sbp <= 140 in 12 months"
