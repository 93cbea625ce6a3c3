"""The views a person acts on, in real headless Chromium against a real server fed by signed
submissions: the lead overview grouped by clinical area at laptop width, the practice view in
order of patients who could gain with registers apart, and the printable practice pack."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from synthetic_network import SyntheticNetwork, practices

from aggregator.benchmarks import areas
from aggregator.benchmarks.gain import patients_could_gain
from protocol.submission import Period

pytestmark = pytest.mark.browser

PERIODS = tuple(Period.month(2026, m) for m in (5, 6, 7, 8, 9))
LAPTOP = {"width": 1366, "height": 768}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticNetwork]:
    """Eight practices, five months, every catalogue indicator: registers as whole-list
    prevalences, the rest as ordinary indicators; the last practice sends every indicator with
    a population of 1-7 (all its values suppressed)."""
    tmp = tmp_path_factory.mktemp("views-net")
    n = SyntheticNetwork(tmp, f"sqlite:///{tmp / 'agg.db'}", practices(8))
    n.setup()
    n.start()
    ids = [i.id for i in n.catalogue.indicators]
    regs = {i: 0.04 + 0.01 * k for k, i in enumerate(x for x in ids if areas.is_register(x))}
    measures = tuple(i for i in ids if not areas.is_register(i))
    hidden = n.specs[-1]
    with httpx.Client(base_url=n.url, timeout=120) as c:
        n.enrol_all(c)
        for k, period in enumerate(PERIODS):
            for p in n.specs:
                if p is hidden:
                    n.submit(c, p, period, seed=1, indicators=tuple(ids),
                             shapes=dict.fromkeys(ids, "tiny"))  # fmt: skip
                else:
                    # the network improves a little each month: changes to report
                    n.submit(c, p, period, seed=1, indicators=measures, whole_list=regs,
                             rate_shift=0.03 * k)  # fmt: skip
    yield n
    n.stop()


def _signed_in(browser, net: SyntheticNetwork, who: str, viewport=LAPTOP):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.goto(f"{net.url}/dashboard/login")
    page.fill("#token", net.tokens[who])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return context, page, errors


def test_overview_groups_by_area_and_fits_a_laptop(
    browser, net: SyntheticNetwork, artifacts: Path
) -> None:  # type: ignore[no-untyped-def]
    context, page, errors = _signed_in(browser, net, "admin")
    r = page.goto(f"{net.url}/dashboard/overview")
    assert r is not None and r.status == 200
    page.screenshot(path=str(artifacts / "overview-laptop.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    (artifacts / "overview-scroll-width.txt").write_text(f"{width}\n")
    assert width <= LAPTOP["width"], f"the overview is {width} px wide at a 1366 px window"
    # one section per clinical area, in areas.py's order, with readable titles
    titles = page.locator("section.area h2").all_inner_texts()
    ids = [i.id for i in net.catalogue.indicators]
    expected = [g["area"] for g in areas.group_by_area([{"indicator": i} for i in ids])]
    assert titles == expected and len(titles) > 5
    # every indicator code is still on the page, once each, under its area, with its title
    for ind in net.catalogue.indicators:
        head = page.locator(f'section.area th[data-indicator="{ind.id}"]')
        assert head.count() == 1, ind.id
        text = head.inner_text()
        assert ind.id in text and ind.title in text
        area = head.locator("xpath=ancestor::section[1]/h2").inner_text()
        assert area == areas.area_of(ind.id)
    # and no table of the page is wider than the window
    widest = page.evaluate(
        "Math.max(...[...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().right))"
    )
    assert widest <= LAPTOP["width"]
    assert errors == []
    context.close()


def _num(text: str) -> int | None:
    m = re.match(r"\s*(\d+)", text)
    return int(m.group(1)) if m else None


def test_practice_view_orders_by_patients_who_could_gain(
    browser, net: SyntheticNetwork, artifacts: Path
) -> None:  # type: ignore[no-untyped-def]
    me = net.specs[0]  # the planted low outlier
    context, page, errors = _signed_in(browser, net, f"practice:{me.ods}")
    assert page.url.endswith(f"/dashboard/practices/{me.ods}")
    rows = page.locator("#measures tbody tr")
    shown = rows.evaluate_all(
        "rs => rs.map(r => [r.dataset.indicator, r.querySelector('td.gain').innerText])"
    )
    gains = [_num(g) for _, g in shown]
    assert all(g is not None for g in gains)
    assert gains == sorted(gains, reverse=True) and gains[0] > 0  # type: ignore[type-var]
    # each figure is the formula over the counts the API gives for that indicator
    with httpx.Client(
        base_url=net.url,
        timeout=60,
        headers={"authorization": f"Bearer {net.tokens[f'practice:{me.ods}']}"},
    ) as c:
        body = c.get(f"/v1/benchmarks/practices/{me.ods}").json()
    by_id = {i["indicator"]: i for i in body["indicators"]}
    for (ind, _), g in zip(shown, gains, strict=True):
        i = by_id[ind]
        assert g == patients_could_gain(i["numerator"], i["denominator"], i["abc"]), ind
    # registers apart, with no benchmark; not among the measures
    regs = page.locator("#registers tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.indicator)"
    )
    assert regs and all(areas.is_register(r) for r in regs)
    assert not any(areas.is_register(ind) for ind, _ in shown)
    assert "Benchmark" not in page.locator("#registers thead").inner_text()
    assert "max(0, ⌈benchmark × denominator⌉ − numerator)" in page.locator("main").inner_text()
    # the top of the page, as docs/screenshots/practice-view.png shows it
    page.screenshot(path=str(artifacts / "practice-view.png"), full_page=True,
                    clip={"x": 0, "y": 0, "width": LAPTOP["width"], "height": 1500})  # fmt: skip
    # the pack is linked from the practice view
    page.click("#pack-link")
    page.wait_for_load_state()
    assert f"/dashboard/practices/{me.ods}/pack" in page.url
    assert errors == []
    context.close()


def test_practice_pack_prints_on_one_page(
    browser, net: SyntheticNetwork, artifacts: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    me = net.specs[0]
    context, page, errors = _signed_in(browser, net, f"practice:{me.ods}")
    r = page.goto(f"{net.url}/dashboard/practices/{me.ods}/pack")
    assert r is not None and r.status == 200
    text = page.locator("main").inner_text()
    # the narrative is written from the numbers: the period, its comparison 3 periods back
    assert PERIODS[-1].label in text and PERIODS[-4].label in text
    assert "Reaching the achievable benchmark on every indicator would mean" in text
    total = sum(_num(t) or 0 for t in page.locator("#spine td.gain").all_inner_texts())
    assert f"would mean {total:,} more patients meeting the standard" in text
    # a spine row per indicator, each with the network bars and the practice's marker
    n_ind = len(net.catalogue.indicators)
    spines = page.locator("svg.spine")
    assert spines.count() == n_ind
    assert (
        page.locator("#spine svg.spine .practice .mk").count()
        == page.locator("#spine tbody tr[data-indicator]").count()
    )
    assert page.locator("svg.spine rect.iqr").count() == n_ind
    # no other practice is named or coded on the pack
    html = page.content()
    for p in net.specs[1:]:
        assert p.ods not in html and p.name not in html
    assert "P-" not in page.locator("main").inner_text()
    page.screenshot(path=str(artifacts / "practice-pack.png"), full_page=True)
    # print media: the navigation and the form go, the pack fits one A4 page
    page.emulate_media(media="print")
    assert not page.locator("header.top").is_visible()
    assert not page.locator("form.filters").is_visible()
    assert page.locator("#spine").is_visible()
    page.set_viewport_size({"width": 730, "height": 1050})
    page.screenshot(path=str(artifacts / "practice-pack-print.png"), full_page=True)
    pdf = page.pdf(format="A4", print_background=True, prefer_css_page_size=True)
    (artifacts / "practice-pack.pdf").write_bytes(pdf)
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert pages == 1, f"the pack prints on {pages} pages"
    assert errors == []
    context.close()


def test_pack_with_every_value_suppressed_renders(browser, net: SyntheticNetwork) -> None:  # type: ignore[no-untyped-def]
    hidden = net.specs[-1]
    for who in (f"practice:{hidden.ods}", f"lead:{hidden.pcn}"):
        context, page, errors = _signed_in(browser, net, who)
        r = page.goto(f"{net.url}/dashboard/practices/{hidden.ods}/pack")
        assert r is not None and r.status == 200
        text = page.locator("main").inner_text()
        assert "has no indicator value to report" in text
        # every row is there, with no practice marker, and no "could gain" figure
        assert page.locator("svg.spine").count() == len(net.catalogue.indicators)
        assert page.locator("svg.spine .practice").count() == 0
        assert set(page.locator("#spine td.gain").all_inner_texts()) == {"–"}
        page.emulate_media(media="print")
        pdf = page.pdf(format="A4", prefer_css_page_size=True)
        assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1
        assert errors == []
        context.close()


def test_pack_of_another_practice_is_forbidden(net: SyntheticNetwork) -> None:
    me, other = net.specs[0], net.specs[1]
    with httpx.Client(base_url=net.url, timeout=60) as c:
        c.post("/dashboard/login", data={"token": net.tokens[f"practice:{me.ods}"]})
        assert c.get(f"/dashboard/practices/{other.ods}/pack").status_code == 403
    lead = f"lead:{me.pcn}"
    outsider = next(p for p in net.specs if p.pcn != me.pcn)
    with httpx.Client(base_url=net.url, timeout=60) as c:
        c.post("/dashboard/login", data={"token": net.tokens[lead]})
        assert c.get(f"/dashboard/practices/{me.ods}/pack").status_code == 200
        assert c.get(f"/dashboard/practices/{outsider.ods}/pack").status_code == 403
