"""The IG pack and the access-audit pages in real headless Chromium, under the dashboard's
Content-Security-Policy, against a real server whose data arrived as signed submissions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from synthetic_network import INDICATORS, SyntheticNetwork, practices

pytestmark = pytest.mark.browser

DOCS = ("IG pack", "Data items that leave a practice", "Data flow", "DPIA annex", "Record of processing")  # fmt: skip


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticNetwork]:
    tmp = tmp_path_factory.mktemp("browser-gov")
    n = SyntheticNetwork(tmp, f"sqlite:///{tmp / 'agg.db'}", practices(4))
    n.setup()
    n.start()
    with httpx.Client(base_url=n.url, timeout=60) as client:
        n.enrol_all(client)
        n.populate(client, indicators=INDICATORS[:1])
    yield n
    n.stop()


def _signed_in(browser, net: SyntheticNetwork, who: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)  # fmt: skip
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => "
        "console.error('Content Security Policy violation: ' + e.violatedDirective));"
    )
    page.goto(f"{net.url}/dashboard/login")
    page.fill("#token", net.tokens[who])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return context, page, violations


@pytest.mark.parametrize("who", ["ig", "lead"])
def test_the_ig_pack_renders_from_the_dashboard_link(
    browser, net: SyntheticNetwork, artifacts: Path, who: str
) -> None:  # type: ignore[no-untyped-def]
    token = f"ig:{net.specs[0].ods}" if who == "ig" else f"lead:{net.specs[0].pcn}"
    context, page, violations = _signed_in(browser, net, token)
    page.click("nav >> text=IG pack")
    page.wait_for_load_state()
    assert page.url.endswith("/dashboard/ig-pack/index.html")
    sha = net.catalogue.sha256()
    assert page.locator(f".made-from[data-catalogue-sha256='{sha}']").is_visible()
    assert sha in page.locator(".made-from").inner_text()
    for title in DOCS:
        page.click(f".pack-head nav >> text={title}")
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == title
        assert sha in page.locator(".made-from").inner_text(), title
        # the pack's stylesheet applied (served under the CSP, no inline style)
        assert (
            page.evaluate(
                "() => getComputedStyle(document.querySelector('.pack-head')).borderBottomStyle"
            )
            == "solid"
        )
    page.click(".pack-head nav >> text=Data flow")
    svg = page.locator("figure.flow svg")
    box = svg.bounding_box()
    assert box is not None and box["width"] > 400 and box["height"] > 150
    for label in ("Practice system", "Agent", "Outbox", "Aggregator", "Transparency log"):
        assert svg.locator("text", has_text=label).first.is_visible(), label
    page.screenshot(path=str(artifacts / f"ig-pack-flow-{who}.png"), full_page=True)
    page.click(".pack-head nav >> text=Data items that leave a practice")
    rows = page.locator("table.items tbody tr")
    assert rows.count() > 30
    assert page.locator("table.items code", has_text="cells[].numerator").first.is_visible()
    # printable: the pack's own navigation is hidden in print
    page.emulate_media(media="print")
    assert not page.locator(".pack-head nav").is_visible()
    assert page.locator(".made-from").is_visible()
    assert violations == []
    context.close()


def test_the_access_audit_page_filters_and_exports(
    browser, net: SyntheticNetwork, artifacts: Path
) -> None:  # type: ignore[no-untyped-def]
    me, peer = net.specs[0], net.specs[1]
    context, page, violations = _signed_in(browser, net, f"ig:{me.ods}")
    # read one of our envelopes (granted), and have a peer's IG officer try it (refused)
    href = page.locator("table tbody tr a", has_text="envelope").first.get_attribute("href")
    assert href is not None
    assert context.request.get(net.url + href).status == 200
    sha = href.rsplit("/", 1)[1]
    r = httpx.get(f"{net.url}/v1/envelopes/{sha}", headers={"authorization": f"Bearer {net.tokens['ig:' + peer.ods]}"})  # fmt: skip
    assert r.status_code == 403
    page.click("nav >> text=Access audit")
    page.wait_for_load_state()
    assert page.url.endswith("/dashboard/access-audit")
    rows = page.locator("table.access-audit tbody tr")
    assert rows.count() == 2
    assert page.locator("td.ok", has_text="granted").count() == 1
    assert page.locator("td.bad", has_text="refused").count() == 1
    page.select_option("select[name=granted]", "no")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert "granted=no" in page.url
    assert rows.count() == 1 and "refused" in rows.first.inner_text()
    page.screenshot(path=str(artifacts / "access-audit.png"), full_page=True)
    with page.expect_download() as download:
        page.click("text=Download CSV")
    text = Path(download.value.path()).read_text()
    lines = text.strip().splitlines()
    assert lines[0] == "at,user_id,user,role,practice,envelope_sha256,granted"
    assert len(lines) == 2 and lines[1].endswith(f"{me.ods},{sha},no")
    assert violations == []
    context.close()
