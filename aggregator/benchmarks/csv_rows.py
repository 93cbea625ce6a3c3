"""The views as CSV rows: one flat dict per row, the columns in a fixed order (the API's and
the dashboard's ``format=csv`` downloads)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .funnel import FunnelView
from .overview import OverviewView
from .practice import PracticeView
from .trend import TrendView

#: One CSV row: column name -> value (None is written as an empty field).
Row = dict[str, Any]


def funnel_csv_rows(view: FunnelView) -> Iterable[Row]:
    """One row per practice shown. A seasonal indicator's period out of season
    (areas.in_season) shows no practice: one row says why instead (``status`` ``out_of_season``
    and the funnel's sentence as ``note``, as overview.csv and summary.csv say it), with no
    practice, figure or count: the funnel out of season lists none."""
    s = view["summary"]
    if "out_of_season" in view:
        yield dict.fromkeys(COLUMNS[funnel_csv_rows]) | {
            "indicator": view["indicator"], "period_end": view["period"]["end"],
            "peer_group": f"{view['peer_group']['dimension']}:{view['peer_group']['name']}",
            "status": "out_of_season", "note": view["out_of_season"],
        }  # fmt: skip
        return
    for p in view["practices"]:
        lim = p.get("limits") or {}
        yield {
            "indicator": view["indicator"], "period_end": view["period"]["end"],
            "peer_group": f"{view['peer_group']['dimension']}:{view['peer_group']['name']}",
            "practice": p["id"], "name": p["name"], "identified": p["identified"],
            "numerator": p.get("numerator"), "numerator_status": p.get("numerator_status"),
            "denominator": p.get("denominator"), "denominator_status": p.get("denominator_status"),
            "size_band": p.get("size_band"), "status": p.get("status"), "rate": p.get("rate"),
            "ci95_low": (p.get("ci95") or [None, None])[0], "ci95_high": (p.get("ci95") or [None, None])[1],
            "ci998_low": (p.get("ci998") or [None, None])[0], "ci998_high": (p.get("ci998") or [None, None])[1],
            "approximate": p.get("approximate"), "z": p.get("z"), "band": p.get("band"),
            "limit_low_95": lim.get("low_95"), "limit_high_95": lim.get("high_95"),
            "limit_low_998": lim.get("low_998"), "limit_high_998": lim.get("high_998"),
            "method": s["method"], "pooled": s["pooled"], "abc": s["abc"], "note": p.get("note"),
        }  # fmt: skip


def practice_csv_rows(view: PracticeView) -> Iterable[Row]:
    for i in view["indicators"]:
        yield {
            "practice": view["practice"]["id"], "period_end": view["period"]["end"], "indicator": i["indicator"],
            "title": i["title"], "numerator": i.get("numerator"), "numerator_status": i.get("numerator_status"),
            "denominator": i.get("denominator"), "denominator_status": i.get("denominator_status"),
            "status": i.get("status"), "rate": i.get("rate"),
            "ci95_low": (i.get("ci95") or [None, None])[0], "ci95_high": (i.get("ci95") or [None, None])[1],
            "band": i.get("band"), "pooled": i.get("pooled"), "abc": i.get("abc"), "gap_to_abc": i.get("gap_to_abc"),
            "could_gain": i.get("could_gain"), "register": i.get("register"), "area": i.get("area"),
            "note": i.get("note"),
        }  # fmt: skip


def trend_csv_rows(view: TrendView) -> Iterable[Row]:
    for n in view["network"]:
        yield {"series": f"{view['peer_group']['dimension']}:{view['peer_group']['name']}", "period_end": n["period"]["end"],
               "numerator": n["numerator"], "denominator": n["denominator"], "rate": n["rate"], "status": n["status"],
               "indicator_version": n["indicator_version"]}  # fmt: skip
    for p in view.get("practice_series", []):
        yield {"series": view["practice"]["id"], "period_end": p["period"]["end"], "numerator": p["numerator"],
               "denominator": p["denominator"], "rate": p["rate"], "status": p["status"],
               "indicator_version": p["indicator_version"]}  # fmt: skip


def overview_csv_rows(view: OverviewView) -> Iterable[Row]:
    for p in view["practices"]:
        for ind in view["indicators"]:
            c = p["cells"].get(ind["indicator"], {})
            yield {"practice": p["id"], "name": p["name"], "area": ind["area"], "indicator": ind["indicator"],
                   "title": ind["title"], "period_end": view["period"]["end"],
                   "rate": c.get("rate"), "band": c.get("band"), "status": c.get("status")}  # fmt: skip


#: Each view's CSV columns, in order: the header row is written even when there is no row.
COLUMNS: dict[Callable[..., Iterable[Row]], tuple[str, ...]] = {
    funnel_csv_rows: (
        "indicator",
        "period_end",
        "peer_group",
        "practice",
        "name",
        "identified",
        "numerator",
        "numerator_status",
        "denominator",
        "denominator_status",
        "size_band",
        "status",
        "rate",
        "ci95_low",
        "ci95_high",
        "ci998_low",
        "ci998_high",
        "approximate",
        "z",
        "band",
        "limit_low_95",
        "limit_high_95",
        "limit_low_998",
        "limit_high_998",
        "method",
        "pooled",
        "abc",
        "note",
    ),
    practice_csv_rows: (
        "practice",
        "period_end",
        "indicator",
        "title",
        "numerator",
        "numerator_status",
        "denominator",
        "denominator_status",
        "status",
        "rate",
        "ci95_low",
        "ci95_high",
        "band",
        "pooled",
        "abc",
        "gap_to_abc",
        "could_gain",
        "register",
        "area",
        "note",
    ),
    trend_csv_rows: (
        "series",
        "period_end",
        "numerator",
        "denominator",
        "rate",
        "status",
        "indicator_version",
    ),
    overview_csv_rows: (
        "practice",
        "name",
        "area",
        "indicator",
        "title",
        "period_end",
        "rate",
        "band",
        "status",
    ),
}
