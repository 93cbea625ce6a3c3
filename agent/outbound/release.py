"""Building what leaves the practice: disclosure control, the Submission, its signature.

The engine's raw cells enter here and leave only as :class:`protocol.submission.Cell` objects
made by :func:`protocol.disclosure.apply_policy` under the network's policy (or the practice's
stricter one, checked with :func:`protocol.disclosure.check_tightens`). The payload is a frozen
protocol model with no free-text field, signed as a DSSE envelope; nothing else is ever sent.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import secrets
import sqlite3
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentUserError, ConfigError
from agent.home.settings import ENV_PREFIX, AgentSettings
from agent.outbound.guard_types import GuardResult, Release, linked
from agent.outbound.outbox import Message, Outbox
from agent.periods import last_complete_period, next_period, parse_period
from protocol import __version__
from protocol.canonical import sha256_hex
from protocol.catalogue import Catalogue, DisclosurePolicy
from protocol.disclosure import (
    RawCell,
    apply_policy,
    check_cells,
    check_tightens,
    describe_count,
    exclusions_hidden,
    policy_sha256,
    suppression_threshold,
)
from protocol.envelope import Envelope, sign_envelope
from protocol.errors import DisclosureError
from protocol.keys import SigningKey
from protocol.submission import (
    CatalogueRef,
    Cell,
    CodelistRef,
    CorrectionReason,
    Count,
    IndicatorProvenance,
    Period,
    Provenance,
    Submission,
    Visibility,
)

__all__ = ["last_complete_period", "next_period", "parse_period"]


def effective_policy(catalogue: Catalogue, settings: AgentSettings) -> DisclosurePolicy:
    """The network's policy, or the practice's stricter one if it tightens the network's. A
    practice's policy that does not state ``exclusions_by_stratum`` takes the network's layout
    of exclusions (a setting written before the field keeps working when the network's
    catalogue changes it); one that states another is refused by ``check_tightens``."""
    if settings.disclosure is None:
        return catalogue.disclosure
    practice = settings.disclosure
    if "exclusions_by_stratum" not in practice.model_fields_set:
        practice = practice.model_copy(
            update={"exclusions_by_stratum": catalogue.disclosure.exclusions_by_stratum}
        )
    try:
        check_tightens(catalogue.disclosure, practice)
    except DisclosureError as exc:
        raise ConfigError(
            f"setting 'disclosure' in {settings.config_file} does not tighten the network's "
            f"policy {catalogue.disclosure.name!r}: {exc}"
        ) from None
    return practice


def new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


def provenance_for(
    catalogue: Catalogue, policy: DisclosurePolicy, *, source_kind: str, extract_time: int
) -> Provenance:
    # Each codelist hashed once, though indicators share codelists (the national clusters: 94
    # references to 30 codelists, each hash over thousands of codes).
    shas: dict[str, str] = {}

    def sha(cid: str) -> str:
        if cid not in shas:
            shas[cid] = catalogue.codelist(cid).sha256()
        return shas[cid]

    indicators = tuple(
        IndicatorProvenance(
            id=ind.id,
            version=ind.version,
            codelists=tuple(
                CodelistRef(id=cid, sha256=sha(cid)) for cid in sorted(ind.codelist_ids())
            ),
        )
        for ind in sorted(catalogue.indicators, key=lambda i: i.id)
    )
    return Provenance(
        agent_version=__version__,
        extract_time=extract_time,
        source=source_kind,
        disclosure_policy=policy_sha256(policy),
        indicators=indicators,
    )


def build_submission(
    *,
    catalogue: Catalogue,
    raw_cells: Sequence[RawCell],
    period: Period,
    practice: str,
    aud: str,
    kid: str,
    seq: int,
    now: int,
    policy: DisclosurePolicy,
    source_kind: str,
    submission_id: str | None = None,
    supersedes: str | None = None,
    reason: CorrectionReason | None = None,
    visibility: Visibility = "named",
    cells: Sequence[Cell] | None = None,
) -> Submission:
    """The Submission payload: released cells only (checked again against the policy).
    ``named`` (the default) is sent as no field at all, the bytes of before the field existed.
    ``cells``: the cells to release when the disclosure guard (:func:`guarded_cells`) has made
    them from ``raw_cells`` already; otherwise ``apply_policy`` makes them here."""
    if cells is None:
        cells = apply_policy(raw_cells, policy)
    check_cells(cells, policy)
    if not cells:
        raise AgentUserError(f"period {period.label}: the engine produced no cells to send")
    return Submission(
        aud=aud,
        practice=practice,
        kid=kid,
        submission_id=submission_id or str(uuid.uuid4()),
        seq=seq,
        iat=now,
        nonce=new_nonce(),
        period=period,
        catalogue=CatalogueRef(
            id=catalogue.id, version=catalogue.version, sha256=catalogue.sha256()
        ),
        supersedes=supersedes,
        reason=reason,
        visibility=None if visibility == "named" else visibility,
        provenance=provenance_for(catalogue, policy, source_kind=source_kind, extract_time=now),
        cells=tuple(cells),
    )


def exclusions_layout(sub: Submission, policy: DisclosurePolicy | None) -> bool | None:
    """The layout of exclusions ``sub`` was released under, when its provenance names
    ``policy`` in one layout or the other (by stratum, True, or as a whole-practice total only,
    False); None when it names neither (e.g. a practice's own stricter policy, or a network
    policy since changed in more than the layout). ``exclusions_by_stratum=True`` is left out
    of a policy's canonical bytes, so a policy of before the field matches it in the True
    layout: the month a network moves from ``fedqi-default`` v2 to v3 reads v2's release by
    stratum, even when its cells alone (every stratum's exclusions suppressed) could not tell."""
    if policy is None:
        return None
    for by_stratum in (True, False):
        candidate = policy.model_copy(update={"exclusions_by_stratum": by_stratum})
        if policy_sha256(candidate) == sub.provenance.disclosure_policy:
            return by_stratum
    return None


def earlier_release(
    message_id: int,
    sub: Submission,
    raw: Sequence[RawCell] | None,
    policy: DisclosurePolicy | None = None,
) -> Release:
    """An earlier submission (its outbox id and payload) as the guard's release; ``raw``: that
    period's counts if the agent has them at hand (computed in the same run); ``policy``: the
    policy the new submission is released under, to tell the earlier one's layout of
    exclusions from its provenance (:func:`exclusions_layout`)."""
    return Release(
        label=f"message #{message_id} ({sub.period.label})",
        period=sub.period,
        cells=sub.cells,
        versions={p.id: p.version for p in sub.provenance.indicators},
        raw=tuple(raw) if raw is not None else None,
        exclusions_by_stratum=exclusions_layout(sub, policy),
    )


def payload_of(message: Message) -> Submission:
    """The Submission a stored message signs."""
    return Submission.from_bytes(Envelope.from_bytes(message.envelope).payload_bytes())


def guard_history(
    outbox: Outbox,
    period: Period,
    known: dict[str, list[RawCell]],
    previous: Sequence[tuple[Path, Outbox]] = (),
    policy: DisclosurePolicy | None = None,
) -> list[Release]:
    """The earlier submissions the disclosure guard audits a new one with: the latest one not
    rejected or refused of the same period and of each adjacent period (oldest first), from
    ``previous`` homes' outboxes (``previous_homes``, older than this one) and then this one's:
    a practice that re-enrolled from a fresh home is audited with what its old home released.
    ``policy``: the new submission's, to read each earlier one's layout of exclusions from its
    provenance (:func:`exclusions_layout`)."""
    latest: dict[str, tuple[int, Message, str]] = {}
    boxes = [*((0, box, f"{home}: ") for home, box in previous), (1, outbox, "")]
    for rank, box, where in boxes:
        for m in box.messages(kind="submission"):
            if m.period is None or m.state in ("rejected", "refused"):
                continue
            if linked(period, parse_period(m.period)) is not None:
                latest[m.period] = (rank, m, where)  # in id order, homes oldest first
    ordered = sorted(latest.items(), key=lambda lm: (lm[1][0], lm[1][1].id))
    out = []
    for label, (_, m, where) in ordered:
        release = earlier_release(
            m.id, payload_of(m), known.get(label) if label != period.label else None, policy
        )
        out.append(dataclasses.replace(release, label=where + release.label) if where else release)
    return out


def open_previous_homes(
    settings: AgentSettings, stack: contextlib.ExitStack
) -> list[tuple[Path, Outbox]]:
    """The outboxes of ``previous_homes``, oldest first, opened read-only and closed with
    ``stack``. One that cannot be read is a configuration error naming it and the setting:
    what it holds decides which months are due and what the disclosure guard audits with, so
    nothing is signed without it."""
    opened = []
    for home in settings.previous_homes:
        try:
            opened.append((home, stack.enter_context(Outbox.read_only(home))))
        except sqlite3.Error as exc:
            raise ConfigError(
                f"previous_homes ({settings.config_file} or {ENV_PREFIX}PREVIOUS_HOMES) names "
                f"{home}, whose outbox cannot be read ({exc}); nothing was signed or sent, so "
                "that the months it sent are not sent again: make it readable by the user "
                "that runs fedqi-agent (it is only read, never written)"
            ) from None
    return opened


def practice_guard(
    settings: AgentSettings,
    outbox: Outbox | None,
    catalogue: Catalogue,
    raw_cells: Sequence[RawCell],
    policy: DisclosurePolicy,
    period: Period,
    known: dict[str, list[RawCell]] | None = None,
) -> GuardResult:
    """:func:`guarded_cells` as the practice's ``guard`` setting asks, audited with the latest
    earlier releases in ``outbox`` (none without one): what ``submit`` and ``run`` sign and
    ``preview`` shows. ``known``: other periods' raw cells computed in the same run."""
    enabled = settings.guard == "on"
    if not (enabled and outbox):
        return guarded_cells(catalogue, raw_cells, policy, period, [], enabled=enabled)
    with contextlib.ExitStack() as stack:
        previous = open_previous_homes(settings, stack)
        history = guard_history(outbox, period, known or {}, previous, policy)
    return guarded_cells(catalogue, raw_cells, policy, period, history, enabled=enabled)


def guarded_cells(
    catalogue: Catalogue,
    raw_cells: Sequence[RawCell],
    policy: DisclosurePolicy,
    period: Period,
    history: Sequence[Release],
    *,
    enabled: bool = True,
) -> GuardResult:
    """The cells to release after the disclosure guard (agent/outbound/guard.py): apply_policy's, with
    more withheld where linked tables or earlier releases would narrow a protected count below
    the guard's policy. A policy without secondary suppression, or ``enabled`` False (the
    practice's ``guard = "off"``), is not guarded. When the guard
    cannot run, apply_policy's cells are returned with a reason to hold them: what could not be
    audited is never released without the practice's approval."""
    if not enabled or not policy.secondary_suppression:
        return GuardResult(apply_policy(raw_cells, policy), (), None, (), 0.0)
    from agent.outbound.guard import guard_cells  # numpy, SciPy, HiGHS: only where it guards

    try:
        return guard_cells(
            catalogue=catalogue, raw=raw_cells, policy=policy, period=period, history=history
        )
    except DisclosureError as exc:
        cells = apply_policy(raw_cells, policy)
        return GuardResult(cells, (), f"the disclosure guard could not audit it: {exc}", (), 0.0)


@dataclass(frozen=True)
class SignedMessage:
    envelope: bytes
    sha256: str


def sign(kind: str, payload: bytes, keys: Sequence[SigningKey]) -> SignedMessage:
    data = sign_envelope(kind, payload, keys).to_bytes()
    return SignedMessage(envelope=data, sha256=sha256_hex(data))


# --- plain words ----------------------------------------------------------------------------


def count_words(
    count: Count,
    policy: DisclosurePolicy | None = None,
    *,
    total: bool = False,
    kind: str = "denominator",
    under_suppressed: bool = False,
) -> str:
    """One released count in plain words, from the payload and the policy alone (the local
    count is not at hand): ``about 25 (rounded to 5)``; a suppressed count with the range the
    policy suppresses on its own, ``suppressed (1-7 or withheld to protect another count)``.
    A whole-practice denominator or numerator is suppressed as small under the stratified rule
    too (protocol.disclosure, ``suppress_small_totals``); an exclusions total keeps the totals
    rule. A numerator whose denominator is suppressed (``under_suppressed``) may be a small
    population's, withheld zeros included, so its range starts at 0. Without the policy
    (``None``: the payload's is not known here) a suppressed count is said to be either, without
    a range."""
    if policy is None:
        if count.status == "suppressed":
            return "suppressed (a small count, or withheld to protect another count)"
        return describe_count(count)
    rule = policy.totals if total else policy.stratified
    if count.status != "suppressed" or exclusions_hidden(policy, kind, total):
        return describe_count(count, rule, hidden=exclusions_hidden(policy, kind, total))
    limit = suppression_threshold(rule)
    if total and kind != "exclusions" and policy.secondary_suppression:
        limit = max(limit, suppression_threshold(policy.stratified))
    if kind == "numerator" and under_suppressed and policy.secondary_suppression:
        small = suppression_threshold(policy.stratified)
        if small >= 1:
            return (
                f"suppressed (0-{max(limit, small)} or withheld to protect another count; a "
                f"population of 1-{small} has its numerators withheld, zeros included)"
            )
    if limit == 0:
        return "suppressed (withheld to protect another count)"
    return f"suppressed (1-{limit} or withheld to protect another count)"


def payload_policy(
    sub: Submission, candidates: Sequence[DisclosurePolicy | None]
) -> DisclosurePolicy | None:
    """The policy among ``candidates`` that ``sub`` was released under (its provenance names
    it by hash), or None if none of them is."""
    for policy in candidates:
        if policy is not None and policy_sha256(policy) == sub.provenance.disclosure_policy:
            return policy
    return None


def count_short(count: Count) -> str:
    """A released count for a table cell: ``0``, ``12``, ``~15`` (rounded), ``*`` (suppressed)."""
    if count.status == "suppressed":
        return "*"
    return f"~{count.value}" if count.status == "rounded" else str(count.value)


def stratum_words(cell: Cell) -> str:
    band = "all ages" if cell.stratum.age_band == "all" else f"aged {cell.stratum.age_band}"
    sex = {"all": "all sexes", "F": "female", "M": "male", "U": "sex unknown"}[cell.stratum.sex]
    return f"{band}, {sex}"


def describe_submission(sub: Submission, policy: DisclosurePolicy | None = None) -> list[str]:
    """What would leave the practice, in plain words, one line per fact and per cell."""
    statuses = Counter(
        c.status for cell in sub.cells for c in (cell.denominator, cell.numerator, cell.exclusions)
    )
    indicators = sorted({c.indicator for c in sub.cells})
    lines = [
        f"Practice {sub.practice} sends to network {sub.aud!r}, signed by key {sub.kid}.",
        f"Period {sub.period.label} ({sub.period.start} to {sub.period.end}); catalogue "
        f"{sub.catalogue.id} v{sub.catalogue.version}; message {sub.submission_id}, seq {sub.seq}.",
        f"{len(sub.cells)} cells for {len(indicators)} indicators; counts: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + ".",
        "Only these counts leave: no patient identifiers, no dates of birth, no free text.",
    ]
    if sub.supersedes:
        lines.append(f"It corrects submission {sub.supersedes} (reason: {sub.reason}).")
    for cell in sub.cells:
        lines.append(cell_words(cell, policy))
    return lines


def cell_words(cell: Cell, policy: DisclosurePolicy | None = None) -> str:
    """One cell's counts in plain words (:func:`count_words`)."""
    total = cell.stratum.is_total
    return (
        f"{cell.indicator} {stratum_words(cell)}: denominator "
        f"{count_words(cell.denominator, policy, total=total, kind='denominator')}; numerator "
        f"{count_words(cell.numerator, policy, total=total, kind='numerator', under_suppressed=cell.denominator.status == 'suppressed')}; exclusions "
        f"{count_words(cell.exclusions, policy, total=total, kind='exclusions')}"
    )
