"""The disclosure guard's policy, its inputs and its results, without its solver.

Modules that name these (the release path, the submitter) import them from here and not
:mod:`agent.outbound.guard`, which loads numpy, SciPy and HiGHS (about a third of a second of
start-up; docs/benchmarks.md, "A preview loads only what it uses"): that is imported only where
a submission is guarded, so commands that never guard (``explain``, ``check-source``, a
``preview`` with the practice's guard off) do not pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from protocol.disclosure import RawCell, Withheld
from protocol.submission import Cell, Period

__all__ = ["Exposure", "GuardPolicy", "GuardResult", "Release", "Var", "latest_linked", "linked"]

Var = tuple[int, str, tuple[str, str], str]  # (release: 0 new, 1 earlier; indicator; stratum; kind)


@dataclass(frozen=True)
class GuardPolicy:
    """How far a reader may narrow a protected count (docs/disclosure.md, "The policy").

    ``suppressed_width``: a small suppressed count of the new submission keeps at least this
    many feasible values within the submission and its linked tables. ``linked_width``: a small
    suppressed count of either release keeps at least this many with a linked earlier release.
    ``rounded_width``: a rounded count of the new submission keeps at least this many within
    the submission (1 switches the check off). ``stall_rounds``: how many withholding rounds
    in a row may leave exactly the same counts exposed before the guard holds the submission
    (withholding has stopped helping). ``max_withheld``: the most counts the guard
    withholds beyond apply_policy's before it holds the submission instead. ``prune``: once
    nothing is exposed, release again each count the guard withheld that the release turns
    out not to need (docs/disclosure.md, "The prune pass"); off only to measure what it gains.
    """

    suppressed_width: int = 2
    linked_width: int = 2
    rounded_width: int = 2
    max_withheld: int = 60
    stall_rounds: int = 4
    prune: bool = True

    def __post_init__(self) -> None:
        if min(self.suppressed_width, self.linked_width, self.rounded_width) < 1:
            raise ValueError("guard widths must be at least 1")
        if max(self.suppressed_width, self.linked_width, self.rounded_width) > 3:
            raise ValueError("guard widths above 3 are not supported (three worlds prove 3)")
        if self.max_withheld < 0:
            raise ValueError("max_withheld must be at least 0")
        if self.stall_rounds < 1:
            raise ValueError("stall_rounds must be at least 1")


@dataclass(frozen=True)
class Release:
    """An earlier release as the reader sees it: its period, cells and indicator versions;
    ``raw``, when the agent has them, that period's true counts (used only to tell which of its
    suppressed counts are small, and only if every one fits what was released);
    ``exclusions_by_stratum``, the layout of exclusions of the policy it was released under when
    known (``agent.outbound.release.exclusions_layout``: its provenance's policy hash is the
    current policy's in one layout or the other); ``None``: the current policy's, unless its
    cells show strata released.
    """

    label: str
    period: Period
    cells: tuple[Cell, ...]
    versions: dict[str, int] = field(default_factory=dict)
    raw: tuple[RawCell, ...] | None = None
    exclusions_by_stratum: bool | None = None


@dataclass(frozen=True)
class Exposure:
    where: str
    var: Var
    lo: int
    hi: int
    required: int

    def reason(self) -> str:
        r, ind, (band, sex), kind = self.var
        which = "this submission's" if r == 0 else "the earlier release's"
        return (
            f"{self.where}: {which} {ind} {band}/{sex} {kind} could be narrowed to "
            f"{self.hi - self.lo + 1} value(s) (the policy asks for at least {self.required})"
        )


@dataclass(frozen=True)
class GuardResult:
    cells: tuple[Cell, ...]
    withheld: tuple[Withheld, ...]  # counts withheld beyond apply_policy's own
    held_reason: str | None
    linked_releases: tuple[str, ...]
    seconds: float
    solves: int = 0
    integer_programs: int = 0  # of the solves, those whose relaxation was not an integer world


def linked(new: Period, earlier: Period) -> Literal["same", "adjacent"] | None:
    """How an earlier release's period links to the new one's, if at all."""
    if (new.start, new.end) == (earlier.start, earlier.end):
        return "same"
    if new.start.toordinal() - earlier.end.toordinal() == 1:
        return "adjacent"
    if earlier.start.toordinal() - new.end.toordinal() == 1:
        return "adjacent"
    if new.start <= earlier.end and earlier.start <= new.end:
        return "adjacent"  # overlapping periods of other lengths
    return None


def latest_linked(period: Period, history: Sequence[Release]) -> list[Release]:
    """The releases the guard audits with: the latest of the same period and the latest of each
    adjacent or overlapping period (``history`` oldest first)."""
    last: dict[tuple[object, object], Release] = {}
    for e in history:
        if linked(period, e.period):
            last[(e.period.start, e.period.end)] = e
    return sorted(last.values(), key=lambda e: (linked(period, e.period) != "same", e.label))
