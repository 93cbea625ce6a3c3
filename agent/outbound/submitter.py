"""Submitting a period: compute, disclosure control, sign, store, then send.

The order is the point: the signed envelope is committed to the outbox before the first byte goes
on the wire, and anything sent later is those stored bytes. A crash or a dead network leaves a
``queued`` message that ``run`` (or ``submit`` for the same period) resends unchanged; the
aggregator answers a resend of an accepted message with its stored receipt.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.engine.compute import Computed, compute_raw_cells, compute_raw_cells_for_periods
from agent.errors import AgentUserError, ExitCode, TransportError
from agent.home.catalogue_cache import first_fetch_tries, load_catalogue
from agent.home.keystore import Keystore, Trust, load_trust_matching
from agent.home.settings import AgentSettings
from agent.outbound.audit import accept_receipt, check_enrolled_aggregator
from agent.outbound.outbox import Message, NewMessage, Outbox
from agent.outbound.release import (
    build_submission,
    effective_policy,
    last_complete_period,
    next_period,
    open_previous_homes,
    parse_period,
    payload_of,
    practice_guard,
    sign,
)
from agent.outbound.transport import (
    FEDQI_PROBLEM,
    KEY_REVOKED_NEXT_STEP,
    AggregatorClient,
    CertificateError,
    RefusedError,
    RetryNotice,
)
from agent.periods import (
    BACKFILL_MONTHS,
    earliest_period,
    require_ended,
    require_in_reach,
    stale_source,
)
from protocol.catalogue import Catalogue
from protocol.disclosure import RawCell
from protocol.submission import CorrectionReason, Period

#: How a hold by the disclosure guard starts its note (the outbox state's note).
GUARD_NOTE = "disclosure guard: "
#: The note of the state an approval moves a held message to.
APPROVED = "approved"
#: How the note starts of a plain submission the aggregator refused because the network already
#: holds its month from this practice (sent from another agent home): the month counts as
#: submitted, so ``run`` does not send it again every night.
ALREADY_HELD = "already held by the network: "
_ALREADY_SUBMITTED = FEDQI_PROBLEM + "period-already-submitted"
#: The extension member of that 409 naming the submission the network holds for the month
#: (docs/aggregator.md, "HTTP API").
CURRENT_SUBMISSION = "current_submission_id"
_SUBMISSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: iat may be at most 7 days old at the aggregator; leave a day's margin for a held message.
MAX_HELD_AGE = 6 * 24 * 3600


#: What overrides the refusal of a period computed on stale records (agent.periods.stale_source).
ALLOW_STALE = "--allow-stale"


@dataclass(frozen=True)
class Outcome:
    message_id: int
    period: str | None
    state: str
    leaf_index: int | None = None
    detail: str = ""
    #: refused because the key that signed it was revoked (:func:`_stop_if_revoked`)
    key_revoked: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "message": self.message_id,
            "period": self.period,
            "state": self.state,
            "leaf_index": self.leaf_index,
            "detail": self.detail,
        }


#: The aggregator's refusal of a message signed with a key the network revoked: nothing
#: signed with that key is accepted again, so ``run`` stops at the first one.
KEY_REVOKED = FEDQI_PROBLEM + "key-revoked"


class KeyRevokedError(AgentUserError):
    """``run`` stopped at the aggregator's first refusal of a message signed with a revoked
    key (exit 6): the refusal says what to do; nothing more was sent or signed. ``outcomes``:
    what the run did, the refusal last."""

    exit_code = ExitCode.REFUSED

    def __init__(self, message: str, outcomes: Sequence[Outcome] = ()) -> None:
        super().__init__(message)
        self.outcomes = list(outcomes)


class StaleSourceError(AgentUserError):
    """A period ends well after the practice's newest dated record (exit 2): nothing was
    signed for it. ``outcomes``: what the same ``run`` did before it stopped there."""

    def __init__(self, message: str, outcomes: Sequence[Outcome] = ()) -> None:
        super().__init__(message)
        self.outcomes = list(outcomes)


def check_fresh(
    period: Period,
    newest: dt.date | None,
    *,
    allow_stale: bool = False,
    on_warning: Callable[[str], None] | None = None,
) -> None:
    """Refuse, before anything is signed, a period computed on records that stop well before
    it ends (agent.periods.stale_source): counts from an extract that stopped being updated
    would be signed and sent as the practice's. ``allow_stale`` sends it anyway, said to
    ``on_warning``."""
    stale = stale_source(period, newest)
    if stale is None:
        return
    if not allow_stale:
        raise StaleSourceError(
            f"{stale}; nothing was signed or sent for it. Load a current extract into the "
            "practice database; if the practice has truly recorded nothing since, send it "
            f"anyway with {ALLOW_STALE}"
        )
    if on_warning is not None:
        on_warning(f"{stale}; sent anyway, as {ALLOW_STALE} asks")


def prepare(
    settings: AgentSettings,
    outbox: Outbox,
    catalogue: Catalogue,
    period: Period,
    *,
    now: int,
    supersedes: str | None = None,
    reason: CorrectionReason | None = None,
    computed: Computed | None = None,
    known: dict[str, list[RawCell]] | None = None,
    allow_stale: bool = False,
    on_warning: Callable[[str], None] | None = None,
) -> Message:
    """Compute (unless ``computed`` gives the engine's result already), refuse a period the
    records stop well before (:func:`check_fresh`), apply disclosure control and the
    disclosure guard, sign and store one submission (not yet sent). ``known``: other periods'
    raw cells computed in the same run, by period label (the guard uses an adjacent month's
    to tell which of its suppressed counts were small). Held, with the reason as the state's
    note, when the guard cannot make it safe."""
    trust = load_trust_matching(settings.home, settings.practice, settings.aud)
    key = Keystore(settings.home).active()
    policy = effective_policy(catalogue, settings)
    computed = computed or compute_raw_cells(settings, catalogue, period.end)
    check_fresh(period, computed.newest, allow_stale=allow_stale, on_warning=on_warning)
    raw, kind = computed.cells, computed.kind
    guarded = practice_guard(settings, outbox, catalogue, raw, policy, period, known)
    state = "held" if settings.release == "hold" or guarded.held_reason else "queued"
    note = f"{GUARD_NOTE}{guarded.held_reason}" if guarded.held_reason else ""

    def build(seq: int) -> NewMessage:
        sub = build_submission(
            catalogue=catalogue,
            raw_cells=raw,
            period=period,
            practice=trust.practice,
            aud=trust.aud,
            kid=key.kid,
            seq=seq,
            now=now,
            policy=policy,
            source_kind=kind,
            supersedes=supersedes,
            reason=reason,
            visibility=settings.visibility,
            cells=guarded.cells,
        )
        signed = sign("submission", sub.to_bytes(), [key])
        return NewMessage(
            kind="submission",
            envelope=signed.envelope,
            sha256=signed.sha256,
            kid=key.kid,
            seq=seq,
            submission_id=sub.submission_id,
            period=period.label,
        )

    return outbox.add_signed(build, state, note)


def send(client: AggregatorClient, outbox: Outbox, trust: Trust, message: Message) -> Outcome:
    """Send a stored message's exact bytes, to the aggregator this agent enrolled with only
    (checked first, once per client: :func:`check_enrolled_aggregator`); verify and keep the
    receipt."""
    path = {"submission": "/v1/submissions", "enrol": "/v1/enrol", "rotate": "/v1/keys/rotate"}[
        message.kind
    ]
    what = f"{message.kind} #{message.id}" + (
        f" (period {message.period})" if message.period else ""
    )
    try:
        if message.kind != "enrol":  # the enrol is what pins the aggregator: nothing to check
            check_enrolled_aggregator(
                client,
                trust,
                consequence=f"nothing was sent: {what} stays queued in the outbox, as does "
                "anything else queued",
            )
        answer = client.post_envelope(path, message.envelope, about=what)
    except RefusedError as exc:
        # Refused for good, even a 401 `unknown-key` ("kid ... is not enrolled with this
        # aggregator"): the check above has just seen this aggregator sign its checkpoint with
        # the pinned log key under the pinned origin, so it is the network this agent enrolled
        # in, not another one an edited aggregator_url points to (that stops above, the message
        # still queued). A key this network does not know is one it revoked and forgot, or
        # one enrolled or rotated after the backup it was restored from (docs/operations.md
        # section 7): the message can never be accepted with it.
        held = _already_held(message, what, exc)
        outbox.set_state(message.id, "refused", held or str(exc))
        if held:
            raise RefusedError(held, exc.status, exc.problem) from None
        raise
    except TransportError as exc:
        # Not sent: the stored bytes wait in the outbox, queued, for the next try.
        raise type(exc)(
            f"{exc}. {what} is stored in the outbox and stays queued: `fedqi-agent run` (the "
            "scheduled job) resends it unchanged when the aggregator answers"
        ) from None
    except CertificateError as exc:
        raise CertificateError(
            f"{exc}. {what} is stored in the outbox and stays queued: `fedqi-agent run` resends "
            "it unchanged once the certificate verifies"
        ) from None
    receipt = accept_receipt(outbox, client, trust, message, answer)
    return Outcome(message.id, message.period, "accepted", receipt.leaf_index)


def check_before_sending(
    settings: AgentSettings,
    client: AggregatorClient,
    trust: Trust,
    consequence: str,
    *,
    first: bool = False,
) -> None:
    """The check :func:`send` makes before posting (:func:`check_enrolled_aggregator`), made
    before a command changes anything on the way to a send (computes and signs a period,
    approves a held message, starts a key rotation), so that an ``aggregator_url`` pointing to
    another aggregator stops it there with ``consequence`` said, and names that aggregator
    rather than failing on its catalogue. Only that verdict stops here: an aggregator that
    cannot be asked (or a certificate that does not verify) is left to what follows, which
    meets it as it always did (a message stored and queued, exit 5) and, before it posts,
    checks again. ``first``: this is the command's first request, standing for the catalogue's
    fetch, so it gets the catalogue's tries (one, with a cached catalogue to fall back on: an
    aggregator that is down is told at once)."""
    tries = first_fetch_tries(settings) if first else None
    with contextlib.suppress(TransportError, CertificateError):
        check_enrolled_aggregator(client, trust, consequence=consequence, tries=tries)


def _already_held(message: Message, what: str, exc: RefusedError) -> str | None:
    """The note for a plain submission refused because the network already holds its month
    from this practice (409 ``period-already-submitted``): what it holds, that ``run`` does
    not send the month again, and how to replace it. None for any other refusal."""
    if exc.problem.get("type") != _ALREADY_SUBMITTED or message.kind != "submission":
        return None
    if payload_of(message).supersedes is not None:
        return None
    held = held_submission_id(exc.problem) or "SUBMISSION_ID"
    label = message.period
    return (
        f"{ALREADY_HELD}{held}. The aggregator refused {what}: the network already holds "
        f"period {label} from this practice as submission {held}, which this agent home did not "
        f"send; `run` does not send the month again. If an earlier agent home sent it (before a "
        "re-enrolment), name that home in previous_homes in agent.toml (docs/operations.md "
        f"section 6). To replace the month: `fedqi-agent submit --period {label} --correction "
        f"REASON --supersedes {held}`"
    )


def held_submission_id(problem: Mapping[str, Any]) -> str | None:
    """The id of the submission the network holds, from the aggregator's 409
    ``period-already-submitted`` problem: its :data:`CURRENT_SUBMISSION` member. None when
    the problem names none the agent can use (a member that is not a submission id is not
    guessed at): the month still counts as held, without an id to supersede."""
    if CURRENT_SUBMISSION in problem:
        member = problem[CURRENT_SUBMISSION]
        return member if isinstance(member, str) and _SUBMISSION_ID.fullmatch(member) else None
    # Fallback for an aggregator from before the member, which names the id only in the
    # detail's prose: agents and the aggregator are upgraded apart (docs/operations.md
    # section 4), so an upgraded agent may meet one. Its detail names the held id first.
    found = _SUBMISSION_ID.search(str(problem.get("detail", "")))
    return found.group(0) if found else None


def network_holds(message: Message) -> str | None:
    """The submission id the network holds for ``message``'s month, as far as this message
    tells: its own when it was accepted, the one the aggregator named when it refused it as
    already held (:data:`ALREADY_HELD`); None otherwise."""
    if message.state == "accepted":
        return message.submission_id
    if message.state == "refused" and message.state_note.startswith(ALREADY_HELD):
        found = _SUBMISSION_ID.search(message.state_note)
        return found.group(0) if found else ""
    return None


def held_elsewhere(
    outbox: Outbox, previous: Sequence[tuple[Path, Outbox]], label: str
) -> tuple[str, str] | None:
    """The submission the network holds for month ``label`` that this home did not send, and
    where that is known from: the latest accepted by a ``previous_homes`` outbox, or named by
    the aggregator when it refused one of this home's as already held (the latest wins)."""
    found: tuple[str, str] | None = None
    for home, box in previous:
        for m in box.for_period(label):
            held = network_holds(m)
            if held:
                found = (held, f"sent from {home}, named in previous_homes")
    for m in outbox.for_period(label):
        held = network_holds(m)
        if held and m.state == "refused":
            found = (held, f"the aggregator's refusal of message #{m.id} named it")
    return found


def submit_period(
    settings: AgentSettings,
    period_text: str,
    *,
    now: int,
    correction: CorrectionReason | None = None,
    supersedes: str | None = None,
    on_retry: RetryNotice | None = None,
    allow_stale: bool = False,
    on_warning: Callable[[str], None] | None = None,
) -> Outcome:
    """Compute, sign, store and send one period. ``supersedes`` (with ``correction``) names the
    submission the correction replaces where this agent home did not send it: a practice that
    re-enrolled after its key was revoked corrects what the old key sent (the aggregator's 409
    names it). A period the records stop well before is refused unless ``allow_stale``
    (:func:`check_fresh`)."""
    if supersedes is not None:
        if correction is None:
            raise AgentUserError("--supersedes: only with --correction REASON")
        try:
            supersedes = str(uuid.UUID(supersedes))
        except ValueError:
            raise AgentUserError(
                f"--supersedes {supersedes!r}: not a submission id (a UUID, as the aggregator's "
                "refusal or the IG payload audit shows it)"
            ) from None
    today = dt.date.fromtimestamp(now)
    period = require_ended(parse_period(period_text), today)
    trust = load_trust_matching(settings.home, settings.practice, settings.aud)
    with (
        AggregatorClient.from_settings(settings, on_retry=on_retry) as client,
        Outbox.open(settings.home) as outbox,
        contextlib.ExitStack() as stack,
    ):
        previous = open_previous_homes(settings, stack)
        existing = [m for m in outbox.for_period(period.label) if m.state != "rejected"]
        waiting = [m for m in existing if m.state in ("queued", "held")]
        if waiting:
            m = waiting[-1]
            _same_request(m, period.label, correction, supersedes)
            if m.state == "held":
                return Outcome(m.id, m.period, "held", detail="waiting for approval")
            return send(client, outbox, trust, m)  # resend the stored bytes
        accepted = [m for m in existing if m.state == "accepted"]
        if accepted:
            if correction is None:
                raise AgentUserError(
                    f"period {period.label} was already submitted (message #{accepted[-1].id}); "
                    "to send a correction use --correction REASON"
                )
            supersedes = supersedes or accepted[-1].submission_id
        elif (elsewhere := held_elsewhere(outbox, previous, period.label)) is not None:
            held, where = elsewhere
            if correction is None:
                raise AgentUserError(
                    f"period {period.label} is already held by the network as submission "
                    f"{held} ({where}); to replace it send a correction: `fedqi-agent submit "
                    f"--period {period.label} --correction REASON --supersedes {held}`"
                )
            supersedes = supersedes or held
        elif correction is not None and supersedes is None:
            raise AgentUserError(
                f"--correction: period {period.label} has no accepted submission in this agent "
                "home; to correct one another home sent (before a re-enrolment), name it with "
                "--supersedes SUBMISSION_ID"
            )
        elif correction is None:
            # A month nothing was sent for yet: a new entry in the network's log and in the
            # practice's periods for good, so not one further back than run would go.
            require_in_reach(period, settings.first_period, today)
        original = unsent_original(outbox, supersedes)
        if original is not None:
            then = (
                "approve it or let it be sent first, then submit the correction"
                if original.state in ("held", "queued")
                else f"submit period {period.label} without --correction"
            )
            raise AgentUserError(
                f"--supersedes {supersedes} is message #{original.id} (period "
                f"{original.period}), which {_not_accepted(original)}: the aggregator accepts a "
                f"correction only of a submission it has accepted; {then}"
            )
        check_before_sending(
            settings,
            client,
            trust,
            f"nothing was computed, signed or sent for period {period.label}",
            first=True,
        )
        catalogue = load_catalogue(settings, client=client)
        message = prepare(
            settings,
            outbox,
            catalogue,
            period,
            now=now,
            supersedes=supersedes,
            reason=correction,
            allow_stale=allow_stale,
            on_warning=on_warning,
        )
        if message.state == "held":
            return Outcome(
                message.id,
                message.period,
                "held",
                detail=message.state_note or "waiting for approval",
            )
        return send(client, outbox, trust, message)


def _same_request(
    message: Message, label: str, correction: CorrectionReason | None, supersedes: str | None
) -> None:
    """A period with a message still waiting (held for approval, or queued to resend) is
    answered with that message; refuse instead when the options ask for another one (a
    correction where the waiting message is a plain submission, another reason, or another
    submission superseded), rather than drop them silently. A plain ``submit`` of the period
    is answered with whatever waits for it."""
    if correction is None:
        return
    sub = payload_of(message)
    if sub.reason == correction and (supersedes is None or supersedes == sub.supersedes):
        return
    what = (
        f"a correction ({sub.reason}) of {sub.supersedes}"
        if sub.reason is not None
        else "a plain submission"
    )
    asked = f"a correction ({correction})" + (f" of {supersedes}" if supersedes else "")
    verb = "held for approval" if message.state == "held" else "queued to send"
    undo = (
        f"reject it (`fedqi-agent reject {message.id}`) or approve it first"
        if message.state == "held"
        else "let it be sent first (`fedqi-agent run`)"
    )
    raise AgentUserError(
        f"period {label}: message #{message.id}, {what}, is already {verb}; {asked} is another "
        f"message: {undo}, then submit again"
    )


def due_periods(
    settings: AgentSettings,
    outbox: Outbox,
    today: dt.date,
    previous: Sequence[tuple[Path, Outbox]] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> list[Period]:
    """The months after the last one submitted (or from ``first_period``) up to the last
    complete month. Submitted: sent, queued or held in this home, or held by the network from
    this practice (accepted by one of ``previous`` homes' outboxes, ``previous_homes`` read
    when not given, or refused here as :data:`ALREADY_HELD`): a new home after a lost key
    does not send again what its old home sent.

    Never a month before :func:`agent.periods.earliest_period` (``first_period``, else 24
    months back): a submission before it (a mistyped year sent before ``submit`` refused
    one) does not count for where ``run`` starts, so a home whose submissions are all older
    starts as a new home does, at ``first_period`` or the last complete month, and says so to
    ``on_warning`` rather than send every month since."""
    if previous is None:
        with contextlib.ExitStack() as stack:
            return due_periods(
                settings, outbox, today, open_previous_homes(settings, stack), on_warning
            )
    last = last_complete_period(today)
    earliest = earliest_period(settings.first_period, today)
    done = [
        m.period
        for m in outbox.messages(kind="submission")
        if m.period and (m.state in ("queued", "held") or network_holds(m) is not None)
    ]
    done += [
        m.period
        for _, box in previous
        for m in box.messages(kind="submission")
        if m.period and network_holds(m) is not None
    ]
    reached = [label for label in done if label >= earliest.label]
    if reached:
        start = next_period(parse_period(max(reached)))
    else:
        start = earliest if settings.first_period else last
        if done and on_warning is not None:
            on_warning(_older_than_reach(max(done), earliest, start, settings.first_period))
    periods: list[Period] = []
    while start.end <= last.end:
        periods.append(start)
        start = next_period(start)
    return periods


def _older_than_reach(
    latest: str, earliest: Period, start: Period, first_period: str | None
) -> str:
    """What ``run`` says when every month submitted is before the earliest it sends."""
    reach = (
        f"first_period ({first_period})"
        if first_period
        else f"{earliest.label}, the earliest month run sends without first_period "
        f"({BACKFILL_MONTHS} months back)"
    )
    return (
        f"the latest month submitted, {latest}, is before {reach}: run starts from "
        f"{start.label} as a new agent home would, not from the month after {latest}; to send "
        "the months between, set first_period in agent.toml"
    )


def run_due(
    settings: AgentSettings,
    *,
    now: int,
    today: dt.date,
    progress: Callable[[str, int, int], None] | None = None,
    on_retry: RetryNotice | None = None,
    queued_only: bool = False,
    allow_stale: bool = False,
    on_warning: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Resend whatever is queued, then (unless ``queued_only``) submit every period that is
    due. ``progress(label, done, total)`` is called as periods complete. The first due period
    the records stop well before stops the run (:class:`StaleSourceError`, carrying what was
    done), unless ``allow_stale``: the months before it are sent, it and the later ones not."""
    trust = load_trust_matching(settings.home, settings.practice, settings.aud)
    outcomes: list[Outcome] = []
    with (
        AggregatorClient.from_settings(settings, on_retry=on_retry) as client,
        Outbox.open(settings.home) as outbox,
        contextlib.ExitStack() as stack,
    ):
        # What the previous homes sent decides what is due: one that cannot be read stops the
        # run here, before anything is sent, rather than have months sent twice.
        previous = [] if queued_only else open_previous_homes(settings, stack)
        # A key the network revoked (an earlier run's refusal says so): nothing is sent or
        # signed with it again, and what to do is said once, here.
        _check_not_revoked(outbox, Keystore(settings.home).active().kid)
        # Submissions only: a queued enrol or rotate is finished by its own command, which also
        # updates the key store when it is accepted.
        queued = sorted(
            outbox.messages(kind="submission", state="queued"), key=lambda m: (m.seq or 0, m.id)
        )
        for k, message in enumerate(queued):
            outcomes.append(_send_reporting(client, outbox, trust, message))
            _stop_if_revoked(
                outcomes, len(queued) - k - 1, "" if queued_only else "no due month was signed"
            )
        periods = [] if queued_only else due_periods(settings, outbox, today, previous, on_warning)
        waiting = [
            m
            for m in outbox.messages(kind="submission", state="held")
            if m.state_note.startswith(GUARD_NOTE)
        ]
        if waiting and periods:  # later months wait for it (below)
            m = waiting[0]
            outcomes.append(
                Outcome(m.id, m.period, "held", detail=f"{m.state_note}; later months wait for it")
            )
            periods = []
        if periods:
            check_before_sending(
                settings,
                client,
                trust,
                "nothing was sent, and no period was computed or signed",
                first=True,
            )
            catalogue = load_catalogue(settings, client=client)
            # Every due month from one engine pass (docs/engine.md), then one by one: disclosure
            # control, signature, outbox, send.
            ends = [p.end for p in periods]
            raw, kind, newest = compute_raw_cells_for_periods(settings, catalogue, ends)
            for done, period in enumerate(periods):
                if progress is not None:
                    progress(period.label, done, len(periods))
                try:
                    message = prepare(
                        settings,
                        outbox,
                        catalogue,
                        period,
                        now=now,
                        computed=Computed(raw[period.end], kind, newest),
                        known={p.label: raw[p.end] for p in periods},
                        allow_stale=allow_stale,
                        on_warning=on_warning,
                    )
                except StaleSourceError as exc:
                    sent = "the months before it were sent; " if done else ""
                    raise StaleSourceError(
                        f"run stopped at period {period.label} ({sent}it and any later month "
                        f"wait): {exc}",
                        outcomes,
                    ) from None
                if message.state == "held" and message.state_note.startswith(GUARD_NOTE):
                    # The months after a month the guard holds wait for it: each is audited
                    # with the one before it as released, and sent in order.
                    later = len(periods) - done - 1
                    wait = "; later months wait for it" if later else ""
                    outcomes.append(
                        Outcome(
                            message.id, message.period, "held", detail=message.state_note + wait
                        )
                    )
                    break
                if message.state == "held":
                    outcomes.append(
                        Outcome(message.id, message.period, "held", detail=message.state_note)
                    )
                else:
                    outcomes.append(_send_reporting(client, outbox, trust, message))
                    later = len(periods) - done - 1
                    _stop_if_revoked(
                        outcomes,
                        0,
                        f"the {later} later due month{'s were' if later != 1 else ' was'} "
                        "neither signed nor sent"
                        if later
                        else "",
                    )
    return outcomes


def _send_reporting(
    client: AggregatorClient, outbox: Outbox, trust: Trust, message: Message
) -> Outcome:
    try:
        return send(client, outbox, trust, message)
    except RefusedError as exc:
        revoked = exc.problem.get("type") == KEY_REVOKED
        return Outcome(message.id, message.period, "refused", detail=str(exc), key_revoked=revoked)


def _check_not_revoked(outbox: Outbox, kid: str) -> None:
    """Raise :class:`KeyRevokedError` when the aggregator has refused a submission signed
    with ``kid`` because the key was revoked: a run then sends and signs nothing."""
    for m in outbox.messages(kind="submission", state="refused"):
        if m.kid == kid and KEY_REVOKED_NEXT_STEP in m.state_note:
            raise KeyRevokedError(
                f"run sent and signed nothing: the aggregator refused message #{m.id} because "
                f"this agent's key (kid {kid}) was revoked{KEY_REVOKED_NEXT_STEP}"
            )


def _stop_if_revoked(outcomes: list[Outcome], unsent: int, more: str) -> None:
    """Stop ``run`` (:class:`KeyRevokedError`) when its last outcome is a refusal for a
    revoked key: every later message signed with that key would be refused too, so none is
    sent and nothing more is signed. The refusal itself says what to do (once, in its
    outcome); this says only what was left undone: ``unsent`` queued messages, and ``more``."""
    last = outcomes[-1]
    if not last.key_revoked:
        return
    left = []
    if unsent:
        left.append(
            f"{unsent} other queued submission{'s stay' if unsent != 1 else ' stays'} in the "
            "outbox unsent"
        )
    if more:
        left.append(more)
    raise KeyRevokedError(
        f"run stopped at the first refusal for this agent's revoked key (message "
        f"#{last.message_id}) and signed nothing more" + (f": {'; '.join(left)}" if left else ""),
        outcomes,
    )


def approve(
    settings: AgentSettings,
    message_id: int,
    *,
    now: int,
    on_retry: RetryNotice | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Outcome:
    """Send held message ``message_id``'s stored bytes. Exclusive: the move from ``held`` to
    ``queued`` is one outbox transaction, so of two approvals at once only one sends; the
    other is refused, told what became of the message. A correction whose original this home
    has not had accepted is refused; approving ahead of earlier held messages is told to
    ``on_warning`` (see :func:`out_of_order`) before anything is sent. Submissions of the same
    key still queued with a lower seq (an earlier send that failed, waiting for a resend) are
    sent first, oldest seq first, as ``run`` would (each told to ``on_note``): sent after
    this one they would be refused for good. If one of them cannot be sent now, this one
    stays queued behind it, for the same resend."""
    trust = load_trust_matching(settings.home, settings.practice, settings.aud)
    with (
        AggregatorClient.from_settings(settings, on_retry=on_retry) as client,
        Outbox.open(settings.home) as outbox,
    ):
        message = outbox.get(message_id)
        if message.state != "held":
            raise not_held(message, "approve")
        sub = payload_of(message)
        why = unsendable(outbox, message, now)
        if why is not None:
            raise AgentUserError(
                f"message #{message_id} {why}: reject it and run `fedqi-agent submit --period "
                f"{message.period}` again"
            )
        original = unsent_original(outbox, sub.supersedes)
        if original is not None:
            raise AgentUserError(
                f"message #{message_id} is a correction of message #{original.id} (period "
                f"{original.period}), which {_not_accepted(original)}: the aggregator accepts a "
                f"correction only of a submission it has accepted. {_first(original, message)}"
            )
        check_before_sending(
            settings,
            client,
            trust,
            f"nothing was sent: #{message_id} stays held, to approve again once aggregator_url "
            "is fixed",
        )
        warnings = out_of_order(outbox, message, now)
        if outbox.change_state(message_id, "held", "queued", APPROVED) != "held":
            raise not_held(outbox.get(message_id), "approve")  # another command was first
        for warning in warnings:
            if on_warning is not None:
                on_warning(warning)
        this = f"#{message_id} (period {message.period})"
        for m in queued_before(outbox, message):
            if on_note is not None:
                on_note(
                    f"sending #{m.id} (period {m.period}) first: it is queued from an earlier "
                    f"send and was signed before {this}, and once {this} is accepted it could "
                    "no longer be sent (each key's seq must rise)"
                )
            try:
                send(client, outbox, trust, m)
            except RefusedError as exc:
                if on_warning is not None:
                    on_warning(f"#{m.id} (period {m.period}) was refused: {exc}")
            except (TransportError, CertificateError) as exc:
                raise type(exc)(
                    f"{exc}. Approved {this} stays queued behind it and is sent after it, by "
                    "what resends it"
                ) from None
        return send(client, outbox, trust, outbox.get(message_id))


def unsendable(outbox: Outbox, message: Message, now: int) -> str | None:
    """Why held ``message`` can no longer be sent whatever is approved (the aggregator would
    refuse it for good), or None: signed more than :data:`MAX_HELD_AGE` ago (the aggregator's
    iat window is 7 days; a day's margin), or signed before a message already accepted (a
    lower seq; each key's seq must rise)."""
    if now - payload_of(message).iat > MAX_HELD_AGE:
        return (
            "was signed more than 6 days ago and the aggregator accepts messages up to 7 days old"
        )
    sent = [m.seq for m in outbox.messages() if m.state == "accepted" and m.seq]
    if sent and message.seq is not None and message.seq < max(sent):
        return (
            f"(seq {message.seq}) is older than a message already accepted (seq {max(sent)}), "
            "so the aggregator would refuse it"
        )
    return None


def queued_before(outbox: Outbox, message: Message) -> list[Message]:
    """The submissions signed with ``message``'s key before it (a lower seq) that are still
    queued, oldest seq first: the ones ``approve`` sends before it."""
    seq = message.seq or 0
    queued = [
        m
        for m in outbox.messages(kind="submission", state="queued")
        if m.id != message.id and m.kid == message.kid and (m.seq or 0) < seq
    ]
    return sorted(queued, key=lambda m: (m.seq or 0, m.id))


def unsent_original(outbox: Outbox, supersedes: str | None) -> Message | None:
    """The message in this outbox that a correction supersedes, if it is here and was never
    accepted (held, queued, rejected, refused): the aggregator would refuse the correction.
    None when it was accepted, or was sent from another agent home (the aggregator checks)."""
    if supersedes is None:
        return None
    for m in outbox.messages(kind="submission"):
        if m.submission_id == supersedes and m.state != "accepted":
            return m
    return None


def _not_accepted(original: Message) -> str:
    return {
        "held": "is still held for approval, not sent",
        "queued": "is queued and not yet accepted",
        "rejected": "was rejected by the practice and never sent",
        "refused": "the aggregator refused",
    }[original.state]


def _first(original: Message, correction: Message) -> str:
    """What to do about a correction whose original was never accepted."""
    if original.state == "held":
        return (
            f"Approve #{original.id} first (`fedqi-agent approve {original.id}`), then "
            f"#{correction.id}"
        )
    if original.state == "queued":
        return (
            f"Let #{original.id} be sent first (`fedqi-agent run`), then approve #{correction.id}"
        )
    return (
        f"There is nothing to correct: reject #{correction.id} (`fedqi-agent reject "
        f"{correction.id}`) and submit period {correction.period} again without --correction"
    )


def out_of_order(outbox: Outbox, message: Message, now: int) -> list[str]:
    """What approving ``message`` now does to the other held submissions: those signed before
    it (a lower seq) can no longer be sent once it is accepted, since each key's seq must rise;
    those for an earlier month signed after it can still be sent, but the months arrive out of
    order. Held messages signed before it that can no longer be sent anyway (see
    :func:`unsendable`) are not in the advice to approve in order: they are named apart, to be
    rejected and their periods submitted again. An empty list when nothing earlier is held."""
    seq, period = message.seq or 0, message.period or ""
    held = [m for m in outbox.messages(kind="submission", state="held") if m.id != message.id]
    before = [m for m in held if (m.seq or 0) < seq]
    earlier = [m for m in held if m not in before and (m.period or "") < period]
    dead = [m for m in before if unsendable(outbox, m, now) is not None]
    older = [m for m in before if m not in dead]
    this = f"#{message.id} (period {message.period})"
    warnings = []
    if older:
        first = min(older, key=lambda m: m.seq or 0)
        warnings.append(
            f"approving {this} ahead of earlier held message(s) {_listed(older)}: once "
            f"#{message.id} is accepted they can no longer be sent (the aggregator requires each "
            "key's seq to rise), so they will have to be rejected and their periods submitted "
            f"again. To send them all, approve in order, oldest first (`fedqi-agent approve "
            f"{first.id}`)"
        )
    if dead:
        rejects = ", ".join(f"`fedqi-agent reject {m.id}`" for m in dead)
        warnings.append(
            f"held message(s) {_listed(dead)}, signed before {this}, can no longer be sent "
            "whatever is approved (signed more than 6 days ago, or before a message already "
            f"accepted): reject them ({rejects}) and submit their periods again"
        )
    if earlier:
        warnings.append(
            f"approving {this} ahead of held message(s) for an earlier month "
            f"{_listed(earlier)}: they can still be approved after it, but the network "
            "receives the months out of order"
        )
    return warnings


def _listed(messages: list[Message]) -> str:
    return ", ".join(f"#{m.id} ({m.period})" for m in messages)


def not_held(message: Message, verb: str) -> AgentUserError:
    """Why ``verb`` (approve, reject) cannot act on a message that is not held; the message
    may have been moved a moment ago by another command."""
    why = {
        "queued": "it was already approved and is being sent, or waits for `fedqi-agent run` "
        "to resend it"
        if message.state_note == APPROVED
        else "it waits for `fedqi-agent run` to send it",
        "accepted": "it was already sent and the aggregator accepted it",
        "rejected": "it was rejected and is never sent",
        "refused": "the aggregator refused it",
    }.get(message.state, "")
    return AgentUserError(
        f"message #{message.id} is {message.state}, not held: {why}; nothing to {verb} "
        f"(`fedqi-agent audit show {message.id}` shows its history)"
    )


def reject(settings: AgentSettings, message_id: int) -> Outcome:
    with Outbox.open(settings.home) as outbox:
        message = outbox.get(message_id)
        found = outbox.change_state(message_id, "held", "rejected", "rejected by the practice")
        if found != "held":
            raise not_held(outbox.get(message_id), "reject")
        return Outcome(message_id, message.period, "rejected")
