"""``POST /v1/enrol``, ``POST /v1/keys/rotate``, ``GET /v1/practices``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from ..db.models import Practice, User
from ..runtime import Runtime, get_runtime
from ..users.auth import current_user
from ..users.service import can_read_practice, pseudonym_for, shows_individually
from . import service

router = APIRouter(tags=["practices"])


@router.post("/v1/enrol", status_code=201)
async def post_enrol(request: Request, runtime: Runtime = Depends(get_runtime)) -> Response:
    """Enrol an agent key: an ``enrol`` envelope signed by the new key, carrying a single-use token."""
    body = await request.body()
    s = runtime.settings
    result = await run_in_threadpool(
        service.enrol,
        runtime.db.session,
        runtime.signer,
        body,
        now=runtime.clock(),
        cap=s.max_body_bytes,
        iat_future=s.iat_future_seconds,
        iat_past=s.iat_past_seconds,
    )
    return Response(
        result.receipt, status_code=201 if result.created else 200, media_type="application/json"
    )


@router.post("/v1/keys/rotate", status_code=201)
async def post_rotate(request: Request, runtime: Runtime = Depends(get_runtime)) -> Response:
    """Rotate an agent key: a ``rotate`` envelope signed by the old and the new key."""
    body = await request.body()
    s = runtime.settings
    result = await run_in_threadpool(
        service.rotate,
        runtime.db.session,
        runtime.signer,
        body,
        now=runtime.clock(),
        cap=s.max_body_bytes,
        iat_future=s.iat_future_seconds,
        iat_past=s.iat_past_seconds,
    )
    return Response(
        result.receipt, status_code=201 if result.created else 200, media_type="application/json"
    )


@router.get("/v1/practices")
def list_practices(
    user: User = Depends(current_user), runtime: Runtime = Depends(get_runtime)
) -> list[dict[str, object]]:
    """Practices as the caller may see them: admin all; a network lead their group identified; a
    practice user its own practice identified, then every other practice of the network by its
    pseudonym only (no group, in pseudonym order: docs/disclosure.md, "Pseudonyms"); an IG
    officer their own practice."""
    with runtime.db.read() as session:
        rows = list(session.scalars(select(Practice).order_by(Practice.ods)))
    out: list[dict[str, object]] = []
    peers: list[dict[str, object]] = []
    for p in rows:
        if not shows_individually(user, p):
            continue  # totals_only: in network totals, never listed on its own
        if can_read_practice(user, p):
            out.append(
                {
                    "practice": p.ods,
                    "name": p.name,
                    "group": p.group,
                    "list_size": p.list_size,
                    "imd_decile": p.imd_decile,
                    "identified": True,
                }
            )
        elif user.role == "practice" or (
            # a practice that chose to be pseudonymised, to the admin and its group's lead
            p.visibility == "pseudonymised"
            and (user.role == "admin" or (user.role == "network_lead" and user.group == p.group))
        ):
            # Listing only the PCN's peers would tell which pseudonyms share its PCN; listing
            # them in ODS order would tell which is which.
            peers.append(
                {
                    "practice": pseudonym_for(runtime.pseudonym_secret, user, p.ods),
                    "identified": False,
                }
            )
    return out + sorted(peers, key=lambda p: str(p["practice"]))
