"""``/v1/benchmarks/...``: JSON (default) or CSV (``format=csv``) for every view, and a FHIR R4
MeasureReport per practice and indicator. Included by the app factory (:mod:`aggregator.web.app`).

A background thread drains the stale queue every few seconds so reads rarely find work; a read
that does recomputes only the stale groups it may show (see :mod:`.service`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, Response
from fastapi.concurrency import run_in_threadpool

from ..db.models import User
from ..errors import BadRequestError
from ..log import service as log_service
from ..runtime import Runtime, get_runtime
from ..users.auth import current_user, require_roles
from . import service
from .csv_rows import COLUMNS as CSV_COLUMNS
from .csv_rows import funnel_csv_rows, overview_csv_rows, practice_csv_rows, trend_csv_rows
from .fhir import measure_report as build_measure_report
from .funnel import funnel_json, funnel_view
from .listing import catalogue_listing
from .overview import overview_view
from .practice import practice_view
from .trend import trend_view
from .viewer import Viewer

log = logging.getLogger("fedqi.aggregator.benchmarks")
INDICATOR = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")
ODS = re.compile(r"^[A-Z][0-9]{5}$")
REFRESH_INTERVAL_SECONDS = 2.0
# The background refresher gives way to ingestion: while the aggregator has stored a
# submission in the last QUIET seconds it waits (reads still refresh the groups they show), but
# never more than MAX_DELAY seconds between refreshes. During a burst of submissions it took
# about a quarter of a server process's CPU (docs/benchmarks.md). "The aggregator" is every
# worker process (:class:`Activity`), and a drain, once started, stops after any group at which
# a submission has come in (``quiet``). Before both, a worker that the clients' connections had
# passed by saw no commit of its own and drained 50 groups at a time through another worker's
# burst, on the same cores (docs/benchmarks.md, "The refresher and the other worker").
QUIET_SECONDS = 5.0
MAX_DELAY_SECONDS = 60.0


def should_refresh(now: float, last_commit: float, last_refresh: float) -> bool:
    """Whether the background refresher runs now (monotonic seconds)."""
    return now - last_commit >= QUIET_SECONDS or now - last_refresh >= MAX_DELAY_SECONDS


def quiet(now: float, last_commit: float) -> bool:
    """Whether a started background refresh goes on to another group (monotonic seconds)."""
    return now - last_commit >= QUIET_SECONDS


class Activity:
    """When the aggregator last stored a submission, as one worker process can tell: its own
    commits (``own``: the committer's monotonic time of its last one), and the other workers'
    as the transparency log's size (``log_size``, one row read from the database) having
    changed since this object last looked, which counts as a commit at that look."""

    def __init__(self, own: Callable[[], float], log_size: Callable[[], int]) -> None:
        self._own = own
        self._log_size = log_size
        self._size: int | None = None
        self._changed = float("-inf")

    def last_commit(self, now: float) -> float:
        size = self._log_size()
        if self._size is not None and size != self._size:
            self._changed = now
        self._size = size
        return max(self._own(), self._changed)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    stop = threading.Event()
    thread = None
    if runtime is not None:
        thread = threading.Thread(
            target=_refresher, args=(runtime, stop), name="fedqi-bench-refresh", daemon=True
        )
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=10)


def _refresher(runtime: Runtime, stop: threading.Event) -> None:
    def log_size() -> int:
        with runtime.db.read() as session:
            return log_service.log_size(session)

    activity = Activity(lambda: runtime.committer.last_commit, log_size)

    def go_on() -> bool:
        now = time.monotonic()
        return quiet(now, activity.last_commit(now))

    last = time.monotonic()
    while not stop.wait(REFRESH_INTERVAL_SECONDS):
        now = time.monotonic()
        try:
            if not should_refresh(now, activity.last_commit(now), last):
                continue
            last = now
            service.refresh_stale(runtime.db, limit=50, go_on=go_on)
        except Exception:  # keep draining later; the read path refreshes what it needs anyway
            log.exception("benchmark refresh failed")


router = APIRouter(prefix="/v1/benchmarks", tags=["benchmarks"], lifespan=_lifespan)


def check_indicator(indicator: str) -> str:
    if not INDICATOR.fullmatch(indicator):
        raise BadRequestError(
            f"indicator {indicator!r}: an indicator id is A-Z, 0-9 and _ (e.g. DM_HBA1C)",
            code="bad-indicator",
        )
    return indicator


def check_ods(ods: str) -> str:
    if not ODS.fullmatch(ods):
        raise BadRequestError(
            f"practice {ods!r}: an ODS code is a letter and five digits (e.g. A81001)",
            code="bad-ods",
        )
    return ods


def check_format(fmt: str) -> str:
    if fmt not in ("json", "csv"):
        raise BadRequestError(f"format={fmt!r}: use json or csv", code="bad-format")
    return fmt


def csv_response(
    rows: Iterable[dict[str, Any]], filename: str, columns: Sequence[str] | None = None
) -> Response:
    """A CSV download; with ``columns``, the header row is written even when there is no row."""
    buf = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    if columns is not None:
        writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
    for row in rows:
        if writer is None:
            writer = csv.DictWriter(buf, fieldnames=list(row), lineterminator="\n")
            writer.writeheader()
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def run_view(runtime: Runtime, user: User, build: Callable[..., Any], *args: Any,
             indicator: str | None = None, **kwargs: Any) -> Any:  # fmt: skip
    service.refresh_for_read(runtime.db, indicator)
    with runtime.db.read() as session:
        viewer = Viewer.load(session, user, runtime.pseudonym_secret, runtime.peer_bands)
        return build(session, viewer, *args, **kwargs)


def json_response(view: Mapping[str, object], media_type: str = "application/json") -> Response:
    # Straight to json.dumps: a national funnel has thousands of rows, already plain types.
    return Response(json.dumps(view, separators=(",", ":")), media_type=media_type)


View = TypeVar("View", bound=Mapping[str, object])


def _answer(
    view: View, fmt: str, rows: Callable[[View], Iterable[dict[str, Any]]], filename: str
) -> Response:
    if fmt == "csv":
        return csv_response(rows(view), filename, CSV_COLUMNS[rows])
    return json_response(view)


@router.get("")
async def listing(
    user: User = Depends(current_user), runtime: Runtime = Depends(get_runtime)
) -> dict[str, Any]:
    """Indicators and periods with benchmarks, the peer-group dimensions and the peer groups
    the user may pick."""
    return await run_in_threadpool(run_view, runtime, user, catalogue_listing)


@router.get("/overview")
async def overview(
    period: str | None = None, peer: str | None = None, group: str | None = None, format: str = "json",
    user: User = Depends(current_user), runtime: Runtime = Depends(get_runtime),
) -> Any:  # fmt: skip
    """Practices x indicators at one period, each cell the practice's funnel band."""
    check_format(format)
    view = await run_in_threadpool(run_view, runtime, user, overview_view, period, peer, group)
    return _answer(view, format, overview_csv_rows, f"overview-{view['period']['end']}.csv")


@router.get("/indicators/{indicator}")
async def indicator_funnel(
    indicator: str,
    period: str | None = None,
    peer: str | None = None,
    group: str | None = None,
    method: str | None = Query(
        None, description="exact | normal | wilson | multiplicative | additive | auto"
    ),
    detail: bool = Query(
        False, description="add each practice's limits, submission id and indicator version"
    ),
    format: str = "json",
    user: User = Depends(current_user),
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    """One indicator at one period: summary, funnel limits and every practice's position."""
    check_indicator(indicator)
    check_format(format)
    if format == "json" and not detail:
        body = await run_in_threadpool(
            run_view,
            runtime,
            user,
            funnel_json,
            indicator,
            period,
            peer,
            group,
            method,
            indicator=indicator,
        )
        return Response(body, media_type="application/json")
    args = (indicator, period, peer, group, method, True)
    view = await run_in_threadpool(run_view, runtime, user, funnel_view, *args, indicator=indicator)
    return _answer(view, format, funnel_csv_rows, f"{indicator}-{view['period']['end']}.csv")


@router.get("/practices/{ods}")
async def practice_summary(
    ods: str, period: str | None = None, history: bool = True, format: str = "json",
    user: User = Depends(current_user), runtime: Runtime = Depends(get_runtime),
) -> Any:  # fmt: skip
    """One practice on every indicator, furthest below the achievable benchmark first."""
    check_format(format)
    check_ods(ods)
    view = await run_in_threadpool(run_view, runtime, user, practice_view, ods, period, history)
    return _answer(view, format, practice_csv_rows, f"{ods}-{view['period']['end']}.csv")


@router.get("/trends/{indicator}")
async def trend(
    indicator: str, practice: str | None = None, peer: str | None = None, group: str | None = None,
    format: str = "json", user: User = Depends(current_user), runtime: Runtime = Depends(get_runtime),
) -> Any:  # fmt: skip
    """The network's (or a peer group's) rate over periods, and optionally one practice's."""
    check_format(format)
    check_indicator(indicator)
    if practice is not None:
        check_ods(practice)
    view = await run_in_threadpool(
        run_view,
        runtime,
        user,
        trend_view,
        indicator,
        practice,
        peer,
        group,
        indicator=indicator,
    )
    return _answer(view, format, trend_csv_rows, f"{indicator}-trend.csv")


@router.get("/practices/{ods}/measure-report/{indicator}")
async def measure_report(
    ods: str, indicator: str, period: str | None = None,
    user: User = Depends(current_user), runtime: Runtime = Depends(get_runtime),
) -> Response:  # fmt: skip
    """A FHIR R4 MeasureReport (type summary) for one practice, indicator and period."""
    check_ods(ods)
    check_indicator(indicator)
    report = await run_in_threadpool(
        run_view, runtime, user, build_measure_report, ods, indicator, period, indicator=indicator
    )
    return Response(json.dumps(report), media_type="application/fhir+json")


@router.post("/refresh")
async def refresh(
    user: User = Depends(require_roles("admin")), runtime: Runtime = Depends(get_runtime)
) -> dict[str, int]:
    """Drain the stale queue now (admin)."""
    done = await run_in_threadpool(service.refresh_stale, runtime.db)
    return {"refreshed": done}
