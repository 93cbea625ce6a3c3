"""The log's read API. Checkpoints, proofs and keys are public (agents verify with them);
entries are role-checked: a viewer gets full leaf data only for practices they may see, and the
leaf hash (enough to verify the tree) for the rest."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy import select

from protocol.keys import VerifyingKey, b64url_encode

from ..catalogues import service as catalogues
from ..db.models import Practice, User
from ..errors import BadRequestError, NotFoundError
from ..runtime import Runtime, get_runtime
from ..users.auth import current_user, require_roles
from ..users.service import can_read_practice
from . import access, service

router = APIRouter(tags=["log"])
#: Bound of every log index and tree size a caller gives (2**53, JSON's safe integers, well
#: inside the database's BIGINT): a larger number is a 400, never a database overflow.
MAX_INDEX = 2**53


def _public_key(key: VerifyingKey) -> dict[str, object]:
    """A key as the key endpoints serve it. ``public_key_base64url`` (unpadded, the JWK's ``x``)
    and ``kid`` are what ``fedqi-aggregator init`` printed and ``fedqi-agent trust show`` prints,
    so an IG officer can compare them by eye; ``public_key`` is the same 32 bytes in standard
    base64, kept as it was for the clients that read it."""
    raw = key.public_bytes()
    return {
        "public_key": base64.b64encode(raw).decode(),
        "public_key_base64url": b64url_encode(raw),
        "kid": key.kid,
        "jwk": key.jwk().model_dump(),
    }


@router.get("/v1/log/key")
def log_key(runtime: Runtime = Depends(get_runtime)) -> dict[str, object]:
    """The log's public key, for agents and IG officers to pin: compare ``kid`` and
    ``public_key_base64url`` with what ``fedqi-aggregator init`` printed."""
    return {
        "origin": runtime.signer.origin,
        "key_name": runtime.signer.key_name,
        **_public_key(runtime.signer.key.public),
        "aud": runtime.aud,
    }


@router.get("/v1/log/checkpoint", response_class=Response)
def checkpoint(runtime: Runtime = Depends(get_runtime)) -> Response:
    """The latest signed checkpoint (C2SP signed note, text/plain)."""
    with runtime.db.read() as session:
        row = service.latest_checkpoint(session)
    if row is None:
        raise NotFoundError("the log is empty: no checkpoint yet", code="no-checkpoint")
    return Response(row.note, media_type="text/plain; charset=utf-8")


@router.get("/v1/log/checkpoint/{size}", response_class=Response)
def checkpoint_at(
    size: int = Path(ge=0, lt=MAX_INDEX), runtime: Runtime = Depends(get_runtime)
) -> Response:
    """The signed checkpoint of the tree of ``size`` leaves (C2SP signed note, text/plain)."""
    with runtime.db.read() as session:
        note = service.checkpoint_at(session, size).note
    return Response(note, media_type="text/plain; charset=utf-8")


@router.get("/v1/log/proof/inclusion")
def inclusion(
    index: int = Query(ge=0, lt=MAX_INDEX),
    size: int = Query(ge=1, lt=MAX_INDEX),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, object]:
    """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` (hex hashes)."""
    with runtime.db.read() as session:
        return service.inclusion(session, index, size)


@router.get("/v1/log/proof/consistency")
def consistency(
    old: int = Query(ge=0, lt=MAX_INDEX),
    new: int = Query(ge=0, lt=MAX_INDEX),
    runtime: Runtime = Depends(get_runtime),
) -> dict[str, object]:
    """RFC 9162 consistency proof between tree sizes ``old`` and ``new`` (hex hashes)."""
    with runtime.db.read() as session:
        return service.consistency(session, old, new)


@router.get("/v1/log/entries")
def entries(
    start: int = Query(ge=0, lt=MAX_INDEX),
    end: int = Query(ge=1, lt=MAX_INDEX),
    user: User = Depends(current_user),
    runtime: Runtime = Depends(get_runtime),
) -> list[dict[str, object]]:
    """Leaves ``[start, end)``: leaf data (hashes and metadata) where the caller may see the
    practice, only the leaf hash elsewhere."""
    with runtime.db.read() as session:
        leaves = service.entries(session, start, end)
        practices = {p.ods: p for p in session.scalars(select(Practice))}
    out: list[dict[str, object]] = []
    for leaf in leaves:
        item: dict[str, object] = {"index": leaf.idx, "leaf_hash": bytes(leaf.leaf_hash).hex()}
        p = practices.get(leaf.practice_ods)
        if p is not None and can_read_practice(user, p):
            data = bytes(leaf.leaf_data)
            item["leaf_data"] = base64.b64encode(data).decode()
            item["leaf"] = json.loads(data)
        out.append(item)
    return out


@router.get("/v1/audit/access", tags=["log"])
def access_audit(
    request: Request,
    user: User = Depends(require_roles("admin", "ig_officer")),
    runtime: Runtime = Depends(get_runtime),
    limit: int = Query(200, ge=1, le=5000),
    who: str | None = None,
    role: str | None = None,
    practice: str | None = None,
    granted: Literal["yes", "no"] | None = Query(None, description="yes or no"),
    start: dt.date | None = Query(None, description="first day (YYYY-MM-DD)"),
    end: dt.date | None = Query(None, description="last day (YYYY-MM-DD)"),
) -> list[dict[str, object]]:
    """Reads of raw envelopes, newest first: all for admin, those of their practice's envelopes
    for an IG officer; filtered as the dashboard's access audit is (who, role, practice,
    granted, start, end). A parameter it does not know is a 400, not ignored."""
    unknown = sorted(set(request.query_params) - {"limit", *access.FILTERS})
    if unknown:
        raise BadRequestError(
            f"unknown parameter(s) {', '.join(unknown)}: the filters are "
            f"{', '.join(access.FILTERS)} and limit"
        )
    f = {"who": who, "role": role, "practice": practice, "granted": granted,
         "start": start.isoformat() if start else None, "end": end.isoformat() if end else None}  # fmt: skip
    with runtime.db.read() as session:
        rows = session.execute(
            access.access_query(user.role, user.practice_ods, f).limit(limit)
        ).all()
    return [
        {
            "at": access.utc_iso(r.at),
            "user_id": r.user_id,
            "user": name,
            "role": r.user_role,
            "envelope_sha256": r.envelope_sha256,
            "practice": r.practice_ods,
            "granted": r.granted,
        }
        for r, name in rows
    ]


@router.get("/v1/catalogue", tags=["catalogue"], response_class=Response)
def catalogue(runtime: Runtime = Depends(get_runtime)) -> Response:
    """The latest published catalogue: its envelope signed by the network's catalogue key."""
    with runtime.db.read() as session:
        row = catalogues.latest(session)
    return Response(bytes(row.envelope), media_type="application/json")


@router.get("/v1/catalogue/key", tags=["catalogue"])
def catalogue_key(runtime: Runtime = Depends(get_runtime)) -> dict[str, object]:
    """The catalogue key: compare ``kid`` and ``public_key_base64url`` with what
    ``fedqi-aggregator init`` printed."""
    return _public_key(runtime.catalogue_key)
