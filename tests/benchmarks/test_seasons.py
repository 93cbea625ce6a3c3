"""A seasonal indicator out of its season (areas.in_season): FLU_65 for a period ending April to
August is not measured, in every view, rather than a 0% "within the limits" (a new user's
report: every practice at 0% in August, each banded within limits around a pooled 0%)."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

import pytest
from bench_store import Store, month

from aggregator.benchmarks import areas, fhir, funnel, overview, pack, practice, service, stats
from aggregator.benchmarks import trend as trend_mod
from aggregator.benchmarks.viewer import Viewer

BANDS = stats.PeerBands((5000, 10000, 15000), 3)
PRACTICES = ("A00001", "A00002", "A00003", "A00004")
# What FLU_65 does through a year: nobody vaccinated in the window by August, most by November.
FLU = {(2025, 11): 70, (2026, 8): 0, (2026, 11): 68}
AUGUST, NOVEMBER = "2026-08", "2026-11"


@pytest.fixture
def network(sqlite_store: Store) -> Store:
    for i, ods in enumerate(PRACTICES):
        sqlite_store.practice(ods, list_size=6000 + 1000 * i)
        for (y, m), flu in FLU.items():
            cells: dict[str, tuple[Any, ...]] = {
                "FLU_65": (flu + i, 100),
                "DM_HBA1C": (60 + i, 100),
            }
            sqlite_store.submit(ods, month(y, m), cells, strata={"FLU_65": [("80+", "F", 0, 40)]})
    service.refresh_stale(sqlite_store.db)
    return sqlite_store


def _as(store: Store, role: str, build: Any, *args: Any) -> Any:
    user = {
        "admin": SimpleNamespace(id=1, role="admin", group=None, practice_ods=None),
        "lead": SimpleNamespace(id=2, role="network_lead", group="PCN1", practice_ods=None),
        "practice": SimpleNamespace(id=3, role="practice", group=None, practice_ods="A00001"),
    }[role]
    with store.db.read() as s:
        viewer = Viewer.load(s, user, b"k" * 32, BANDS)  # type: ignore[arg-type]
        return build(s, viewer, *args)


@pytest.mark.parametrize(
    ("end", "measured"),
    [((2026, 3, 31), True), ((2026, 4, 30), False), ((2026, 8, 31), False),
     ((2026, 9, 30), True), ((2026, 12, 31), True), ((2027, 1, 31), True)],
)  # fmt: skip
def test_flu_is_measured_only_for_periods_ending_in_its_season(
    end: tuple[int, int, int], measured: bool
) -> None:
    assert areas.in_season("FLU_65", dt.date(*end)) is measured
    assert areas.in_season("DM_HBA1C", dt.date(*end))  # not seasonal: always measured


@pytest.mark.parametrize("role", ["admin", "lead", "practice"])
def test_a_funnel_out_of_season_has_no_rate_no_limits_and_says_why(
    network: Store, role: str
) -> None:
    view = _as(network, role, funnel.funnel_view, "FLU_65", AUGUST)
    assert view["out_of_season"] == areas.out_of_season_text("FLU_65")
    assert "September to March" in view["out_of_season"]
    assert view["practices"] == [] and view["limits_curve"] == []
    s = view["summary"]
    assert s["pooled"] is None and s["abc"] is None and s["median"] is None
    # the fast path (the API's JSON) answers the same
    assert json.loads(_as(network, role, funnel.funnel_json, "FLU_65", AUGUST)) == json.loads(
        json.dumps(view)
    )
    # in season, and any other indicator in August: a funnel as ever
    for ind, period in (("FLU_65", NOVEMBER), ("DM_HBA1C", AUGUST)):
        other = _as(network, role, funnel.funnel_view, ind, period)
        assert "out_of_season" not in other and other["summary"]["pooled"] is not None
        assert any(p["band"] for p in other["practices"])


def test_the_overview_says_out_of_season_for_every_practice(network: Store) -> None:
    view = _as(network, "admin", overview.overview_view, AUGUST)
    col = next(c for c in view["indicators"] if c["indicator"] == "FLU_65")
    assert col["out_of_season"] and col["pooled"] is None and col["abc"] is None
    cells = [p["cells"]["FLU_65"] for p in view["practices"]]
    assert len(cells) == len(PRACTICES)
    for c in cells:
        assert c["status"] == "out_of_season" and c["note"] == areas.OUT_OF_SEASON
        assert c["rate"] is None and c["band"] is None and c["band_text"] is None
    hba1c = [p["cells"]["DM_HBA1C"] for p in view["practices"]]
    assert all(c["rate"] is not None and c["band"] for c in hba1c)
    november = _as(network, "admin", overview.overview_view, NOVEMBER)
    assert all(p["cells"]["FLU_65"]["band"] for p in november["practices"])


@pytest.mark.parametrize("role", ["admin", "lead", "practice"])
def test_a_practice_view_shows_no_figure_out_of_season(network: Store, role: str) -> None:
    view = _as(network, role, practice.practice_view, "A00001", AUGUST)
    flu = next(i for i in view["indicators"] if i["indicator"] == "FLU_65")
    assert flu["status"] == "out_of_season" and flu["note"] == areas.OUT_OF_SEASON
    for key in ("rate", "band", "numerator", "denominator", "pooled", "abc", "could_gain",
                "gap_to_abc", "ci95"):  # fmt: skip
        assert flu.get(key) is None, key
    # its trend: no rate for August, a rate for the Novembers, no change across August
    trend = {t["period"]["label"]: t for t in flu["trend"]}
    assert trend[AUGUST]["rate"] is None and trend[AUGUST]["status"] == "out_of_season"
    assert trend["2025-11"]["rate"] is not None
    assert all(c["status"] == "out_of_season" and c["difference"] is None for c in flu["changes"])
    later = _as(network, role, practice.practice_view, "A00001", NOVEMBER)
    flu = next(i for i in later["indicators"] if i["indicator"] == "FLU_65")
    assert flu["rate"] is not None and flu["status"] != "out_of_season"


def test_a_trend_has_no_rate_out_of_season(network: Store) -> None:
    view = _as(network, "admin", trend_mod.trend_view, "FLU_65", "A00001")
    net = {p["period"]["label"]: p for p in view["network"]}
    assert net[AUGUST]["rate"] is None and net[AUGUST]["status"] == "out_of_season"
    assert net[AUGUST]["numerator"] is None and net[AUGUST]["abc"] is None
    assert net[NOVEMBER]["rate"] is not None
    own = {p["period"]["label"]: p for p in view["practice_series"]}
    assert own[AUGUST]["rate"] is None and own[AUGUST]["band"] is None
    assert own[AUGUST]["numerator"] is None and own[AUGUST]["status"] == "out_of_season"
    for changes in (view["network_changes"], view["practice_changes"]):
        assert [c["status"] for c in changes] == ["out_of_season", "out_of_season"]
        assert all(c["difference"] is None and not c["tested"] for c in changes)


def test_the_pack_says_out_of_season_and_compares_nothing(network: Store) -> None:
    p = _as(network, "admin", pack.practice_pack, "A00001", AUGUST)
    flu = next(m for m in p["measures"] if m["indicator"] == "FLU_65")
    assert flu["change"] is None and flu["rate"] is None
    assert all(flu["spine"][k] is None for k in ("pooled", "median", "q1", "p10", "abc", "rate"))
    text = " ".join(p["narrative"])
    assert (  # the title is the id here: this store has no published catalogue
        "FLU_65 is out of season in 2026-08: not measured in this period (FLU_65 is measured "
        "only for periods ending September to March, its season), so it has no rate, network "
        "figure or change here."
    ) in text, text
    assert "1 out of season: not measured in this period" in text
    assert "compared with the same month a year before" not in text
    november = _as(network, "admin", pack.practice_pack, "A00001", NOVEMBER)
    assert "out of season" not in " ".join(november["narrative"])


def test_a_measure_report_out_of_season_has_counts_but_no_score(network: Store) -> None:
    report = _as(network, "admin", fhir.measure_report, "A00001", "FLU_65", AUGUST)
    group = report["group"][0]
    assert "measureScore" not in group
    assert {p["code"]["coding"][0]["code"]: p.get("count") for p in group["population"]}[
        "numerator"
    ] == 0
    assert all("measureScore" not in s for s in group["stratifier"][0]["stratum"])
    report = _as(network, "admin", fhir.measure_report, "A00001", "FLU_65", NOVEMBER)
    assert report["group"][0]["measureScore"]["value"] == 0.68


def test_the_gap_text_names_the_months_out_of_season() -> None:
    assert areas.gap_text("FLU_65") == (
        "No point for periods ending April to August: out of season, not measured."
    )
    assert areas.gap_text("DM_HBA1C") == ""
