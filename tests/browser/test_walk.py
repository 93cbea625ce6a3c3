"""Every dashboard page, for every role, opened in real headless Chromium.

tests/benchmarks/test_dashboard_walk.py walks every route over HTTP (every indicator, period,
practice, link and peer-group option, on a network with the awkward cases planted: every value
suppressed, nobody counted, an indicator nobody sends, one sent late, a practice that skips a
period). This test takes the pages that walk found and opens each one in Chromium, as a person
would: each must answer as the walk expects (200, or 403 for another practice's page), run its
script without an error and break no rule of the Content-Security-Policy."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pytest
from synthetic_network import SyntheticNetwork
from test_dashboard_walk import ROLES, _network, _walk

pytestmark = pytest.mark.browser

# Not pages: files and data the pages link to (fetched and checked by the HTTP walk).
NOT_PAGES = (".csv", ".svg", ".png", ".md", ".json", ".css", ".js")


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyntheticNetwork]:
    tmp = tmp_path_factory.mktemp("browser-walk")
    with _network(tmp, f"sqlite:///{tmp / 'agg.db'}") as (n, _):
        yield n


def _is_page(url: str) -> bool:
    path = urllib.parse.urlsplit(url).path
    return not (
        path.endswith(NOT_PAGES)
        or path.startswith(
            ("/dashboard/static/", "/dashboard/ig/envelopes/", "/dashboard/ig/proof/")
        )
    )


@pytest.mark.parametrize("who", ROLES)
def test_every_page_opens_in_a_browser_for_every_role(browser, walked, who: str) -> None:  # type: ignore[no-untyped-def]
    walk = _walk(walked, who)
    assert walk.problems == []
    pages = sorted(u for u in walk.statuses if _is_page(u) and not u.startswith("/dashboard/login"))
    assert len(pages) > len(walked.catalogue.indicators)  # every indicator page at least

    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: script error {exc}"))
    page.on(
        "console",
        lambda msg: (
            errors.append(f"{page.url}: {msg.text}")
            if msg.type == "error" and "status of 403" not in msg.text
            else None
        ),
    )
    page.goto(f"{walked.url}/dashboard/login")
    page.fill("#token", walked.tokens[who])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    wrong: list[str] = []
    for url in pages:
        response = page.goto(f"{walked.url}{url}", wait_until="domcontentloaded")
        assert response is not None, url
        if response.status != walk.statuses[url]:
            wrong.append(f"{url}: {response.status} in the browser, {walk.statuses[url]} over HTTP")
        elif response.status == 200 and not page.locator("h1").count():
            wrong.append(f"{url}: no heading")
    context.close()
    assert wrong == [] and errors == [], (wrong, errors)
    print(f"{who}: {len(pages)} pages opened in Chromium")


def test_the_walk_covers_the_browser_only_routes(walked) -> None:  # type: ignore[no-untyped-def]
    """The pages opened above include every HTML route of the dashboard for the admin."""
    walk = _walk(walked, "admin")
    routes = {r for r in walk.routes_walked if _is_page(r.replace("{", "").replace("}", ""))}
    assert {"/dashboard/overview", "/dashboard/indicators/{indicator}", "/dashboard/practices/{ods}",
            "/dashboard/practices/{ods}/pack", "/dashboard/ig", "/dashboard/ig-pack",
            "/dashboard/access-audit"} <= routes  # fmt: skip
