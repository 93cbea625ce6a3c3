"""The benchmark API over real HTTP (uvicorn on loopback), fed by signed submissions through the
real ingest path, on SQLite and PostgreSQL: role rules, CSV, trends, FHIR MeasureReport."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from synthetic_network import INDICATORS, PERIODS, SyntheticNetwork, practices

from aggregator.benchmarks import stats
from aggregator.benchmarks.gain import patients_could_gain


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def net(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SyntheticNetwork, httpx.Client]]:
    tmp = tmp_path_factory.mktemp("net")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'agg.db'}"
    else:
        url = request.getfixturevalue("pg_database_factory")()
    n = SyntheticNetwork(tmp, url, practices(10))
    n.setup()
    n.start()
    with httpx.Client(base_url=n.url, timeout=60) as client:
        n.enrol_all(client)
        n.populate(client)
        yield n, client
    n.stop()


def get(
    client: httpx.Client, net: SyntheticNetwork, who: str, path: str, **params: str
) -> httpx.Response:
    return client.get(path, params=params, headers={"authorization": f"Bearer {net.tokens[who]}"})


def test_listing_names_indicators_and_periods(net: tuple[SyntheticNetwork, httpx.Client]) -> None:
    n, c = net
    r = get(c, n, "admin", "/v1/benchmarks")
    assert r.status_code == 200, r.text
    body = r.json()
    assert {i["id"] for i in body["indicators"]} == set(INDICATORS)
    assert [p["label"] for p in body["periods"]] == [p.label for p in PERIODS]
    assert next(i for i in body["indicators"] if i["id"] == "DM_HBA1C")["title"]


def test_unauthenticated_and_bad_input_are_refused(
    net: tuple[SyntheticNetwork, httpx.Client],
) -> None:
    n, c = net
    assert c.get("/v1/benchmarks/indicators/DM_HBA1C").status_code == 401
    r = get(c, n, "admin", "/v1/benchmarks/indicators/dm-hba1c")
    assert r.status_code == 400 and "indicator" in r.json()["detail"]
    r = get(c, n, "admin", "/v1/benchmarks/indicators/DM_HBA1C", period="2020-01")
    assert r.status_code == 404 and "2020-01" in r.json()["detail"]
    # every known period is named, not the last few
    assert all(p.label in r.json()["detail"] for p in PERIODS), r.json()["detail"]
    r = get(c, n, "admin", "/v1/benchmarks/indicators/DM_HBA1C", period="garbage")
    assert r.status_code == 400
    assert "'garbage' is not a month (YYYY-MM), a period end (YYYY-MM-DD)" in r.json()["detail"]
    r = get(c, n, "admin", "/v1/benchmarks/indicators/DM_HBA1C", peer="postcode")
    assert r.status_code == 400 and "peer" in r.json()["detail"]
    r = get(c, n, "admin", "/v1/benchmarks/indicators/DM_HBA1C", format="xml")
    assert r.status_code == 400 and "format" in r.json()["detail"]


def test_funnel_for_admin_matches_the_pure_statistics(
    net: tuple[SyntheticNetwork, httpx.Client],
) -> None:
    n, c = net
    body = get(c, n, "admin", "/v1/benchmarks/indicators/DM_HBA1C", period="2026-09").json()
    assert body["period"]["label"] == "2026-09"
    assert len(body["practices"]) == len(n.specs)
    assert all(p["identified"] for p in body["practices"])
    counts = [
        stats.Counts(
            p["id"],
            p["numerator"],
            p["denominator"],
            p["numerator_status"],
            p["denominator_status"],
        )
        for p in body["practices"]
    ]
    ref = stats.funnel(counts)
    assert body["summary"]["pooled"] == pytest.approx(ref.summary.pooled, abs=1e-6)
    assert body["summary"]["abc"] == pytest.approx(ref.summary.abc, abs=1e-6)
    by = ref.by_practice()
    for p in body["practices"]:
        assert p["band"] == by[p["id"]].band
    # the planted outlier sits below the 99.8% limit
    low = next(p for p in body["practices"] if p["id"] == n.specs[0].ods)
    assert low["band"] == "low_998" and low["band_text"] == "below the 99.8% limit"
    assert body["limits_curve"] and body["limits_curve"][0]["denominator"] == 1


def test_network_lead_identifies_only_their_pcn(net: tuple[SyntheticNetwork, httpx.Client]) -> None:
    n, c = net
    r = get(c, n, "lead:North PCN", "/v1/benchmarks/indicators/HYP_BP_U80")
    body = r.json()
    north = {p.ods for p in n.specs if p.pcn == "North PCN"}
    shown = {p["id"] for p in body["practices"] if p["identified"]}
    assert shown == north
    others = [p for p in body["practices"] if not p["identified"]]
    assert len(others) == len(n.specs) - len(north)
    text = r.text
    for p in n.specs:
        if p.pcn != "North PCN":
            assert p.ods not in text and p.name not in text


def test_practice_view_shows_no_peer_name_or_code(
    net: tuple[SyntheticNetwork, httpx.Client],
) -> None:
    n, c = net
    me = n.specs[2]
    who = f"practice:{me.ods}"
    paths = [
        ("/v1/benchmarks", {}),
        ("/v1/benchmarks/indicators/DM_HBA1C", {}),
        ("/v1/benchmarks/indicators/DM_HBA1C", {"format": "csv"}),
        ("/v1/benchmarks/indicators/FLU_65", {"peer": "pcn"}),
        ("/v1/benchmarks/overview", {}),
        ("/v1/benchmarks/trends/DM_HBA1C", {"practice": me.ods}),
        (f"/v1/benchmarks/practices/{me.ods}", {}),
    ]
    for path, params in paths:
        r = get(c, n, who, path, **params)
        assert r.status_code == 200, (path, r.text)
        for peer in n.specs:
            if peer.ods != me.ods:
                assert peer.ods not in r.text, path
                assert peer.name not in r.text, path
    body = get(c, n, who, "/v1/benchmarks/indicators/DM_HBA1C").json()
    mine = [p for p in body["practices"] if p["identified"]]
    assert [p["id"] for p in mine] == [me.ods] and mine[0]["self"]
    peers = [p for p in body["practices"] if not p["identified"]]
    assert len({p["id"] for p in peers}) == len(n.specs) - 1
    assert all(p["id"].startswith("P-") for p in peers)
    # a practice sees no peer's counts: a size band and a rate to whole percentage points
    # (tests/benchmarks/test_pseudonym_attack.py has the attack this stops)
    assert all(p["numerator"] is None and p["denominator"] is None for p in peers)
    assert all(p["denominator_status"] == "banded" and p["size_band"] for p in peers)
    assert all(p["rate"] is None or round(p["rate"], 2) == p["rate"] for p in peers)
    # a network lead still sees practices outside its PCN re-published rounded, never exact
    # small numbers
    lead = get(c, n, f"lead:{me.pcn}", "/v1/benchmarks/indicators/DM_HBA1C").json()
    outside = [p for p in lead["practices"] if not p["identified"]]
    assert outside and all(p["denominator"] % 5 == 0 for p in outside)
    assert all(p["denominator_status"] == "rounded" for p in outside)
    # pseudonyms are stable for this viewer and differ for another one
    again = get(c, n, who, "/v1/benchmarks/indicators/DM_HBA1C").json()
    assert [p["id"] for p in again["practices"]] == [p["id"] for p in body["practices"]]
    other = get(c, n, f"practice:{n.specs[4].ods}", "/v1/benchmarks/indicators/DM_HBA1C").json()
    assert not {p["id"] for p in peers} & {p["id"] for p in other["practices"]}


def test_practice_user_cannot_read_a_peer(net: tuple[SyntheticNetwork, httpx.Client]) -> None:
    n, c = net
    me, peer = n.specs[2], n.specs[5]
    for path in (
        f"/v1/benchmarks/practices/{peer.ods}",
        f"/v1/benchmarks/practices/{peer.ods}/measure-report/DM_HBA1C",
    ):
        r = get(c, n, f"practice:{me.ods}", path)
        assert r.status_code == 403, path
    r = get(c, n, f"practice:{me.ods}", "/v1/benchmarks/trends/DM_HBA1C", practice=peer.ods)
    assert r.status_code == 403
    other_pcn = next(p.pcn for p in n.specs if p.pcn != me.pcn)
    r = get(
        c,
        n,
        f"practice:{me.ods}",
        "/v1/benchmarks/indicators/DM_HBA1C",
        peer="pcn",
        group=other_pcn,
    )
    assert r.status_code == 403


def test_an_unknown_indicator_or_a_bare_group_is_told_as_such(
    net: tuple[SyntheticNetwork, httpx.Client],
) -> None:
    """With submissions stored, an indicator outside the catalogue is said to be one, not "no
    submissions have been stored"; group= without its peer dimension is refused, not ignored;
    a refused peer group names the role in words."""
    n, c = net
    me = n.specs[0]
    for path in (
        "/v1/benchmarks/indicators/NOPE",
        f"/v1/benchmarks/practices/{me.ods}/measure-report/NOPE",
        "/v1/benchmarks/trends/NOPE",
    ):
        r = get(c, n, "admin", path)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["type"].endswith(":unknown-indicator"), (path, r.text)
        assert "NOPE: not in the network's catalogue" in r.json()["detail"], r.text
    for path in ("/v1/benchmarks/overview", "/v1/benchmarks/indicators/DM_HBA1C"):
        r = get(c, n, "admin", path, group="NoSuch")
        assert r.status_code == 400, (path, r.text)
        assert r.json()["type"].endswith(":bad-peer") and "peer=pcn|imd|size" in r.text, r.text
    assert get(c, n, "admin", "/v1/benchmarks/overview", group="network").status_code == 200
    other_pcn = next(p.pcn for p in n.specs if p.pcn != me.pcn)
    r = get(c, n, f"ig:{me.ods}", "/v1/benchmarks/overview", peer="pcn", group=other_pcn)
    assert r.status_code == 403 and "an IG officer sees only" in r.json()["detail"], r.text


def test_peer_group_funnel_pools_only_its_members(
    net: tuple[SyntheticNetwork, httpx.Client],
) -> None:
    n, c = net
    body = get(
        c, n, "admin", "/v1/benchmarks/indicators/AF_ANTICOAG", peer="pcn", group="South PCN"
    ).json()
    south = {p.ods for p in n.specs if p.pcn == "South PCN"}
    assert {p["id"] for p in body["practices"]} == south
    assert body["peer_group"] == {"dimension": "pcn", "name": "South PCN"}
    num = sum(p["numerator"] for p in body["practices"])
    den = sum(p["denominator"] for p in body["practices"])
    assert body["summary"]["pooled"] == pytest.approx(num / den, abs=1e-6)
    size = get(
        c, n, "admin", "/v1/benchmarks/indicators/AF_ANTICOAG", peer="size", group="15,000 and over"
    ).json()
    assert {p["id"] for p in size["practices"]} == {p.ods for p in n.specs if p.list_size >= 15000}


def test_csv_matches_json(net: tuple[SyntheticNetwork, httpx.Client]) -> None:
    n, c = net
    js = get(c, n, "admin", "/v1/benchmarks/indicators/CHD_STATIN").json()
    r = get(c, n, "admin", "/v1/benchmarks/indicators/CHD_STATIN", format="csv")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == len(js["practices"])
    by = {p["id"]: p for p in js["practices"]}
    for row in rows:
        assert float(row["rate"]) == pytest.approx(by[row["practice"]]["rate"])
        assert row["band"] == by[row["practice"]]["band"]
    me = n.specs[1].ods
    prow = list(
        csv.DictReader(
            io.StringIO(get(c, n, "admin", f"/v1/benchmarks/practices/{me}", format="csv").text)
        )
    )
    assert {r["indicator"] for r in prow} == set(INDICATORS)
    trow = list(
        csv.DictReader(
            io.StringIO(
                get(c, n, "admin", "/v1/benchmarks/trends/FLU_65", practice=me, format="csv").text
            )
        )
    )
    assert len(trow) == 2 * len(PERIODS)


def test_practice_summary_orders_by_patients_who_could_gain(
    net: tuple[SyntheticNetwork, httpx.Client],
) -> None:
    n, c = net
    me = n.specs[0]
    body = get(c, n, f"practice:{me.ods}", f"/v1/benchmarks/practices/{me.ods}").json()
    gains = [i["could_gain"] for i in body["indicators"]]
    assert gains == sorted(gains, reverse=True) and len(gains) == len(INDICATORS)
    for i in body["indicators"]:
        assert i["could_gain"] == patients_could_gain(i["numerator"], i["denominator"], i["abc"])
    assert all(len(i["trend"]) == len(PERIODS) for i in body["indicators"])
    assert all(len(i["changes"]) == len(PERIODS) - 1 for i in body["indicators"])
    # a past period's view shows its trend up to that period, nothing later
    first = PERIODS[0]
    past = get(c, n, f"practice:{me.ods}", f"/v1/benchmarks/practices/{me.ods}",
               period=first.label).json()  # fmt: skip
    assert past["period"]["label"] == first.label
    for i in past["indicators"]:
        assert [t["period"]["label"] for t in i["trend"]] == [first.label] and i["changes"] == []


def test_trend_reports_changes(net: tuple[SyntheticNetwork, httpx.Client]) -> None:
    n, c = net
    body = get(
        c, n, "lead:South PCN", "/v1/benchmarks/trends/DM_HBA1C", practice=n.specs[1].ods
    ).json()
    assert [p["period"]["label"] for p in body["network"]] == [p.label for p in PERIODS]
    assert len(body["network_changes"]) == len(PERIODS) - 1
    assert body["breaks"] == []
    for ch in body["practice_changes"]:  # a practice of the lead's PCN: exact
        assert ch["p_value"] is not None and ch["beyond_chance"] == (ch["p_value"] < 0.05)
    # the network holds practices the lead cannot identify: coarsened, the test's verdict kept
    for ch in body["network_changes"]:
        assert ch["tested"] and ch["p_value"] is None and ch["z"] is None
    assert all(p["numerator"] is None for p in body["network"])
    # the lead's own PCN, every practice of which it identifies, and the admin's view: exact
    for who, params in (
        ("lead:South PCN", {"peer": "pcn", "practice": n.specs[1].ods}),
        ("admin", {}),
    ):
        exact = get(c, n, who, "/v1/benchmarks/trends/DM_HBA1C", **params).json()
        for ch in exact["network_changes"]:
            assert ch["p_value"] is not None and ch["beyond_chance"] == (ch["p_value"] < 0.05)
        assert all(p["numerator"] is not None for p in exact["network"])


def test_measure_report_validates_with_fhir_resources(
    net: tuple[SyntheticNetwork, httpx.Client],
) -> None:
    from fhir.resources.R4B.measurereport import MeasureReport

    n, c = net
    me = n.specs[1]
    r = get(
        c,
        n,
        f"ig:{me.ods}",
        f"/v1/benchmarks/practices/{me.ods}/measure-report/DM_HBA1C",
        period="2026-08",
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    report = MeasureReport.model_validate(r.json())
    assert report.type == "summary" and report.status == "complete"
    assert report.reporter.identifier.value == me.ods
    group = report.group[0]
    codes = [p.code.coding[0].code for p in group.population]
    assert codes == ["initial-population", "denominator", "denominator-exclusion", "numerator"]
    pops = {p.code.coding[0].code: p for p in group.population}
    total = get(c, n, "admin", "/v1/benchmarks/indicators/DM_HBA1C", period="2026-08").json()
    mine = next(p for p in total["practices"] if p["id"] == me.ods)
    assert pops["numerator"].count == mine["numerator"]
    assert pops["denominator"].count - pops["denominator-exclusion"].count == mine["denominator"]
    assert float(group.measureScore.value) == pytest.approx(mine["rate"], abs=1e-6)
    strat = group.stratifier[0]
    assert [c.text for c in strat.code] == ["age band", "sex"]
    assert len(strat.stratum) == 4 * 3  # age bands x F/M/U
    for s in strat.stratum:
        assert {comp.code.text for comp in s.component} == {"age band", "sex"}
        for p in s.population:
            # a withheld count has no value and says why
            assert p.count is not None or p.extension[0].valueCode == "masked"


def test_overview_grid_for_lead(net: tuple[SyntheticNetwork, httpx.Client]) -> None:
    n, c = net
    body = get(c, n, "lead:North PCN", "/v1/benchmarks/overview").json()
    assert [i["indicator"] for i in body["indicators"]] == sorted(INDICATORS)
    assert {p["id"] for p in body["practices"]} == {p.ods for p in n.specs if p.pcn == "North PCN"}
    low = next(p for p in body["practices"] if p["id"] == n.specs[0].ods)
    assert all(cell["band"] in ("low_95", "low_998") for cell in low["cells"].values())


def test_version_change_breaks_the_trend(tmp_path: Path) -> None:
    n = SyntheticNetwork(tmp_path, f"sqlite:///{tmp_path / 'agg.db'}", practices(4))
    n.setup()
    n.start()
    try:
        with httpx.Client(base_url=n.url, timeout=60) as client:
            n.enrol_all(client)
            n.populate(client, PERIODS[:2])
            n.bump_indicator_version("DM_HBA1C")
            for p in n.specs:
                n.submit(client, p, PERIODS[2], seed=1)
            body = get(
                client, n, "admin", "/v1/benchmarks/trends/DM_HBA1C", practice=n.specs[1].ods
            ).json()
            other = get(client, n, "admin", "/v1/benchmarks/trends/FLU_65").json()
    finally:
        n.stop()
    assert [b["label"] for b in body["breaks"]] == [PERIODS[2].label]
    last = body["network_changes"][-1]
    assert (
        last["version_break"]
        and last["p_value"] is None
        and last["note"] == "indicator version changed"
    )
    assert body["practice_changes"][-1]["version_break"]
    assert not body["network_changes"][0]["version_break"]
    assert other["breaks"] == []  # only the indicator whose version changed


@pytest.mark.parametrize("who", ["admin", "lead:South PCN", "practice:B81003"])
def test_spliced_json_equals_the_rendered_view(
    net: tuple[SyntheticNetwork, httpx.Client], who: str
) -> None:
    # The fast path (stored JSON spliced per viewer) and the field-by-field view must agree.
    n, c = net
    fast = get(c, n, who, "/v1/benchmarks/indicators/DM_HBA1C", period="2026-08").json()
    full = get(
        c, n, who, "/v1/benchmarks/indicators/DM_HBA1C", period="2026-08", detail="true"
    ).json()
    for p in full["practices"]:
        for extra in ("limits", "submission_id", "indicator_version"):
            p.pop(extra, None)
    assert fast == full
