"""``POST /v1/submissions`` and ``GET /v1/envelopes/{sha256}``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from ..db.models import User
from ..runtime import Runtime, get_runtime
from ..users.auth import current_user
from .service import IngestLimits, ingest, read_envelope

router = APIRouter(tags=["submissions"])
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
    body = read_envelope(runtime.db.session, user, sha256, runtime.now())
    return Response(body, media_type="application/json")
