"""The agent's indicator engine: catalogue rules compiled to SQL over the canonical tables.

    compute_cells(engine, catalogue, period_end, indicators=None) -> list[RawCell]
    compute_periods(engine, catalogue, period_ends, indicators=None) -> {end: list[RawCell]}
    compile_sql(engine_or_dialect, catalogue, indicator_id, period_end) -> str
    worklist_patients(engine, catalogue, indicator_id, period_end) -> list[(patient_id, local_ref)]

Beside the compiler: ``reference.py`` (the plain-Python oracle the SQL is tested against),
``compute.py`` (opening the practice database and running the engine, for the CLI),
``worklist.py`` (recall lists for the practice's own screen) and ``explain.py`` (an indicator in
plain English).

Only this package (and the reference evaluator that tests it) reads patient rows. What it
returns is counts (``RawCell``), which must pass through ``protocol.disclosure`` before anything
leaves; worklists are for the practice's own screen and files only. See docs/engine.md.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from protocol.catalogue import Catalogue, Indicator
from protocol.disclosure import RawCell

if TYPE_CHECKING:  # SQLAlchemy loads where a statement is compiled, not with this package: a
    # preview with a stored statement (agent/engine/stored.py) runs without it.
    import sqlalchemy as sa

    from .compiler import CodeMatch

Method = Literal["auto", "changes", "sql"]


__all__ = ["compile_sql", "compute_cells", "compute_periods", "worklist_patients"]


def compute_cells(
    engine: sa.Engine,
    catalogue: Catalogue,
    period_end: dt.date,
    indicators: Sequence[str] | None = None,
    *,
    code_match: CodeMatch = "join",
) -> list[RawCell]:
    """Counts for every stratum of every indicator (``Catalogue.strata_for``: the total first,
    zeros included), indicators in catalogue order; one SQL statement for all of them."""
    from .compiler import plan_for

    plan = plan_for(engine.dialect, catalogue, indicators, period_end, code_match)
    with engine.connect() as conn:
        rows = conn.execute(plan.counts_query()).all()
    return _cells(catalogue, plan.indicators, rows)


def compute_periods(
    engine: sa.Engine,
    catalogue: Catalogue,
    period_ends: Sequence[dt.date],
    indicators: Sequence[str] | None = None,
    *,
    code_match: CodeMatch = "join",
    method: Method = "auto",
) -> dict[dt.date, list[RawCell]]:
    """``compute_cells`` for every period end, from one pass over the coded rows (up to the
    latest end), so a 12-month backfill is one pass, not twelve. Same cells as
    ``compute_cells`` for each end.

    ``method``: ``"changes"`` evaluates each patient's rules once as bit masks over the period
    ends, from per-(patient, code set, bucket) aggregates (``timeline.py``, up to 63 ends);
    ``"sql"`` evaluates every (patient, period end) in one SQL statement (``compiler.py``);
    ``"auto"`` (the default) takes the first for up to 63 ends."""
    from .compiler import plan_for

    if not period_ends:
        return {}
    ends = sorted(set(period_ends))
    from . import timeline

    if method == "changes" or (method == "auto" and len(ends) <= timeline.MAX_ENDS):
        from .compiler import select_indicators

        chosen = select_indicators(catalogue, indicators)
        by_index = timeline.compute(engine, catalogue, chosen, tuple(ends), code_match)
        return {end: _cells(catalogue, chosen, by_index[i]) for i, end in enumerate(ends)}
    plan = plan_for(engine.dialect, catalogue, indicators, ends[-1], code_match, ends=ends)
    with engine.connect() as conn:
        rows = conn.execute(plan.counts_query()).all()
    by_end: dict[int, list[Sequence[object]]] = {i: [] for i in range(len(ends))}
    for row in rows:
        by_end[int(row[0])].append(row[1:])
    return {end: _cells(catalogue, plan.indicators, by_end[i]) for i, end in enumerate(ends)}


def _cells(
    catalogue: Catalogue, indicators: Sequence[Indicator], rows: Sequence[Sequence[object]]
) -> list[RawCell]:
    """Every stratum's cell from the grouped (age_band, sex, counts...) rows."""
    n = len(indicators)
    # (indicator index, band, sex) -> [denominator, numerator, exclusions]
    sums: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        band, sex = str(row[0]), str(row[1])
        # A sex outside F/M/U (the schema forbids it) would count in the total and its age
        # band only; the reference evaluator does the same.
        keys = {("all", "all"), (band, "all")}
        if sex in ("F", "M", "U"):
            keys |= {(band, sex), ("all", sex)}
        values = [int(v or 0) for v in row[2 : 2 + 3 * n]]  # type: ignore[call-overload]
        for i in range(n):
            d, nu, ex = values[3 * i : 3 * i + 3]
            if not (d or nu or ex):
                continue  # adds nothing (a backfill's rows are mostly zeros)
            for key in keys:
                acc = sums[(i, *key)]
                acc[0] += d
                acc[1] += nu
                acc[2] += ex
    cells: list[RawCell] = []
    for i, ind in enumerate(indicators):
        for band, sex in catalogue.strata_for(ind):
            d, nu, ex = sums.get((i, band, sex), (0, 0, 0))
            cells.append(RawCell(ind.id, band, sex, d, nu, ex))
    return cells


def compile_sql(
    engine_or_dialect: sa.Engine | sa.Dialect,
    catalogue: Catalogue,
    indicator_id: str,
    period_end: dt.date,
) -> str:
    """The SQL ``compute_cells`` runs for one indicator, with every bound rendered inline."""
    import sqlalchemy as sa

    from .compiler import plan_for

    dialect = (
        engine_or_dialect.dialect if isinstance(engine_or_dialect, sa.Engine) else engine_or_dialect
    )
    plan = plan_for(dialect, catalogue, [indicator_id], period_end)
    compiled = plan.counts_query().compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    return str(compiled)


def worklist_patients(
    engine: sa.Engine,
    catalogue: Catalogue,
    indicator_id: str,
    period_end: dt.date,
) -> list[tuple[int, str | None]]:
    """(patient_id, local_ref) of the patients in the indicator's denominator but not its
    numerator, by patient_id. For the practice's own recall work: never sent anywhere."""
    from .compiler import plan_for

    plan = plan_for(engine.dialect, catalogue, [indicator_id], period_end)
    with engine.connect() as conn:
        return [(int(r[0]), r[1]) for r in conn.execute(plan.worklist_query())]
