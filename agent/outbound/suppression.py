"""Why a released count is suppressed, for the practice's own screens (never sent).

Only the agent can say it: the reason depends on the exact local count, which never leaves the
practice. :func:`suppression_reasons` compares each suppressed count with the rule that applies
to it (``protocol.disclosure``): a count small enough to be suppressed on its own is
``small_count``; anything else suppressed was withheld to protect another cell (``secondary``);
a stratum's exclusions under a policy that sends exclusions as a whole-practice total only is
``total_only``, whatever it holds; a numerator of 0 in a small population (a whole-practice
denominator of 1..T, ``protocol.disclosure.is_small_population``) is ``small_population``.
The reason is a string so that later rules can add theirs (each with its words in
:data:`REASON_WORDS`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from protocol.catalogue import DisclosurePolicy
from protocol.disclosure import (
    COUNT_KINDS,
    RawCell,
    Withheld,
    apply_policy,
    exclusions_hidden,
    suppression_threshold,
)
from protocol.submission import Cell

SMALL_COUNT = "small_count"
SECONDARY = "secondary"
GUARDED = "guarded"
TOTAL_ONLY = "total_only"
SMALL_POPULATION = "small_population"

REASON_WORDS: dict[str, str] = {
    SMALL_COUNT: "small count",
    SECONDARY: "secondary suppression, to protect another cell",
    GUARDED: "withheld by the disclosure guard (linked tables or earlier releases)",
    TOTAL_ONLY: "exclusions are sent as a whole-practice total only",
    SMALL_POPULATION: (
        "small population (a whole-practice denominator at or below the threshold): its "
        "numerators are withheld, zeros included"
    ),
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
    the counts the disclosure guard chose to withhold. A count disclosure control suppresses
    on its own (``apply_policy`` without the guard) keeps that reason, whatever the guard did:
    ``small_count`` when the rule that applies to it suppresses its value (for a whole-practice
    denominator or numerator, also when the practice's denominator is small under the
    stratified rule: ``suppress_small_totals``), else ``secondary``. Of the rest, a count the
    guard withheld is ``guarded`` and one suppressed to protect it ``secondary``. A stratum's
    exclusions under ``exclusions_by_stratum=False`` is ``total_only``, and a small population's
    numerator of 0 ``small_population``."""
    exact = {r.key: r for r in raw}
    with_strata = {r.indicator for r in raw if r.stratum != ("all", "all")}
    own = _suppressed(apply_policy(raw, policy) if guarded else cells)
    stratified = suppression_threshold(policy.stratified)
    reasons: Reasons = {}
    for cell in cells:
        total = cell.stratum.is_total
        rule = policy.totals if total else policy.stratified
        rc = exact[cell.key]
        for kind in COUNT_KINDS:
            if getattr(cell, kind).status != "suppressed":
                continue
            key = (*cell.key, kind)
            if exclusions_hidden(policy, kind, total):
                reasons[key] = TOTAL_ONLY
                continue
            if key not in own:
                stratum = (cell.stratum.age_band, cell.stratum.sex)
                reasons[key] = GUARDED if (cell.indicator, stratum, kind) in guarded else SECONDARY
                continue
            value = rc.count(kind)
            if kind == "numerator" and value == 0:
                # only the small-population rule suppresses a zero (protocol.disclosure)
                reasons[key] = SMALL_POPULATION
                continue
            small = 1 <= value <= suppression_threshold(rule)
            # A total over a group this small is suppressed by the stratified rule whatever its
            # own threshold (protocol.disclosure: suppress_small_totals); not the exclusions.
            small_group = (
                total
                and kind != "exclusions"
                and policy.secondary_suppression
                and cell.indicator in with_strata
                and 1 <= rc.denominator <= stratified
            )
            reasons[key] = SMALL_COUNT if value >= 1 and (small or small_group) else SECONDARY
    return reasons


def beyond_policy(
    raw: Sequence[RawCell], cells: Sequence[Cell], policy: DisclosurePolicy
) -> set[tuple[str, str, str, str]]:
    """The suppressed counts of ``cells`` that disclosure control alone (``apply_policy``)
    releases: what the disclosure guard withheld, and what it made secondary suppression
    withhold, beyond the policy's own suppression."""
    return _suppressed(cells) - _suppressed(apply_policy(raw, policy))


def _suppressed(cells: Sequence[Cell]) -> set[tuple[str, str, str, str]]:
    """The (indicator, age band, sex, count kind) of every suppressed count of ``cells``."""
    return {
        (*c.key, kind)
        for c in cells
        for kind in COUNT_KINDS
        if getattr(c, kind).status == "suppressed"
    }
