"""Coverage for analysts: tables, their exports, the map and the chart (analyst and maintainer roles).

Periods are `start`/`end` instants (default: the last 7 days); coverage tables read the last snapshot
taken at or before `at` (default: now).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from analytics import tables
from analytics.dictionary import dictionary_markdown
from analytics.snapshots import snapshot_now
from api.deps import ADMINS, ANALYSTS, get_backend, get_settings, require
from api.params import Instant
from api.problems import Problem, problems
from core.settings import Settings
from indexer.backend import Backend

router = APIRouter(prefix="/v1/coverage", tags=["coverage"], responses=problems(401, 403, 422, 503))
Level = Literal["national", "territory", "department", "commune"]
Horizon = Annotated[int, Query(description="hours ahead: 24, 48 or 72")]
MEDIA = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
PICTURES = {"png": "image/png", "svg": "image/svg+xml"}
NEEDS_EXTRA = problems(501)


def files(media: dict[str, str]) -> dict[int | str, dict[str, Any]]:
    """The documented 200 of a route answering files of these media types."""
    return {200: {"description": "The file", "content": {m.split(";")[0]: {} for m in media.values()}}}


def _analytics_extra_missing() -> Problem:
    return Problem(
        501,
        "Analytics extra not installed",
        "This deployment serves the coverage tables but not their files and pictures: install the extra with "
        "`pip install 'dispo[analytics]'` (pandas, pyarrow, matplotlib) and restart.",
        "analytics-extra-missing",
    )


def period(
    start: Annotated[Instant | None, Query(description="period start (default: end - 7 days)")] = None,
    end: Annotated[Instant | None, Query(description="period end (default: now)")] = None,
) -> tables.Period:
    end = _utc(end) or datetime.now(UTC)
    start = _utc(start) or end - timedelta(days=7)
    if start >= end:
        raise Problem(422, "Invalid period", "start must be before end.", "invalid-period")
    if end - start > timedelta(days=400):
        raise Problem(422, "Invalid period", "A period covers at most 400 days.", "invalid-period")
    return tables.Period(start, end)


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None  # instants come with their offset (`Instant`)


def _horizon(horizon: int) -> int:
    if horizon not in (24, 48, 72):
        raise Problem(422, "Invalid horizon", "horizon is 24, 48 or 72 hours.", "invalid-horizon")
    return horizon


class CoverageAnswer(BaseModel):
    snapshot: str | None
    level: str
    horizon_h: int
    rows: list[tables.CoverageArea]


class SnapshotTaken(BaseModel):
    snapshot: str
    rows: int
    participants: int
    slots_72h: int
    pruned: int
    duration_s: float


Reader = Annotated[Any, Depends(require(*ANALYSTS))]
Store = Annotated[Backend, Depends(get_backend)]
Span = Annotated[tables.Period, Depends(period)]


@router.get("", response_model=CoverageAnswer, summary="Coverage of every area of a level at the last snapshot")
def coverage(
    backend: Store, _: Reader, level: Level = "department", horizon: Horizon = 48, at: Instant | None = None
) -> CoverageAnswer:
    rows = tables.coverage(backend, level, _horizon(horizon), _utc(at))
    snapshot = rows[0].snapshot if rows else tables.latest_snapshot(backend, _utc(at))
    return CoverageAnswer(snapshot=snapshot, level=level, horizon_h=horizon, rows=rows)


@router.get("/evolution", response_model=list[tables.CoverageArea], summary="An area's coverage over a period")
def evolution(
    backend: Store,
    _: Reader,
    span: Span,
    level: Level = "national",
    code: Annotated[str | None, Query(max_length=20, description="area code; all areas of the level if absent")] = None,
    horizon: Horizon = 48,
) -> list[tables.CoverageArea]:
    try:
        return tables.evolution(backend, level, code, _horizon(horizon), span)
    except ValueError as exc:
        raise Problem(422, "Invalid request", f"{exc}.", "invalid-request") from exc


@router.get("/under-served", response_model=list[tables.UnderServed], summary="Searches by territory and hour")
def under_served(backend: Store, _: Reader, span: Span) -> list[tables.UnderServed]:
    return tables.under_served(backend, span)


@router.get("/activity", response_model=list[tables.SearchActivity], summary="Searches per clock hour")
def activity(backend: Store, _: Reader, span: Span) -> list[tables.SearchActivity]:
    return tables.search_activity(backend, span)


@router.get("/vendors", response_model=list[tables.VendorRow], summary="What each vendor feeds, and how reliably")
def vendors(backend: Store, _: Reader, span: Span) -> list[tables.VendorRow]:
    return tables.vendors(backend, span)


@router.get("/appointments", response_model=list[tables.AppointmentRow], summary="Appointments by territory")
def appointments(backend: Store, _: Reader, span: Span) -> list[tables.AppointmentRow]:
    return tables.appointments(backend, span)


@router.get(
    "/orientations",
    response_model=list[tables.OrientationRow],
    summary="Orientations without a slot by territory, kind and week",
)
def orientations(backend: Store, _: Reader, span: Span) -> list[tables.OrientationRow]:
    return tables.orientations(backend, span)


@router.get(
    "/dictionary",
    summary="Data dictionary of the exports (Markdown)",
    response_class=Response,
    responses=files({"md": "text/markdown"}),
)
def dictionary(_: Reader) -> Response:
    return Response(dictionary_markdown(), media_type="text/markdown; charset=utf-8")


@router.get(
    "/export/{table}.{fmt}",
    summary="One table as CSV or Parquet",
    response_class=Response,
    responses={**files(MEDIA), **NEEDS_EXTRA, **problems(404)},
)
def export(backend: Store, _: Reader, span: Span, table: str, fmt: Literal["csv", "parquet"]) -> Response:
    spec = tables.TABLES.get(table)
    if spec is None:
        raise Problem(404, "No such table", f"Tables are {', '.join(tables.TABLES)}.", "not-found")
    try:
        # Imported here: pandas and pyarrow are the optional `analytics` extra.
        from analytics.exports import to_bytes
    except ImportError as exc:
        raise _analytics_extra_missing() from exc
    body = to_bytes(spec.model, spec.build(backend, span), fmt)
    name = f"{table}_{span.end.strftime('%Y%m%dT%H%M%SZ')}.{fmt}"
    return Response(body, media_type=MEDIA[fmt], headers={"Content-Disposition": f'attachment; filename="{name}"'})


Side = Annotated[int, Query(ge=200, le=4000, description="pixels")]


@router.get(
    "/map.{fmt}",
    summary="Map of France by department: free slots per 10,000 inhabitants",
    response_class=Response,
    responses={**files(PICTURES), **NEEDS_EXTRA},
)
async def map_picture(
    backend: Store,
    _: Reader,
    fmt: Literal["png", "svg"],
    horizon: Horizon = 48,
    at: Instant | None = None,
    width: Side = 1000,
    height: Side = 1000,
) -> Response:
    try:
        # Imported here: matplotlib is the optional `analytics` extra.
        from analytics.pictures import render_map
    except ImportError as exc:
        raise _analytics_extra_missing() from exc
    rows = await run_in_threadpool(tables.coverage, backend, "department", _horizon(horizon), _utc(at))
    title = f"Créneaux libres à {horizon} h pour 10 000 habitants"
    body = await run_in_threadpool(render_map, rows, fmt, width, height, title)
    return Response(body, media_type=PICTURES[fmt], headers={"Cache-Control": "no-store"})


@router.get(
    "/chart.{fmt}",
    summary="Free slots and under-served searches over a period",
    response_class=Response,
    responses={**files(PICTURES), **NEEDS_EXTRA},
)
async def chart_picture(
    backend: Store,
    _: Reader,
    span: Span,
    fmt: Literal["png", "svg"],
    horizon: Horizon = 48,
    width: Side = 1200,
    height: Side = 500,
) -> Response:
    try:
        # Imported here: matplotlib is the optional `analytics` extra.
        from analytics.pictures import render_chart
    except ImportError as exc:
        raise _analytics_extra_missing() from exc
    points = await run_in_threadpool(tables.evolution, backend, "national", None, _horizon(horizon), span)
    activity_rows = await run_in_threadpool(tables.search_activity, backend, span)
    body = await run_in_threadpool(render_chart, points, activity_rows, fmt, width, height, (span.start, span.end))
    return Response(body, media_type=PICTURES[fmt], headers={"Cache-Control": "no-store"})


@router.post("/snapshots", response_model=SnapshotTaken, status_code=201, summary="Take a coverage snapshot now")
def take_snapshot(
    backend: Store,
    settings: Annotated[Settings, Depends(get_settings)],
    _: Annotated[Any, Depends(require(*ADMINS))],
) -> SnapshotTaken:
    s = snapshot_now(backend, settings)
    return SnapshotTaken(
        snapshot=s.snapshot,
        rows=s.rows,
        participants=s.participants,
        slots_72h=s.slots_72h,
        pruned=s.pruned,
        duration_s=round(s.duration_s, 3),
    )
