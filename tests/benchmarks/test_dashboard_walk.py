"""Every page of the dashboard answers 200, for every role, every catalogue indicator and every
period, over real HTTP on loopback (tests/benchmarks/dashboard_walk.py does the walking).

The network has the awkward cases planted, each picked from the catalogue by position (the
catalogue's own ids, never a fixed list): an indicator every practice sends with a population of
1-7 (every value suppressed), one where nobody is counted (denominators 0: what AF_ANTICOAG gives
on UK SNOMED data), one no practice sends at all, one sent only in the last period, and a
practice that skips a period."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from dashboard_walk import Walk, dashboard_get_routes
from synthetic_network import PERIODS as ALL_PERIODS
from synthetic_network import SyntheticNetwork, practices

PERIODS = ALL_PERIODS[-2:]  # two are enough for every case, and each one walked costs


@contextlib.contextmanager
def _network(tmp: Path, db_url: str) -> Iterator[tuple[SyntheticNetwork, dict[str, str]]]:
    n = SyntheticNetwork(tmp, db_url, practices(4))
    n.setup()
    n.start()
    ids = [i.id for i in n.catalogue.indicators]
    planted = {"tiny": ids[-1], "empty": ids[-2], "missing": ids[-3], "late": ids[-4]}
    skipper = n.specs[3]
    try:
        with httpx.Client(base_url=n.url, timeout=60) as c:
            n.enrol_all(c)
            for i, period in enumerate(PERIODS):
                last = i == len(PERIODS) - 1
                sent = tuple(
                    x for x in ids if x != planted["missing"] and (last or x != planted["late"])
                )
                for p in n.specs:
                    if p is skipper and i == 0:
                        continue
                    n.submit(c, p, period, seed=1, indicators=sent,
                             shapes={planted["tiny"]: "tiny", planted["empty"]: "empty"})  # fmt: skip
        yield n, planted
    finally:
        n.stop()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SyntheticNetwork, dict[str, str]]]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("walk")
    with _network(tmp, f"sqlite:///{tmp / 'agg.db'}") as n:
        yield n


def _walk(n: SyntheticNetwork, who: str) -> Walk:
    specs = {p.ods: p for p in n.specs}
    role, _, whom = who.partition(":")
    if role == "admin":
        readable = set(specs)
    elif role == "lead":
        readable = {o for o, p in specs.items() if p.pcn == whom}
    else:
        readable = {whom}
    forbidden = set()
    for ods in sorted(set(specs) - readable):
        forbidden |= {f"/dashboard/practices/{ods}{tail}" for tail in ("", "/summary.csv", "/pack")}
    if role == "lead":
        forbidden.add("/dashboard/ig")
    return Walk(
        n.url,
        n.tokens[who],
        indicators=[i.id for i in n.catalogue.indicators],
        readable=sorted(readable),
        forbidden=forbidden,
    ).run()


ROLES = ["admin", "lead:North PCN", "practice:B81004", "ig:B81002"]
IG_ONLY = {"/dashboard/ig/envelopes/{sha256}", "/dashboard/ig/proof/{index}"}


def _routes_for(who: str) -> set[str]:
    """Every GET route; a network lead has no payload audit, so no envelope or proof links."""
    every = {r.path for r in dashboard_get_routes()}
    return every - IG_ONLY if who.startswith("lead:") else every


@pytest.mark.parametrize("who", ROLES)
def test_every_page_answers_for_every_role(
    net: tuple[SyntheticNetwork, dict[str, str]], who: str
) -> None:
    n, _ = net
    walk = _walk(n, who)
    assert walk.problems == []
    # every period the network has is offered, and every GET route was walked
    assert walk.periods == [p.end.isoformat() for p in reversed(PERIODS)]
    assert walk.routes_walked == _routes_for(who)
    indicator_pages = len(n.catalogue.indicators) * (len(PERIODS) + 1) * 5
    assert sum(1 for s in walk.statuses.values() if s == 200) > indicator_pages


def _page(n: SyntheticNetwork, who: str, path: str) -> str:
    with httpx.Client(base_url=n.url, timeout=60) as c:
        assert c.post("/dashboard/login", data={"token": n.tokens[who]}).status_code == 303
        r = c.get(path)
        assert r.status_code == 200, r.text[:500]
        return " ".join(r.text.split())


def test_the_planted_indicators_say_why_there_is_no_rate(
    net: tuple[SyntheticNetwork, dict[str, str]],
) -> None:
    n, planted = net
    first, last = PERIODS[0].end.isoformat(), PERIODS[-1].end.isoformat()
    tiny = _page(n, "admin", f"/dashboard/indicators/{planted['tiny']}")
    assert "No network rate" in tiny and "4 suppressed by disclosure control" in tiny
    empty = _page(n, "admin", f"/dashboard/indicators/{planted['empty']}")
    assert "No network rate" in empty and "4 with nobody in the denominator" in empty
    missing = _page(n, "lead:North PCN", f"/dashboard/indicators/{planted['missing']}")
    assert f"no practice has sent {planted['missing']} for {last[:7]}" in missing
    late = _page(n, "practice:B81004", f"/dashboard/indicators/{planted['late']}?period={first}")
    assert f"no practice has sent {planted['late']} for {first[:7]}" in late
    # the latest period has it: a funnel with every practice
    assert "No data" not in _page(n, "admin", f"/dashboard/indicators/{planted['late']}")


def _row(page: str, indicator: str) -> str:
    """The table row of ``indicator`` on a practice page or pack."""
    m = re.search(rf'<tr data-indicator="{indicator}">(.*?)</tr>', page)
    assert m, indicator
    return m[1]


@pytest.mark.parametrize("who", ROLES)
def test_flu_out_of_season_is_not_measured_on_any_page_for_any_role(
    net: tuple[SyntheticNetwork, dict[str, str]], who: str
) -> None:
    """FLU_65 for 2026-08 (out of its September-March season) showed every practice's rate
    and a band "within the 95% limits" of a pooled rate; for 2026-09 it is measured as ever."""
    n, _ = net
    out, within = PERIODS[0].end.isoformat(), PERIODS[1].end.isoformat()
    assert (out[5:7], within[5:7]) == ("08", "09")
    page = _page(n, who, f"/dashboard/indicators/FLU_65?period={out}")
    assert "Out of season: FLU_65 is not measured for 2026-08 (FLU_65 is measured only for " \
        "periods ending September to March, its season)" in page  # fmt: skip
    # and no empty funnel plot under it (its "Out of season: not measured" was all it drew)
    assert "within the 95% limits" not in page and 'id="funnel-figure"' not in page
    assert "Out of season" not in _page(n, who, f"/dashboard/indicators/FLU_65?period={within}")
    role, _, whom = who.partition(":")
    # a practice this viewer may read that sent 2026-08 (B81004, the practice user's own, is
    # the planted practice that skipped it: its page says it has not submitted)
    if role == "practice":
        return
    lead = [p.ods for p in n.specs if p.pcn == whom]
    ods = lead[0] if role == "lead" else whom or "B81002"
    row = _row(_page(n, who, f"/dashboard/practices/{ods}?period={out}"), "FLU_65")
    assert "out of season" in row and "%" not in row.split("</th>", 1)[1].split("<svg")[0], row
    pack = _page(n, who, f"/dashboard/practices/{ods}/pack?period={out}")
    assert "is out of season in 2026-08: not measured in this period" in pack
    assert "out of season" in _row(pack, "FLU_65")
    if who.startswith(("admin", "lead:")):
        overview = _page(n, who, f"/dashboard/overview?period={out}")
        assert 'out of season<span class="vh">: not measured in this period' in overview


def test_an_indicator_or_period_that_does_not_exist_is_still_a_404(
    net: tuple[SyntheticNetwork, dict[str, str]],
) -> None:
    n, _ = net
    with httpx.Client(base_url=n.url, timeout=60) as c:
        c.post("/dashboard/login", data={"token": n.tokens["admin"]})
        r = c.get("/dashboard/indicators/NOT_IN_CATALOGUE")
        assert r.status_code == 404 and "not in the network&#39;s catalogue" in r.text
        r = c.get(f"/dashboard/indicators/{n.catalogue.indicators[0].id}?period=2020-01")
        assert r.status_code == 404 and "2020-01" in r.text


def test_every_page_answers_on_postgresql(
    tmp_path: Path, pg_database_factory: Callable[[], str]
) -> None:
    with _network(tmp_path, pg_database_factory()) as (n, _):
        walk = _walk(n, "practice:B81004")  # every route, and the fewest pages
    assert walk.problems == []
    assert walk.routes_walked == _routes_for("practice:B81004")
