"""Clinical areas and registers: the one place the dashboard derives them.

The catalogue (protocol/catalogue.py) has no area field and no "kind" of indicator, so both are
derived here from the indicator id, and nowhere else:

* **Clinical area**: the id's prefix before its first underscore (``DM_HBA1C`` -> ``DM``),
  looked up in :data:`AREAS`, which also gives the order areas are shown in. An id whose prefix
  is not listed falls in :data:`OTHER` ("Other indicators"), so a new catalogue indicator is
  always shown, never dropped.
* **Register**: an indicator whose id ends in ``_REG`` is a register (its rate is a recorded
  prevalence: the share of the list on the register). Higher is not better for a register, so
  it is never set against an achievable benchmark and never counted in patients who could gain.

* **Seasonal**: an indicator whose area is in :data:`SEASONAL` counts something given in a
  season, in a window that the season passes through: ``FLU_65`` counts flu vaccinations in
  the 7 months up to the period end, and vaccinations are given from September to March, so
  its rate climbs through autumn and falls away through spring and summer every year, whatever
  the practice does. A change across three months of such an indicator is mostly the season,
  so the pack compares it with the same month a year before instead (pack.py).

The default catalogue follows these conventions (protocol/catalogues/build.py); a network that adds
an area adds one line to :data:`AREAS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: id prefix -> the area's readable title, in the order the dashboard shows areas.
AREAS: dict[str, str] = {
    "HYP": "Hypertension",
    "CHD": "Coronary heart disease",
    "STIA": "Stroke and TIA",
    "AF": "Atrial fibrillation",
    "DM": "Diabetes",
    "CKD": "Chronic kidney disease",
    "AST": "Asthma",
    "COPD": "COPD",
    "SMOK": "Smoking",
    "BP": "Blood pressure screening",
    "FLU": "Vaccination",
}
OTHER = "Other indicators"

#: id prefixes of seasonal indicators (module docstring): compared only a year apart.
SEASONAL: frozenset[str] = frozenset({"FLU"})


def area_of(indicator: str) -> str:
    """The clinical area's title of an indicator id (see the module docstring)."""
    return AREAS.get(indicator.split("_", 1)[0], OTHER)


def is_register(indicator: str) -> bool:
    """Whether an indicator is a register (a prevalence: never against a benchmark)."""
    return indicator.endswith("_REG")


def is_seasonal(indicator: str) -> bool:
    """Whether an indicator's rate follows a season (module docstring), so that a change
    across a few months is the season's, not the practice's."""
    return indicator.split("_", 1)[0] in SEASONAL


def _order(area: str) -> int:
    titles = list(AREAS.values())
    return titles.index(area) if area in titles else len(titles)


def group_by_area(
    items: Iterable[Mapping[str, Any]], key: str = "indicator"
) -> list[dict[str, Any]]:
    """``items`` (dicts naming an indicator under ``key``) grouped by clinical area, areas in
    :data:`AREAS` order and, within an area, the register first and then the order given:
    ``[{"area": title, "items": [...]}, ...]``."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        groups.setdefault(area_of(item[key]), []).append(item)
    return [
        {"area": area, "items": sorted(groups[area], key=lambda i: not is_register(i[key]))}
        for area in sorted(groups, key=_order)
    ]
