"""The dashboard of the demo's own network (`fedqi-demo`: real agents, real CLIs, signed
submissions over HTTP), in real headless Chromium: what a new user of the demo sees."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.demo_process import serve_demo

pytestmark = pytest.mark.browser

BIN = Path(sys.executable).parent
#: A registered practice that never submits (added after the demo's own practices).
SILENT = "Y90099"


@dataclass
class Demo:
    url: str
    home: Path
    tokens: dict[str, str]  # role -> token
    periods: list[str]  # YYYY-MM, oldest first
    lead_group: str
    own: str  # the practice and IG users' practice


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """8 practices in 2 PCNs, 4 months, serving on a free loopback port; then a ninth practice
    registered in the lead's PCN that sends nothing."""
    home = tmp_path_factory.mktemp("demo-dash") / "demo-home"
    demo = serve_demo(
        ["--practices", "8", "--groups", "2", "--periods", "4", "--home", str(home)],
        timeout=600, poll=0.5, stdout=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    proc = demo.proc
    try:
        meta = json.loads((home / "demo.json").read_text())
        users = meta["users"]
        subprocess.run(
            [str(BIN / "fedqi-aggregator"), "practice", "add", SILENT, "--name", "Silent Surgery",
             "--group", users["network_lead"]["group"], "--list-size", "1500", "--imd-decile", "5",
             "--config", str(home / "aggregator" / "aggregator.toml")],
            check=True, capture_output=True,
        )  # fmt: skip
        added = subprocess.run(
            [str(BIN / "fedqi-aggregator"), "user", "add", "Silent user", "--role", "practice",
             "--practice", SILENT, "--json", "--config", str(home / "aggregator" / "aggregator.toml")],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        tokens = {role: u["token"] for role, u in users.items()}
        tokens["silent"] = json.loads(added.stdout)["token"]
        first, last = meta["first_period"], meta["last_period"]
        y, m = map(int, first.split("-"))
        periods = []
        while f"{y:04d}-{m:02d}" <= last:
            periods.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        yield Demo(
            url=demo.url,
            home=home,
            tokens=tokens,
            periods=periods,
            lead_group=users["network_lead"]["group"],
            own=users["practice"]["practice"],
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        demo.output.join(10)


def _signed_in(browser, demo: Demo, role: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(f"{demo.url}/dashboard/login")
    page.fill("#token", demo.tokens[role])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return context, page


def _pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", pdf))


@pytest.mark.parametrize("which", ["first", "last"])
def test_the_practice_pack_prints_on_one_a4_page(browser, demo: Demo, which: str) -> None:  # type: ignore[no-untyped-def]
    """The demo's pack, in its first month (nothing earlier to compare with) and its last."""
    period = demo.periods[0] if which == "first" else demo.periods[-1]
    context, page = _signed_in(browser, demo, "practice")
    r = page.goto(f"{demo.url}/dashboard/practices/{demo.own}/pack?period={period}")
    assert r is not None and r.status == 200
    # The change column is headed by the month three months before, or says it has no data.
    heads = page.locator("#spine thead th").all_inner_texts()
    assert not any("last quarter" in h for h in heads), heads
    y, m = (int(v) for v in period[:7].split("-"))
    then = f"{y - (m <= 3)}-{(m - 4) % 12 + 1:02d}"
    if which == "first":
        assert f"Change (no data for {then})" in heads, heads
    else:
        assert f"Since {then}" in heads, heads
    page.emulate_media(media="print")
    pdf = page.pdf(format="A4", print_background=True, prefer_css_page_size=True)
    assert _pdf_pages(pdf) == 1, f"the pack for {period} prints on {_pdf_pages(pdf)} pages"
    context.close()


def test_a_registered_practice_that_sent_nothing_is_listed_for_lead_and_admin(
    browser, demo: Demo
) -> None:  # type: ignore[no-untyped-def]
    last = demo.periods[-1]
    for role in ("network_lead", "admin"):
        context, page = _signed_in(browser, demo, role)
        r = page.goto(f"{demo.url}/dashboard/overview")
        assert r is not None and r.status == 200
        box = page.locator("#not-submitted")
        assert f"Not submitted for {last}: 1 practice" in box.inner_text()
        assert "Silent Surgery" in box.inner_text()
        assert box.locator(f'a[href^="/dashboard/practices/{SILENT}"]').count() == 1
        page.goto(f"{demo.url}/dashboard/indicators/HYP_BP_U80")
        note = page.locator("#not-submitted").inner_text()
        assert f"1 of the 9 registered practices in the network sent nothing for {last}" in note
        assert "Silent Surgery" in note
        context.close()


def test_a_practice_is_told_how_many_sent_nothing_but_not_who(browser, demo: Demo) -> None:  # type: ignore[no-untyped-def]
    context, page = _signed_in(browser, demo, "practice")
    page.goto(f"{demo.url}/dashboard/indicators/HYP_BP_U80")
    note = page.locator("#not-submitted").inner_text()
    assert "1 of the 9 registered practices in the network sent nothing" in note
    html = page.content()
    assert "Silent Surgery" not in html and SILENT not in html
    context.close()


def test_a_practice_that_sent_nothing_is_told_so_and_what_to_do(browser, demo: Demo) -> None:  # type: ignore[no-untyped-def]
    last = demo.periods[-1]
    context, page = _signed_in(browser, demo, "silent")
    assert page.url.endswith(f"/dashboard/practices/{SILENT}")
    text = page.locator("main").inner_text()
    assert f"Silent Surgery has not submitted for {last}" in text
    assert f"fedqi-agent submit --period {last}" in text
    assert "No indicator for this period." not in text
    r = page.goto(f"{demo.url}/dashboard/practices/{SILENT}/pack")
    assert r is not None and r.status == 200
    assert f"has not submitted for {last}" in page.locator("main").inner_text()
    # the CSV download still has its header row
    csv = page.request.get(f"{demo.url}/dashboard/practices/{SILENT}/summary.csv")
    assert csv.status == 200
    assert csv.text().splitlines() == [
        "practice,period_end,indicator,title,numerator,numerator_status,denominator,"
        "denominator_status,status,rate,ci95_low,ci95_high,band,pooled,abc,gap_to_abc,"
        "could_gain,register,area,note"
    ]
    context.close()


def test_error_pages_say_what_is_wrong_in_the_urls_own_terms(browser, demo: Demo) -> None:  # type: ignore[no-untyped-def]
    context, page = _signed_in(browser, demo, "admin")

    def shown(path: str) -> tuple[int, str]:
        r = page.goto(f"{demo.url}{path}")
        assert r is not None
        return r.status, page.locator("main").inner_text()

    status, text = shown("/dashboard/overview?period=2026-13")
    assert status == 400 and "'2026-13' is not a month (YYYY-MM)" in text
    # a period the network does not have: the known ones as the dashboard names them
    status, text = shown("/dashboard/overview?period=2001-01")
    assert status == 404 and f"known: {', '.join(demo.periods)}" in text
    status, text = shown("/dashboard/overview?pg=Nope")
    assert status == 400 and "pg='Nope'" in text and "peer=" not in text
    # a group the network does not have: named in neither the API's nor the dashboard's syntax
    status, text = shown("/dashboard/overview?pg=pcn|Nope")
    assert status == 404 and "the pcn peer group 'Nope': no such peer group" in text
    assert "peer=" not in text
    status, text = shown("/dashboard/practices/Z99999")
    assert status == 404 and "unknown practice" in text
    context.close()
    # a lead is told the same for a practice that does not exist as for one of another PCN
    context, page = _signed_in(browser, demo, "network_lead")
    assert shown("/dashboard/practices/Z99999")[0] == 403
    context.close()


def test_the_ig_officer_can_reach_the_practices_benchmark_pages(browser, demo: Demo) -> None:  # type: ignore[no-untyped-def]
    context, page = _signed_in(browser, demo, "ig_officer")
    nav = page.locator("header.top nav")
    for href in (f"/dashboard/practices/{demo.own}", f"/dashboard/practices/{demo.own}/pack"):
        link = nav.locator(f'a[href="{href}"]')
        assert link.count() == 1, href
        link.click()
        page.wait_for_load_state()
        assert page.url.endswith(href)
        assert page.locator("main .error").count() == 0
    context.close()


def test_a_peers_approximate_rate_says_how_it_was_worked_out(browser, demo: Demo) -> None:  # type: ignore[no-untyped-def]
    context, page = _signed_in(browser, demo, "network_lead")
    page.goto(f"{demo.url}/dashboard/indicators/DM_HBA1C?period={demo.periods[0]}")
    marks = page.locator('main table abbr:text-is("≈")')
    assert marks.count() > 0
    titles = set(marks.evaluate_all("els => els.map(e => e.title)"))
    assert titles == {
        "counts rounded to 5 for peers; the rate is from the exact counts, to whole points"
    }
    context.close()
