"""Long outputs (``preview``, ``audit show``, ``pending``): a one-screen summary first, cells
chosen with ``--indicator`` / ``--stratum``, every cell with ``--all``."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.table import Table

from agent.errors import AgentError, AgentUserError
from agent.home.catalogue_cache import load_catalogue
from agent.home.settings import AgentSettings
from agent.outbound.release import cell_words, count_short, payload_policy
from agent.outbound.suppression import REASON_WORDS, Reasons
from protocol.catalogue import Catalogue, DisclosurePolicy
from protocol.submission import Cell, Submission

IndicatorFilter = Annotated[
    list[str] | None,
    typer.Option(
        "--indicator",
        help="only this indicator's cells (repeatable)",
        show_default=False,
    ),
]
StratumFilter = Annotated[
    list[str] | None,
    typer.Option(
        "--stratum",
        help="only cells of this stratum (repeatable): total, an age band of the catalogue "
        "(60-79), a sex (F, M, U) or BAND/SEX (60-79/F)",
        show_default=False,
    ),
]
AllOption = Annotated[bool, typer.Option("--all", help="every cell, in full")]


def stratum_names(cell: Cell) -> set[str]:
    s = cell.stratum
    names = {f"{s.age_band}/{s.sex}"}
    if s.is_total:
        names.add("total")
    if s.sex == "all":
        names.add(s.age_band)
    if s.age_band == "all":
        names.add(s.sex)
    return names


SEXES = ("F", "M", "U")


def check_strata(strata: list[str] | None, catalogue: Catalogue) -> None:
    """Fail on a ``--stratum`` the catalogue cannot have (exit 2), before anything is computed
    or printed: :func:`select_cells` checks again against the cells themselves."""
    bands = [b.label for b in catalogue.age_bands]
    known = {"total", "all/all", *bands, *SEXES}
    known |= {f"{b}/{s}" for b in [*bands, "all"] for s in [*SEXES, "all"]}
    for st in strata or []:
        if st not in known:
            raise AgentUserError(_no_such_stratum(st, bands))


def _no_such_stratum(stratum: str, bands: list[str]) -> str:
    return (
        f"--stratum {stratum!r}: no such stratum here; use total, an age band "
        f"({', '.join(bands)}), a sex (F, M, U) or BAND/SEX"
    )


def select_cells(
    cells: Sequence[Cell], indicators: list[str] | None, strata: list[str] | None
) -> list[Cell]:
    """The cells matching every filter given; an unknown indicator or stratum is an error that
    lists the ones there are (exit 2)."""
    known_ind = sorted({c.indicator for c in cells})
    for ind in indicators or []:
        if ind not in known_ind:
            raise AgentUserError(
                f"--indicator {ind!r}: no such indicator here; there are {', '.join(known_ind)}"
            )
    known_str = set().union(*(stratum_names(c) for c in cells)) if cells else set()
    for st in strata or []:
        if st not in known_str:
            bands = sorted({c.stratum.age_band for c in cells} - {"all"})
            raise AgentUserError(_no_such_stratum(st, bands))
    return [
        c
        for c in cells
        if (not indicators or c.indicator in indicators)
        and (not strata or stratum_names(c) & set(strata))
    ]


def reason_text(cell: Cell, reasons: Reasons | None) -> str:
    if reasons is None:
        return ""
    parts = [
        f"{kind[:3]}: {REASON_WORDS.get(reasons[(*cell.key, kind)], reasons[(*cell.key, kind)])}"
        for kind in ("denominator", "numerator", "exclusions")
        if (*cell.key, kind) in reasons
    ]
    return "; ".join(parts)


def summary_table(sub: Submission, title: str) -> Table:
    """One line per indicator: its whole-practice counts and how many of its cells are held
    back."""
    table = Table(title=title)
    for col in ("indicator", "denom", "num", "excl", "cells", "suppressed counts"):
        table.add_column(col, no_wrap=col == "indicator")
    by_ind: dict[str, list[Cell]] = {}
    for c in sub.cells:
        by_ind.setdefault(c.indicator, []).append(c)
    for ind, cells in by_ind.items():
        total = next((c for c in cells if c.stratum.is_total), None)
        suppressed = sum(
            getattr(c, k).status == "suppressed"
            for c in cells
            for k in ("denominator", "numerator", "exclusions")
        )
        row = [ind]
        if total is None:
            row += ["", "", ""]
        else:
            row += [count_short(total.denominator), count_short(total.numerator)]
            row += [count_short(total.exclusions)]
        table.add_row(*row, str(len(cells)), str(suppressed) if suppressed else "")
    return table


def status_line(sub: Submission) -> str:
    statuses = Counter(
        c.status for cell in sub.cells for c in (cell.denominator, cell.numerator, cell.exclusions)
    )
    return (
        f"{len(sub.cells)} cells for {len({c.indicator for c in sub.cells})} indicators; counts: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    )


def cell_lines(cells: Sequence[Cell], policy: DisclosurePolicy | None = None) -> list[str]:
    """Each cell in plain words (as ``describe_submission`` words them)."""
    return [cell_words(c, policy) for c in cells]


def signed_policy(settings: AgentSettings, sub: Submission) -> DisclosurePolicy | None:
    """The disclosure policy a stored payload was released under: the practice's own or the
    network's, whichever its provenance hash names; None if neither (a catalogue since
    changed), when the words say only what the payload itself tells."""
    candidates = [settings.disclosure]
    with contextlib.suppress(AgentError):
        candidates.append(load_catalogue(settings).disclosure)
    return payload_policy(sub, candidates)


HINT = (
    "This is the summary (whole-practice counts per indicator). --indicator ID and --stratum S "
    "show those cells in full; --all shows every cell."
)
