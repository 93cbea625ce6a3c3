"""``synth``: write a synthetic practice in the canonical schema (for tests, demos, benchmarks)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.cli import app
from agent.errors import AgentUserError
from agent.periods import month_of
from agent.sources.synth import DEFAULT_PERIOD_END, generate_practice

from ._common import JsonOption, console, emit_json, err_console, one_line_errors


def _period_end(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise AgentUserError(f"--period-end {text!r}: not a date (use YYYY-MM-DD)") from None


@app.command("synth")
@one_line_errors
def synth(
    patients: Annotated[int, typer.Option("--patients", help="number of patient rows to write")],
    seed: Annotated[
        int, typer.Option("--seed", help="random seed: the same seed gives the same rows")
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            help="a .db/.sqlite/.sqlite3 (SQLite) or .duckdb/.ddb (DuckDB) file, or a SQLAlchemy "
            "URL (sqlite, duckdb, postgresql)",
        ),
    ],
    quality: Annotated[
        float | None,
        typer.Option(
            "--quality",
            help="practice recording and control quality, 0 to 1 (default: derived from the seed)",
            show_default=False,
        ),
    ] = None,
    period_end: Annotated[
        str,
        typer.Option("--period-end", help="last day of the data, YYYY-MM-DD"),
    ] = DEFAULT_PERIOD_END.isoformat(),
    years: Annotated[int, typer.Option("--years", help="years of coded history")] = 10,
    force: Annotated[
        bool, typer.Option("--force", help="replace an existing file or tables")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a synthetic GP practice (patients, coded events, medication issues)."""
    end = _period_end(period_end)
    show_bar = not as_json and err_console().is_terminal
    if show_bar:
        with Progress(
            TextColumn("generating practice"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console(),
            transient=True,
        ) as bar:
            task = bar.add_task("patients", total=patients)
            summary = generate_practice(
                out,
                patients=patients,
                seed=seed,
                quality=quality,
                period_end=end,
                years=years,
                force=force,
                progress=lambda done, _total: bar.update(task, completed=done),
            )
    else:
        summary = generate_practice(
            out,
            patients=patients,
            seed=seed,
            quality=quality,
            period_end=end,
            years=years,
            force=force,
        )
    if as_json:
        emit_json(summary.as_dict())
        return
    size = f", {summary.bytes / 1e6:.1f} MB" if summary.bytes is not None else ""
    console().print(
        f"wrote {summary.target} ({summary.backend}{size}): {summary.patients:,} patients "
        f"({summary.registered:,} registered on {summary.period_end}), {summary.events:,} events, "
        f"{summary.medications:,} medication issues, quality {summary.quality:.2f}, "
        f"in {summary.seconds:.1f} s"
    )
    # The default end is fixed (the same command gives the same rows, whatever the day): say
    # which month the records reach, as preview, submit and run refuse a month they stop before.
    console().print(
        f"the records end on {end.isoformat()}: preview --period {month_of(end).label} or an "
        "earlier month (a later one would miss everything after; --period-end sets the end)"
    )
