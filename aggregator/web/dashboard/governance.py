"""Dashboard pages for information governance: the IG pack (rendered live from the latest
published catalogue, so a catalogue change shows at once) and the access audit (who read which
raw envelope, when), with filters and a CSV export.

Registered on the dashboard's router (imported at the end of the package's ``__init__``)."""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from typing import Any

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from ...benchmarks.api import csv_response
from ...db.models import AccessAudit, User
from ...errors import AuthenticationError, NotFoundError
from ...igpack import DOCUMENTS, build_pack
from ...igpack.build import STYLESHEET, flow_svg, render, stylesheet
from ...log.access import FILTERS, access_query, utc_iso
from ...runtime import Runtime, get_runtime
from . import _page, _to_login, router, viewer_user

PACK_BASE = "/dashboard/ig-pack/"
AUDIT_ROLES = ("admin", "ig_officer")
_DOC = re.compile(r"^(" + "|".join(re.escape(n) for n, _ in DOCUMENTS) + r")\.(html|md)$")


def _login(request: Request) -> Response:
    return _to_login(request)


# --- the IG pack ------------------------------------------------------------------------------------


def _pack_doc(runtime: Runtime, name: str, fmt: str) -> str:
    with runtime.db.read() as session:
        pack = build_pack(session, runtime.settings, now=dt.datetime.now(dt.UTC))
    return render(pack, name, fmt, base=PACK_BASE)


@router.get("/ig-pack")
def ig_pack_home(request: Request, user: User | None = Depends(viewer_user)) -> Response:
    if user is None:
        return _login(request)
    return RedirectResponse(PACK_BASE + "index.html", status_code=303)


@router.get("/ig-pack/{doc}")
async def ig_pack_doc(request: Request, doc: str, user: User | None = Depends(viewer_user),
                      runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    """A document of the pack (HTML or Markdown), its diagram or its stylesheet. The pack is
    about the software and the catalogue, not about any practice's values: every signed-in role
    may read it."""
    if user is None:
        return _login(request)
    if doc == STYLESHEET:
        return Response(stylesheet(), media_type="text/css; charset=utf-8")
    if doc == "data-flow.svg":
        return Response(flow_svg(), media_type="image/svg+xml")
    m = _DOC.fullmatch(doc)
    if m is None:
        names = ", ".join(f"{n}.html" for n, _ in DOCUMENTS)
        return _page(
            request,
            runtime,
            user,
            _raise(f"the IG pack has no {doc!r}: it has {names}"),
            "error.html",
        )
    text = await run_in_threadpool(_pack_doc, runtime, m[1], m[2])
    if m[2] == "md":
        return Response(text, media_type="text/markdown; charset=utf-8")
    return HTMLResponse(text)


def _raise(message: str) -> Any:
    def build(_user: User) -> dict[str, Any]:
        raise NotFoundError(message, code="no-document")

    return build


# --- the access audit ---------------------------------------------------------------------------


def _audit_rows(runtime: Runtime, user: User, f: dict[str, str | None], limit: int) -> list[dict[str, Any]]:  # fmt: skip
    """Reads of raw envelopes, newest first, that ``user`` may see (admin: all; IG officer: those
    of their practice's envelopes), filtered (aggregator.log.access)."""
    if user.role not in AUDIT_ROLES:
        return []
    q = access_query(user.role, user.practice_ods, f).limit(limit)
    with runtime.db.read() as session:
        return [
            {
                "at": utc_iso(row.at, timespec="seconds"),
                "user_id": row.user_id,
                "user": name,
                "role": row.user_role,
                "practice": row.practice_ods or "",
                "envelope_sha256": row.envelope_sha256,
                "granted": "yes" if row.granted else "no",
            }
            for row, name in session.execute(q)
        ]


def _audit_options(runtime: Runtime, user: User) -> dict[str, list[str]]:
    if user.role not in AUDIT_ROLES:
        return {"who": [], "practice": []}
    q = select(User.name, AccessAudit.practice_ods).join(User, User.id == AccessAudit.user_id)
    if user.role == "ig_officer":
        q = q.where(AccessAudit.practice_ods == user.practice_ods)
    with runtime.db.read() as session:
        pairs = session.execute(q.distinct()).all()
    return {
        "who": sorted({n for n, _ in pairs}),
        "practice": sorted({p for _, p in pairs if p}) if user.role == "admin" else [],
    }


_FILTERS = FILTERS


@router.get("/access-audit")
async def access_audit_page(request: Request, who: str | None = None, role: str | None = None,
                            practice: str | None = None, granted: str | None = None,
                            start: str | None = None, end: str | None = None,
                            user: User | None = Depends(viewer_user),
                            runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    f = {"who": who, "role": role, "practice": practice, "granted": granted, "start": start, "end": end}  # fmt: skip

    def build(u: User) -> dict[str, Any]:
        rows = _audit_rows(runtime, u, f, 500)
        query = urllib.parse.urlencode({k: v for k, v in f.items() if v})
        return {
            "rows": rows,
            "f": f,
            "options": _audit_options(runtime, u),
            "allowed": u.role in AUDIT_ROLES,
            "csv": "/dashboard/access-audit.csv" + (f"?{query}" if query else ""),
            "roles": ("admin", "network_lead", "practice", "ig_officer"),
        }

    return await run_in_threadpool(_page, request, runtime, user, build, "access_audit.html")


@router.get("/access-audit.csv")
async def access_audit_csv(who: str | None = None, role: str | None = None,
                           practice: str | None = None, granted: str | None = None,
                           start: str | None = None, end: str | None = None,
                           user: User | None = Depends(viewer_user),
                           runtime: Runtime = Depends(get_runtime)) -> Response:  # fmt: skip
    if user is None:
        raise AuthenticationError("sign in first")
    f = {"who": who, "role": role, "practice": practice, "granted": granted, "start": start, "end": end}  # fmt: skip
    rows = await run_in_threadpool(_audit_rows, runtime, user, f, 100_000)
    header = ("at", "user_id", "user", "role", "practice", "envelope_sha256", "granted")
    if not rows:  # a header even when nothing matches
        return Response(",".join(header) + "\n", media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="access-audit.csv"'})  # fmt: skip
    return csv_response(rows, "access-audit.csv")
