"""The practice pack's comparisons on a stored network: with the month three months before, by
the calendar (not the third stored period back), and for a seasonal indicator with the same
month a year before."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from bench_store import Store, month

from aggregator.benchmarks import pack, service, stats
from aggregator.benchmarks.viewer import Viewer

BANDS = stats.PeerBands((5000, 10000, 15000), 3)


def _pack(store: Store, ods: str, period: str) -> dict[str, Any]:
    service.refresh_stale(store.db)
    admin = SimpleNamespace(id=1, role="admin", group=None, practice_ods=None)
    with store.db.read() as s:
        viewer = Viewer.load(s, admin, b"k" * 32, BANDS)  # type: ignore[arg-type]
        return pack.practice_pack(s, viewer, ods, period)


def _network(store: Store, months: dict[str, list[tuple[int, int]]]) -> None:
    """Practices (ODS -> the months they sent), each with a DM_HBA1C rate and a FLU_65 rate
    that follows the vaccination season (none in summer, most by November)."""
    flu = {8: 0, 10: 55, 11: 68, 3: 70, 4: 60}
    for i, (ods, sent) in enumerate(months.items()):
        store.practice(ods, list_size=6000 + 1000 * i)
        for y, m in sent:
            store.submit(ods, month(y, m), {"DM_HBA1C": (60 + i + m, 100), "FLU_65": (flu[m], 100)})


def test_months_before_keeps_a_months_last_day() -> None:
    assert pack.months_before(*month(2026, 11), 3) == month(2026, 8)
    assert pack.months_before(*month(2026, 5), 3) == month(2026, 2)
    assert pack.months_before(*month(2026, 2), 12) == month(2025, 2)
    assert pack.months_before(dt.date(2026, 1, 15), dt.date(2026, 2, 14), 3) == (
        dt.date(2025, 10, 15),
        dt.date(2025, 11, 14),
    )


def test_the_pack_compares_with_three_months_before_and_says_when_it_has_no_data(
    sqlite_store: Store,
) -> None:
    """A new-user run: with stored periods 2026-03, 04, 10 and 11, the pack for 2026-11 said
    'compared with 2026-03' (the third stored period back), a month the practice never sent,
    and '17 had no rate in one of the two periods'. It compares with 2026-08, the month three
    before, and says plainly that the practice has no data for it."""
    months = [(2026, 3), (2026, 4), (2026, 10), (2026, 11)]
    _network(sqlite_store, {"A00001": months, "A00002": months, "A00003": [(2026, 8), (2026, 11)]})
    p = _pack(sqlite_store, "A00001", "2026-11")
    assert p["then"]["label"] == "2026-08" and not p["then_sent"]
    text = " ".join(p["narrative"])
    assert "A00001 has no data stored for 2026-08, three months before 2026-11" in text, text
    assert "2026-03" not in text and "2026-04" not in text
    assert "had no rate in one of the two periods" not in text
    assert all(m["change"] is None for m in p["measures"])

    p = _pack(sqlite_store, "A00003", "2026-11")  # it sent 2026-08: compared with it
    assert p["then"]["label"] == "2026-08" and p["then_sent"]
    text = " ".join(p["narrative"])
    assert "Since 2026-08: " in text, text
    hba1c = next(m for m in p["measures"] if m["indicator"] == "DM_HBA1C")
    assert hba1c["change"]["from"].startswith("2026-08")


def test_a_seasonal_indicator_is_compared_with_the_same_month_a_year_before(
    sqlite_store: Store,
) -> None:
    """A new-user run: 'Rose: Aged 65 or over: seasonal flu vaccination in the last 7 months
    (0.0% to 67.5%)', August against November: the season, not the practice. FLU_65 is left
    out of last quarter's rose/fell and compared with the same month a year before, or not at
    all (said so) when there is no rate then."""
    _network(
        sqlite_store,
        {"A00001": [(2026, 8), (2026, 11)], "A00002": [(2025, 11), (2026, 8), (2026, 11)]},
    )
    p = _pack(sqlite_store, "A00001", "2026-11")
    text = " ".join(p["narrative"])
    assert "Since 2026-08: " in text and "Rose: FLU_65" not in text, text
    assert (
        "FLU_65 follows the vaccination season, so it is compared with the same month a year "
        "before (2025-11), not with last quarter: there is no rate for 2025-11 to compare with."
    ) in text
    flu = next(m for m in p["measures"] if m["indicator"] == "FLU_65")
    assert flu["seasonal"] and flu["change"] is None

    p = _pack(sqlite_store, "A00002", "2026-11")
    flu = next(m for m in p["measures"] if m["indicator"] == "FLU_65")
    assert flu["change"]["from"].startswith("2025-11")  # 68 of 100 both Novembers
    text = " ".join(p["narrative"])
    assert "compared with the same month a year before (2025-11)" in text, text
    assert "0 rose and 0 fell beyond chance since then" in text
    assert "0.0% to" not in text
