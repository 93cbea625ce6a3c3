"""RFC 9457 problem details: every error leaves through :func:`problem_response`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

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


#: The members every problem has; an extension member may not take one of these names.
_MEMBERS = frozenset({"type", "title", "status", "detail"})


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """The problem+json answer; ``extensions`` are RFC 9457 extension members, after the
    standard ones (``period-already-submitted``'s ``current_submission_id``; each is in
    :data:`PROBLEM_SCHEMA`)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if extensions:
        clash = _MEMBERS & extensions.keys()
        if clash:
            raise ValueError(f"problem extension members {sorted(clash)} are standard members")
        body.update(extensions)
    return JSONResponse(
        body,
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def _is_dashboard(request: Request) -> bool:
    path = request.url.path
    return path == "/dashboard" or path.startswith("/dashboard/")


async def _dashboard_error(request: Request, status: int, message: str) -> Response:
    """The dashboard's HTML error page; signed in, it keeps the menu (a database outage here
    leaves it without one)."""
    from sqlalchemy.exc import SQLAlchemyError
    from starlette.concurrency import run_in_threadpool

    from ..runtime import get_runtime
    from .dashboard import render, viewer_user

    try:
        user = await run_in_threadpool(viewer_user, request, get_runtime(request))
    except SQLAlchemyError:
        user = None
    return render("error.html", status, user=user, status=status, message=message)


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
        return problem_response(
            exc.status_code, exc.code, exc.title, exc.message, headers, exc.extensions
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ())) or "(request)"
            parts.append(f"{loc}: {err.get('msg')}")
        if _is_dashboard(request):
            # A bad dashboard address (/dashboard/ig/proof/abc) is a page, like its other errors,
            # in words rather than the validator's ("Input should be a valid integer, ...").
            said = "; ".join(_in_words(err) for err in exc.errors()[:5])
            return await _dashboard_error(
                request, 400, f"There is no page at {request.url.path}: {said}."
            )
        return problem_response(400, "bad-request", "Bad request", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and request.url.path.startswith("/dashboard/"):
            # A mistyped dashboard address is a page, like every other dashboard error.
            return await _dashboard_error(request, 404, f"There is no page at {request.url.path}.")
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        # keep the exception's headers: a 405 names the methods the path has in Allow
        headers = dict(exc.headers or {})
        detail = str(exc.detail)
        if exc.status_code == 405 and "Allow" in headers:
            headers["Allow"] = _allowed(request, headers["Allow"])
            detail = f"{request.method} {request.url.path}: this path answers {headers['Allow']}"
        return problem_response(exc.status_code, code, str(exc.detail), detail, headers)


def _in_words(err: Any) -> str:
    """A validation error of a dashboard address's part, e.g. "its index is a whole number"."""
    loc = err.get("loc", ())
    name = str(loc[-1]) if loc else "the request"
    if err.get("type") == "int_parsing":
        return f"its {name} is a whole number"
    ctx = err.get("ctx") or {}
    if err.get("type") == "greater_than_equal":
        return f"its {name} is at least {ctx.get('ge')}"
    if err.get("type") == "less_than":
        return f"its {name} is below {ctx.get('lt')}"
    return f"its {name}: {str(err.get('msg', '')).removeprefix('Input ')}"


#: The methods a 405's Allow is built from (the routes declare no others; HEAD is the GET).
_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def _allowed(request: Request, allow: str) -> str:
    """Every method some route answers at the request's path, with those ``allow`` names: the
    router's 405 names only the first route whose path matches, so the login page (a GET page
    and a POST form) said GET alone. Each method is tried against the app's routes; a mount
    would take any method, so none is asked. HEAD is named wherever GET is, since the HEAD
    middleware answers it there (the middleware also adds it to any other 405's Allow)."""
    methods = {m.strip() for m in allow.split(",") if m.strip()}
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


_UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_KID = r"^[A-Za-z0-9_\-]{43}$"  # an RFC 7638 thumbprint, unpadded base64url

#: The problem+json schema every error response has (RFC 9457).
PROBLEM_SCHEMA: dict[str, object] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "pattern": "^urn:fedqi:problem:[a-z0-9-]+$"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        # Extension members (RFC 9457), each only on the problem types docs/aggregator.md names.
        "current_submission_id": {
            "type": "string",
            "pattern": _UUID,
            "description": "409 period-already-submitted, already-superseded: the practice's "
            "current submission for the period, the one a correction names in supersedes",
        },
        "superseded_by": {
            "type": "string",
            "pattern": _UUID,
            "description": "409 already-superseded: the submission that superseded the one "
            "named in supersedes",
        },
        "envelope_sha256": {
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "409 submission-id-reused: the sha256 of the envelope stored under "
            "the submission id (only when it is the same practice's)",
        },
        "kid": {
            "type": "string",
            "pattern": _KID,
            "description": "409 seq-not-increasing: the signing key",
        },
        "last_seq": {
            "type": "integer",
            "minimum": 0,
            "description": "409 seq-not-increasing: the last seq accepted for that key; a "
            "message is accepted only with a seq above it",
        },
        "active_kid": {
            "type": "string",
            "pattern": _KID,
            "description": "409 practice-has-key: the practice's active key, the one to "
            "rotate or to have revoked",
        },
    },
}

_WHY = {
    400: "Bad request: a malformed body, query or path parameter (named in detail)",
    401: "No or unknown API token (WWW-Authenticate: Bearer)",
    403: "The token's role or practice may not do this",
    404: "No such resource",
    405: "Method not allowed on this path (Allow lists those that are)",
    409: "Conflicts with what is stored (sequence, correction, key state)",
    413: "Body larger than the aggregator accepts",
    422: "Well-formed but refused by a protocol or business rule (named in detail)",
    503: "The database is unreachable (Retry-After says when to retry); nothing was stored",
}
_READ = (400, 401, 403, 404, 405, 503)
_WRITE = (*_READ, 409, 413, 422)


def document(app: FastAPI) -> None:
    """Declare every problem response, with its schema, on every operation of the OpenAPI
    schema (added to the generated schema, so plug-in routers are covered too)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = generate()
        from .contract import describe  # the routers' modules import this one

        describe(spec)
        spec.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        ref = {"$ref": "#/components/schemas/Problem"}
        for ops in spec.get("paths", {}).values():
            for method, op in ops.items():
                if not isinstance(op, dict) or "responses" not in op:
                    continue
                write = method.upper() in ("POST", "PUT", "PATCH", "DELETE")
                # FastAPI's own 422 (a bad parameter) is answered as a 400 problem here
                if "HTTPValidationError" in str(op["responses"].get("422", "")):
                    del op["responses"]["422"]
                for code in _WRITE if write else _READ:
                    entry: dict[str, Any] = {
                        "description": _WHY[code],
                        "content": {MEDIA_TYPE: {"schema": ref}},
                    }
                    if code == 405:
                        entry["headers"] = {"Allow": {"schema": {"type": "string"}}}
                    if code == 503:
                        entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
                    op["responses"].setdefault(str(code), entry)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
