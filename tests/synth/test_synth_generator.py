"""The synthetic practice generator: deterministic, realistic in its numbers, the same rows on
every backend, and all-or-nothing on failure."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent.errors import AgentUserError
from agent.sources import synth

E = synth.DEFAULT_PERIOD_END
E_ISO = E.isoformat()
W0_ISO = "2016-04-01"  # first day of the 10-year window ending 2026-03-31


def _norm(v: Any) -> Any:
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, float):
        return round(v, 6)
    return v


def _digest(rows: Iterable[tuple[Any, ...]]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(repr(tuple(_norm(v) for v in row)).encode())
    return h.hexdigest()


def _table_digests(fetch: Callable[[str], list[tuple[Any, ...]]]) -> dict[str, str]:
    order = {
        "patients": "patient_id",
        "events": "patient_id, date, system, code, value NULLS FIRST, unit NULLS FIRST",
        "medications": "patient_id, date, system, code",
    }
    return {t: _digest(fetch(f"SELECT * FROM {t} ORDER BY {o}")) for t, o in order.items()}


def _sqlite_digests(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return _table_digests(lambda q: conn.execute(q).fetchall())


def _sa_digests(url: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return _table_digests(lambda q: [tuple(r) for r in conn.execute(sa.text(q))])
    finally:
        engine.dispose()


# --- determinism --------------------------------------------------------------------------------


def test_same_seed_gives_identical_rows_and_another_seed_does_not(tmp_path: Path) -> None:
    a = synth.generate_practice(tmp_path / "a.db", patients=300, seed=11)
    b = synth.generate_practice(tmp_path / "b.db", patients=300, seed=11)
    synth.generate_practice(tmp_path / "c.db", patients=300, seed=12)
    assert (a.events, a.medications, a.registered) == (b.events, b.medications, b.registered)
    assert _sqlite_digests(tmp_path / "a.db") == _sqlite_digests(tmp_path / "b.db")
    da, dc = _sqlite_digests(tmp_path / "a.db"), _sqlite_digests(tmp_path / "c.db")
    assert all(da[t] != dc[t] for t in da)


def test_parallel_generation_writes_the_same_rows_as_serial(tmp_path: Path) -> None:
    synth.generate_practice(tmp_path / "s.db", patients=250, seed=5, parallel=False)
    synth.generate_practice(tmp_path / "p.db", patients=250, seed=5, parallel=True)
    assert _sqlite_digests(tmp_path / "s.db") == _sqlite_digests(tmp_path / "p.db")


def test_quality_defaults_from_the_seed_and_is_reported() -> None:
    assert synth.practice_quality(3) == synth.practice_quality(3)
    qs = {round(synth.practice_quality(s), 6) for s in range(50)}
    assert len(qs) == 50 and all(0 < q < 1 for q in qs)
    # Beta(4, 3): practices spread across the range, most in the middle.
    assert 0.45 < sum(qs) / len(qs) < 0.7


# --- realism ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def practice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.SynthSummary]:
    path = tmp_path_factory.mktemp("synth") / "practice.db"
    summary = synth.generate_practice(path, patients=4000, seed=2024, quality=0.6)
    return path, summary


def _registered_view(conn: sqlite3.Connection) -> None:
    conn.execute(
        f"""CREATE TEMP VIEW reg AS SELECT *,
            CAST(strftime('%Y', '{E_ISO}') AS INT) - CAST(strftime('%Y', birth_date) AS INT)
              - (strftime('%m-%d', '{E_ISO}') < strftime('%m-%d', birth_date)) AS age
            FROM patients WHERE registration_start <= '{E_ISO}'
              AND (registration_end IS NULL OR registration_end > '{E_ISO}')
              AND (death_date IS NULL OR death_date > '{E_ISO}')"""
    )


def _register_share(
    conn: sqlite3.Connection,
    codes: tuple[str, ...],
    resolved: tuple[str, ...] | None,
    min_age: int,
) -> float:
    marks = ",".join("?" for _ in codes)
    sql = (
        f"SELECT COUNT(*) FROM reg r WHERE age >= ? AND EXISTS (SELECT 1 FROM events e "
        f"WHERE e.patient_id = r.patient_id AND e.code IN ({marks}))"
    )
    args: list[Any] = [min_age, *codes]
    if resolved:
        # Resolved after the latest register code: off the register.
        sql += (
            " AND NOT EXISTS (SELECT 1 FROM events x WHERE x.patient_id = r.patient_id AND "
            f"x.code IN ({','.join('?' for _ in resolved)}) AND x.date >= (SELECT MAX(date) "
            f"FROM events y WHERE y.patient_id = r.patient_id AND y.code IN ({marks})))"
        )
        args += [*resolved, *codes]
    on = conn.execute(sql, args).fetchone()[0]
    den = conn.execute("SELECT COUNT(*) FROM reg WHERE age >= ?", [min_age]).fetchone()[0]
    return on / den


def test_population_structure_is_uk_like(practice: tuple[Path, synth.SynthSummary]) -> None:
    path, summary = practice
    with sqlite3.connect(path) as conn:
        _registered_view(conn)
        n = conn.execute("SELECT COUNT(*) FROM reg").fetchone()[0]
        assert n == summary.registered
        assert 0.70 <= n / summary.patients <= 0.85
        share = dict(
            conn.execute(
                "SELECT CASE WHEN age < 20 THEN 'u20' WHEN age >= 80 THEN '80+' "
                "WHEN age >= 65 THEN '65-79' ELSE '20-64' END, COUNT(*) * 1.0 / ? "
                "FROM reg GROUP BY 1",
                [n],
            ).fetchall()
        )
        assert 0.18 <= share["u20"] <= 0.29
        assert 0.10 <= share["65-79"] <= 0.19
        assert 0.025 <= share["80+"] <= 0.08
        sexes = dict(conn.execute("SELECT sex, COUNT(*) * 1.0 / ? FROM reg GROUP BY sex", [n]))
        assert 0.45 <= sexes["F"] <= 0.55 and 0.45 <= sexes["M"] <= 0.55
        assert sexes.get("U", 0) < 0.01
        # Deaths and leavers over the decade, with a death date equal to the registration end.
        dead = conn.execute(
            "SELECT COUNT(*) FROM patients WHERE death_date IS NOT NULL"
        ).fetchone()[0]
        left = conn.execute(
            "SELECT COUNT(*) FROM patients WHERE registration_end IS NOT NULL AND death_date IS NULL"
        ).fetchone()[0]
        assert 0.04 <= dead / summary.patients <= 0.10
        assert 0.10 <= left / summary.patients <= 0.25
        assert (
            conn.execute(
                "SELECT COUNT(*) FROM patients WHERE death_date IS NOT NULL "
                "AND registration_end IS NOT death_date"
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute(
                "SELECT COUNT(*) FROM patients WHERE registration_start < birth_date "
                "OR registration_end <= registration_start"
            ).fetchone()[0]
            == 0
        )


@pytest.mark.parametrize(
    ("name", "codes", "resolved", "min_age", "low", "high"),
    [
        ("hypertension", synth.HYP_CODES, synth.HYP_RES, 0, 0.11, 0.19),
        ("diabetes 17+", synth.DM_CODES, synth.DM_RES, 17, 0.05, 0.10),
        ("CHD", synth.CHD_CODES, None, 0, 0.018, 0.045),
        ("AF", synth.AF_CODES, None, 0, 0.010, 0.032),
        ("stroke/TIA", synth.STIA_CODES, None, 0, 0.008, 0.028),
        ("COPD", synth.COPD_CODES, None, 0, 0.008, 0.035),
        ("asthma 6+", synth.ASTHMA_CODES, synth.ASTHMA_RES, 6, 0.045, 0.10),
        ("CKD 3-5, 18+", synth.CKD_CODES, synth.CKD_RESOLVING, 18, 0.025, 0.065),
        ("heart failure", synth.HF_CODES, None, 0, 0.005, 0.02),
    ],
)
def test_condition_prevalences_are_realistic(
    practice: tuple[Path, synth.SynthSummary],
    name: str,
    codes: tuple[str, ...],
    resolved: tuple[str, ...] | None,
    min_age: int,
    low: float,
    high: float,
) -> None:
    path, _ = practice
    with sqlite3.connect(path) as conn:
        _registered_view(conn)
        share = _register_share(conn, codes, resolved, min_age)
    assert low <= share <= high, f"{name} prevalence {share:.3%} outside [{low:.1%}, {high:.1%}]"


def test_event_volume_and_dates(practice: tuple[Path, synth.SynthSummary]) -> None:
    path, summary = practice
    with sqlite3.connect(path) as conn:
        person_years = conn.execute(
            f"""SELECT SUM(julianday(MIN(COALESCE(registration_end, '2026-04-01'), '2026-04-01'))
                         - julianday(MAX(registration_start, '{W0_ISO}'))) / 365.25
                FROM patients WHERE COALESCE(registration_end, '2026-04-01') > '{W0_ISO}'"""
        ).fetchone()[0]
        rate = summary.events / person_years
        assert 20 <= rate <= 60, f"{rate:.1f} coded events per patient-year"
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == summary.events
        assert conn.execute("SELECT COUNT(*) FROM medications").fetchone()[0] == summary.medications
        assert 0.05 <= summary.medications / summary.events <= 0.2
        # Nothing after the period end; only diagnoses (carried in the record) before the window.
        assert conn.execute("SELECT MAX(date) FROM events").fetchone()[0] <= E_ISO
        assert conn.execute("SELECT MAX(date) FROM medications").fetchone()[0] <= E_ISO
        register_codes = (
            synth.HYP_CODES
            + synth.DM_CODES
            + synth.CHD_CODES
            + synth.STIA_CODES
            + synth.AF_CODES
            + synth.COPD_CODES
            + synth.ASTHMA_CODES
            + synth.CKD_CODES
            + synth.HF_CODES
            + synth.HYP_RES
            + synth.DM_RES
            + synth.CKD_RESOLVING
            + synth.ASTHMA_RES
            + synth.COPD_RES
        )
        marks = ",".join("?" for _ in register_codes)
        early = conn.execute(
            f"SELECT COUNT(*) FROM events WHERE date < ? AND code NOT IN ({marks})",
            [W0_ISO, *register_codes],
        ).fetchone()[0]
        assert early == 0
        # Nothing is recorded after a patient left; only diagnoses and resolutions (transferred
        # with the record) come before joining; medication issues fall within registration.
        outside = conn.execute(
            f"""SELECT COUNT(*) FROM events e JOIN patients p USING (patient_id)
                WHERE (p.registration_end IS NOT NULL AND e.date >= p.registration_end)
                   OR (e.date < p.registration_start AND e.code NOT IN ({marks}))""",
            register_codes,
        ).fetchone()[0]
        assert outside == 0
        assert (
            conn.execute(
                """SELECT COUNT(*) FROM medications m JOIN patients p USING (patient_id)
               WHERE m.date < p.registration_start
                  OR (p.registration_end IS NOT NULL AND m.date >= p.registration_end)"""
            ).fetchone()[0]
            == 0
        )
        filler = conn.execute(
            f"SELECT COUNT(*) FROM events WHERE code IN ({','.join('?' * len(synth.PROBLEMS))})",
            synth.PROBLEMS,
        ).fetchone()[0]
        assert 0.4 <= filler / summary.events <= 0.85
        # Plausible values with units.
        lo, hi = conn.execute(
            "SELECT MIN(value), MAX(value) FROM events WHERE code = '163030003'"
        ).fetchone()
        assert lo >= 70 and hi <= 230
        units = {
            u for (u,) in conn.execute("SELECT DISTINCT unit FROM events WHERE value IS NOT NULL")
        }
        assert {"mm[Hg]", "mmol/mol", "kg"} <= units
        assert (
            conn.execute(
                "SELECT COUNT(*) FROM events WHERE value IS NOT NULL AND unit IS NULL AND system != 'omop'"
            ).fetchone()[0]
            == 0
        )
        # Some hypertension and diabetes diagnoses are resolved.
        resolved = dict(
            conn.execute(
                "SELECT code, COUNT(*) FROM events WHERE code IN (?, ?) GROUP BY code",
                [*synth.HYP_RES, *synth.DM_RES],
            )
        )
        assert resolved.get(synth.HYP_RES[0], 0) >= 5


def _bp_control_u80(path: Path) -> float:
    """HYP008-like: hypertensives aged 79 or under whose latest systolic and diastolic in the
    last 12 months are at most 140 and 90 (lowest value on the latest day)."""
    with sqlite3.connect(path) as conn:
        _registered_view(conn)
        marks = ",".join("?" for _ in synth.HYP_CODES)
        latest = """(SELECT MIN(value) FROM events v WHERE v.patient_id = r.patient_id
                     AND v.code IN ({c}) AND v.date = (SELECT MAX(date) FROM events w
                     WHERE w.patient_id = r.patient_id AND w.code IN ({c}) AND w.date > '2025-03-31'))"""
        sbp = latest.format(c=",".join(f"'{c}'" for c in set(synth.SBP_CODES)))
        dbp = latest.format(c=",".join(f"'{c}'" for c in set(synth.DBP_CODES)))
        den, num = conn.execute(
            f"""SELECT COUNT(*), SUM(COALESCE({sbp} <= 140 AND {dbp} <= 90, 0)) FROM reg r
                WHERE age <= 79 AND EXISTS (SELECT 1 FROM events e WHERE e.patient_id = r.patient_id
                  AND e.code IN ({marks}))
                AND NOT EXISTS (SELECT 1 FROM events x WHERE x.patient_id = r.patient_id
                  AND x.code = ?)""",
            [*synth.HYP_CODES, *synth.HYP_RES],
        ).fetchone()
    return num / den


def test_bp_control_is_realistic_and_rises_with_quality(tmp_path: Path) -> None:
    low = tmp_path / "low.db"
    high = tmp_path / "high.db"
    synth.generate_practice(low, patients=2500, seed=77, quality=0.05)
    synth.generate_practice(high, patients=2500, seed=77, quality=0.95)
    p_low, p_high = _bp_control_u80(low), _bp_control_u80(high)
    # QOF HYP008 achievement is typically 55-75 %; practices spread around it.
    assert 0.30 <= p_low <= 0.65 and 0.50 <= p_high <= 0.85, (p_low, p_high)
    assert p_high - p_low >= 0.08, (p_low, p_high)


# --- backends -----------------------------------------------------------------------------------


def test_duckdb_target_holds_the_same_rows_as_sqlite(tmp_path: Path) -> None:
    s = synth.generate_practice(tmp_path / "x.db", patients=200, seed=9)
    # Generated in two processes writing CSV parts, merged by one read_csv per table.
    d = synth.generate_practice(tmp_path / "x.duckdb", patients=200, seed=9, parallel=True)
    assert d.backend == "duckdb" and (d.events, d.medications) == (s.events, s.medications)
    assert _sa_digests(f"duckdb:///{tmp_path / 'x.duckdb'}") == _sqlite_digests(tmp_path / "x.db")


def test_sqlite_url_target_and_indexes(tmp_path: Path) -> None:
    summary = synth.generate_practice(f"sqlite:///{tmp_path / 'u.sqlite'}", patients=50, seed=1)
    assert summary.backend == "sqlite" and summary.bytes
    with sqlite3.connect(tmp_path / "u.sqlite") as conn:
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ix_events_code", "ix_medications_code"} <= names


@pytest.mark.postgres
def test_postgresql_target_in_one_transaction(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    url = pg_database_factory()
    summary = synth.generate_practice(url, patients=150, seed=4)
    assert summary.backend == "postgresql" and summary.bytes is None
    synth.generate_practice(tmp_path / "same.db", patients=150, seed=4)
    assert _sa_digests(url) == _sqlite_digests(tmp_path / "same.db")
    with pytest.raises(AgentUserError, match="already has table"):
        synth.generate_practice(url, patients=10, seed=4)
    again = synth.generate_practice(url, patients=20, seed=5, force=True)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM patients")).scalar() == 20
        assert conn.execute(sa.text("SELECT COUNT(*) FROM events")).scalar() == again.events
    engine.dispose()


# --- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("suffix", [".db", ".duckdb"])
def test_failure_midway_leaves_nothing_behind(tmp_path: Path, suffix: str, parallel: bool) -> None:
    target = tmp_path / f"broken{suffix}"

    def explode(done: int, total: int) -> None:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        synth.generate_practice(target, patients=30, seed=1, progress=explode, parallel=parallel)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_kept_without_force_and_replaced_with_it(tmp_path: Path) -> None:
    target = tmp_path / "p.db"
    target.write_bytes(b"precious")
    with pytest.raises(AgentUserError, match="already exists; use --force"):
        synth.generate_practice(target, patients=5, seed=1)
    assert target.read_bytes() == b"precious"
    summary = synth.generate_practice(target, patients=5, seed=1, force=True)
    assert summary.patients == 5
    with sqlite3.connect(target) as conn:
        assert conn.execute("SELECT COUNT(*) FROM patients").fetchone()[0] == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patients": 0, "seed": 1}, "--patients must be from 1 to 1,000,000"),
        ({"patients": 5, "seed": -1}, "--seed must be 0 or more"),
        ({"patients": 5, "seed": 1, "quality": 1.5}, "--quality must be between 0 and 1"),
        ({"patients": 5, "seed": 1, "years": 0}, "years must be between 1 and 50"),
    ],
)
def test_bad_arguments_are_user_errors(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(AgentUserError, match=message):
        synth.generate_practice(tmp_path / "x.db", **kwargs)
    assert not (tmp_path / "x.db").exists()


# --- the default catalogue on a synthetic practice ------------------------------------------------

# Whole-practice rates a real English practice could show (QOF achievement and prevalence
# spreads, widened for a 3,000-patient list); every default indicator must have patients.
REALISTIC_RATES = {
    "HYP_REG": (0.10, 0.20),
    "HYP_BP_U80": (0.40, 0.85),
    "HYP_BP_80": (0.40, 0.92),
    "DM_REG": (0.04, 0.11),
    "DM_HBA1C": (0.40, 0.85),
    "DM_BP": (0.35, 0.85),
    "DM_STATIN": (0.45, 0.92),
    "AF_REG": (0.008, 0.035),
    "AF_ANTICOAG": (0.60, 0.98),
    "CHD_REG": (0.015, 0.045),
    "CHD_STATIN": (0.55, 0.97),
    "STIA_REG": (0.008, 0.03),
    "CKD_REG": (0.02, 0.07),
    "AST_REG": (0.035, 0.09),
    "AST_REVIEW": (0.30, 0.90),
    "COPD_REG": (0.006, 0.035),
    "COPD_REVIEW": (0.45, 0.98),
    # Current or ex-smoker status only (NSMOK_COD is not public): recorded never-smokers, about
    # half of people with long-term conditions, do not count.
    "SMOK_STATUS": (0.20, 0.75),
    "BP_5Y": (0.65, 0.97),
    "FLU_65": (0.50, 0.90),
}


def test_default_catalogue_gives_realistic_rates_on_a_synthetic_practice(tmp_path: Path) -> None:
    from agent.engine import compute_cells
    from agent.library import load_default_catalogue
    from agent.sources import store

    path = tmp_path / "q.db"
    synth.generate_practice(path, patients=3000, seed=31, quality=0.5)
    catalogue = load_default_catalogue()
    engine = store.open_practice(path, read_only=True)
    try:
        cells = compute_cells(engine, catalogue, E)
    finally:
        engine.dispose()
    totals = {c.indicator: c for c in cells if c.age_band == "all" and c.sex == "all"}
    assert set(totals) == {i.id for i in catalogue.indicators}
    for ind_id, cell in totals.items():
        assert cell.denominator > 0 and cell.numerator > 0, ind_id
    for ind_id, (low, high) in REALISTIC_RATES.items():
        rate = totals[ind_id].numerator / totals[ind_id].denominator
        assert low <= rate <= high, f"{ind_id}: {rate:.3f} outside [{low}, {high}]"
    # Exclusions (new diagnoses or registrations) happen, but are a small minority.
    hyp = totals["HYP_BP_U80"]
    assert 0 < hyp.exclusions < 0.2 * (hyp.denominator + hyp.exclusions)


def test_other_period_end_and_history_length(tmp_path: Path) -> None:
    end = dt.date(2024, 2, 29)  # a leap day: the window starts on 1 March 2021
    summary = synth.generate_practice(
        tmp_path / "leap.db", patients=200, seed=3, period_end=end, years=3
    )
    assert summary.period_end == end and summary.years == 3
    with sqlite3.connect(tmp_path / "leap.db") as conn:
        assert conn.execute("SELECT MAX(date) FROM events").fetchone()[0] <= "2024-02-29"
        assert conn.execute("SELECT MIN(date) FROM medications").fetchone()[0] >= "2021-03-01"
        assert (
            conn.execute("SELECT MAX(registration_start) FROM patients").fetchone()[0]
            <= "2024-02-29"
        )


def test_clinical_codes_come_from_the_full_clusters_and_filler_from_none() -> None:
    """Every register, value and drug code the generator draws is a member of a default
    codelist, drawn from the whole list; the filler and volume codes are in no list."""
    from agent.library import load_default_catalogue

    catalogue = load_default_catalogue()
    listed = {c.code for cl in catalogue.codelists for c in cl.codes}
    assert set(synth.HYP_CODES) == {c.code for c in catalogue.codelist("hyp").codes}
    assert set(synth.STATINS) == {c.code for c in catalogue.codelist("statin").codes}
    assert len(set(synth.INHALERS)) == len(catalogue.codelist("asthma_drug").codes)
    drawn = (
        synth.DM_CODES + synth.SBP_CODES + synth.DBP_CODES + synth.HBA1C_CODES + synth.AF_CODES
        + synth.HF_CODES + synth.CHD_CODES + synth.STIA_CODES + synth.CKD_CODES + synth.DOACS
        + synth.WARFARIN + synth.FLU_CODES + synth.FLU_DRUGS + synth.SMOKER_CODES
    )  # fmt: skip
    assert set(drawn) <= listed
    filler = (
        set(synth.ENCOUNTERS) | set(synth.PROBLEMS) | set(synth.CERVICAL_CODES)
        | set(synth.ANTIHYPERTENSIVES)
        | {synth.NEVER_SMOKED, synth.WEIGHT, synth.HEIGHT, synth.BMI, synth.EGFR, synth.CHOLESTEROL}
    )  # fmt: skip
    assert not filler & listed
