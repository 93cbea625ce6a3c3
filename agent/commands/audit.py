"""``audit list|show|verify``: what was sent, byte for byte, and whether the log still holds it."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from agent.cli import app
from agent.errors import AgentUserError, ConfigError, TransportError
from agent.home.keystore import load_trust
from agent.outbound.audit import (
    LogIntegrityError,
    check_token_practice,
    read_token,
    verify_all,
    verify_receipt,
)
from agent.outbound.outbox import Message, Outbox
from agent.outbound.release import describe_submission, payload_of
from agent.outbound.transport import AggregatorClient, CertificateError, RefusedError
from protocol.catalogue import DisclosurePolicy
from protocol.envelope import Envelope
from protocol.submission import Enrol, Rotate

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
    one_line_errors,
    settings_for,
    tell_try,
)

audit_app = typer.Typer(
    name="audit",
    help="What this agent sent, byte for byte and in plain words, and proof the aggregator "
    "still holds it unchanged.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


def _when(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def describe_message(m: Message, policy: DisclosurePolicy | None = None) -> list[str]:
    """A stored message in plain words (a submission's counts under ``policy``, the one it was
    released under, when known)."""
    payload = Envelope.from_bytes(m.envelope).payload_bytes()
    if m.kind == "submission":
        return describe_submission(payload_of(m), policy)
    if m.kind == "enrol":
        e = Enrol.from_bytes(payload)
        return [
            f"Enrolment of practice {e.practice} in network {e.aud!r} with key "
            f"{m.kid}, signed by that key (proof of possession), agent {e.agent_version}.",
            "It carries the single-use enrolment token and the public key; nothing else.",
        ]
    r = Rotate.from_bytes(payload)
    return [
        f"Key rotation for practice {r.practice} in network {r.aud!r}: key {r.old_kid} is "
        f"replaced by a new key, signed by both; seq {r.seq}.",
    ]


def _corrections(messages: list[Message]) -> dict[int, tuple[str, int | None, str]]:
    """Message id -> (the submission_id it replaces, that message's id here, the reason)."""
    by_submission = {m.submission_id: m.id for m in messages if m.submission_id}
    found: dict[int, tuple[str, int | None, str]] = {}
    for m in messages:
        if m.kind != "submission":
            continue
        sub = payload_of(m)
        if sub.supersedes:
            found[m.id] = (sub.supersedes, by_submission.get(sub.supersedes), sub.reason or "")
    return found


def _summary(m: Message, corrects: tuple[str, int | None, str] | None = None) -> dict[str, Any]:
    return {
        "id": m.id,
        "kind": m.kind,
        "period": m.period,
        "seq": m.seq,
        "kid": m.kid,
        "submission_id": m.submission_id,
        "sha256": m.sha256,
        "state": m.state,
        "created_at": _when(m.created_at),
        "has_receipt": m.receipt is not None,
        "supersedes": corrects[0] if corrects else None,
        "corrects_message": corrects[1] if corrects else None,
        "correction_reason": corrects[2] if corrects else None,
    }


@audit_app.command("list")
@one_line_errors
def audit_list(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Every message in the outbox, with its state; a correction names the message it
    replaces."""
    settings = settings_for(home)
    with Outbox.open(settings.home) as outbox:
        messages = outbox.messages()
    corrections = _corrections(messages)
    if as_json:
        emit_json([_summary(m, corrections.get(m.id)) for m in messages])
        return
    table = Table(title=f"outbox {settings.home / 'outbox.sqlite'}")
    for col in ("id", "kind", "period", "seq", "state", "receipt", "created", "sha256", "corrects"):
        table.add_column(col)
    for m in messages:
        fix = corrections.get(m.id)
        corrects = ""
        if fix is not None:
            target = f"#{fix[1]}" if fix[1] is not None else f"submission {fix[0]}"
            corrects = f"{target} ({fix[2]})"
        table.add_row(
            str(m.id),
            m.kind,
            m.period or "",
            str(m.seq or ""),
            m.state,
            "yes" if m.receipt else "",
            _when(m.created_at),
            m.sha256[:16],
            corrects,
        )
    console().print(table)


def _write_exactly(data: bytes) -> None:
    """``data`` on stdout byte for byte: no newline added, no encoding applied."""
    stream = sys.stdout
    binary = getattr(stream, "buffer", None)
    if binary is None:  # a text stream (tests capture stdout this way): the bytes are UTF-8 JSON
        stream.write(data.decode("utf-8"))
    else:
        stream.flush()
        binary.write(data)
        binary.flush()


@audit_app.command("show")
@one_line_errors
def audit_show(
    message_id: Annotated[int, typer.Argument(metavar="ID", help="the outbox message id")],
    home: HomeOption = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="print only the envelope bytes exactly as signed, stored and sent (no newline "
            "added: their sha256 is the message's sha256, the one its receipt names)",
        ),
    ] = False,
    indicator: IndicatorFilter = None,
    stratum: StratumFilter = None,
    show_all: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """Show message ID: its state history, what it carries in plain words and its receipt. A
    submission opens with a summary per indicator; --indicator / --stratum show those cells;
    --all every cell and the exact envelope bytes sent."""
    settings = settings_for(home)
    with Outbox.open(settings.home) as outbox:
        m = outbox.get(message_id)
        history = outbox.history(message_id)
        all_messages = outbox.messages()
    if raw:
        _write_exactly(m.envelope)
        return
    payload = Envelope.from_bytes(m.envelope).payload_bytes()
    sub = payload_of(m) if m.kind == "submission" else None
    policy = signed_policy(settings, sub) if sub is not None else None
    words = describe_message(m, policy)
    receipt: dict[str, Any] | None = None
    if m.receipt is not None:
        trust = load_trust(settings.home)
        r = verify_receipt(
            m.receipt, trust, m.sha256, kind=m.kind, submission_id=m.submission_id
        ).receipt
        receipt = r.model_dump(mode="json", exclude_none=True)
    info = {
        **_summary(m, _corrections(all_messages).get(m.id)),
        "envelope": m.envelope.decode("utf-8"),
        "payload": json.loads(payload),
        "plain_words": words,
        "history": [{"state": s, "at": _when(t), "note": n} for s, t, n in history],
        "receipt": receipt,
    }
    if as_json:
        emit_json(info)
        return
    # A filter that cannot apply is a one-line error before anything is printed.
    detail = show_all or indicator or stratum
    if sub is None:
        if indicator or stratum:
            raise AgentUserError(f"#{m.id} is a {m.kind} message: it has no cells to filter")
        detail = True
    elif detail and not show_all:
        facts = words[: len(words) - len(sub.cells)]
        words = facts + cell_lines(select_cells(sub.cells, indicator, stratum), policy)
    out = console()
    out.print(f"[bold]#{m.id}[/bold] {m.kind} {m.period or ''} seq {m.seq} state {m.state}")
    out.print(f"sha256 {m.sha256}")
    for s, t, n in history:
        out.print(f"  {_when(t)} {s} {n}", markup=False)
    if detail or sub is None:
        for line in words:
            out.print(line, markup=False)
    else:
        for line in words[: len(words) - len(sub.cells)]:
            out.print(line, markup=False)
        out.print(summary_table(sub, "Sent: whole-practice counts per indicator"))
    if show_all or m.kind != "submission":
        out.print("envelope bytes exactly as stored and sent:")
        out.print(m.envelope.decode("utf-8"), markup=False, soft_wrap=True)
    if receipt:
        out.print(
            f"receipt: leaf {receipt['leaf_index']} of a log of {receipt['tree_size']}, "
            "signature and inclusion proof verified against the pinned log key"
        )
    if m.kind == "submission" and not detail:
        out.print(HINT + " --raw prints the envelope bytes alone.")
    if m.kind == "submission":
        out.print(
            "Why a count is suppressed is known only from the exact local counts: "
            f"`fedqi-agent preview --period {m.period} --indicator ID` shows it for today's "
            "records.",
            markup=False,
        )


VERIFY_EXIT_CODES = """Exit codes: 0 every receipt and checkpoint verifies; 2 nothing to verify yet (no
receipts); 3 configuration: the aggregator refused the audit token (audit_token_file), the
token is not this practice's, or aggregator_url serves another network's log; 5 the audit could not be done: the aggregator is
unreachable, is limiting requests (HTTP 429, after the retries), is not a fedqi aggregator, or
refused a request; 8 AUDIT FAILED: evidence that the
log was tampered with or split (history dropped, rewritten or forked), and nothing else."""


@audit_app.command("verify", epilog=" ".join(VERIFY_EXIT_CODES.split()))
@one_line_errors
def audit_verify(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Verify every stored receipt against the aggregator's current checkpoint, and every
    checkpoint seen against it (consistency proofs). Exits 8 loudly if history was dropped,
    rewritten or forked, and only then."""
    settings = settings_for(home)
    trust = load_trust(settings.home)
    token = read_token(settings.audit_token_file) if settings.audit_token_file else None
    with (
        AggregatorClient.from_settings(settings, on_retry=tell_try) as client,
        Outbox.open(settings.home) as outbox,
    ):
        try:
            if token is not None:
                where = str(settings.audit_token_file)
                check_token_practice(client, token, trust.practice, where)
            report = verify_all(outbox, client, trust, token=token)
        except LogIntegrityError as exc:
            report = None
            failure = str(exc)
        except RefusedError as exc:
            if exc.status in (401, 403) and token is not None:
                raise ConfigError(
                    f"the aggregator refused the audit token in {settings.audit_token_file} "
                    f"(HTTP {exc.status}): ask the network for a valid IG officer token; "
                    "nothing was verified"
                ) from None
            raise TransportError(
                f"audit verify could not be done: {exc}; nothing was verified"
            ) from None
        except (TransportError, CertificateError) as exc:
            raise type(exc)(
                f"audit verify could not be done: {exc}; nothing was verified"
            ) from None
    if report is None:
        if as_json:
            emit_json({"ok": False, "failures": [failure]})
        raise LogIntegrityError(f"AUDIT FAILED: {failure}")
    if as_json:
        emit_json(report.to_json())
    else:
        out = console()
        for line in report.passed:
            out.print(f"[green]ok[/green]   {line}")
        for line in report.failures:
            err_console().print(f"[bold red]FAIL[/bold red] {line}", markup=True)
    if report.failures:
        raise LogIntegrityError(
            f"AUDIT FAILED: {len(report.failures)} check(s) failed: the aggregator's log does "
            "not match what this agent sent and saw (history dropped, rewritten or forked)"
        )
    if not report.ok:
        raise AgentUserError(
            "nothing to verify yet: no message has a receipt (send something first)"
        )
    if not as_json:
        console().print(
            f"audit verify: all {report.receipts} receipts and {report.checkpoints} checkpoints "
            f"consistent with the log at size {report.checkpoint_size}"
        )
