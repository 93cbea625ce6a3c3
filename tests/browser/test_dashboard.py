"""The dashboard in real headless Chromium against a real uvicorn server whose data arrived as
signed submissions through the ingest path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from synthetic_network import INDICATORS, SyntheticNetwork, practices

pytestmark = pytest.mark.browser


def _suppressed_indicator(n: SyntheticNetwork) -> str:
    """A catalogue indicator, besides the five drawn, that every practice sends with a
    population of 1-7: every value suppressed, nothing to pool or draw."""
    return next(i.id for i in n.catalogue.indicators if i.id not in INDICATORS)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticNetwork]:
    tmp = tmp_path_factory.mktemp("browser-net")
    n = SyntheticNetwork(tmp, f"sqlite:///{tmp / 'agg.db'}", practices(12))
    n.setup()
    n.start()
    tiny = _suppressed_indicator(n)
    with httpx.Client(base_url=n.url, timeout=60) as client:
        n.enrol_all(client)
        n.populate(client, indicators=(*INDICATORS, tiny), shapes={tiny: "tiny"})
    yield n
    n.stop()


TOPMOST = """ids => ids.filter(id => {
  const mk = document.querySelector(`#funnel-figure svg g.pt[data-practice="${id}"] .mk`);
  const r = mk.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return hit && hit.closest("g.pt") === mk.closest("g.pt");
})"""


def _uncovered(page, ids: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """The practices whose mark is not hidden under another (marks can overlap)."""
    return page.evaluate(TOPMOST, ids)


def _page(browser, net: SyntheticNetwork, who: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    outside: list[str] = []
    page.on(
        "request",
        lambda req: (
            outside.append(req.url)
            if not req.url.startswith(net.url) and not req.url.startswith("data:")
            else None
        ),
    )
    page.goto(f"{net.url}/dashboard/login")
    page.fill("#token", net.tokens[who])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return context, page, outside


def test_lead_funnel_draws_every_practice_and_names_them(
    browser, net: SyntheticNetwork, artifacts: Path
) -> None:  # type: ignore[no-untyped-def]
    lead_pcn = "North PCN"
    context, page, outside = _page(browser, net, f"lead:{lead_pcn}")
    assert page.url.endswith("/dashboard/overview")
    page.screenshot(path=str(artifacts / "lead-overview.png"), full_page=True)

    page.goto(f"{net.url}/dashboard/indicators/DM_HBA1C")
    points = page.locator("#funnel-figure svg g.pt")
    assert points.count() == len(net.specs)  # every practice drawn (none suppressed here)
    drawn = set(points.evaluate_all("els => els.map(e => e.dataset.practice)"))
    mine = {p.ods for p in net.specs if p.pcn == lead_pcn}
    assert mine <= drawn
    assert len(drawn - mine) == len(net.specs) - len(mine)
    assert all(d.startswith("P-") for d in drawn - mine)

    # hovering a point shows a tooltip naming the practice
    free = _uncovered(page, sorted(mine))
    assert free, "every identified mark is covered by another"
    target = next(p for p in net.specs if p.ods == free[0])
    point = page.locator(f'#funnel-figure svg g.pt[data-practice="{target.ods}"]')
    assert target.name in point.locator("title").text_content()
    point.locator(".mk").hover()
    tip = page.locator("#tip")
    tip.wait_for(state="visible")
    assert target.name in tip.inner_text() and target.ods in tip.inner_text()

    # and from the keyboard: focusing a point shows its tooltip too
    other = next(p for p in net.specs if p.pcn == lead_pcn and p is not target)
    page.locator(f'#funnel-figure svg g.pt[data-practice="{other.ods}"]').focus()
    assert other.name in page.locator("#tip").inner_text()
    page.screenshot(path=str(artifacts / "lead-funnel.png"), full_page=True)

    # the table carries every practice without JavaScript
    assert page.locator("table tbody tr").count() >= len(net.specs)
    assert outside == []  # nothing fetched from outside the aggregator (no CDN)
    context.close()


def test_practice_view_shows_no_peer_name_or_code(
    browser, net: SyntheticNetwork, artifacts: Path
) -> None:  # type: ignore[no-untyped-def]
    me = net.specs[0]  # the planted low outlier
    context, page, outside = _page(browser, net, f"practice:{me.ods}")
    assert page.url.endswith(f"/dashboard/practices/{me.ods}")
    pages = [page.content()]
    page.screenshot(path=str(artifacts / "practice-view.png"), full_page=True)
    # its own position on each funnel: itself ringed among pseudonymised peers
    assert page.locator(".funnels figure").count() == len(INDICATORS) + 1
    for ind in ("DM_HBA1C", "FLU_65"):
        page.goto(f"{net.url}/dashboard/indicators/{ind}")
        pages.append(page.content())
        drawn = page.locator("#funnel-figure svg g.pt").evaluate_all(
            "els => els.map(e => e.dataset.practice)"
        )
        assert me.ods in drawn and len(drawn) == len(net.specs)
        page.locator(f'#funnel-figure svg g.pt[data-practice="{me.ods}"] .mk').hover()
        assert me.name in page.locator("#tip").inner_text()
        peer = next(d for d in _uncovered(page, drawn) if d != me.ods)
        page.locator(f'#funnel-figure svg g.pt[data-practice="{peer}"] .mk').hover()
        assert page.locator("#tip").inner_text().startswith(peer)
    page.screenshot(path=str(artifacts / "practice-funnel.png"), full_page=True)
    for html in pages:
        for p in net.specs:
            if p is not me:
                assert p.ods not in html and p.name not in html
    assert outside == []
    context.close()


def test_ig_officer_sees_verified_payloads(browser, net: SyntheticNetwork, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    me = net.specs[1]
    context, page, _ = _page(browser, net, f"ig:{me.ods}")
    assert page.url.endswith("/dashboard/ig")
    rows = page.locator("table tbody tr")
    assert rows.count() == 3
    assert page.locator("td.ok").count() == 3 and page.locator("td.bad").count() == 0
    page.screenshot(path=str(artifacts / "ig-view.png"), full_page=True)
    href = page.locator("table tbody tr a", has_text="envelope").first.get_attribute("href")
    r = context.request.get(net.url + href)
    assert r.status == 200 and b'"payloadType"' in r.body()
    context.close()


def test_keyboard_reaches_the_funnel(browser, net: SyntheticNetwork) -> None:  # type: ignore[no-untyped-def]
    context, page, _ = _page(browser, net, "admin")
    page.goto(f"{net.url}/dashboard/indicators/AF_ANTICOAG")
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate(
            "document.activeElement && document.activeElement.classList && document.activeElement.classList.contains('pt')"
        ):
            break
    else:
        pytest.fail("Tab never reached a funnel point")
    assert page.locator("#tip").is_visible()
    context.close()


def test_an_indicator_with_every_value_suppressed_says_so(browser, net: SyntheticNetwork) -> None:  # type: ignore[no-untyped-def]
    tiny = _suppressed_indicator(net)
    errors: list[str] = []
    for who in ("lead:North PCN", f"practice:{net.specs[0].ods}"):
        context, page, outside = _page(browser, net, who)
        page.on("pageerror", lambda exc, who=who: errors.append(f"{who}: {exc}"))
        r = page.goto(f"{net.url}/dashboard/indicators/{tiny}")
        assert r is not None and r.status == 200
        text = page.locator("main").inner_text()
        assert "No network rate" in text
        assert f"{len(net.specs)} suppressed by disclosure control" in text
        assert page.locator("#funnel-figure svg g.pt").count() == 0
        assert "No released rates to plot." in page.locator("#funnel-figure").inner_text()
        # the table still lists every practice, each as suppressed
        assert page.locator("table").first.locator("tbody tr").count() == len(net.specs)
        assert errors == [] and outside == []
        context.close()


def test_dashboard_works_under_its_content_security_policy(browser, net: SyntheticNetwork) -> None:  # type: ignore[no-untyped-def]
    """Every page is served with the CSP (no inline script or style, no framing) and the other
    hardening headers, and Chromium enforcing it reports no violation while the pages, the
    funnel's tooltip and the keyboard path work."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => "
        "console.error('Content Security Policy violation: ' + e.violatedDirective));"
    )
    first = page.goto(f"{net.url}/dashboard/login")
    assert first is not None
    csp = first.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert first.headers["x-frame-options"] == "DENY"
    assert first.headers["x-content-type-options"] == "nosniff"
    assert first.headers["referrer-policy"] == "no-referrer"
    page.fill("#token", net.tokens["lead:North PCN"])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    for path in ("/dashboard/overview", "/dashboard/indicators/DM_HBA1C"):
        response = page.goto(f"{net.url}{path}")
        assert response is not None and response.status == 200
        assert response.headers["content-security-policy"] == csp
    drawn = page.locator("#funnel-figure svg g.pt").evaluate_all(
        "els => els.map(e => e.dataset.practice)"
    )
    free = _uncovered(page, drawn)  # marks can overlap; hover one that is on top
    assert free, "every mark is covered by another"
    page.locator(f'#funnel-figure svg g.pt[data-practice="{free[0]}"] .mk').hover()
    page.locator("#tip").wait_for(state="visible")  # the dashboard's script ran under the CSP
    assert violations == []
    # An inline script is refused: the policy is enforced, not only sent.
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.x = 1';"
        " document.body.appendChild(s); }"
    )
    page.wait_for_timeout(200)
    assert page.evaluate("() => window.x") is None
    assert violations, "Chromium reported no violation for an inline script"
    context.close()


DARK_ROWS = """async ([url, rows]) => {
  const img = new Image();
  await new Promise((ok, no) => { img.onload = ok; img.onerror = no; img.src = url; });
  const c = document.createElement("canvas");
  c.width = img.width; c.height = img.height;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const band = ctx.getImageData(0, 0, img.width, rows).data;
  let dark = 0;
  for (let i = 0; i < band.length; i += 4) if (band[i] < 100 && band[i + 1] < 100 && band[i + 2] < 100) dark++;
  return {width: img.width, height: img.height, dark: dark};
}"""


def test_an_exported_chart_says_what_it_shows(
    browser, net: SyntheticNetwork, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The PNG and SVG exports carry a caption line above the chart: the indicator, the period
    and the peers compared with, so a chart pasted on a slide still says what it is."""
    import base64

    context, page, _ = _page(browser, net, "admin")
    page.goto(f"{net.url}/dashboard/indicators/DM_HBA1C?pg=pcn%7CNorth%20PCN")
    button = page.locator('button.png[data-target="#funnel-figure svg"]')
    caption = button.get_attribute("data-caption")
    assert caption and "(DM_HBA1C)" in caption and caption.endswith("compared with North PCN")
    box = page.evaluate(
        "() => { const v = document.querySelector('#funnel-figure svg').viewBox.baseVal;"
        " return [v.width, v.height]; }"
    )
    with page.expect_download() as info:
        button.click()
    png = Path(info.value.path()).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    drawn = page.evaluate(DARK_ROWS, [url, 48])
    assert (drawn["width"], drawn["height"]) == (2 * box[0], 2 * (box[1] + 24))
    assert drawn["dark"] > 200, drawn  # the caption's letters, above the chart
    svg = httpx.get(
        f"{net.url}/dashboard/indicators/DM_HBA1C/funnel.svg",
        params={"pg": "pcn|North PCN"},
        cookies={c["name"]: c["value"] for c in context.cookies()},
    ).text
    assert f">{caption}</text>" in svg.replace("&amp;", "&")
    context.close()
