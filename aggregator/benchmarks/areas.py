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
* **Out of season**: a seasonal indicator is measured only for a period that ends in its
  season (:data:`SEASONS`: ``FLU_65`` for periods ending September to March). Its window then
  holds the season so far, and a period ending 31 March (the QOF achievement date, from which
  every window counts back) holds the whole season, 1 September to 31 March. A period ending
  April to August holds less of the season every month, and by August none of it (February to
  August): every practice's rate falls towards 0%, and a 0% with a funnel band "within the
  limits" would read as a practice that vaccinated nobody. Such a period is **out of season**:
  the views show :data:`OUT_OF_SEASON` in place of every figure (rate, counts, band, pooled
  rate, benchmark, patients who could gain, change), and no funnel
  (docs/benchmarks-statistics.md). The practices' counts are still sent and stored as they
  were: nothing is dropped, only not shown as a measure.

The default catalogue follows these conventions (protocol/catalogues/build.py); a network that adds
an area adds one line to :data:`AREAS`.
"""

from __future__ import annotations

import calendar
import datetime as dt
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

#: A seasonal indicator's id prefix -> (first, last) month of its season: the months a period
#: may end in for the indicator to be measured (module docstring, "Out of season"). The flu
#: vaccination season runs from September to March.
SEASONS: dict[str, tuple[int, int]] = {"FLU": (9, 3)}

#: id prefixes of seasonal indicators (module docstring): compared only a year apart.
SEASONAL: frozenset[str] = frozenset(SEASONS)

#: What the views say in place of a seasonal indicator's figures for a period out of season.
OUT_OF_SEASON = "out of season: not measured in this period"


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


def in_season(indicator: str, period_end: dt.date) -> bool:
    """Whether ``indicator`` is measured for the period ending ``period_end``: always, but for a
    seasonal indicator (:data:`SEASONS`) only when the period ends in its season."""
    season = SEASONS.get(indicator.split("_", 1)[0])
    if season is None:
        return True
    first, last = season
    month = period_end.month
    return first <= month <= last if first <= last else month >= first or month <= last


def season_text(indicator: str) -> str:
    """When a seasonal indicator is measured, in words ("" for any other)."""
    season = SEASONS.get(indicator.split("_", 1)[0])
    if season is None:
        return ""
    first, last = (calendar.month_name[m] for m in season)
    return f"{indicator} is measured only for periods ending {first} to {last}, its season"


def gap_text(indicator: str) -> str:
    """Under a seasonal indicator's trend chart: which months have no point, and why ("" for
    any other indicator)."""
    season = SEASONS.get(indicator.split("_", 1)[0])
    if season is None:
        return ""
    first, last = (calendar.month_name[m % 12 + 1] for m in (season[1], season[0] - 2))
    return f"No point for periods ending {first} to {last}: out of season, not measured."


def out_of_season_text(indicator: str) -> str:
    """:data:`OUT_OF_SEASON` with when ``indicator`` is measured (a page's sentence)."""
    return f"{OUT_OF_SEASON} ({season_text(indicator)})"


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
