"""RFC 9457 problem details: every error leaves through :func:`problem_response`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import AggregatorError

PROBLEM_TYPE = "urn:fedqi:problem:"
MEDIA_TYPE = "application/problem+json"


def problem_response(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"type": PROBLEM_TYPE + code, "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(AggregatorError)
    async def _aggregator_error(_request: Request, exc: AggregatorError) -> JSONResponse:
        headers = (
            {"WWW-Authenticate": "Bearer"}
            if exc.status_code == 401 and exc.code == "bad-token"
            else None
        )
        return problem_response(exc.status_code, exc.code, exc.title, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ())) or "(request)"
            parts.append(f"{loc}: {err.get('msg')}")
        return problem_response(400, "bad-request", "Bad request", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(exc.status_code, code, str(exc.detail), str(exc.detail))
