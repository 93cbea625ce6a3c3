"""RFC 9457 problem details: every error leaves through :func:`problem_response`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import AggregatorError

#: Seconds a client is asked to wait before retrying while the database is unreachable.
RETRY_AFTER_SECONDS = 5


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached (server down, restarting, connection
    lost or refused, pool exhausted while reconnecting), as opposed to a bug or bad data."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            try:
                import psycopg
            except ImportError:  # pragma: no cover - psycopg is a dependency
                return False
            return isinstance(exc.orig, (psycopg.OperationalError, psycopg.InterfaceError))
    return False


def database_unavailable() -> JSONResponse:
    return problem_response(
        503,
        "database-unavailable",
        "Service unavailable",
        "the database is unreachable; nothing was stored: retry after "
        f"{RETRY_AFTER_SECONDS} seconds",
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


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
    from sqlalchemy import exc as sa_exc

    @app.exception_handler(sa_exc.SQLAlchemyError)
    async def _database_error(_request: Request, exc: sa_exc.SQLAlchemyError) -> JSONResponse:
        if is_database_unavailable(exc):
            return database_unavailable()
        raise exc

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
