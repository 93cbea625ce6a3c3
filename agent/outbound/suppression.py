"""Why a released count is suppressed, for the practice's own screens (never sent).

Only the agent can say it: the reason depends on the exact local count, which never leaves the
practice. :func:`suppression_reasons` compares each suppressed count with the rule that applies
to it (``protocol.disclosure``): a count small enough to be suppressed on its own is
``small_count``; anything else suppressed was withheld to protect another cell (``secondary``).
The reason is a string so that later rules can add theirs (each with its words in
:data:`REASON_WORDS`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from protocol.catalogue import DisclosurePolicy
from protocol.disclosure import COUNT_KINDS, RawCell, Withheld, suppression_threshold
from protocol.submission import Cell

SMALL_COUNT = "small_count"
SECONDARY = "secondary"
GUARDED = "guarded"

REASON_WORDS: dict[str, str] = {
    SMALL_COUNT: "small count",
    SECONDARY: "secondary suppression, to protect another cell",
    GUARDED: "withheld by the disclosure guard (linked tables or earlier releases)",
}

#: (indicator, age band, sex, count kind) -> reason.
Reasons = dict[tuple[str, str, str, str], str]


def suppression_reasons(
    raw: Sequence[RawCell],
    cells: Sequence[Cell],
    policy: DisclosurePolicy,
    guarded: Collection[Withheld] = (),
) -> Reasons:
    """The reason for every suppressed count of ``cells`` (released from ``raw``); ``guarded``:
    the counts the disclosure guard withheld beyond the policy's own."""
    exact = {r.key: r for r in raw}
    stratified = suppression_threshold(policy.stratified)
    reasons: Reasons = {}
    for cell in cells:
        rule = policy.totals if cell.stratum.is_total else policy.stratified
        # A total over a group this small is suppressed by the stratified rule whatever its
        # own threshold (protocol.disclosure: suppress_small_totals): still a small count.
        limit = max(suppression_threshold(rule), stratified if cell.stratum.is_total else 0)
        for kind in COUNT_KINDS:
            if getattr(cell, kind).status != "suppressed":
                continue
            value = exact[cell.key].count(kind)
            if (cell.indicator, (cell.stratum.age_band, cell.stratum.sex), kind) in guarded:
                reasons[(*cell.key, kind)] = GUARDED
            else:
                reasons[(*cell.key, kind)] = SMALL_COUNT if 1 <= value <= limit else SECONDARY
    return reasons
