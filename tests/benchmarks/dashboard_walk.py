"""Walk every page of the dashboard as one signed-in user, over real HTTP.

Used by tests/benchmarks/test_dashboard_walk.py (a synthetic network with planted edge cases)
and tests/demo/test_demo.py (the demo's own network). A walk:

* fetches every GET route of the dashboard router, with every value its path parameters can take
  for this user (each catalogue indicator, each practice the user may read, with its view, CSV
  and practice pack, each static file,
  each envelope and proof listed on the user's payload audit page), each with no period and
  with each period the filter form offers;
* fetches every link (``href``, ``src``) any page it fetched offers, until there are no new ones,
  and, on the first page of each route that has the filter form, every peer-group option it
  offers (those pages' own links are not followed: they repeat the others with another group);
* expects 200 everywhere, except the pages named in ``forbidden`` (403); a redirect is followed
  and its target must answer 200;
* records which route each URL matched, so a test can require that every route was walked.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
from starlette.routing import Match, Route

from aggregator.web.dashboard import STATIC
from aggregator.web.dashboard import router as dashboard_router


def dashboard_get_routes() -> list[Route]:
    return [
        r
        for r in dashboard_router.routes
        if isinstance(r, Route) and r.methods is not None and "GET" in r.methods
    ]


_LINK = re.compile(r'\b(?:href|src)="([^"]*)"')
_SELECT = re.compile(r'<select\b[^>]*\bname="([^"]+)"[^>]*>(.*?)</select>', re.S)
_OPTION = re.compile(r'<option\b[^>]*\bvalue="([^"]*)"')


class _Links:
    """The links and the select options of a page (the dashboard's HTML is its own, regular
    output: a regular expression is enough, and far cheaper than an HTML parser)."""

    def __init__(self, text: str) -> None:
        self.links = [html.unescape(v) for v in _LINK.findall(text)]
        self.options = {
            name: [html.unescape(v) for v in _OPTION.findall(body)]
            for name, body in _SELECT.findall(text)
        }


DEFAULTS = {("pg", "network|network")}


def canonical(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = sorted(set(urllib.parse.parse_qsl(parts.query)) - DEFAULTS)
    return parts.path + (f"?{urllib.parse.urlencode(query)}" if query else "")


@dataclass
class Walk:
    base_url: str
    token: str
    indicators: Iterable[str]
    readable: Iterable[str]  # practices this user may read
    forbidden: set[str] = field(default_factory=set)  # paths (with query) that must answer 403
    statuses: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    routes_walked: set[str] = field(default_factory=set)
    periods: list[str] = field(default_factory=list)
    _client: httpx.Client | None = None

    # --- HTTP ---------------------------------------------------------------------------------

    def _sign_in(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base_url, timeout=120)
        r = client.post("/dashboard/login", data={"token": self.token, "next": "/dashboard"})
        if r.status_code != 303:
            raise AssertionError(f"sign-in answered {r.status_code}: {r.text[:300]}")
        return client

    def get(self, url: str) -> httpx.Response | None:
        """GET ``url`` (a path under /dashboard), following one redirect; record the outcome.
        A URL already fetched, up to the order of its query and the default peer group, is
        not fetched again."""
        url = canonical(url)
        if url in self.statuses:
            return None
        if self._client is None:
            self._client = self._sign_in()
        try:
            r = self._client.get(url)
            if r.status_code in (302, 303, 307):
                target = r.headers["location"]
                if not target.startswith("/dashboard"):
                    self.problems.append(f"{url}: redirected outside the dashboard, to {target}")
                r = self._client.get(target)
        except httpx.TransportError as exc:
            # a 5xx can close the connection under a request already on its way: start again
            self._client.close()
            self._client = None
            self.statuses[url] = -1
            self.problems.append(f"{url}: {type(exc).__name__} {exc}")
            return None
        self.statuses[url] = r.status_code
        self._record_route(url)
        want = 403 if url in {canonical(f) for f in self.forbidden} else 200
        if r.status_code != want:
            detail = re.sub(r"\s+", " ", r.text)
            m = re.search(r'role="alert">(.*?)</p>', detail)
            self.problems.append(
                f"{url}: {r.status_code}, expected {want}: {(m.group(1) if m else detail)[:300]}"
            )
        if r.status_code >= 500 and self._client is not None:
            self._client.close()
            self._client = None
        return r

    @staticmethod
    def _route_of(path: str) -> str | None:
        scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
        for route in dashboard_get_routes():
            if route.matches(scope)[0] == Match.FULL:
                return route.path
        return None

    def _record_route(self, url: str) -> None:
        route = self._route_of(urllib.parse.urlsplit(url).path)
        if route is None:
            self.problems.append(f"{url}: matched no dashboard route")
        else:
            self.routes_walked.add(route)

    # --- the walk -------------------------------------------------------------------------------

    def run(self) -> Walk:
        self.get("/dashboard")
        # the periods: the overview's filter form (every role may see the overview)
        overview = self.get("/dashboard/overview")
        assert overview is not None and overview.status_code == 200, self.problems
        self.periods = list(_Links(overview.text).options.get("period", []))
        # every period the filter form offers, as the form sends it (the period's end date)
        with_periods = [None, *self.periods]

        def q(path: str, period: str | None) -> str:
            return (
                path if period is None else f"{path}?{urllib.parse.urlencode({'period': period})}"
            )

        seeds: list[str] = ["/dashboard/login", *(f"/dashboard/static/{n}" for n in STATIC)]
        for period in with_periods:
            seeds += [q("/dashboard/overview", period), q("/dashboard/overview.csv", period)]
            for ind in self.indicators:
                base = f"/dashboard/indicators/{ind}"
                seeds += [q(base + tail, period) for tail in ("", "/funnel.svg", "/trend.svg", "/funnel.csv", "/trend.csv")]  # fmt: skip
            for ods in self.readable:
                seeds += [q(f"/dashboard/practices/{ods}{tail}", period) for tail in ("", "/summary.csv", "/pack")]  # fmt: skip
        seeds += ["/dashboard/ig", *sorted(self.forbidden)]
        # information governance: the IG pack (its pages link each other, the diagram, the
        # stylesheet and each page's Markdown) and the access audit, for every role
        seeds += ["/dashboard/ig-pack", "/dashboard/access-audit", "/dashboard/access-audit.csv"]
        queue = [(url, True) for url in seeds]
        pg_walked: set[str | None] = set()
        while queue:
            url, follow = queue.pop(0)
            r = self.get(url)
            if r is None or r.status_code != 200 or not follow:
                continue
            if not r.headers.get("content-type", "").startswith("text/html"):
                continue
            links = _Links(r.text)
            for link in links.links:
                if link.startswith("#"):
                    continue
                absolute = urllib.parse.urljoin(url, link)
                if absolute.startswith(("http://", "https://")) or not absolute.startswith(
                    "/dashboard"
                ):
                    self.problems.append(f"{url} links outside the dashboard: {link}")
                    continue
                if canonical(absolute) not in self.statuses:
                    queue.append((absolute, True))
            # the filter form: every peer group it offers, on the first page of each route
            # that has the form (each period is seeded above)
            path = urllib.parse.urlsplit(url).path
            route = self._route_of(path)
            if links.options.get("pg") and route not in pg_walked:
                pg_walked.add(route)
                for pg in links.options["pg"]:
                    # a leaf: its links are the ones above with another peer group
                    queue.append((f"{path}?{urllib.parse.urlencode({'pg': pg})}", False))
        if self._client is not None:
            self._sign_out()
        return self

    def _sign_out(self) -> None:
        assert self._client is not None
        r = self._client.post("/dashboard/logout")
        if r.status_code != 303:
            self.problems.append(f"POST /dashboard/logout: {r.status_code}")
        r = self._client.get("/dashboard/overview")
        if r.status_code != 303 or not r.headers["location"].startswith("/dashboard/login"):
            self.problems.append(f"after sign-out /dashboard/overview answered {r.status_code}")
        self._client.close()
        self._client = None
