"""Helpers shared by the agent's tests."""

from __future__ import annotations

from protocol.catalogue import Catalogue
from protocol.disclosure import RawCell


def uniform_cells(catalogue: Catalogue, value: int) -> list[RawCell]:
    """Every stratum of every indicator ``value`` achievers of ``3 * value``; the totals are
    their sums."""
    cells = []
    for ind in catalogue.indicators:
        strata = catalogue.strata_for(ind)[1:]
        n = max(len(strata), 1)
        cells.append(RawCell(ind.id, "all", "all", 3 * value * n, value * n, 0))
        cells += [RawCell(ind.id, band, sex, 3 * value, value, 0) for band, sex in strata]
    return cells
