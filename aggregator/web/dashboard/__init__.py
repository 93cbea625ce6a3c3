"""The dashboard: server-rendered HTML (jinja2), every asset served from this package.

Sign-in is by API token: the form checks it and starts a server-side session (``sessions``
table); the HttpOnly, SameSite=Strict cookie holds only the session's random id, never the
token. Sign-out deletes the session. Pages:
network lead overview (practices x indicators by funnel band), a funnel plot and trend per
indicator, a practice drill-down (most patients who could gain first, registers apart), a
printable practice pack for the improvement meeting, and for an IG
officer the payloads their practice sent, each re-verified, with its raw envelope and proof.
Tables carry everything the charts show, so the dashboard works without JavaScript; the one
script only adds a tooltip and PNG export.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy import func, select

from ...benchmarks import areas, gain, pack, service
from ...benchmarks.api import ODS, check_indicator, csv_response
from ...benchmarks.csv_rows import COLUMNS as CSV_COLUMNS
from ...benchmarks.csv_rows import (
    funnel_csv_rows,
    overview_csv_rows,
    practice_csv_rows,
    trend_csv_rows,
)
from ...benchmarks.figures import rounded
from ...benchmarks.funnel import empty_funnel_view, funnel_view
from ...benchmarks.listing import catalogue_listing, period_of
from ...benchmarks.overview import overview_view
from ...benchmarks.practice import gain_order, practice_view
from ...benchmarks.render import SMALL_NUMBERS
from ...benchmarks.silent import not_submitted
from ...benchmarks.stats import PEER_DIMENSIONS
from ...benchmarks.trend import empty_trend_view, trend_view
from ...benchmarks.viewer import Viewer
from ...db.models import PracticeKey, User
from ...db.models import Submission as SubmissionRow
from ...errors import (
    AggregatorError,
    AuthenticationError,
    BadRequestError,
    ForbiddenError,
    NotFoundError,
)
from ...log import service as log
from ...log.endpoints import MAX_INDEX
from ...log.verify import verify_submissions
from ...runtime import Runtime, get_runtime
from ...submissions.service import read_envelope
from ...users.service import (
    REVOKED_TOKEN,
    ROLE_NOUNS,
    authenticate,
    end_session,
    session_user,
    start_session,
)
from . import charts

COOKIE = "fedqi_session"
#: The only texts the sign-in page shows, chosen by ``?error=<code>``: never text from the URL,
#: which anyone could write into a link ("your token expired: send it to ..."). An unknown code
#: shows nothing.
LOGIN_ERRORS = {
    "invalid": "That token is not valid.",
    "revoked": "That token was revoked: ask an administrator for a new one.",
    "expired": "Your session has ended (it expired, you signed out elsewhere, or your token was "
    "revoked): sign in again.",
}
#: The 404s that mean "nothing stored for this indicator (and period)", not "no such thing".
NO_DATA_CODES = frozenset({"no-benchmarks", "unknown-period"})
STATIC = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)
_env = Environment(
    loader=PackageLoader("aggregator.web.dashboard", "templates"),
    autoescape=select_autoescape(["html"]),
)
_env.filters["pct"] = charts.pct
_env.filters["pts"] = charts.pts
_env.filters["ci"] = charts.ci
_env.globals["BANDS"] = charts.BAND_STYLE


def viewer_user(request: Request, runtime: Runtime = Depends(get_runtime)) -> User | None:
    sid = request.cookies.get(COOKIE)
    if not sid:
        return None
    try:
        with runtime.db.read() as session:
            user = session_user(session, sid, runtime.now())
            session.expunge(user)
        return user
    except AuthenticationError:
        request.state.login_error = "expired"  # a cookie whose session no longer holds
        return None


def _to_login(request: Request) -> RedirectResponse:
    """Send a signed-out visitor to sign in, back to this page after; with ``error=expired``
    when their session cookie no longer holds (the sign-in page shows LOGIN_ERRORS only)."""
    query = {"next": str(request.url.path)}
    code = getattr(request.state, "login_error", None)
    if code is not None:
        query["error"] = code
    return RedirectResponse(f"/dashboard/login?{urllib.parse.urlencode(query)}", status_code=303)


def render(name: str, code: int = 200, **ctx: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**ctx), status_code=code)


def _page(
    request: Request, runtime: Runtime, user: User | None, build: Any, template: str, **kw: Any
) -> Response:
    """Render a page; send an anonymous visitor to sign in and show errors as pages."""
    if user is None:
        return _to_login(request)
    try:
        ctx = build(user, **kw)
    except AggregatorError as exc:
        return render(
            "error.html", exc.status_code, user=user, message=exc.message, status=exc.status_code
        )
    return render(template, user=user, request=request, **ctx)


def _read(
    runtime: Runtime, user: User, fn: Any, *args: Any, indicator: str | None = None, **kw: Any
) -> Any:
    service.refresh_for_read(runtime.db, indicator)
    with runtime.db.read() as session:
        viewer = Viewer.load(session, user, runtime.pseudonym_secret, runtime.peer_bands)
        return fn(session, viewer, *args, **kw)


def _filters(runtime: Runtime, user: User, period: str | None, pg: str | None) -> dict[str, Any]:
    listing = _read(runtime, user, catalogue_listing)
    peer, group = _split_pg(pg)
    return {
        "listing": listing,
        "period": period,
        "pg": pg or "network|network",
        "peer": peer,
        "group": group,
    }


def _split_pg(pg: str | None) -> tuple[str | None, str | None]:
    if not pg:
        return None, None
    peer, _, group = pg.partition("|")
    if peer not in PEER_DIMENSIONS:
        # the dashboard's URLs say pg=<dimension>|<group>: name that, not the API's peer=
        raise BadRequestError(
            f"pg={pg!r}: peers are one of {', '.join(PEER_DIMENSIONS)}, as pg=<peers>|<group> "
            "(pg=network for the whole network)",
            code="bad-peer",
        )
    return peer or None, (group if group and peer != "network" else None)


# --- sign in / out ------------------------------------------------------------------------------------


#: What the sign-in page says after a sign-out (``?done=signed-out``).
LOGIN_NOTICES = {"signed-out": "You have signed out."}


@router.get("/login", response_class=HTMLResponse)
def login_form(
    next: str = "/dashboard",
    error: str | None = None,
    done: str | None = None,
    user: User | None = Depends(viewer_user),
) -> HTMLResponse:
    """The sign-in form; to a viewer already signed in it says as whom (signing in again with
    another token replaces that session) and no error code of the link (a session that holds
    has neither ended nor been refused), and after a sign-out that it is done."""
    return render(
        "login.html",
        user=None,
        signed_in=user,
        next=_safe_next(next),
        error=None if user is not None else LOGIN_ERRORS.get(error or ""),
        notice=None if user is not None else LOGIN_NOTICES.get(done or ""),
    )


def _safe_next(target: str) -> str:
    # Only paths inside the dashboard: never an open redirect.
    return (
        target
        if target.startswith("/dashboard") and "//" not in target and "\\" not in target
        else "/dashboard"
    )


@router.post("/login")
async def login(request: Request, runtime: Runtime = Depends(get_runtime),
                user: User | None = Depends(viewer_user)) -> Response:  # fmt: skip
    form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/dashboard"])[0])

    def sign_in() -> str:
        now = runtime.now()
        with runtime.db.session() as session:
            user = authenticate(session, token, now)
            return start_session(session, user, now, runtime.settings.session_hours)

    try:
        sid = await run_in_threadpool(sign_in)
    except AuthenticationError as exc:
        # a revoked token is one the server knows: said so; any other is only "not valid".
        # A session that still holds is said too (the refused token did not replace it).
        code = "revoked" if str(exc) == REVOKED_TOKEN else "invalid"
        return render("login.html", 401, user=None, signed_in=user, next=target,
                      error=LOGIN_ERRORS[code])  # fmt: skip
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(
        COOKIE,
        sid,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/dashboard",
    )
    return resp


@router.post("/logout")
def logout(request: Request, runtime: Runtime = Depends(get_runtime)) -> Response:
    sid = request.cookies.get(COOKIE)
    if sid:
        with runtime.db.session() as session:
            end_session(session, sid)
    resp = RedirectResponse("/dashboard/login?done=signed-out", status_code=303)
    resp.delete_cookie(COOKIE, path="/dashboard")
    return resp


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        return Response("not found", status_code=404)
    body = resources.files("aggregator.web.dashboard").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})


@router.get("")
def home(request: Request, user: User | None = Depends(viewer_user)) -> Response:
    if user is None:
        return _to_login(request)
    if user.role == "practice":
        return RedirectResponse(f"/dashboard/practices/{user.practice_ods}", status_code=303)
    if user.role == "ig_officer":
        return RedirectResponse("/dashboard/ig", status_code=303)
    return RedirectResponse("/dashboard/overview", status_code=303)


# --- network lead overview --------------------------------------------------------------------------


@router.get("/overview")
async def overview(request: Request, period: str | None = None, pg: str | None = None,
                   user: User | None = Depends(viewer_user), runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    def build(u: User) -> dict[str, Any]:
        f = _filters(runtime, u, period, pg)
        view = _read(runtime, u, overview_view, period, f["peer"], f["group"])
        return {"view": view, **f}

    return await run_in_threadpool(_page, request, runtime, user, build, "overview.html")


@router.get("/overview.csv")
async def overview_csv(request: Request, period: str | None = None, pg: str | None = None,
                       user: User | None = Depends(viewer_user), runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    def make(u: User) -> Response:
        peer, group = _split_pg(pg)
        view = _read(runtime, u, overview_view, period, peer, group)
        return csv_response(
            overview_csv_rows(view),
            f"overview-{view['period']['end']}.csv",
            CSV_COLUMNS[overview_csv_rows],
        )

    return await run_in_threadpool(_download, request, user, make)


# --- one indicator --------------------------------------------------------------------------------


def _indicator_ctx(
    runtime: Runtime,
    u: User,
    indicator: str,
    period: str | None,
    pg: str | None,
    practice: str | None,
) -> dict[str, Any]:
    check_indicator(indicator)
    f = _filters(runtime, u, period, pg)
    try:
        view = _read(
            runtime,
            u,
            funnel_view,
            indicator,
            period,
            f["peer"],
            f["group"],
            None,
            True,
            indicator=indicator,
        )
    except NotFoundError as exc:
        # A catalogue indicator no practice sent for a period the network has is a page that
        # says so (empty_funnel_view raises 404 itself for an unknown indicator or period).
        if exc.code not in NO_DATA_CODES:
            raise
        view = _read(runtime, u, empty_funnel_view, indicator, period, f["peer"], f["group"])
    anchor = practice or (u.practice_ods if u.role in ("practice", "ig_officer") else None)
    try:
        trend = _read(
            runtime,
            u,
            trend_view,
            indicator,
            anchor,
            f["peer"],
            f["group"],
            indicator=indicator,
        )
    except NotFoundError as exc:
        if exc.code not in NO_DATA_CODES:
            raise
        trend = _read(runtime, u, empty_trend_view, indicator, anchor, f["peer"], f["group"])
    silent = _read(runtime, u, not_submitted, view["period"]["end"], f["peer"], f["group"])
    return {"view": view, "trend": trend, "not_submitted": silent, **f}


def _trend_chart(ctx: dict[str, Any]) -> str:
    """The indicator page's trend chart (the page and its SVG download draw the same)."""
    t = ctx["trend"]
    return charts.trend_svg(t["network"], practice=t.get("practice_series"), breaks=[b["label"] for b in t["breaks"]],
                            title=f"{ctx['view']['title']}: trend", practice_label=(t.get("practice") or {}).get("name", "Practice"),
                            group_label=charts.group_label(t.get("peer_group")),
                            pooled_digits=0 if t.get("whole_points") else 1,
                            benchmark=not areas.is_register(t["indicator"]))  # fmt: skip


def _captions(ctx: dict[str, Any]) -> dict[str, str]:
    """The line above each exported chart (the SVG downloads and the PNG buttons)."""
    v = ctx["view"]
    return {
        "funnel": charts.caption(v, "funnel plot", v.get("peer_group")),
        "trend": charts.caption(v, "trend", ctx["trend"].get("peer_group")),
    }


def _checked_practice(practice: str | None) -> str | None:
    if practice is not None and not ODS.fullmatch(practice):
        raise BadRequestError(f"practice {practice!r} is not an ODS code")
    return practice


@router.get("/indicators/{indicator}")
async def indicator_page(request: Request, indicator: str, period: str | None = None, pg: str | None = None,
                         practice: str | None = None, user: User | None = Depends(viewer_user),
                         runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    def build(u: User) -> dict[str, Any]:
        ctx = _indicator_ctx(runtime, u, indicator, period, pg, _checked_practice(practice))
        ctx["funnel_svg"] = Markup(charts.funnel_svg(ctx["view"]))
        ctx["trend_svg"] = Markup(_trend_chart(ctx))
        ctx["captions"] = _captions(ctx)
        ctx["register"] = areas.is_register(indicator)
        ctx["season"] = areas.season_text(indicator)  # why a period out of season shows nothing
        ctx["gap"] = areas.gap_text(indicator)  # the trend's months with no point, and why
        # peers whose small counts the peer rule withholds from this viewer: pooled, not shown
        ctx["small_numbers"] = SMALL_NUMBERS
        ctx["pooled_unshown"] = sum(
            1 for p in ctx["view"]["practices"] if p.get("note") == SMALL_NUMBERS
        )
        ctx["query"] = urllib.parse.urlencode(
            {k: v for k, v in (("period", period), ("pg", pg)) if v}
        )
        ctx["trend_query"] = urllib.parse.urlencode(
            {k: v for k, v in (("period", period), ("pg", pg), ("practice", practice)) if v}
        )
        return ctx

    return await run_in_threadpool(_page, request, runtime, user, build, "indicator.html")


@router.get("/indicators/{indicator}/funnel.svg")
async def funnel_download(request: Request, indicator: str, period: str | None = None, pg: str | None = None,
                          user: User | None = Depends(viewer_user), runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    def make(u: User) -> Response:
        ctx = _indicator_ctx(runtime, u, indicator, period, pg, None)
        v = ctx["view"]
        return Response(charts.standalone(charts.funnel_svg(v), _captions(ctx)["funnel"]), media_type="image/svg+xml",
                        headers={"Content-Disposition": f'attachment; filename="{indicator}-{v["period"]["end"]}-funnel.svg"'})  # fmt: skip

    return await run_in_threadpool(_download, request, user, make)


@router.get("/indicators/{indicator}/trend.svg")
async def trend_download(request: Request, indicator: str, period: str | None = None, pg: str | None = None,
                         practice: str | None = None, user: User | None = Depends(viewer_user),
                         runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    def make(u: User) -> Response:
        ctx = _indicator_ctx(runtime, u, indicator, period, pg, _checked_practice(practice))
        return Response(charts.standalone(_trend_chart(ctx), _captions(ctx)["trend"], areas.gap_text(indicator)),
                        media_type="image/svg+xml",
                        headers={"Content-Disposition": f'attachment; filename="{indicator}-trend.svg"'})  # fmt: skip

    return await run_in_threadpool(_download, request, user, make)


@router.get("/indicators/{indicator}/funnel.csv")
async def funnel_csv(request: Request, indicator: str, period: str | None = None, pg: str | None = None,
                     user: User | None = Depends(viewer_user), runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    def make(u: User) -> Response:
        ctx = _indicator_ctx(runtime, u, indicator, period, pg, None)
        return csv_response(
            funnel_csv_rows(ctx["view"]),
            f"{indicator}-{ctx['view']['period']['end']}.csv",
            CSV_COLUMNS[funnel_csv_rows],
        )

    return await run_in_threadpool(_download, request, user, make)


@router.get("/indicators/{indicator}/trend.csv")
async def trend_csv(request: Request, indicator: str, period: str | None = None, pg: str | None = None,
                    practice: str | None = None, user: User | None = Depends(viewer_user),
                    runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    def make(u: User) -> Response:
        ctx = _indicator_ctx(runtime, u, indicator, period, pg, _checked_practice(practice))
        return csv_response(
            trend_csv_rows(ctx["trend"]), f"{indicator}-trend.csv", CSV_COLUMNS[trend_csv_rows]
        )

    return await run_in_threadpool(_download, request, user, make)


# --- one practice ----------------------------------------------------------------------------------


@router.get("/practices/{ods}")
async def practice_page(request: Request, ods: str, period: str | None = None, pg: str | None = None,
                        user: User | None = Depends(viewer_user), runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    def build(u: User) -> dict[str, Any]:
        if not ODS.fullmatch(ods):
            raise BadRequestError(f"practice {ods!r} is not an ODS code")
        f = _filters(runtime, u, period, pg)
        view = _read(runtime, u, practice_view, ods, period)
        funnels = []
        for item in view["indicators"]:
            args = (item["indicator"], view["period"]["end"], f["peer"], f["group"])
            try:
                fv = _read(runtime, u, funnel_view, *args)
            except NotFoundError as exc:
                if exc.code not in NO_DATA_CODES:  # an indicator sent in other periods only
                    raise
                fv = _read(runtime, u, empty_funnel_view, *args)
            for p in fv["practices"]:
                p["self"] = p["id"] == ods  # mark the practice in view, whoever is looking
            if fv["peer_group"]["dimension"] != "network":
                _compare_with_group(item, fv, ods)
            funnels.append(Markup(charts.funnel_svg(fv, width=360, height=230, compact=True)))
        for item, svg in zip(view["indicators"], funnels, strict=True):
            item["funnel_svg"] = svg
            item["spark"] = Markup(
                charts.sparkline_svg(
                    [t["rate"] for t in item.get("trend", [])],
                    label=f"{item['indicator']} trend",
                    upto=view["period"]["label"],
                )
            )
        group = None
        if funnels and f["peer"] not in (None, "network") and f["group"]:
            group = f["group"]
            view["indicators"].sort(key=gain_order)  # by the gains against the group
        return {"view": view, "formula": gain.FORMULA, "group_name": group, **f}

    return await run_in_threadpool(_page, request, runtime, user, build, "practice.html")


def _compare_with_group(item: dict[str, Any], fv: dict[str, Any], ods: str) -> None:
    """A practice page row against the chosen peer group rather than the network: the group's
    pooled rate and benchmark, the practice's band in the group's funnel, and the patients who
    could gain and the gap worked out from the group's benchmark."""
    s = fv["summary"]
    item["pooled"] = s["pooled"]
    item["whole_points"] = s["whole_points"]
    if not item.get("register"):
        item["abc"] = s["abc"]
        rate = item.get("rate")
        item["gap_to_abc"] = (
            rounded(s["abc"] - rate) if s["abc"] is not None and rate is not None else None
        )
        item["could_gain"] = gain.patients_could_gain(
            item.get("numerator"), item.get("denominator"), s["abc"]
        )
    own = next((p for p in fv["practices"] if p["id"] == ods), None)
    if own is not None:
        # with the group's pool withheld its band is too (entries.unjudged), and says why
        item.update(band=own.get("band"), band_text=own.get("band_text"))
        if own.get("band") is None and own.get("note"):
            item["note"] = own["note"]


@router.get("/practices/{ods}/pack")
async def practice_pack_page(request: Request, ods: str, period: str | None = None,
                             user: User | None = Depends(viewer_user), runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    """The practice pack: one printable page for the improvement meeting (pack.py)."""

    def build(u: User) -> dict[str, Any]:
        if not ODS.fullmatch(ods):
            raise BadRequestError(f"practice {ods!r} is not an ODS code")
        f = _filters(runtime, u, period, None)
        p = _read(runtime, u, pack.practice_pack, ods, period)
        for item in p["measures"] + p["registers"]:
            item["spine_svg"] = Markup(
                charts.spine_svg(item["spine"], label=_spine_label(item, p["practice"]["name"]))
            )
            item["spark"] = Markup(
                charts.sparkline_svg(
                    [t["rate"] for t in item["trend"]],
                    label=f"{item['indicator']} trend",
                    upto=p["period"]["label"],
                )
            )
        return {"pack": p, **f}

    return await run_in_threadpool(_page, request, runtime, user, build, "pack.html")


def _spine_label(item: dict[str, Any], name: str) -> str:
    s = item["spine"]
    # the network's figures as the viewer gets them: to whole points where they are sent so
    nd = 0 if item.get("whole_points") else 1
    parts = [f"{item['title']}: {name} {charts.pct(s['rate'])}"]
    parts.append(f"network {charts.pct(s['pooled'], nd)}")
    if s["q1"] is not None:
        parts.append(
            f"middle half of practices {charts.pct(s['q1'], nd)} to {charts.pct(s['q3'], nd)}"
        )
    if s["p10"] is not None:
        parts.append(
            f"10th to 90th percentile {charts.pct(s['p10'], nd)} to {charts.pct(s['p90'], nd)}"
        )
    if s["abc"] is not None:
        parts.append(f"benchmark {charts.pct(s['abc'], nd)}")
    return "; ".join(parts)


@router.get("/practices/{ods}/summary.csv")
async def practice_csv(request: Request, ods: str, period: str | None = None, user: User | None = Depends(viewer_user),
                       runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    def make(u: User) -> Response:
        view = _read(runtime, u, practice_view, _checked_practice(ods), period, False)
        return csv_response(
            practice_csv_rows(view),
            f"{ods}-{view['period']['end']}.csv",
            CSV_COLUMNS[practice_csv_rows],
        )

    return await run_in_threadpool(_download, request, user, make)


# --- IG officer: what our practice sent ---------------------------------------------------------------


#: Submissions per page of the payload audit (each is re-verified when the page is shown).
IG_PAGE = 200


def _ig_ctx(runtime: Runtime, u: User, page: str | None = None) -> dict[str, Any]:
    if u.role not in ("ig_officer", "admin", "practice"):
        raise ForbiddenError(
            "role: the payload audit is for IG officers and the practice; you are "
            f"{ROLE_NOUNS.get(u.role, u.role)}"
        )
    if page is not None and not (page.isdigit() and int(page) >= 1):
        raise BadRequestError(f"page {page!r}: a page number from 1")
    ods = u.practice_ods
    with runtime.db.read() as session:
        base = select(SubmissionRow)
        if ods is not None:
            base = base.where(SubmissionRow.practice_ods == ods)
        total = int(session.scalar(select(func.count()).select_from(base.subquery())) or 0)
        pages = max(1, -(-total // IG_PAGE))
        number = min(int(page or 1), pages)  # past the last page: the last page
        q = (
            base.order_by(SubmissionRow.leaf_index.desc())
            .limit(IG_PAGE)
            .offset((number - 1) * IG_PAGE)
        )
        subs = list(session.scalars(q))
        checkpoint = log.latest_checkpoint(session)
        rows = []
        signer = runtime.signer
        found = verify_submissions(session, subs, checkpoint, signer.key_name, signer.key.public)
        for sub, checks in zip(subs, found, strict=True):
            key = session.get(PracticeKey, sub.kid)  # held in the session by verify_submissions
            since = key.compromised_since if key is not None else None
            rows.append({"sub": sub, "checks": checks, "verified": all(c.ok for c in checks),
                         "period": period_of(sub.period_start, sub.period_end),
                         "suspect_since": since if service.suspect(sub.received_at, since) else None})  # fmt: skip
        size = checkpoint.size if checkpoint is not None else None
    first = (number - 1) * IG_PAGE + 1
    return {
        "rows": rows,
        "practice": ods,
        "total": total,
        "page": number,
        "pages": pages,
        "first": first if rows else 0,
        "last": first + len(rows) - 1 if rows else 0,
        "tree_size": size,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


@router.get("/ig")
async def ig_page(
    request: Request,
    page: str | None = None,
    user: User | None = Depends(viewer_user),
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    return await run_in_threadpool(
        _page, request, runtime, user, lambda u: _ig_ctx(runtime, u, page), "ig.html"
    )


def _download(request: Request, user: User | None, make: Any) -> Response:
    """A dashboard download: a signed-out visitor is sent to sign in, and a refusal or an
    unknown item is the dashboard's error page, as for its other pages."""
    if user is None:
        return _to_login(request)
    try:
        return make(user)  # type: ignore[no-any-return]
    except AggregatorError as exc:
        return render(
            "error.html", exc.status_code, user=user, message=exc.message, status=exc.status_code
        )


@router.get("/ig/envelopes/{sha256}")
def ig_envelope(
    request: Request,
    sha256: str,
    user: User | None = Depends(viewer_user),
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    """The raw envelope, through the same access-checked, audited path as the API."""
    return _download(request, user, lambda u: _envelope(runtime, u, sha256))


def _envelope(runtime: Runtime, user: User | None, sha256: str) -> Response:
    assert user is not None
    body = read_envelope(runtime.db.session, user, sha256, runtime.now())
    return Response(
        body,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="envelope-{sha256[:16]}.json"'},
    )


@router.get("/ig/proof/{index}")
def ig_proof(
    request: Request,
    index: int = Path(ge=0, lt=MAX_INDEX),
    user: User | None = Depends(viewer_user),
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    return _download(request, user, lambda u: _proof(runtime, u, index))


def _proof(runtime: Runtime, user: User | None, index: int) -> Response:
    assert user is not None
    with runtime.db.read() as session:
        sub = session.scalars(
            select(SubmissionRow).where(SubmissionRow.leaf_index == index)
        ).first()
        if sub is None:
            raise NotFoundError(f"leaf {index}: no submission is at that leaf of the log")
        if user.role != "admin" and sub.practice_ods != user.practice_ods:
            whose = "your practice's" if user.practice_ods else "a practice's you may read"
            raise ForbiddenError(f"leaf {index}: not one of {whose} submissions")
        cp = log.latest_checkpoint(session)
        if cp is None:
            raise BadRequestError("the log has no checkpoint yet")
        proof = log.inclusion(session, index, cp.size)
        proof["checkpoint"] = cp.note
    return JSONResponse(
        proof, headers={"Content-Disposition": f'attachment; filename="inclusion-{index}.json"'}
    )


# The information-governance pages (IG pack, access audit) register on this router.
from . import governance as _governance  # noqa: E402,F401
