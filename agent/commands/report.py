"""``preview`` and ``explain``: what would leave the practice, and why."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from contextlib import ExitStack
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from agent.cli import app
from agent.engine.compute import compute_raw_cells, open_source
from agent.engine.explain import explain_indicator
from agent.errors import AgentUserError
from agent.home.catalogue_cache import load_catalogue
from agent.home.keystore import TRUST_FILE, Keystore, load_trust_matching
from agent.outbound.outbox import OUTBOX_FILE, Outbox
from agent.outbound.release import (
    build_submission,
    count_short,
    effective_policy,
    last_complete_period,
    parse_period,
    practice_guard,
)
from agent.outbound.suppression import beyond_policy, suppression_reasons
from agent.periods import month_of, require_ended, stale_source
from protocol.submission import Period

from ._cells import (
    HINT,
    AllOption,
    IndicatorFilter,
    StratumFilter,
    check_strata,
    reason_text,
    select_cells,
    status_line,
    summary_table,
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

PeriodOption = Annotated[str, typer.Option("--period", help="the month, YYYY-MM")]

EXPLAIN_CODES_SHOWN = 10


def _indicator(catalogue, indicator_id: str):  # type: ignore[no-untyped-def]
    try:
        return catalogue.indicator(indicator_id)
    except KeyError:
        known = ", ".join(i.id for i in catalogue.indicators)
        raise AgentUserError(
            f"unknown indicator {indicator_id!r}: catalogue {catalogue.id} v{catalogue.version} "
            f"has {known}"
        ) from None


def _say_stale(period: Period, newest: dt.date | None) -> None:
    """Warn of a period the records stop well before: said, not refused, as a preview sends
    nothing (submit and run refuse it)."""
    stale = stale_source(period, newest)
    if stale and newest is not None:
        warn(
            f"{stale}. The counts below are computed on those records, and submit and run "
            f"refuse this period. Load a current extract, or preview --period "
            f"{month_of(newest).label}, the month of the newest record"
        )


@app.command()
@one_line_errors
def preview(
    period: PeriodOption,
    home: HomeOption = None,
    local: Annotated[
        bool, typer.Option("--local", help="also show the exact local counts (never sent)")
    ] = False,
    indicator: IndicatorFilter = None,
    stratum: StratumFilter = None,
    show_all: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """Show what would be sent for PERIOD, after disclosure control and the disclosure guard
    (with this practice's earlier releases, as sending runs it): a summary per indicator
    first; --indicator / --stratum show those cells in full, with why each suppressed count is
    suppressed; --all every cell. --json prints the Submission payload itself."""
    if local and as_json:
        raise AgentUserError("--local cannot be combined with --json (the JSON is the payload)")
    if as_json and (indicator or stratum):
        raise AgentUserError(
            "--indicator/--stratum cannot be combined with --json (the JSON is the whole payload)"
        )
    p = require_ended(parse_period(period), dt.date.today())  # only what could be sent
    settings = settings_for(home)
    catalogue = load_catalogue(settings)
    for ind in indicator or []:
        _indicator(catalogue, ind)  # an unknown id fails now, before anything is computed
    check_strata(stratum, catalogue)  # and so does a stratum the catalogue cannot have
    policy = effective_policy(catalogue, settings)
    if (settings.home / TRUST_FILE).exists():
        trust = load_trust_matching(settings.home, settings.practice, settings.aud)
        practice, aud = trust.practice, trust.aud
    else:
        settings.require("practice", "aud")
        practice, aud = str(settings.practice), str(settings.aud)
    kid = Keystore(settings.home).active().kid
    computed = compute_raw_cells(settings, catalogue, p.end)
    raw, kind = computed.cells, computed.kind
    _say_stale(p, computed.newest)
    seq, sent = 1, None
    with ExitStack() as stack:
        outbox = None
        if (settings.home / OUTBOX_FILE).exists():
            outbox = stack.enter_context(Outbox.open(settings.home))
            seq = max((m.seq or 0 for m in outbox.messages()), default=0) + 1
            accepted = [m for m in outbox.for_period(p.label) if m.state == "accepted"]
            sent = accepted[-1].id if accepted else None
        # The disclosure guard as sending runs it (docs/disclosure.md, "The disclosure guard").
        guarded = practice_guard(settings, outbox, catalogue, raw, policy, p)
    sub = build_submission(
        catalogue=catalogue,
        raw_cells=raw,
        period=p,
        practice=practice,
        aud=aud,
        kid=kid,
        seq=seq,
        now=int(time.time()),
        policy=policy,
        source_kind=kind,
        submission_id=str(uuid.uuid4()),
        cells=guarded.cells,
    )
    if as_json:
        typer.echo(sub.to_bytes().decode("utf-8"))
        if guarded.held_reason:
            typer.echo(f"note: sending would hold this month: {guarded.held_reason}", err=True)
        return
    out = console()
    out.print(
        f"[bold]Preview[/bold]: practice {practice}, period {p.label} ({p.start} to {p.end}), "
        f"catalogue {catalogue.id} v{catalogue.version}, policy {policy.name}"
    )
    if sent is not None:
        out.print(
            f"Period {p.label} was sent already (message #{sent}; `fedqi-agent audit show {sent}` "
            f"shows what): this is what a correction (`fedqi-agent submit --period {p.label} "
            "--correction REASON`) would send, its suppressed counts kept suppressed."
        )
    # Only what the guard adds to disclosure control's own suppression (a correction's guard
    # keeps the earlier version's suppressed counts, most of them suppressed anyway).
    extra = beyond_policy(raw, sub.cells, policy) if guarded.withheld else set()
    if extra:
        out.print(
            f"The disclosure guard withholds {len(extra)} more count(s), which linked "
            "tables or this practice's earlier releases would narrow, or which protect those "
            "(--all shows which)."
        )
    if guarded.held_reason:
        out.print(
            "[bold]Sending would hold this month for your approval[/bold] (`fedqi-agent "
            f"pending`): {escape(guarded.held_reason)}"
        )
    legend = (
        f"~N: rounded to the nearest {policy.stratified.round_to}; *: suppressed (no number is "
        "sent). Nothing is sent by preview."
    )
    if not (show_all or local or indicator or stratum):
        out.print(summary_table(sub, "What would be sent: whole-practice counts per indicator"))
        out.print(status_line(sub) + ".")
        out.print(legend)
        out.print(HINT)
        return
    cells = select_cells(sub.cells, indicator, stratum)
    reasons = suppression_reasons(raw, sub.cells, policy, guarded.withheld)
    header = ["indicator", "age band", "sex", "denom", "num", "excl"]
    local_cols = ["local denom", "local num", "local excl"]
    header += [*local_cols, "suppressed because"] if local else ["suppressed because"]
    exact = {(c.indicator, c.age_band, c.sex): c for c in raw}
    rows = []
    for cell in cells:
        row = [
            cell.indicator,
            cell.stratum.age_band,
            cell.stratum.sex,
            count_short(cell.denominator),
            count_short(cell.numerator),
            count_short(cell.exclusions),
        ]
        if local:
            rc = exact[cell.key]
            row += [str(rc.denominator), str(rc.numerator), str(rc.exclusions)]
        row.append(reason_text(cell, reasons))
        rows.append(row)
    title = "What would be sent" + (" (and local counts, never sent)" if local else "")
    out.print(columns(title, header, rows, dim=local_cols))
    out.print(f"{len(cells)} of {len(sub.cells)} cells. {legend}")
    if local:
        out.print("local columns: exact counts for this screen only, NEVER SENT.")


@app.command()
@one_line_errors
def explain(
    indicator: Annotated[
        str,
        typer.Argument(
            metavar="INDICATOR", help="an indicator id of the network's catalogue, e.g. DM_HBA1C"
        ),
    ],
    home: HomeOption = None,
    period: Annotated[
        str | None, typer.Option("--period", help="period for the SQL bounds (YYYY-MM)")
    ] = None,
    all_codes: Annotated[
        bool, typer.Option("--all-codes", help="list every code of each codelist")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Explain INDICATOR: the rule in plain English, its codelists (where each was published,
    and the first codes of each; --all-codes for every code) and the SQL the engine runs."""
    import sqlalchemy as sa

    from agent.engine import compile_sql

    # The catalogue is the home's (the default one before enrolment), so the home must exist
    # (load_catalogue says so) unless catalogue.path names one; source.url is read if set.
    settings = settings_for(home, need_home=False)
    catalogue = load_catalogue(settings)
    ind = _indicator(catalogue, indicator)
    p = parse_period(period) if period else last_complete_period(dt.date.today())
    if settings.source.url:
        engine = open_source(settings)
        try:
            sql = compile_sql(engine, catalogue, ind.id, p.end)
        finally:
            engine.dispose()
    else:
        sql = compile_sql(sa.create_engine("sqlite://").dialect, catalogue, ind.id, p.end)
    info = explain_indicator(catalogue, ind)
    info["period"] = p.label
    info["sql"] = sql
    if as_json:
        emit_json(info)
        return
    out = console()
    out.print(f"[bold]{ind.id}[/bold] v{ind.version}: {ind.title}")
    if ind.qof:
        out.print(f"mirrors QOF {ind.qof}")
    out.print(f"why: {ind.rationale}")
    if ind.simplifications:
        out.print(f"simplifies: {ind.simplifications}")
    out.print(f"population: {info['population']}")
    out.print(f"numerator: {info['numerator']}")
    if info["exclusions"]:
        out.print(f"exclusions: {info['exclusions']}")
    out.print(f"counts: {info['counts']}")
    for cl in info["codelists"]:
        src = cl["source"]
        shown = cl["codes"] if all_codes else cl["codes"][:EXPLAIN_CODES_SHOWN]
        more = len(cl["codes"]) - len(shown)
        table = Table(
            title=f"codelist {cl['id']}: {cl['title']}",
            caption=(
                f"{src['cluster']}: {src['publisher_id']} version {src['version']}, "
                f"{len(cl['codes'])} codes (codes_sha256 {cl['codes_sha256'][:16]}...)"
                + (f"; {more} more not shown (--all-codes lists them)" if more else "")
            ),
        )
        for col in ("system", "code", "term"):
            table.add_column(col)
        for c in shown:
            table.add_row(c["system"], c["code"], c["term"] or "")
        out.print(table)
    out.print(f"SQL for period {p.label}:")
    out.print(sql, markup=False)
