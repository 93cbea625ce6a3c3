"""The list-size matching attack on peer pseudonyms (docs/disclosure.md, "Pseudonyms").

A synthetic network whose practices' list sizes are published (the attacker knows every one),
served for real on loopback and fed signed submissions, including an indicator whose population
is the whole registered list (picked from the catalogue): its denominator is the practice's
registered count, within 1% of the published list size.

The attacker is a practice user. It collects everything the API and the dashboard show it
about its peers: the funnel JSON (plain and ``detail=true``) and CSV of every indicator, the
dashboard's indicator pages (table and SVG tooltips), its SVG download and CSV, its own practice
page (a small funnel per indicator), the peer-group funnels, and ``/v1/practices``. From each
figure it derives an interval for the peer's list size: a whole-list denominator directly; a
register denominator through the network's ratio of that register to list size; a
denominator inverted out of a Wilson interval; a list-size band. It then links each pseudonym
to the practice whose published list size is nearest the middle of the intervals, and counts
the practices each pseudonym could be (its candidates).

The same attack runs on an uncoarsened reading: a network lead's view of the practices outside
its PCN, which shows peers exactly as a practice's view showed them before pseudonyms were made
to hold (counts re-published rounded to 5, rates to 6 decimals, Wilson intervals, z): there it
links every pseudonym. In the practice's view the criterion is: no pseudonym has fewer than
``MIN_PEERS_PER_BAND`` candidates (none is matched uniquely), and the attack gets at most one
link right per list-size band shown, which is what guessing within the bands gets (and a
random assignment gets one right on average), against all of them before.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import math
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
from synthetic_network import INDICATORS, PERIODS, PracticeSpec, SyntheticNetwork

from aggregator.benchmarks import stats
from aggregator.benchmarks.viewer import pseudonym_of
from aggregator.settings import MIN_PEERS_PER_BAND, SIZE_BAND_EDGES
from aggregator.users.service import authenticate
from protocol.catalogue import Age

PRACTICES = 18
DRIFT = 0.01  # registered count vs published list size, either way
WHOLE_LIST_RATE = 0.14
ME = 7  # the attacking practice: mid-sized
#: The network's bands: the aggregator's defaults, which the test network runs with.
BANDS = stats.PeerBands(SIZE_BAND_EDGES, MIN_PEERS_PER_BAND)


def whole_list_indicator(n: SyntheticNetwork) -> str:
    """The first catalogue indicator whose population is every registered patient."""
    return next(i.id for i in n.catalogue.indicators if i.population == Age(min=0))


def network_specs() -> list[PracticeSpec]:
    """Published list sizes from about 2,000 to 18,000, each about 14% above the last (so the
    attack, given exact figures, can tell every practice apart), in three PCNs."""
    rng = random.Random(11)
    out = []
    for i in range(PRACTICES):
        size = round(2000 * 1.14**i * rng.uniform(0.98, 1.02))
        out.append(
            PracticeSpec(
                ods=f"C{83001 + i:05d}",
                name=f"Attack Test Surgery {i + 1}",
                pcn=f"PCN {'ABC'[i % 3]}",
                list_size=size,
                imd_decile=1 + (i * 7) % 10,
                registered=round(size * (1 + rng.uniform(-DRIFT, DRIFT))),
            )
        )
    return out


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticNetwork]:
    tmp = tmp_path_factory.mktemp("attack")
    n = SyntheticNetwork(tmp, f"sqlite:///{tmp / 'agg.db'}", network_specs())
    n.setup()
    n.start()
    with httpx.Client(base_url=n.url, timeout=60) as c:
        n.enrol_all(c)
        n.populate(c, PERIODS[-2:], whole_list={whole_list_indicator(n): WHOLE_LIST_RATE})
    yield n
    n.stop()


# --- what the attacker reads ---------------------------------------------------------------------


@dataclass
class Reading:
    """Everything one viewer was shown about each pseudonym, as intervals for its list size."""

    intervals: dict[str, list[tuple[str, float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    exact_figures: int = 0  # figures that bound a list size to within 5%

    def add(self, alias: str, source: str, lo: float, hi: float) -> None:
        self.intervals[alias].append((source, lo, hi))
        if hi < math.inf and hi - lo <= 0.05 * max(hi, 1):
            self.exact_figures += 1


def band_interval(label: str) -> tuple[float, float]:
    """A list-size band label, as the practice's view prints it, as an interval."""
    nums = [int(x.replace(",", "")) for x in re.findall(r"\d[\d,]*", label)]
    if label.startswith("under"):
        return 0, nums[0] - 1
    if label.endswith("and over"):
        return nums[0], math.inf
    if len(nums) == 2:
        return nums[0], nums[1]
    assert label == "any list size", label
    return 0, math.inf


def wilson_n(rate: float, lo: float, hi: float) -> int:
    """The denominator whose 95% Wilson interval at ``rate`` has the width shown."""
    a, b = 1.0, 1e7
    for _ in range(200):
        mid = (a + b) / 2
        ci = stats.wilson_interval(rate * mid, mid)
        assert ci is not None
        if ci[1] - ci[0] > hi - lo:
            a = mid
        else:
            b = mid
    return round(a)


class Collector:
    """Turns each figure shown about a peer into an interval for its list size."""

    def __init__(self, whole: str, ratio: dict[str, float]) -> None:
        self.whole, self.ratio = whole, ratio  # ratio: a register's size per listed patient
        self.reading = Reading()

    def denominator(self, alias: str, ind: str, lo: float, hi: float, source: str) -> None:
        if ind == self.whole:  # the registered list: within DRIFT of the published size
            self.reading.add(alias, source, lo / (1 + DRIFT), hi / (1 - DRIFT))
        else:  # a register: about its network ratio of the list, give or take a third
            r = self.ratio[ind]
            self.reading.add(alias, source, lo / (r * 1.33), hi / (r * 0.67))

    def entry(self, alias: str, ind: str, p: dict[str, Any], source: str) -> None:
        den, status = p.get("denominator"), p.get("denominator_status")
        if den not in (None, ""):
            d, k = int(den), 2 if status == "rounded" else 0
            self.denominator(alias, ind, d - k, d + k, source)
        ci = p.get("ci95") or [p.get("ci95_low"), p.get("ci95_high")]
        # (an interval to whole points bounds nothing this way: only finer ones are inverted)
        if (
            p.get("rate") not in (None, "")
            and ci[0] not in (None, "")
            and _decimals(float(ci[0])) > 2
        ):
            n = wilson_n(float(p["rate"]), float(ci[0]), float(ci[1]))
            self.denominator(alias, ind, n - 1, n + 1, source + " (Wilson interval)")
        if p.get("size_band"):
            self.reading.add(alias, source + " (size band)", *band_interval(p["size_band"]))

    def page(self, ind: str | None, text: str, source: str) -> None:
        """SVG marks' tooltips and the indicator page's table."""
        for alias, tip in re.findall(r"<title>(P-[A-Z2-7]{8}): ([^<]*)</title>", text):
            tip = html.unescape(tip)
            if ind is not None and (m := re.search(r" of (\d+)", tip)):
                d = int(m.group(1))
                self.denominator(alias, ind, d - 2, d + 2, source + " tooltip")
            if m := re.search(r"list size (.+?), drawn", tip):
                self.reading.add(alias, source + " tooltip", *band_interval(m.group(1)))
        rows = re.findall(
            r'<th scope="row">(P-[A-Z2-7]{8})(.*?)</th>(.*?)</tr>', text, flags=re.DOTALL
        )
        for alias, head, rest in rows:
            cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", rest, re.DOTALL)]
            # a practice's view: the list-size band beside the pseudonym, and no count
            if m := re.search(r"list size ([^<]+)", head):
                band = html.unescape(m.group(1)).strip()
                self.reading.add(alias, source + " table", *band_interval(band))
            elif ind is not None and (m := re.match(r"\s*(\d+)", cells[1])):
                d = int(m.group(1))
                self.denominator(alias, ind, d - 2, d + 2, source + " table")


@dataclass
class Attack:
    peers: int
    correct: int  # links to the nearest published list size that are right
    unique: int  # pseudonyms with exactly one candidate practice
    min_candidates: int
    expected_by_guessing: float  # sum over pseudonyms of 1/candidates (when the truth is one)
    bands: int  # distinct size bands shown (0 when none is)


def attack(reading: Reading, published: dict[str, int], truth: dict[str, str]) -> Attack:
    """Link each pseudonym in ``truth`` (pseudonym -> ODS code, known to the test only) to the
    practice of ``published`` (the viewer's possible peers and their published list sizes)
    whose list size is nearest the middle of what the reading bounds it to."""
    correct = unique = 0
    guess = 0.0
    least = len(published)
    bands = set()
    for alias, ods in truth.items():
        ivs = reading.intervals.get(alias, [])
        lo = max((a for _, a, _ in ivs), default=0.0)
        hi = min((b for _, _, b in ivs), default=math.inf)
        bands |= {(a, b) for s, a, b in ivs if "size band" in s}
        cands = [o for o, size in published.items() if lo <= size <= hi]
        if lo > hi or not cands:  # inconsistent figures: fall back to every practice
            cands = list(published)
        mid = (lo + min(hi, max(published.values()))) / 2
        nearest = min(published, key=lambda o: (abs(published[o] - mid), o))
        correct += nearest == ods
        unique += len(cands) == 1
        least = min(least, len(cands))
        guess += (1 / len(cands)) if ods in cands else 0.0
    return Attack(len(truth), correct, unique, least, guess, len(bands))


# --- reading as a viewer, over HTTP ---------------------------------------------------------------


def api(c: httpx.Client, token: str, path: str, **params: str) -> httpx.Response:
    r = c.get(path, params=params, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, (path, params, r.text)
    return r


@contextlib.contextmanager
def dashboard(net: SyntheticNetwork, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=net.url, timeout=60) as c:
        r = c.post("/dashboard/login", data={"token": token, "next": "/dashboard"})
        assert r.status_code == 303
        yield c


def register_ratios(net: SyntheticNetwork, c: httpx.Client, token: str) -> dict[str, float]:
    """Each indicator's pooled denominator per published listed patient. A practice's view
    shows no pooled counts, but an attacker may know each register's prevalence from national
    figures: read with the admin's token (``token``), so the attack is no weaker for it."""
    listed = sum(p.list_size for p in net.specs)
    out = {}
    for ind in api(c, token, "/v1/benchmarks").json()["indicators"]:
        body = api(c, token, f"/v1/benchmarks/indicators/{ind['id']}").json()
        out[ind["id"]] = body["summary"]["denominator"] / listed
    return out


def read_everything(net: SyntheticNetwork, who: str, peer: str = "network") -> Collector:
    token = net.tokens[who]
    with httpx.Client(base_url=net.url, timeout=60) as c:
        inds = [i["id"] for i in api(c, token, "/v1/benchmarks").json()["indicators"]]
        col = Collector(whole_list_indicator(net), register_ratios(net, c, net.tokens["admin"]))
        for ind in inds:
            path = f"/v1/benchmarks/indicators/{ind}"
            for detail in ("false", "true"):
                body = api(c, token, path, peer=peer, detail=detail).json()
                for p in body["practices"]:
                    if not p["identified"]:
                        col.entry(p["id"], ind, p, f"{ind} JSON detail={detail}")
            text = api(c, token, path, peer=peer, format="csv").text
            for row in csv.DictReader(io.StringIO(text)):
                if row["identified"] == "False":
                    col.entry(row["practice"], ind, row, f"{ind} CSV")
    if peer != "network":
        return col
    with dashboard(net, token) as d:
        for ind in inds:
            for path in (f"/dashboard/indicators/{ind}", f"/dashboard/indicators/{ind}/funnel.svg"):
                r = d.get(path)
                assert r.status_code == 200, (path, r.text)
                col.page(ind, r.text, path)
            rows = csv.DictReader(
                io.StringIO(d.get(f"/dashboard/indicators/{ind}/funnel.csv").text)
            )
            for row in rows:
                if row["identified"] == "False":
                    col.entry(row["practice"], ind, row, f"dashboard {ind} CSV")
        me = who.partition(":")[2]
        if who.startswith("practice:"):
            r = d.get(f"/dashboard/practices/{me}")
            assert r.status_code == 200
            # the small funnels carry no indicator id in their marks: whole-list tooltips only
            # bound the size through the ratio, so read only the size bands from them
            col.page(None, r.text, "practice page")
    return col


def user_id(net: SyntheticNetwork, who: str) -> int:
    rt = net._runtime()
    with rt.db.read() as s:
        uid = authenticate(s, net.tokens[who]).id
    secret = rt.pseudonym_secret
    rt.db.dispose()
    net.__dict__["_secret"] = secret
    return uid


def truth_for(net: SyntheticNetwork, who: str, peers: list[PracticeSpec], scope: str = "") -> dict[str, str]:  # fmt: skip
    uid = user_id(net, who)
    return {pseudonym_of(net.__dict__["_secret"], uid, p.ods, scope): p.ods for p in peers}


# --- the attack, before and after -------------------------------------------------------------------


def test_attack_links_every_peer_on_an_uncoarsened_reading(net: SyntheticNetwork) -> None:
    """A network lead sees the practices outside its PCN as a practice saw its peers before:
    the attack links every one of them to its published list size."""
    lead_pcn = net.specs[0].pcn
    who = f"lead:{lead_pcn}"
    others = [p for p in net.specs if p.pcn != lead_pcn]
    col = read_everything(net, who)
    truth = truth_for(net, who, others)
    assert set(truth) == set(col.reading.intervals)  # every one of them was read
    got = attack(col.reading, {p.ods: p.list_size for p in others}, truth)
    print("uncoarsened reading:", got)
    assert got.correct == got.peers == len(others) == 12
    assert got.unique == got.peers and col.reading.exact_figures > 0


def test_attack_fails_on_the_practice_view(net: SyntheticNetwork) -> None:
    me = net.specs[ME]
    who = f"practice:{me.ods}"
    peers = [p for p in net.specs if p is not me]
    col = read_everything(net, who)
    truth = truth_for(net, who, peers)
    assert set(truth) == set(col.reading.intervals)
    got = attack(col.reading, {p.ods: p.list_size for p in peers}, truth)
    print("practice view:", got)
    assert col.reading.exact_figures == 0  # nothing bounds a peer's size to within 5%
    assert got.unique == 0 and got.min_candidates >= MIN_PEERS_PER_BAND
    # no better than guessing within the list-size bands: at most one right per band shown
    assert 1 <= got.bands <= BANDS.count
    assert got.expected_by_guessing <= got.bands + 1e-9
    assert got.correct <= got.bands < got.peers / 3


@pytest.mark.parametrize("dimension", ["pcn", "imd", "size"])
def test_attack_fails_in_each_peer_group_view(net: SyntheticNetwork, dimension: str) -> None:
    """A peer-group funnel names its peers with pseudonyms of its own (not the network
    funnel's), and within the group the attack fails the same way."""
    me = net.specs[ME]
    who = f"practice:{me.ods}"
    col = read_everything(net, who, dimension)
    dim = cast(stats.PeerDimension, dimension)

    def group(p: PracticeSpec) -> str | None:
        return stats.PracticeAttributes(p.ods, p.pcn, p.imd_decile, p.list_size).group(dim, BANDS)

    mine = group(me)
    members = [p for p in net.specs if p is not me and group(p) == mine]
    assert len(members) >= 2
    truth = truth_for(net, who, members, scope=dimension)
    assert set(truth) == set(col.reading.intervals)
    network_aliases = truth_for(net, who, members)
    assert not set(truth) & set(network_aliases)
    got = attack(col.reading, {p.ods: p.list_size for p in members}, truth)
    print(dimension, got)
    assert col.reading.exact_figures == 0
    assert got.unique == 0 and got.min_candidates >= min(MIN_PEERS_PER_BAND, len(members))
    assert got.correct <= got.bands


def test_practice_view_holds_no_exact_peer_figure(net: SyntheticNetwork) -> None:
    """The rule itself, field by field: no peer count, interval, z or limits; rates to whole
    percentage points; a size band on every peer; /v1/practices without PCN, not in ODS order."""
    me = net.specs[ME]
    token = net.tokens[f"practice:{me.ods}"]
    with httpx.Client(base_url=net.url, timeout=60) as c:
        for ind in (*INDICATORS, whole_list_indicator(net)):
            body = api(c, token, f"/v1/benchmarks/indicators/{ind}", detail="true").json()
            peers = [p for p in body["practices"] if not p["identified"]]
            # the spliced fast path (no detail) shows peers exactly as the built view does
            fast = api(c, token, f"/v1/benchmarks/indicators/{ind}").json()
            assert [p for p in fast["practices"] if not p["identified"]] == peers
            assert fast["limits_curve"] == body["limits_curve"]
            assert len(peers) == PRACTICES - 1
            for p in peers:
                assert p["numerator"] is None and p["denominator"] is None, p
                assert p["denominator_status"] == "banded" and p["size_band"]
                assert p["ci95"] is None and p["ci998"] is None and p["z"] is None
                assert "limits" not in p and "submission_id" not in p
                assert p["rate"] is None or round(p["rate"], 2) == p["rate"]
            drawn = [p for p in peers if p["rate"] is not None]
            assert drawn and all(p["x"] for p in drawn)
            own = next(p for p in body["practices"] if p["identified"])
            assert own["denominator"] and own["ci95"]  # its own figures stay exact
            # the limits curve stops at the furthest mark drawn, not at a peer's exact size
            reach = max([p["x"] for p in drawn] + [own["denominator"]])
            assert body["limits_curve"][-1]["denominator"] <= int(reach * 1.15)
        listing = api(c, token, "/v1/practices").json()
    assert listing[0]["practice"] == me.ods and listing[0]["identified"]
    peers = listing[1:]
    assert len(peers) == PRACTICES - 1
    assert all(set(p) == {"practice", "identified"} for p in peers)
    assert [p["practice"] for p in peers] == sorted(p["practice"] for p in peers)


def test_size_bands_merge_until_each_holds_enough_peers() -> None:
    """A lone large practice shares its band (and its x) with smaller ones; a view with fewer
    peers than the minimum shows one band; bands never come from a count."""
    from types import SimpleNamespace

    from aggregator.benchmarks.peers import peer_places
    from aggregator.benchmarks.viewer import PracticeInfo, Viewer

    def places(
        sizes: list[int], dens: list[int] | None = None, bands: stats.PeerBands = BANDS
    ) -> list[tuple[str, int | None]]:
        practices = {
            f"D{84001 + i:05d}": PracticeInfo(f"D{84001 + i:05d}", "x", "PCN", s, 5)
            for i, s in enumerate(sizes)
        }
        me = "D84001"  # the viewer: practice 0
        user = SimpleNamespace(id=1, role="practice", group=None, practice_ods=me)
        viewer = Viewer(user, b"k" * 32, bands, practices)  # type: ignore[arg-type]
        dens = dens or [s // 10 for s in sizes]
        flats = [
            (ods, d // 2, "exact", d, "exact", "ok", 0.5, None, None, None, None, False, None,
             "within", None, None, None, None)
            for ods, d in zip(practices, dens, strict=True)
        ]  # fmt: skip
        got = peer_places(viewer, flats)
        assert me not in got
        return [(got[o].size_band, got[o].x) for o in list(practices)[1:]]

    # 4 small, 3 mid, 1 large (the viewer is one of the small ones): the large one is merged
    shown = places([3000, 3100, 3200, 3300, 6000, 7000, 8000, 16000])
    assert [b for b, _ in shown] == ["under 5,000"] * 3 + ["5,000 and over"] * 4
    assert len({x for _, x in shown[3:]}) == 1  # one x for the merged band
    # peers of a band share one x whatever their own denominators
    again = places([3000, 3100, 3200, 3300, 6000, 7000, 8000, 16000], [300, 90, 320, 500, 600, 700, 900, 1500])  # fmt: skip
    assert [b for b, _ in again] == [b for b, _ in shown]
    assert len({x for _, x in again[:3]}) == 1 and len({x for _, x in again[3:]}) == 1
    # two peers: one band for both
    assert {b for b, _ in places([3000, 4000, 20000])} == {"any list size"}
    # enough peers everywhere: the size peer groups' own bands
    shown_bands = {b for b, _ in places([3000] + [4000, 6000, 11000, 16000] * 3)}
    assert shown_bands == {"under 5,000", "5,000-9,999", "10,000-14,999", "15,000 and over"}
    # the network's settings, not literals: other edges give other bands, and a higher
    # minimum merges bands the default keeps apart
    sizes = [3000, 3100, 3200, 3300, 6000, 7000, 8000, 16000]
    other = places(sizes, bands=stats.PeerBands((3150, 7500), 1))
    expected = ["under 3,150"] + ["3,150-7,499"] * 4 + ["7,500 and over"] * 2
    assert [b for b, _ in other] == expected
    merged = places(sizes, bands=stats.PeerBands(BANDS.edges, 4))
    assert [b for b, _ in merged] == ["any list size"] * 7


def _decimals(x: float | None) -> int:
    return 0 if x is None else len(repr(float(x)).split(".")[1].rstrip("0"))


def _practice_stats(summary: dict) -> list[float | None]:
    return [summary["median"], *(summary["iqr"] or []), *(summary["deciles"] or []), summary["abc"]]


def test_statistics_of_peers_rates_are_whole_points_in_a_practice_view(
    net: SyntheticNetwork,
) -> None:
    """The median, quartiles, deciles and achievable benchmark are each one practice's rate (or
    two interpolated); at six decimals such a rate is often its practice's exact count as a
    fraction. A practice's view shows them to whole percentage points, as it shows peers' rates;
    the network's own view keeps six decimals."""
    me = net.specs[ME]
    practice = net.tokens[f"practice:{me.ods}"]
    with httpx.Client(base_url=net.url, timeout=60) as c:
        exact_stats: list[float | None] = []
        for ind in INDICATORS:
            admin = api(c, net.tokens["admin"], f"/v1/benchmarks/indicators/{ind}").json()
            exact_stats += _practice_stats(admin["summary"])
            for params in ({}, {"detail": "true"}, {"peer": "pcn"}):
                body = api(c, practice, f"/v1/benchmarks/indicators/{ind}", **params).json()
                shown = _practice_stats(body["summary"])
                assert shown and all(_decimals(v) <= 2 for v in shown), (ind, params, shown)
            trend = api(c, practice, f"/v1/benchmarks/trends/{ind}").json()
            assert all(_decimals(p["abc"]) <= 2 for p in trend["network"]), trend["network"]
        view = api(c, practice, f"/v1/benchmarks/practices/{me.ods}").json()
        for item in view["indicators"]:
            assert _decimals(item["abc"]) <= 2 and _decimals(item["median"]) <= 2, item
        overview = api(c, practice, "/v1/benchmarks/overview").json()
        assert all(_decimals(col["abc"]) <= 2 for col in overview["indicators"])
    # what the rule withholds: the network's own view shows them finer
    assert any(_decimals(v) > 2 for v in exact_stats)


def _pooled_figures(summary: dict) -> list[float | None]:
    return [summary["pooled"], *(summary["pooled_ci95"] or [])]


def test_pooled_figures_carry_no_counts_in_a_practice_view(net: SyntheticNetwork) -> None:
    """A pool's counts less the practice's own are its peers' sum: with their rates to whole
    points and published list sizes, and the dispersion statistic (a sum of one term per
    practice), a review pinned every PCN peer's numerator, a withheld 7 included; and two
    months' pools gave the exact counts of the practice that sent in between. So a practice's
    view shows no pooled counts, pooled rates and their changes to whole points, phi to one
    decimal and no dispersion statistic, p-value or tau-squared; its limits are drawn from what
    it shows, and its own z and limits (measured from the exact pooled rate) are not shown.
    The network's own view is unchanged."""
    from aggregator.benchmarks.figures import coarse_summary
    from aggregator.benchmarks.funnel import limit_curve

    me = net.specs[ME]
    practice = net.tokens[f"practice:{me.ods}"]
    exact: list[Any] = []
    curves = 0
    with httpx.Client(base_url=net.url, timeout=60) as c:
        for ind in INDICATORS:
            admin = api(c, net.tokens["admin"], f"/v1/benchmarks/indicators/{ind}").json()[
                "summary"
            ]
            exact += [admin["numerator"], admin["dispersion"]["statistic"], *_pooled_figures(admin)]
            for params in (
                {},
                {"detail": "true"},
                {"peer": "pcn"},
                {"peer": "imd"},
                {"peer": "size"},
            ):
                body = api(c, practice, f"/v1/benchmarks/indicators/{ind}", **params).json()
                s, d = body["summary"], body["summary"]["dispersion"]
                assert s["numerator"] is None and s["denominator"] is None, (ind, params)
                assert all(_decimals(v) <= 2 for v in _pooled_figures(s)), (ind, params, s)
                assert d["statistic"] is None and d["p_value"] is None and d["tau2"] is None
                assert _decimals(d["phi"]) <= 1, d
                (own,) = [p for p in body["practices"] if p["self"]]
                assert own["z"] is None and own.get("limits") is None, own
                if s["withheld"] is None and body["limits_curve"]:
                    # the curve is the one drawn from the shown pooled rate and phi
                    shown = stats.Summary(
                        practices=s["practices"], included=s["included"], suppressed=s["suppressed"],
                        empty=s["empty"], rounded=s["rounded"], numerator=None, denominator=None,
                        pooled=s["pooled"], pooled_ci95=None, median=None, q1=None, q3=None,
                        deciles=None, method=s["method"], abc=None, abc_practices=0,
                        dispersion=stats.Dispersion(s["included"], d["phi"], None, None,
                                                    d["overdispersed"], 0.0),
                    )  # fmt: skip
                    if s["method"] != "additive":  # (additive: tau-squared is not shown)
                        top = body["limits_curve"][-1]["denominator"]
                        assert body["limits_curve"] == limit_curve(
                            coarse_summary(shown), round(top / 1.15)
                        )
                        curves += 1
            trend = api(c, practice, f"/v1/benchmarks/trends/{ind}", practice=me.ods).json()
            for p in trend["network"]:
                assert (
                    p["numerator"] is None
                    and p["denominator"] is None
                    and _decimals(p["rate"]) <= 2
                )
            for ch in trend["network_changes"]:
                assert ch["z"] is None and ch["p_value"] is None
                assert all(_decimals(ch[k]) <= 2 for k in ("rate_from", "rate_to", "difference"))
            assert any(p["numerator"] is not None for p in trend["practice_series"])  # its own
        view = api(c, practice, f"/v1/benchmarks/practices/{me.ods}").json()
        for item in view["indicators"]:
            assert _decimals(item["pooled"]) <= 2 and item.get("z") is None, item
            assert all(_decimals(t["network"]) <= 2 for t in item["trend"]), item["trend"]
        overview = api(c, practice, "/v1/benchmarks/overview").json()
        assert all(_decimals(col["pooled"]) <= 2 for col in overview["indicators"])
    assert curves >= len(INDICATORS)
    # what the rule withholds: the network's own view shows them
    assert all(v is not None for v in exact[::4]) and any(_decimals(v) > 2 for v in exact[2::4])


def test_a_network_leads_view_of_other_pcns_does_not_undo_the_rounding(
    net: SyntheticNetwork,
) -> None:
    """A network lead sees practices outside its PCN with counts re-published rounded to 5. To
    six decimals their rates undid it: the one (numerator, denominator) within 2 of the shown
    counts whose ratio is the shown rate was the exact pair, for 411 of 415 peers in a review.
    Their rates and intervals are now to whole points, with no z and no limits (each would
    give the exact denominator back); the attack then finds more than one pair for most."""
    lead = net.tokens[f"lead:{net.specs[0].pcn}"]
    rows = unique = 0
    with httpx.Client(base_url=net.url, timeout=60) as c:
        for ind in INDICATORS:
            for detail in ("false", "true"):
                body = api(c, lead, f"/v1/benchmarks/indicators/{ind}", detail=detail).json()
                for p in body["practices"]:
                    if p["identified"] or p["rate"] is None:
                        continue
                    assert p["z"] is None and p.get("limits") is None, p
                    assert all(_decimals(v) <= 2 for v in (p["rate"], *(p["ci95"] or []))), p
                    if detail == "true" or p["numerator_status"] != "rounded":
                        continue
                    num, den = p["numerator"], p["denominator"]
                    pairs = [(a, b) for a in range(num - 2, num + 3) for b in range(den - 2, den + 3)
                             if b > 0 and 0 <= a <= b and round(a / b, 2) == p["rate"]]  # fmt: skip
                    rows += 1
                    unique += len(pairs) == 1
    print(f"lead's view: {unique} of {rows} peers' rounded counts pinned by their rate")
    assert rows >= 40 and unique <= rows // 4


def test_a_network_leads_pools_with_practices_it_cannot_identify_are_coarsened(
    net: SyntheticNetwork,
) -> None:
    """A review recovered exact counts of practices outside a lead's PCN from the pools the
    lead sees: the network's and other PCNs' quantiles and ABC to six decimals (an ABC of one
    practice is its rate), their exact pooled counts differenced across groups and with the
    lead's own practices, and the limits curve's end (1.15 x the largest denominator). Such a
    pool is now shown to the lead as to a practice: no pooled counts, rates and quantiles to
    whole points, no dispersion statistic; the curve ends at the largest denominator shown. The
    lead's own PCN, every practice of which it identifies, stays exact, as does the admin's."""
    own_pcn = net.specs[0].pcn
    other_pcn = next(p.pcn for p in net.specs if p.pcn != own_pcn)
    lead = net.tokens[f"lead:{own_pcn}"]
    with httpx.Client(base_url=net.url, timeout=60) as c:
        for ind in INDICATORS:
            path = f"/v1/benchmarks/indicators/{ind}"
            for params in ({}, {"peer": "pcn", "group": other_pcn}):
                body = api(c, lead, path, **params).json()
                s = body["summary"]
                assert s["numerator"] is None and s["dispersion"]["statistic"] is None, (
                    ind,
                    params,
                )
                shown = [*_pooled_figures(s), *_practice_stats(s)]
                assert all(_decimals(v) <= 2 for v in shown), (ind, params, shown)
                drawn = [p["denominator"] for p in body["practices"] if p["rate"] is not None]
                if body["limits_curve"]:
                    assert body["limits_curve"][-1]["denominator"] == int(max(drawn) * 1.15)
            mine = api(c, lead, path, peer="pcn").json()["summary"]
            assert mine["numerator"] is not None and mine["dispersion"]["statistic"] is not None
            admin = api(c, net.tokens["admin"], path).json()["summary"]
            assert admin["numerator"] is not None
