"""``POST /v1/submissions`` and ``GET /v1/envelopes/{sha256}``."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from ..db.models import AccessAudit, User
from ..db.models import Envelope as EnvelopeRow
from ..errors import BadRequestError, ForbiddenError, NotFoundError
from ..runtime import Runtime
from ..users.service import can_read_envelope
from ..web.deps import current_user, get_runtime
from .service import IngestLimits, ingest

router = APIRouter(tags=["submissions"])
SHA256 = re.compile(r"^[0-9a-f]{64}$")
RECEIPT_MEDIA = "application/json"


def limits(runtime: Runtime) -> IngestLimits:
    s = runtime.settings
    return IngestLimits(
        cap=s.max_body_bytes, iat_future=s.iat_future_seconds, iat_past=s.iat_past_seconds
    )


@router.post(
    "/v1/submissions",
    status_code=201,
    responses={
        200: {"description": "an identical retry: the stored receipt again"},
        201: {"description": "accepted: the signed receipt envelope"},
    },
)
async def post_submission(request: Request, runtime: Runtime = Depends(get_runtime)) -> Response:
    """Verify and store a signed submission envelope; answer with a signed receipt."""
    body = await request.body()
    result = await run_in_threadpool(
        ingest,
        runtime.db.read,
        runtime.db.session,
        runtime.signer,
        runtime.catalogues,
        body,
        now=runtime.clock(),
        limits=limits(runtime),
        committer=runtime.committer,
        keys=runtime.keys,
    )
    return Response(
        result.receipt, status_code=201 if result.created else 200, media_type=RECEIPT_MEDIA
    )


@router.get("/v1/envelopes/{sha256}", tags=["log"])
def get_envelope(
    sha256: str, user: User = Depends(current_user), runtime: Runtime = Depends(get_runtime)
) -> Response:
    """The exact bytes of an accepted envelope: admin, or the practice's own practice or IG
    user. Every attempt is recorded in the access audit."""
    if not SHA256.fullmatch(sha256):
        raise BadRequestError("sha256 must be 64 lowercase hex characters")
    with runtime.db.session() as session:
        row = session.get(EnvelopeRow, sha256)
        practice = row.practice_ods if row is not None else None
        granted = row is not None and can_read_envelope(user, row.practice_ods)
        session.add(
            AccessAudit(
                at=runtime.now(),
                user_id=user.id,
                user_role=user.role,
                envelope_sha256=sha256,
                practice_ods=practice,
                granted=granted,
            )
        )
        body = bytes(row.body) if granted and row is not None else None
    if row is None:
        raise NotFoundError(f"no envelope with sha256 {sha256}", code="unknown-envelope")
    if body is None:
        raise ForbiddenError(
            f"role: a {user.role} user may read only their own practice's envelopes",
            code="envelope-forbidden",
        )
    return Response(body, media_type="application/json")
