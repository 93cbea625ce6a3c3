"""The dashboard over real HTTP without a browser: sign-in, role routing, downloads, what a
practice page may contain, and that the IG view's verification catches a tampered envelope."""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from synthetic_network import PracticeSpec, SyntheticNetwork, practices

from aggregator.db.models import Envelope
from aggregator.db.session import Database


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticNetwork]:
    tmp = tmp_path_factory.mktemp("dash")
    n = SyntheticNetwork(tmp, f"sqlite:///{tmp / 'agg.db'}", practices(6))
    n.setup()
    n.start()
    with httpx.Client(base_url=n.url, timeout=60) as c:
        n.enrol_all(c)
        n.populate(c)
    yield n
    n.stop()


@contextlib.contextmanager
def running(tmp: Path, specs: list[PracticeSpec]) -> Iterator[SyntheticNetwork]:
    """A network of its own for one test (SQLite in ``tmp``), served until the test ends."""
    n = SyntheticNetwork(tmp, f"sqlite:///{tmp / 'agg.db'}", specs)
    n.setup()
    n.start()
    try:
        yield n
    finally:
        n.stop()


@contextlib.contextmanager
def signed_in(net: SyntheticNetwork, who: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=net.url, timeout=60) as c:
        r = c.post("/dashboard/login", data={"token": net.tokens[who], "next": "/dashboard"})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        yield c


def test_anonymous_is_sent_to_sign_in_and_bad_tokens_are_refused(net: SyntheticNetwork) -> None:
    with httpx.Client(base_url=net.url) as c:
        r = c.get("/dashboard/overview")
        assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")
        r = c.post("/dashboard/login", data={"token": "fqa_not-a-token", "next": "/dashboard"})
        assert r.status_code == 401 and "not valid" in r.text
        # never an open redirect
        r = c.post(
            "/dashboard/login", data={"token": net.tokens["admin"], "next": "https://evil.example/"}
        )
        assert r.headers["location"] == "/dashboard"


def test_a_mistyped_dashboard_address_is_a_page_and_an_api_one_a_problem(
    net: SyntheticNetwork,
) -> None:
    with signed_in(net, "admin") as c:
        r = c.get("/dashboard/nope")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert (
            "There is no page at /dashboard/nope." in r.text and "Back to the dashboard" in r.text
        )
        assert 'aria-label="Main"' in r.text and "Sign out" in r.text  # signed in: the menu
        with httpx.Client(base_url=net.url) as anon:
            page = anon.get("/dashboard/nope")
            assert page.status_code == 404 and "There is no page at" in page.text
            assert 'aria-label="Main"' not in page.text
        api = c.get("/v1/nope")
        assert api.status_code == 404
        assert api.headers["content-type"].startswith("application/problem+json")
        # A part of an address the page cannot read is said in words, not the validator's.
        bad = c.get("/dashboard/ig/proof/abc")
        assert bad.status_code == 400 and bad.headers["content-type"].startswith("text/html")
        assert (
            "There is no page at /dashboard/ig/proof/abc: its index is a whole number." in bad.text
        )
        assert "Input should" not in bad.text and "path.index" not in bad.text
        negative = c.get("/dashboard/ig/proof/-1").text
        assert "There is no page at /dashboard/ig/proof/-1: its index is at least 0." in negative


def test_a_peer_groups_rate_is_named_for_the_group(net: SyntheticNetwork) -> None:
    with signed_in(net, "admin") as c:
        page = c.get("/dashboard/indicators/DM_HBA1C", params={"pg": "pcn|South PCN"}).text
        assert "South PCN rate " in page and "Network rate" not in page
        svg = c.get("/dashboard/indicators/DM_HBA1C/trend.svg", params={"pg": "pcn|South PCN"}).text
        assert ">South PCN</text>" in svg and ">Network</text>" not in svg  # the legend
        whole = c.get("/dashboard/indicators/DM_HBA1C").text
        assert "Network rate " in whole


def test_a_practice_page_says_why_its_own_figures_are_withheld(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An indicator the practice's own disclosure control withheld reads 'withheld by disclosure
    control', with where the exact counts can be seen (the practice's own machine)."""
    from synthetic_network import PERIODS

    with running(tmp_path, practices(2)) as n:
        with httpx.Client(base_url=n.url, timeout=60) as c:
            n.enrol_all(c)
            me, other = n.specs
            for period in PERIODS[:2]:
                n.submit(c, me, period, seed=1, shapes={"DM_HBA1C": "tiny"})
                n.submit(c, other, period, seed=1)
        with signed_in(n, f"practice:{me.ods}") as c:
            page = c.get(f"/dashboard/practices/{me.ods}?period={PERIODS[1].label}").text
            row = page[page.index('data-indicator="DM_HBA1C"') :]
            assert "withheld by disclosure control" in row[: row.index("</tr>")]
            # no rate in either month: said once by the sparkline, not again as "not compared"
            assert "no rate in any month" in row[: row.index("</tr>")]
            assert "not compared" not in row[: row.index("</tr>")]
            assert 'id="withheld-note"' in page and "--local</code> shows every exact count" in page
            note = page[page.index('id="withheld-note"') :]
            assert "(a small count, or withheld to protect another count)" in note[:400]
        with signed_in(n, f"practice:{other.ods}") as c:
            assert 'id="withheld-note"' not in c.get(f"/dashboard/practices/{other.ods}").text
        # a withheld rate is a dash, never a dash marked approximate (a new-user run saw "– ≈")
        for who, path in ((f"practice:{me.ods}", f"/dashboard/practices/{me.ods}"),
                          (f"practice:{other.ods}", "/dashboard/indicators/DM_HBA1C"),
                          ("admin", "/dashboard/overview"),
                          (f"practice:{me.ods}", f"/dashboard/practices/{me.ods}/pack")):  # fmt: skip
            with signed_in(n, who) as c:
                page = c.get(path)
                assert page.status_code == 200, path
                assert not re.search(r"–\s*<abbr[^>]*>≈", page.text), (who, path)


def test_the_practice_page_compares_with_the_peer_group_chosen(net: SyntheticNetwork) -> None:
    """With "Compare with" a PCN, the practice page's rate column, benchmark and band are the
    PCN's funnel's, as its small funnels are, not the network's."""
    me = net.specs[0]
    with signed_in(net, "admin") as c:
        bearer = {"authorization": f"Bearer {net.tokens['admin']}"}
        group = c.get("/v1/benchmarks/indicators/DM_HBA1C", params={"peer": "pcn", "group": me.pcn},
                      headers=bearer).json()  # fmt: skip
        whole = c.get("/v1/benchmarks/indicators/DM_HBA1C", headers=bearer).json()
        assert group["summary"]["pooled"] != whole["summary"]["pooled"]
        page = c.get(f"/dashboard/practices/{me.ods}", params={"pg": f"pcn|{me.pcn}"}).text
        assert f'<th scope="col">{me.pcn}</th>' in page
        row = page[page.index('data-indicator="DM_HBA1C"') :]
        row = row[: row.index("</tr>")]
        pct = f"{100 * group['summary']['pooled']:.1f}%"
        assert f"<td>{pct}</td>" in row, (pct, row)
        plain = c.get(f"/dashboard/practices/{me.ods}").text
        assert '<th scope="col">Network</th>' in plain


def test_each_role_lands_on_its_page(net: SyntheticNetwork) -> None:
    me = net.specs[1].ods
    expect = {"admin": "/dashboard/overview", "lead:North PCN": "/dashboard/overview",
              f"practice:{me}": f"/dashboard/practices/{me}", f"ig:{me}": "/dashboard/ig"}  # fmt: skip
    for who, where in expect.items():
        with signed_in(net, who) as c:
            r = c.get("/dashboard")
            assert r.headers["location"] == where, who
            assert c.get(where).status_code == 200


def test_a_practice_page_says_whose_patients_and_who_is_named_for_each_role(
    net: SyntheticNetwork,
) -> None:
    """The practice page's lead paragraph speaks to the viewer: a practice reads "your
    patients" and that other practices are pseudonymised; a network lead reads "its patients"
    and that its PCN's practices are named (a new-user run found a lead told "your patients"
    and "Peers appear under pseudonyms only" beside its PCN's named practices)."""
    me = net.specs[1].ods

    def lead_paragraph(who: str) -> str:
        with signed_in(net, who) as c:
            page = c.get(f"/dashboard/practices/{me}")
            assert page.status_code == 200, who
            text = page.text[page.text.index("patients who could gain") :]
            return " ".join(text[: text.index("</p>")].split())

    own = lead_paragraph(f"practice:{me}")
    assert "your patients" in own and "Other practices appear under pseudonyms only." in own
    lead = next(f"lead:{s.pcn}" for s in net.specs if s.ods == me)
    theirs = lead_paragraph(lead)
    assert "its patients" in theirs and "your patients" not in theirs
    assert "The practices of your PCN are named to you" in theirs
    assert "Every practice is named to you." in lead_paragraph("admin")


def test_figures_sent_to_whole_points_are_shown_to_whole_points(net: SyntheticNetwork) -> None:
    """A practice's own view gets peers' rates and the pooled rates to whole percentage points;
    the pages show them so ('61%'), not with a decimal that was never there ('61.0%'), while
    the network's own view keeps one decimal (a new-user run)."""
    me = net.specs[1].ods
    pooled = re.compile(r"Network rate (\d+(?:\.\d)?)% \(95% CI (\d+(?:\.\d)?)%–(\d+(?:\.\d)?)%\)")
    with signed_in(net, f"practice:{me}") as c:
        page = c.get("/dashboard/indicators/FLU_65").text
        found = pooled.search(" ".join(page.split()))
        assert found and all("." not in g for g in found.groups()), found
        peers = [row for row in page.split("<tr")[1:] if '<th scope="row">P-' in row]
        assert peers and not any(re.search(r"<td>\d+\.\d%", row) for row in peers)
        svg = c.get("/dashboard/indicators/FLU_65/funnel.svg").text
        assert re.search(r"P-\w+: \d+% ", svg) and not re.search(r"P-\w+: \d+\.\d%", svg)
        assert re.search(r">Network \d+%<", svg), svg[-2000:]
        trend = c.get("/dashboard/indicators/FLU_65/trend.svg").text
        assert re.search(r"Network \d{4}-\d{2}: \d+%", trend), trend[:2000]
        assert not re.search(r"(Network|Benchmark \(ABC\)) \d{4}-\d{2}: \d+\.\d%", trend)
        overview = " ".join(c.get("/dashboard/overview").text.split())
        assert re.search(r"network \d+%", overview) and not re.search(r"network \d+\.\d%", overview)
        changes = page[page.index("<caption>Change between periods") :]
        changes = changes[: changes.index("</table>")]
        assert "%" in changes and not re.search(r"\d+\.\d%|\.\d pts", changes), changes
        own = c.get(f"/dashboard/practices/{me}").text
        row = own[own.index('data-indicator="FLU_65"') :]
        cells = re.findall(r"<td>([^<]*)</td>", row[: row.index("</tr>")])
        # its own rate and interval exact, the network rate and the benchmark to whole points
        assert re.fullmatch(r"\d+\.\d%", cells[0]) and all(
            re.fullmatch(r"\d+%", x) for x in cells[2:4]
        ), cells
    with signed_in(net, "admin") as c:
        page = " ".join(c.get("/dashboard/indicators/FLU_65").text.split())
        found = pooled.search(page)
        assert found and all("." in g for g in found.groups()), found


def test_practice_pages_name_no_peer(net: SyntheticNetwork) -> None:
    me = net.specs[2]
    with signed_in(net, f"practice:{me.ods}") as c:
        pages = [c.get(p) for p in (f"/dashboard/practices/{me.ods}", "/dashboard/indicators/FLU_65",
                                    "/dashboard/indicators/FLU_65/funnel.svg", "/dashboard/indicators/FLU_65/funnel.csv",
                                    "/dashboard/overview", "/dashboard/ig")]  # fmt: skip
        for r in pages:
            assert r.status_code == 200, r.url
            for peer in net.specs:
                if peer is not me:
                    assert peer.ods not in r.text and peer.name not in r.text, r.url
        other = net.specs[3].ods
        r = c.get(f"/dashboard/practices/{other}")
        assert r.status_code == 403 and other in r.text  # the ODS code it asked for, nothing more


def test_downloads(net: SyntheticNetwork) -> None:
    with signed_in(net, "lead:South PCN") as c:
        svg = c.get("/dashboard/indicators/DM_HBA1C/funnel.svg")
        assert svg.headers["content-type"].startswith("image/svg+xml")
        assert svg.text.startswith("<?xml") and svg.text.count('class="pt"') == len(net.specs)
        rows = list(
            csv.DictReader(io.StringIO(c.get("/dashboard/indicators/DM_HBA1C/funnel.csv").text))
        )
        assert len(rows) == len(net.specs) and rows[0]["limit_low_95"]
        trend = list(
            csv.DictReader(io.StringIO(c.get("/dashboard/indicators/DM_HBA1C/trend.csv").text))
        )
        assert len(trend) == 3
        assert c.get("/dashboard/overview.csv").status_code == 200
        assert c.get("/dashboard/static/dashboard.css").status_code == 200
        assert c.get("/dashboard/static/../../settings.py").status_code == 404


def test_ig_view_catches_a_tampered_envelope(net: SyntheticNetwork) -> None:
    me = net.specs[4]
    with signed_in(net, f"ig:{me.ods}") as c:
        page = c.get("/dashboard/ig").text
        assert page.count("✓ verified") == 3 and "FAILED" not in page
        db = Database(net.db_url)
        with db.session() as s:
            env = (
                s.query(Envelope)
                .filter(Envelope.practice_ods == me.ods, Envelope.kind == "submission")
                .order_by(Envelope.leaf_index)
                .first()
            )
            assert env is not None
            body = bytes(env.body).replace(b'"payload":"', b'"payload":"A', 1)
            s.execute(update(Envelope).where(Envelope.sha256 == env.sha256).values(body=body))
            env_sha = env.sha256
        db.dispose()
        page = c.get("/dashboard/ig").text
        assert page.count("✓ verified") == 2 and page.count("✗ FAILED") == 1
        assert env_sha[:16] in page.split("✗ FAILED")[1]  # the failed row is the tampered one
        assert "✗ envelope-hash" in page and "stored envelope bytes do not hash to" in page


def test_real_server_sends_the_hardening_headers_on_pages_api_and_errors(
    net: SyntheticNetwork,
) -> None:
    with httpx.Client(base_url=net.url, timeout=30) as c:
        for r in (
            c.get("/dashboard/login"),  # a page
            c.get("/healthz"),  # JSON
            c.get("/v1/benchmarks/indicators/DM_HBA1C"),  # 401 problem+json
            c.get("/dashboard/static/dashboard.css"),  # a static file
        ):
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"], r.url
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"


def test_a_pool_of_fewer_than_three_other_practices_is_withheld_from_a_practice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Four practices, two to a PCN: in a practice's view its PCN's pool rests on one other
    practice, whose exact counts it would give (pooled less the practice's own). The pooled
    counts, rate, interval, quantiles, benchmark, dispersion and limits are withheld there, in
    the funnel, the trend and the dashboard; the whole network (three others) is shown, and the
    network lead's and admin's views are unchanged."""
    from synthetic_network import PERIODS

    with running(tmp_path, practices(4)) as n:
        with httpx.Client(base_url=n.url, timeout=60) as c:
            n.enrol_all(c)
            n.populate(c, PERIODS[:2])
            me = n.specs[0]

            def get(who: str, path: str, **params: str) -> dict:  # type: ignore[type-arg]
                r = c.get(path, params=params,
                          headers={"authorization": f"Bearer {n.tokens[who]}"})  # fmt: skip
                assert r.status_code == 200, r.text
                return r.json()  # type: ignore[no-any-return]

            mine = f"practice:{me.ods}"
            pcn = get(mine, "/v1/benchmarks/indicators/DM_HBA1C", peer="pcn")
            s = pcn["summary"]
            assert s["included"] == 2 and s["withheld"], s
            assert s["numerator"] is None and s["denominator"] is None and s["pooled"] is None
            assert s["pooled_ci95"] is None and s["abc"] is None and s["deciles"] is None
            assert s["dispersion"]["phi"] is None and pcn["limits_curve"] == []
            assert len(pcn["practices"]) == 2  # the marks are still there
            whole = get(mine, "/v1/benchmarks/indicators/DM_HBA1C")["summary"]
            assert whole["withheld"] is None and whole["pooled"] is not None
            trend = get(mine, "/v1/benchmarks/trends/DM_HBA1C", peer="pcn")
            assert [p["numerator"] for p in trend["network"]] == [None, None]
            assert all(p["rate"] is None for p in trend["network"])
            # The whole network rests on three others: shown, beside the practice's own series.
            both = get(mine, "/v1/benchmarks/trends/DM_HBA1C", practice=me.ods)
            assert all(p["rate"] is not None for p in both["network"]), both["network"]
            assert [p["numerator"] for p in both["practice_series"]] == [
                p["numerator"] for p in get(mine, "/v1/benchmarks/trends/DM_HBA1C", peer="pcn",
                                            practice=me.ods)["practice_series"]
            ]  # fmt: skip
            assert len(both["practice_series"]) == 2
            admin = get("admin", "/v1/benchmarks/indicators/DM_HBA1C", peer="pcn",
                        group=me.pcn)["summary"]  # fmt: skip
            assert admin["withheld"] is None and admin["numerator"] is not None
        with signed_in(n, mine) as c:
            page = c.get("/dashboard/indicators/DM_HBA1C", params={"pg": f"pcn|{me.pcn}"}).text
            assert "pooled from fewer than 3 practices not named to you" in page


def test_downloads_answer_as_the_dashboard_does(net: SyntheticNetwork) -> None:
    """The CSV and SVG downloads send a signed-out visitor to sign in and show a refusal or an
    unknown item as the dashboard's error page (they answered JSON); the trend's downloads
    carry the practice in view, as the page does."""
    downloads = ["/dashboard/overview.csv", "/dashboard/indicators/DM_HBA1C/funnel.svg",
                 "/dashboard/indicators/DM_HBA1C/trend.svg", "/dashboard/indicators/DM_HBA1C/funnel.csv",
                 "/dashboard/indicators/DM_HBA1C/trend.csv", f"/dashboard/practices/{net.specs[0].ods}/summary.csv"]  # fmt: skip
    with httpx.Client(base_url=net.url) as anon:
        for path in downloads:
            r = anon.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login"), (
                path
            )
    other = net.specs[1].ods
    with signed_in(net, f"practice:{net.specs[0].ods}") as c:
        for path, code in ((f"/dashboard/practices/{other}/summary.csv", 403),
                           ("/dashboard/indicators/NOPE/funnel.svg", 404),
                           ("/dashboard/indicators/DM_HBA1C/trend.csv?practice=x", 400),
                           ("/dashboard/indicators/DM_HBA1C/funnel.csv?period=2031-01", 404)):  # fmt: skip
            r = c.get(path)
            assert r.status_code == code and r.headers["content-type"].startswith("text/html"), (
                path,
                r.status_code,
            )
            assert 'aria-label="Main"' in r.text, path
    me = net.specs[2]
    with signed_in(net, "admin") as c:
        page = c.get("/dashboard/indicators/DM_HBA1C", params={"practice": me.ods}).text
        assert f"trend.svg?practice={me.ods}" in page and f"trend.csv?practice={me.ods}" in page
        svg = c.get("/dashboard/indicators/DM_HBA1C/trend.svg", params={"practice": me.ods}).text
        assert f">{me.name[:12]}" in svg  # the practice's line in the legend (names are cut short)
        rows = list(csv.DictReader(io.StringIO(
            c.get("/dashboard/indicators/DM_HBA1C/trend.csv", params={"practice": me.ods}).text)))  # fmt: skip
        assert any(me.ods in str(row.values()) or me.name in str(row.values()) for row in rows), (
            rows[:2]
        )


def test_a_change_between_pooled_rates_to_whole_points_is_their_difference() -> None:
    """Where the pooled rates are shown to whole points the change beside them is the shown
    rates' difference: the exact difference rounded on its own read '15% → 16%, +0 pts' (a
    new-user run found 121 of 620 such rows in a network lead's view disagree)."""
    from aggregator.benchmarks import stats
    from aggregator.benchmarks.figures import change_dict

    c = stats.Change(
        "2026-04-30", "2026-05-31", 0.154, 0.158, 0.004, 1.2, 0.2, False, False, "exact"
    )
    shown = change_dict(c, pooled_coarse=True)
    assert (shown["rate_from"], shown["rate_to"], shown["difference"]) == (0.15, 0.16, 0.01)
    assert shown["status"] == "rounded" and shown["z"] is None and shown["p_value"] is None
    exact = change_dict(c)
    assert exact["difference"] == 0.004 and exact["status"] == "exact"


def _changes(page: str) -> list[tuple[str, str, str]]:
    """The change table's (rate then, rate now, change) cells."""
    table = page[page.index("<caption>Change between periods") :]
    table = table[: table.index("</table>")]
    return re.findall(r"<td>([^<]*%)</td><td>([^<]*%)</td>\s*<td>([^<]* pts)</td>", table)


def test_every_role_sees_changes_that_agree_with_the_rates_beside_them(
    net: SyntheticNetwork,
) -> None:
    me = net.specs[1].ods
    for who in ("admin", "lead:North PCN", f"practice:{me}", f"ig:{me}"):
        with signed_in(net, who) as c:
            rows = []
            for ind in ("DM_HBA1C", "HYP_BP_U80", "AF_ANTICOAG", "CHD_STATIN"):
                rows += _changes(c.get(f"/dashboard/indicators/{ind}").text)
            # FLU_65 is not measured in 2026-07 and 2026-08, out of its season: no change
            # from either is shown as one (docs/benchmarks-statistics.md, section 1)
            flu = c.get("/dashboard/indicators/FLU_65").text
            assert _changes(flu) == [] and flu.count("not compared: out of season") == 2
        assert len(rows) == 8, (who, rows)
        for then, now, change in rows:
            diff = float(now.rstrip("%")) - float(then.rstrip("%"))
            # exact rates each shown to one decimal may differ from their shown change by that
            # decimal's rounding; rates to whole points differ by exactly the change shown
            slack = 0.1 + 1e-9 if "." in then else 1e-9
            assert float(change.removesuffix(" pts")) == pytest.approx(diff, abs=slack), (who, rows)
            # whole points are said as whole points, finer figures keep their decimal
            assert ("." in then) == ("." in change), (who, then, change)


def test_pooled_figures_sent_to_whole_points_are_whole_points_for_every_role(
    net: SyntheticNetwork,
) -> None:
    """A network lead's view of the network (which holds practices outside its PCN) gets the
    pooled rate, its interval and the benchmark to whole points, as a practice's does: its
    pages, charts, downloads and pack say so ('70%'), not '70.0%' beside an admin's '70.4%'; a
    CSV does not call such a rate exact (a new-user run)."""
    lead_pcn = "North PCN"
    mine = next(s.ods for s in net.specs if s.pcn == lead_pcn)
    with signed_in(net, f"lead:{lead_pcn}") as c:
        page = " ".join(c.get("/dashboard/indicators/FLU_65").text.split())
        assert re.search(r"Network rate \d+% \(95% CI ", page), page[:3000]
        assert not re.search(r"Network rate \d+\.\d%|achievable benchmark \d+\.\d%", page)
        overview = " ".join(c.get("/dashboard/overview").text.split())
        assert re.search(r"network \d+%", overview) and not re.search(r"network \d+\.\d%", overview)
        svg = c.get("/dashboard/indicators/FLU_65/funnel.svg").text
        assert re.search(r">Network \d+%<", svg) and not re.search(r">Network \d+\.\d%<", svg)
        trend = c.get("/dashboard/indicators/FLU_65/trend.svg").text
        assert not re.search(r"(Network|Benchmark \(ABC\)) \d{4}-\d{2}: \d+\.\d%", trend)
        rows = list(
            csv.DictReader(io.StringIO(c.get("/dashboard/indicators/FLU_65/trend.csv").text))
        )
        network = [r for r in rows if r["series"].startswith("network")]
        assert network and all(r["status"] != "exact" and r["numerator"] == "" for r in network)
        practice = c.get(f"/dashboard/practices/{mine}").text
        row = practice[practice.index('data-indicator="FLU_65"') :]
        cells = re.findall(r"<td>([^<]*)</td>", row[: row.index("</tr>")])
        # its own practice's rate exact, the network rate and the benchmark to whole points
        assert re.fullmatch(r"\d+\.\d%", cells[0]) and all(
            re.fullmatch(r"\d+%", x) for x in cells[2:4]
        ), cells
        pack = " ".join(c.get(f"/dashboard/practices/{mine}/pack").text.split())
        spine = pack[pack.index('id="spine"') :]
        assert not re.search(r"network \d+\.\d%|benchmark \d+\.\d%", spine), spine[:2000]
        assert re.search(r"network \d+%", spine)
    with signed_in(net, "admin") as c:
        page = " ".join(c.get("/dashboard/indicators/FLU_65").text.split())
        assert re.search(r"Network rate \d+\.\d% \(95% CI \d+\.\d%–\d+\.\d%\)", page)
        rows = list(
            csv.DictReader(io.StringIO(c.get("/dashboard/indicators/FLU_65/trend.csv").text))
        )
        network = [r for r in rows if r["series"].startswith("network")]
        # 2026-07 and 2026-08 are out of FLU_65's season: no rate, and not called exact
        assert [r["status"] for r in network] == ["out_of_season", "out_of_season", "exact"]
        assert [r["rate"] == "" for r in network] == [True, True, False]


def test_an_interval_that_rounds_to_one_figure_says_so() -> None:
    from aggregator.web.dashboard import charts

    assert (
        charts.ci([0.16, 0.16], 0)
        == "95% CI under one point wide: 16% at both ends, to whole points"
    )
    assert charts.ci([0.15, 0.17], 0) == "95% CI 15%–17%"
    assert charts.ci([0.1551, 0.1649]) == "95% CI 15.5%–16.5%"


def test_no_verdict_against_a_pool_withheld_from_the_viewer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two practices to a PCN: a network lead's view of the other PCN, and a practice's of its
    own, rest on too few practices it cannot identify, so the pooled rate and its limits are
    withheld. No practice is then said to be 'within the 95% limits' that are not shown, the
    chart and its note agree on what is drawn, and the note speaks to the role reading it (a
    new-user run found 'not shown in a practice's view' told to a lead, and 'The practices'
    own marks are still drawn' above an empty plot)."""
    from synthetic_network import PERIODS

    with running(tmp_path, practices(4)) as n:
        with httpx.Client(base_url=n.url, timeout=60) as c:
            n.enrol_all(c)
            n.populate(c, PERIODS[:2])
            lead = c.get("/v1/benchmarks/indicators/DM_HBA1C", params={"peer": "pcn", "group": "South PCN"},
                         headers={"authorization": f"Bearer {n.tokens['lead:North PCN']}"}).json()  # fmt: skip
            assert lead["summary"]["withheld"] and lead["practices"]
            assert all(p["band"] is None for p in lead["practices"]), lead["practices"]
        me = n.specs[0]
        for who, path, pg in (
            ("lead:North PCN", "/dashboard/indicators/DM_HBA1C", "pcn|South PCN"),
            (f"practice:{me.ods}", "/dashboard/indicators/DM_HBA1C", f"pcn|{me.pcn}"),
            (f"practice:{me.ods}", f"/dashboard/practices/{me.ods}", f"pcn|{me.pcn}"),
            ("lead:North PCN", f"/dashboard/practices/{me.ods}", "pcn|South PCN"),
        ):
            with signed_in(n, who) as c:
                r = c.get(path, params={"pg": pg})
                assert r.status_code == 200, (who, path, r.text[:500])
                page = " ".join(r.text.split())
                assert "within the 95% limits" not in page, (who, path)
                assert "not shown in a practice's view" not in page
                assert "marks are still drawn" not in page
                assert "No released rates to plot" not in page, (who, path)
                if "indicators" in path:
                    assert "pooled from fewer than 3 practices not named to you" in page
                    assert "not judged" in page and "no funnel is drawn" in page


def test_wordings_say_what_they_mean_to_the_viewer(net: SyntheticNetwork) -> None:
    """A new-user run: a lead's overview of another PCN said 'No practices you can see
    identified.'; a practice's peer table put 'not shown to peers' under Numerator and 'list
    size under 5,000' under Denominator (a band is no denominator)."""
    with signed_in(net, "lead:North PCN") as c:
        page = c.get("/dashboard/overview?pg=pcn|South PCN").text
        assert "you can see identified" not in page
        assert (
            "None of the practices in South PCN is one you may see by name (a network lead sees "
            "its own PCN's practices by name): each indicator's page shows them under "
            "pseudonyms." in page
        )
    me = net.specs[2]
    with signed_in(net, f"practice:{me.ods}") as c:
        page = c.get("/dashboard/indicators/DM_HBA1C").text
        rows = re.findall(r'<th scope="row">(P-[A-Z2-7]{8})(.*?)</th>(.*?)</tr>', page, re.DOTALL)
        assert rows
        for _, head, rest in rows:
            assert "list size " in head and "list size" not in rest
            assert '<td colspan="2" class="sub">a peer\'s counts are not shown</td>' in rest
        assert "not shown to peers" not in page


def test_a_register_is_never_set_against_a_benchmark_for_any_role(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A register (areas.is_register: HYP_REG) is a prevalence, not a target: a new-user run
    found /dashboard/indicators/HYP_REG saying "achievable benchmark 19%", a "Benchmark (ABC)"
    line on its funnel and trend charts and "Denominator (patients eligible)" under its funnel.
    No role sees an ABC for a register on any page, chart, download or API view (the API's
    ``abc`` is null); an ordinary indicator keeps its benchmark."""
    from synthetic_network import PERIODS

    with running(tmp_path, practices(8)) as n:
        with httpx.Client(base_url=n.url, timeout=60) as c:
            n.enrol_all(c)
            n.populate(c, PERIODS[:2], whole_list={"HYP_REG": 0.14})
        me = n.specs[1]
        roles = ["admin", "lead:North PCN", "lead:South PCN", f"practice:{me.ods}", f"ig:{me.ods}"]
        seen = 0
        for who in roles:
            with signed_in(n, who) as c:
                for pg in ("", f"pcn|{me.pcn}"):
                    q = {"pg": pg} if pg else {}
                    page = c.get("/dashboard/indicators/HYP_REG", params=q)
                    if page.status_code == 403:
                        continue
                    seen += 1
                    assert page.status_code == 200, (who, pg, page.text[:300])
                    text = " ".join(page.text.split())
                    assert "Hypertension register" in text, (who, pg)
                    for bad in ("achievable benchmark", "Benchmark (ABC)", 'class="abc"',
                                "patients eligible"):  # fmt: skip
                        assert bad not in text, (who, pg, bad)
                    assert (
                        "a register is a recorded prevalence, not a target: it is not set against a benchmark"
                        in text
                    ), (who, pg)
                    assert "Denominator (list size, of the register's ages)" in text, (who, pg)
                    for chart in ("funnel.svg", "trend.svg"):
                        svg = c.get(f"/dashboard/indicators/HYP_REG/{chart}", params=q)
                        assert svg.status_code == 200, (who, chart)
                        assert "Benchmark (ABC)" not in svg.text and 'class="abc"' not in svg.text
                        assert "patients eligible" not in svg.text, (who, chart)
                    for download in ("funnel.csv", "trend.csv"):
                        r = c.get(f"/dashboard/indicators/HYP_REG/{download}", params=q)
                        rows = list(csv.DictReader(io.StringIO(r.text)))
                        assert rows and all(not row.get("abc") for row in rows), (who, download)
            headers = {"authorization": f"Bearer {n.tokens[who]}"}
            with httpx.Client(base_url=n.url, timeout=60, headers=headers) as api:
                funnel = api.get("/v1/benchmarks/indicators/HYP_REG")
                if funnel.status_code == 200:
                    s = funnel.json()["summary"]
                    assert s["abc"] is None and s["abc_practices"] == 0, (who, s)
                    trend = api.get("/v1/benchmarks/trends/HYP_REG").json()
                    assert all(p["abc"] is None for p in trend["network"]), who
                    ordinary = api.get("/v1/benchmarks/indicators/DM_HBA1C").json()["summary"]
                    assert ordinary["abc"] is not None, who  # a measure keeps its benchmark
                overview = api.get("/v1/benchmarks/overview")
                if overview.status_code == 200:
                    cols = {col["indicator"]: col for col in overview.json()["indicators"]}
                    assert cols["HYP_REG"]["abc"] is None, who
        assert seen >= 8  # every role that may see the indicator page, in both pools
        with signed_in(n, "admin") as c:
            page = " ".join(c.get("/dashboard/indicators/DM_HBA1C").text.split())
            assert "achievable benchmark" in page and "patients eligible" in page


def test_a_funnel_summary_counts_the_peers_pooled_but_not_shown(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A new-user run: a practice's AF_ANTICOAG page said "from 18 practices ... 12 practices
    suppressed: not drawn, not pooled" beside 16 rows of "–": 4 were peers whose small counts
    the peer rule withholds from the viewer (render.SMALL_NUMBERS), which are pooled all the
    same. The summary says so, for every viewer whose table has such a row, and matches it."""
    from synthetic_network import PERIODS

    specs = practices(8)
    for low in (specs[2], specs[5]):  # a North and a South practice with 1-7 achievers
        low.shift, low.list_size = -0.85, 3500
    with running(tmp_path, specs) as n:
        with httpx.Client(base_url=n.url, timeout=60) as c:
            n.enrol_all(c)
            n.populate(c, PERIODS[:1])
        me = n.specs[1]  # South PCN
        checked = 0
        for who in ("admin", "lead:North PCN", "lead:South PCN", f"practice:{me.ods}",
                    f"ig:{me.ods}"):  # fmt: skip
            with signed_in(n, who) as c:
                page = c.get("/dashboard/indicators/AF_ANTICOAG")
                assert page.status_code == 200, who
                text = " ".join(page.text.split())
                hidden = text.count("small numbers (a count from 1 to 7): withheld</td>")  # rows
                said = re.search(r"(\d+) (?:more|practices?) (?:is|are) pooled but not shown", text)
                if hidden:
                    checked += 1
                    assert said and int(said.group(1)) == hidden, (who, hidden, text[:3000])
                else:
                    assert not said and "pooled but not shown" not in text, who
        assert checked >= 3, checked  # a lead of the other PCN, the practice and its IG officer


def test_a_funnel_of_one_practice_says_one_practice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A new-user run read "none of the 1 practice that sent ..." on an indicator page."""
    from synthetic_network import PERIODS

    with running(tmp_path, practices(1)) as n:
        with httpx.Client(base_url=n.url, timeout=60) as c:
            n.enrol_all(c)
            n.submit(c, n.specs[0], PERIODS[0], seed=1, shapes={"DM_HBA1C": "tiny"})
        with signed_in(n, "admin") as c:
            page = " ".join(c.get("/dashboard/indicators/DM_HBA1C").text.split())
            assert "none of the 1 " not in page and "of the 1 registered practices" not in page
            assert "the one practice that sent DM_HBA1C has no count that can be used" in page


def _row(page: str, indicator: str) -> str:
    """A pack table's row for ``indicator``."""
    row = page[page.index(f'<tr data-indicator="{indicator}">') :]
    return row[: row.index("</tr>")]


def test_the_pack_says_a_measure_out_of_season_is_not_compared(net: SyntheticNetwork) -> None:
    """Out of season (FLU_65 in 2026-08) the pack's change cell said "– †", seasonal: compared
    with 2025-08, though nothing is compared: it says so, as the indicator page does."""
    ods = net.specs[0].ods
    for who in ("admin", f"practice:{ods}"):
        with signed_in(net, who) as c:
            page = c.get(f"/dashboard/practices/{ods}/pack", params={"period": "2026-08"})
            assert page.status_code == 200
            flu = _row(page.text, "FLU_65")
            assert "not compared: out of season" in flu, flu
            assert "†" not in flu and "compared with 2025-08" not in flu, flu
            # in season, the seasonal mark stays
            sept = c.get(f"/dashboard/practices/{ods}/pack", params={"period": "2026-09"}).text
            assert "†" in _row(sept, "FLU_65") and "out of season" not in _row(sept, "FLU_65")


def test_the_funnel_csv_out_of_season_says_why_and_counts_nothing(net: SyntheticNetwork) -> None:
    """Out of season (FLU_65 in 2026-08) the funnel CSV was its header alone: one row now says
    why (status and note, as overview.csv and summary.csv say it), naming no practice and
    carrying no count or figure, as the funnel out of season lists none (API and dashboard)."""
    me = net.specs[0].ods
    for who in ("admin", "lead:North PCN", f"practice:{me}"):
        with signed_in(net, who) as c:
            bearer = {"authorization": f"Bearer {net.tokens[who]}"}
            for r in (c.get("/dashboard/indicators/FLU_65/funnel.csv", params={"period": "2026-08"}),
                      c.get("/v1/benchmarks/indicators/FLU_65", headers=bearer,
                            params={"period": "2026-08", "format": "csv"})):  # fmt: skip
                assert r.status_code == 200, (who, r.text)
                rows = list(csv.DictReader(io.StringIO(r.text)))
                assert len(rows) == 1, (who, rows)
                row = rows[0]
                assert row["status"] == "out_of_season" and "not measured" in row["note"], row
                assert "September to March" in row["note"]
                assert (row["indicator"], row["period_end"]) == ("FLU_65", "2026-08-31")
                told = {"indicator", "period_end", "peer_group", "status", "note"}
                assert all(v == "" for k, v in row.items() if k not in told), row
            # in season: a row per practice as ever
            sept = c.get("/dashboard/indicators/FLU_65/funnel.csv", params={"period": "2026-09"})
            assert all(
                r["status"] != "out_of_season" for r in csv.DictReader(io.StringIO(sept.text))
            )


def test_the_indicator_page_out_of_season_draws_no_empty_funnel(net: SyntheticNetwork) -> None:
    """Out of season (FLU_65 in 2026-08) the page showed an empty plot, its caption "Each mark
    is a practice...", SVG and PNG buttons and the band key, with no practice anywhere: only the
    explanation and the CSV (whose row says why) are left."""
    me = net.specs[0].ods
    for who in ("admin", "lead:North PCN", f"practice:{me}", f"ig:{me}"):
        with signed_in(net, who) as c:
            page = c.get("/dashboard/indicators/FLU_65", params={"period": "2026-08"})
            assert page.status_code == 200
            text = page.text
            assert 'id="out-of-season"' in text and "September to March" in text
            for gone in ('id="funnel-figure"', "Each mark is a practice", "Key to funnel bands",
                         "funnel.svg?", 'data-name="FLU_65-2026-08-31-funnel.png"'):  # fmt: skip
                assert gone not in text, (who, gone)
            assert "/dashboard/indicators/FLU_65/funnel.csv?" in text
            sept = c.get("/dashboard/indicators/FLU_65", params={"period": "2026-09"}).text
            for kept in ('id="funnel-figure"', "Each mark is a practice", "Key to funnel bands",
                         "funnel.svg?"):  # fmt: skip
                assert kept in sept, (who, kept)


def test_a_seasonal_trend_says_which_months_have_no_point(net: SyntheticNetwork) -> None:
    """The trend's line breaks across April to August for FLU_65, and nothing said why: a line
    under the chart (and in its SVG download) names the months out of season."""
    gap = "No point for periods ending April to August: out of season, not measured."
    me = net.specs[0].ods
    for who in ("admin", f"practice:{me}"):
        with signed_in(net, who) as c:
            page = c.get("/dashboard/indicators/FLU_65").text
            figure = page[page.index('id="trend-figure"') :]
            assert gap in figure[: figure.index("</figure>")], who
            svg = c.get("/dashboard/indicators/FLU_65/trend.svg").text
            assert gap in svg and svg.startswith("<?xml"), who
            # any other indicator: no such line
            assert "out of season" not in c.get("/dashboard/indicators/DM_HBA1C").text
            assert "out of season" not in c.get("/dashboard/indicators/DM_HBA1C/trend.svg").text
