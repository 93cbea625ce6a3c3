"""``worklist``: the practice's own patients in an indicator's denominator but not its numerator,
with their last values and due dates (agent/engine/worklist.py).

Local only: printed, or written to a file the user names. This module imports nothing that
signs, stores or sends (tests check it), so a worklist has no path to the outbox.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from agent.cli import app
from agent.engine.compute import newest_record, open_source
from agent.engine.worklist import build_worklist, write_worklist
from agent.errors import AgentUserError
from agent.home.catalogue_cache import load_catalogue
from agent.periods import (
    last_complete_period,
    month_of,
    parse_period,
    require_ended,
    stale_source,
)

from ._common import (
    HomeOption,
    JsonOption,
    columns,
    console,
    emit_json,
    one_line_errors,
    settings_for,
    warn,
)


@app.command()
@one_line_errors
def worklist(
    indicator: Annotated[
        str,
        typer.Argument(
            metavar="INDICATOR", help="an indicator id of the network's catalogue, e.g. DM_HBA1C"
        ),
    ],
    home: HomeOption = None,
    period: Annotated[
        str | None, typer.Option("--period", help="YYYY-MM (default: the last complete month)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write a CSV file here (mode 0600) instead")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the practice's own patients in INDICATOR's denominator but not its numerator, for
    recall, each with the last value and date of what the indicator measures (the BP, the
    HbA1c, the last issue) and the date the patient falls due. Printed, or written as CSV to a
    local file (--out); never sent, never in the outbox."""
    from agent.engine import worklist_patients

    settings = settings_for(home)
    catalogue = load_catalogue(settings)
    try:
        ind = catalogue.indicator(indicator)
    except KeyError:
        known = ", ".join(i.id for i in catalogue.indicators)
        raise AgentUserError(
            f"unknown indicator {indicator!r}: catalogue {catalogue.id} v{catalogue.version} "
            f"has {known}"
        ) from None
    if ind.id.endswith("_REG"):  # the catalogue's registers (docs/benchmarks-statistics.md)
        raise AgentUserError(
            f"{ind.id} is a register (the share of the list with the condition), not a target a "
            "recall can meet: it has no worklist (its denominator less its numerator is everyone "
            "not on the register)"
        )
    today = dt.date.today()
    # As preview and submit: a month not yet over would list patients as of a day to come.
    p = require_ended(parse_period(period), today) if period else last_complete_period(today)
    engine = open_source(settings)
    try:
        newest = newest_record(engine)
        stale = stale_source(p, newest)
        if stale and newest is not None:  # old records make everyone "last record too old"
            warn(
                f"{stale}. The list below is computed on those records. Load a current "
                f"extract, or use --period {month_of(newest).label}, the month of the newest "
                "record"
            )
        rows = worklist_patients(engine, catalogue, ind.id, p.end)
        wl = build_worklist(engine, catalogue, ind.id, p.end, rows)
    finally:
        engine.dispose()
    if out is not None:
        write_worklist(wl, out, forbidden_dir=settings.home)
        console().print(f"{_patients(len(rows))} written to {out} (local file; never sent)")
        return
    if as_json:
        emit_json(wl.to_json())
        return
    title = f"{ind.id} worklist on {p.end}: {ind.title} (local only, never sent)"
    console().print(columns(title, wl.header(), wl.rows()))
    each = "For each: the" if len(rows) != 1 else "Its"
    console().print(
        f"{_patients(len(rows))} in the denominator but not the numerator. {each} last "
        f"record of {', '.join(t.label for t in wl.targets) or 'the numerator'} up to {p.end}, "
        "and when the patient falls due (now: no record)."
    )


def _patients(n: int) -> str:
    return f"{n} patient{'s' if n != 1 else ''}"
