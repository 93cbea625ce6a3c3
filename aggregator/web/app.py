"""The FastAPI app factory: the API's routers (:mod:`.api`, one per domain room) and the
dashboard (:mod:`.dashboard`), included explicitly. ``web`` is the outer layer: it imports the
domain rooms, never the other way (docs/architecture.md; tests/test_layout.py checks it).
"""

from __future__ import annotations

import time

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from protocol import __version__

from ..db.migrate import check_migrated
from ..errors import AggregatorError
from ..runtime import Clock, Runtime
from ..settings import Settings
from . import dashboard, problems
from .api import benchmarks, log, practices, submissions, users
from .deps import get_runtime
from .middleware import BodyLimitMiddleware, SecurityHeadersMiddleware


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
        submissions.router,
        practices.router,
        log.router,
        users.router,
        benchmarks.router,
        dashboard.router,
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
