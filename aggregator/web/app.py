"""The FastAPI app factory: the outer layer. It includes each domain's router (submissions,
practices, log, users, benchmarks) and the dashboard's; the domain packages never import
``aggregator.web`` (tests/test_layers.py). Routers read the running aggregator through
:func:`aggregator.runtime.get_runtime` and the caller through :mod:`aggregator.users.auth`.
"""

from __future__ import annotations

import time

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, RedirectResponse

from protocol import __version__

from ..benchmarks.api import router as benchmarks_router
from ..db.migrate import check_migrated
from ..errors import AggregatorError
from ..log.endpoints import router as log_router
from ..practices.endpoints import router as practices_router
from ..runtime import Clock, Runtime, get_runtime
from ..settings import Settings
from ..submissions.endpoints import router as submissions_router
from ..users.endpoints import router as users_router
from . import problems
from .dashboard import router as dashboard_router
from .middleware import BodyLimitMiddleware, HeadMiddleware, SecurityHeadersMiddleware


def create_app(
    settings: Settings, *, clock: Clock = time.time, runtime: Runtime | None = None
) -> FastAPI:
    """Build the app. Raises ConfigError / DatabaseNotReadyError if the database is not
    migrated and initialised or the keys are missing."""
    runtime = runtime or Runtime.load(settings, clock=clock)
    app = FastAPI(
        title="fedqi aggregator",
        version=__version__,
        description="Verifies, stores and logs practices' signed submissions.",
        docs_url="/docs",
    )
    app.state.runtime = runtime
    problems.install(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(HeadMiddleware)  # outermost: HEAD is the GET, headers and all

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> RedirectResponse:
        # Browsers ask for it on pages without an icon link (the IG pack's): the dashboard's.
        return RedirectResponse("/dashboard/static/favicon.svg", status_code=301)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        # Someone who opens the server's address in a browser wants the dashboard (which asks
        # who they are); the API lives under /v1 and is described at /docs.
        return RedirectResponse("/dashboard", status_code=307)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(rt: Runtime = Depends(get_runtime)) -> JSONResponse:
        try:
            check_migrated(rt.db)
        except AggregatorError as exc:
            return problems.problem_response(
                503,
                exc.code,
                "Not ready",
                exc.message,
                {"Retry-After": str(problems.RETRY_AFTER_SECONDS)},
            )
        except Exception as exc:
            if problems.is_database_unavailable(exc):
                return problems.database_unavailable()
            raise
        return JSONResponse({"status": "ready"})

    for router in (
        submissions_router,
        practices_router,
        log_router,
        users_router,
        benchmarks_router,
        dashboard_router,
    ):
        app.include_router(router)
    problems.document(app)
    return app


def create_app_from_environment() -> FastAPI:
    """The app from ``get_settings()`` (environment / TOML): the factory each uvicorn worker
    process calls when ``serve --workers N`` runs several."""
    from ..runtime import tune_gc
    from ..settings import get_settings

    app = create_app(get_settings())
    app.state.runtime.warm()
    tune_gc()
    return app
