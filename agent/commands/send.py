"""``submit``, ``run``, ``pending``, ``approve``, ``reject``: the path out of the practice."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Annotated, NoReturn

import typer
from rich.progress import Progress

from agent.cli import app
from agent.errors import AgentUserError, ExitCode, TransportError
from agent.home.settings import AgentSettings
from agent.outbound import background
from agent.outbound.outbox import Message, Outbox
from agent.outbound.release import describe_submission, payload_of
from agent.outbound.submitter import (
    GUARD_NOTE,
    MAX_HELD_AGE,
    KeyRevokedError,
    Outcome,
    StaleSourceError,
    run_due,
    submit_period,
)
from agent.outbound.submitter import approve as approve_message
from agent.outbound.submitter import reject as reject_message

from ._cells import (
    HINT,
    AllOption,
    IndicatorFilter,
    StratumFilter,
    cell_lines,
    select_cells,
    signed_policy,
    summary_table,
)
from ._common import (
    HomeOption,
    JsonOption,
    console,
    emit_json,
    err_console,
    invocation_environ,
    one_line_errors,
    settings_for,
)

CORRECTIONS = ("data_correction", "late_data", "codelist_fix", "software_fix")

AllowStaleOption = Annotated[
    bool,
    typer.Option(
        "--allow-stale",
        help="send a period that ends more than 31 days after the newest dated record in the "
        "practice database (refused otherwise: a stale extract), when the practice has truly "
        "recorded nothing since",
    ),
]


def tell_retry(what: str, failure: str, failed: int, tries: int, wait: float) -> None:
    """Say at once that the aggregator is not answering, rather than waiting in silence."""
    how = "is limiting requests" if failure.startswith("HTTP 429") else "did not answer"
    err_console().print(
        f"{what}: the aggregator {how} ({failure}); try {failed} of {tries} failed, "
        f"next in {wait:g} s. Anything signed is already stored in the outbox and stays queued "
        "if every try fails.",
        markup=False,
        highlight=False,
    )


def _print_outcome(outcome: Outcome) -> None:
    out = console()
    where = f"period {outcome.period}" if outcome.period else "message"
    if outcome.state == "accepted":
        out.print(
            f"{where}: sent and accepted (outbox #{outcome.message_id}, log leaf "
            f"{outcome.leaf_index}); receipt verified and stored"
        )
    elif outcome.state == "held":
        out.print(
            f"{where}: held for approval as #{outcome.message_id}: see `fedqi-agent "
            f"pending`, then `approve {outcome.message_id}` or `reject {outcome.message_id}`"
        )
        if outcome.detail and outcome.detail != "waiting for approval":
            out.print(f"  why: {outcome.detail}", markup=False)
    else:
        out.print(f"{where}: {outcome.state} (#{outcome.message_id}) {outcome.detail}")


@app.command()
@one_line_errors
def submit(
    period: Annotated[str, typer.Option("--period", help="the month, YYYY-MM")],
    home: HomeOption = None,
    correction: Annotated[
        str | None,
        typer.Option(
            "--correction",
            help="resubmit an accepted period as a correction, giving why: one of "
            + ", ".join(CORRECTIONS),
        ),
    ] = None,
    supersedes: Annotated[
        str | None,
        typer.Option(
            "--supersedes",
            help="with --correction: the submission id it replaces, when another agent home sent "
            "it (after a re-enrolment; the aggregator's refusal names it)",
        ),
    ] = None,
    allow_stale: AllowStaleOption = False,
    as_json: JsonOption = False,
) -> None:
    """Compute PERIOD, apply disclosure control, sign, store in the outbox, then send (release
    policy auto) or hold for approval (hold). A period ending more than 31 days after the
    practice's newest dated record is refused (--allow-stale sends it)."""
    if correction is not None and correction not in CORRECTIONS:
        raise AgentUserError(f"--correction {correction!r}: use one of {', '.join(CORRECTIONS)}")
    settings = settings_for(home)
    try:
        outcome = submit_period(
            settings,
            period,
            now=int(time.time()),
            correction=correction,  # type: ignore[arg-type]
            supersedes=supersedes,
            on_retry=tell_retry,
            allow_stale=allow_stale,
            on_warning=_warn,
        )
    except TransportError as exc:
        _resend_in_background(settings, exc)
    if as_json:
        emit_json(outcome.to_json())
    else:
        _print_outcome(outcome)


def _resend_in_background(settings: AgentSettings, exc: TransportError) -> NoReturn:
    """The aggregator could not be reached: if a message waits queued, resend it from a
    background process (agent.outbound.background) and say so in the error."""
    with Outbox.open(settings.home) as outbox:
        queued = bool(outbox.messages(state="queued"))
    note = background.start(settings, invocation_environ()) if queued else None
    if note is None:
        raise exc
    raise type(exc)(f"{exc}; {note}") from None


@app.command()
@one_line_errors
def run(
    home: HomeOption = None,
    as_json: JsonOption = False,
    queued_only: Annotated[
        bool,
        typer.Option("--queued-only", help="only resend what is queued; submit no new period"),
    ] = False,
    keep_trying: Annotated[
        int | None,
        typer.Option(
            "--keep-trying",
            metavar="SECONDS",
            min=1,
            help="while the aggregator cannot be reached, try again (with backoff) for up to "
            "SECONDS until nothing is queued (what the background resend runs)",
        ),
    ] = None,
    allow_stale: AllowStaleOption = False,
) -> None:
    """Resend anything queued, then submit every period due since the last one submitted (for
    cron, a systemd timer or Windows Task Scheduler); says which submissions wait for approval
    (see pending, approve). Stops, exit 2, at a period ending more than 31 days after the
    practice's newest dated record (--allow-stale sends it), and, exit 6, at the first refusal
    for a revoked key, signing nothing more then or later. Exits non-zero if anything
    failed, and 9 when, with release auto, a month the disclosure guard held waits for
    approval (the months due after it wait for it)."""
    settings = settings_for(home)
    if keep_trying is not None:
        _keep_trying(settings, keep_trying, queued_only)
        return
    stopped: StaleSourceError | KeyRevokedError | None = None
    shown = not as_json and sys.stdout.isatty()  # a progress bar only for a person watching
    try:
        with Progress(console=console(), transient=True) if shown else nullcontext() as bar:
            step: Callable[[str, int, int], None] | None = None
            if bar is not None:
                task = bar.add_task("submitting", total=None)

                def step(label: str, done: int, total: int) -> None:
                    bar.update(task, description=f"period {label}", completed=done, total=total)

            outcomes = run_due(
                settings,
                now=int(time.time()),
                today=dt.date.today(),
                progress=step,
                on_retry=tell_retry,
                queued_only=queued_only,
                allow_stale=allow_stale,
                on_warning=_warn,
            )
    except (StaleSourceError, KeyRevokedError) as exc:
        # what it did before stopping is said, then why it stopped
        outcomes, stopped = exc.outcomes, exc
    with Outbox.open(settings.home) as outbox:
        held = outbox.messages(kind="submission", state="held")
    if as_json:
        emit_json([o.to_json() for o in outcomes])
    else:
        # Held months count as submitted, so with release "hold" a run often has nothing new
        # to do while months wait for approval (and expire after 6 days): say so, counting
        # every held month, those this run held as well.
        if not outcomes and stopped is None:
            if queued_only:  # it submits nothing new: say what it did not look at
                console().print("nothing queued (--queued-only: due months not submitted)")
            else:
                console().print("nothing new due" if held else "nothing due")
        for outcome in outcomes:
            _print_outcome(outcome)
        if held:
            console().print(held_note(held, int(time.time())), markup=False)
    if stopped is not None:
        raise stopped
    refused = [o for o in outcomes if o.state == "refused"]
    if refused:
        raise typer.Exit(ExitCode.REFUSED)
    if settings.release == "auto" and not queued_only:
        guarded = [m for m in held if m.state_note.startswith(GUARD_NOTE)]
        if guarded:
            raise guard_stopped(guarded)


def guard_stopped(guarded: list[Message]) -> AgentUserError:
    """A run with release auto that leaves a month the disclosure guard held (exit 9): nothing
    failed, but months stopped going out, so a scheduler that alerts only on failure sees it.
    With release hold, every month waits for a person anyway: run exits 0 then."""
    first = min(guarded, key=lambda m: m.seq or 0)
    listed = ", ".join(f"#{m.id} (period {m.period})" for m in guarded)
    return AgentUserError(
        f"release is auto, but the disclosure guard held {listed} for approval: "
        f"{'it is' if len(guarded) == 1 else 'they are'} not sent, nor any month due after "
        f"{'it' if len(guarded) == 1 else 'them'}, until approved or rejected. Review with "
        f"`fedqi-agent pending`, then `fedqi-agent approve {first.id}` or `fedqi-agent reject "
        f"{first.id}`",
        ExitCode.HELD,
    )


def _age(seconds: int) -> str:
    """How long ago, in words: 'less than a day ago', '1 day ago', '3 days ago'."""
    days = seconds // 86400
    return "less than a day ago" if days <= 0 else "1 day ago" if days == 1 else f"{days} days ago"


def held_note(held: list[Message], now: int) -> str:
    """What waits for approval, and how to review it before it can no longer be approved."""
    listed = ", ".join(f"#{m.id} ({m.period})" for m in held)
    oldest = min(held, key=lambda m: payload_of(m).iat)
    age = now - payload_of(oldest).iat
    expired = [m for m in held if now - payload_of(m).iat > MAX_HELD_AGE]
    when = (
        f"{len(expired)} of them signed more than 6 days ago can no longer be approved: reject "
        "and submit again"
        if expired
        else f"the oldest, #{oldest.id}, was signed {_age(age)}"
    )
    return (
        f"{len(held)} submission(s) held for approval, not sent: {listed}. Review them with "
        "`fedqi-agent pending`, then `fedqi-agent approve ID` or `fedqi-agent reject ID`; a held "
        f"message can be approved up to 6 days after it was signed ({when})"
    )


def _keep_trying(settings: AgentSettings, seconds: int, queued_only: bool) -> None:
    with background.resend_lock(settings.home) as free:
        if not free:
            console().print("another resend is already running for this agent home")
            return

        def attempt() -> None:
            for outcome in run_due(
                settings, now=int(time.time()), today=dt.date.today(), queued_only=queued_only
            ):
                _print_outcome(outcome)

        def still_queued() -> bool:
            with Outbox.open(settings.home) as outbox:
                return bool(outbox.messages(state="queued"))

        emptied = background.keep_trying(
            attempt,
            still_queued,
            seconds,
            settings.transport.backoff,
            is_unreachable=lambda exc: isinstance(exc, TransportError),
        )
    if not emptied:
        raise TransportError(
            f"gave up after {seconds} s: messages stay queued for the next `fedqi-agent run`"
        )


@app.command()
@one_line_errors
def pending(
    home: HomeOption = None,
    indicator: IndicatorFilter = None,
    stratum: StratumFilter = None,
    show_all: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """List the submissions held for approval, each with a summary per indicator of what it
    would send; --indicator / --stratum show those cells in plain words, --all every cell."""
    settings = settings_for(home)
    with Outbox.open(settings.home) as outbox:
        held = outbox.messages(state="held")
    subs = [payload_of(m) for m in held]
    policies = [signed_policy(settings, sub) for sub in subs]
    if as_json:
        emit_json(
            [
                {
                    "id": m.id,
                    "period": m.period,
                    "seq": m.seq,
                    "sha256": m.sha256,
                    "why_held": m.state_note,
                    "plain_words": describe_submission(sub, policy),
                    "payload": sub.model_dump(mode="json", exclude_none=True),
                }
                for m, sub, policy in zip(held, subs, policies, strict=True)
            ]
        )
        return
    # An unknown --indicator / --stratum is a one-line error before anything is printed.
    chosen = [select_cells(sub.cells, indicator, stratum) for sub in subs]
    out = console()
    if not held:
        out.print("no submissions are waiting for approval")
    for m, sub, policy, cells in zip(held, subs, policies, chosen, strict=True):
        words = describe_submission(sub, policy)
        facts = words[: len(words) - len(sub.cells)]
        out.print(f"[bold]#{m.id}[/bold] period {m.period} (sha256 {m.sha256}) would send:")
        if m.state_note:
            out.print(f"  held: {m.state_note}", markup=False)
        if show_all:
            shown = words
        elif indicator or stratum:
            shown = facts + cell_lines(cells, policy)
        else:
            shown = facts
        for line in shown:
            out.print(f"  {line}", markup=False)
        if not (show_all or indicator or stratum):
            out.print(summary_table(sub, f"#{m.id}: whole-practice counts per indicator"))
        out.print(f"approve: fedqi-agent approve {m.id}    reject: fedqi-agent reject {m.id}")
    if held and not (show_all or indicator or stratum):
        out.print(HINT)


@app.command("approve")
@one_line_errors
def approve_cmd(
    message_id: Annotated[int, typer.Argument(metavar="ID", help="the held message's id")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve held message ID and send its exact stored bytes. Sends first what is still
    queued from before it; warns when it goes ahead of earlier held messages; refuses a
    correction whose original was never accepted."""
    settings = settings_for(home)
    try:
        outcome = approve_message(
            settings,
            message_id,
            now=int(time.time()),
            on_retry=tell_retry,
            on_warning=_warn,
            on_note=_note,
        )
    except TransportError as exc:
        _resend_in_background(settings, exc)
    if as_json:
        emit_json(outcome.to_json())
    else:
        _print_outcome(outcome)


def _warn(text: str) -> None:
    err_console().print(f"warning: {text}", markup=False, highlight=False)


def _note(text: str) -> None:
    err_console().print(f"note: {text}", markup=False, highlight=False)


@app.command("reject")
@one_line_errors
def reject_cmd(
    message_id: Annotated[int, typer.Argument(metavar="ID", help="the held message's id")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reject held message ID: it is marked rejected (kept, never sent)."""
    outcome = reject_message(settings_for(home), message_id)
    if as_json:
        emit_json(outcome.to_json())
    else:
        console().print(f"#{message_id} rejected: kept in the outbox, never sent")
