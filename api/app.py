"""The FastAPI application: routes, error format, and the objects shared by requests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from aggregation import metrics
from aggregation.status import vendor_statuses
from api import (
    accounts,
    bookings,
    coverage,
    directory,
    fhir,
    imports,
    lrm,
    orientations,
    participations,
    problems,
    search,
    signin,
    space,
    vendors,
    web,
)
from api.auth import TokenRegistry
from api.deps import ADMINS, public, require
from api.limits import BodyLimit
from api.problems import problems as answers
from booking import hub_outbox
from core import __version__
from core.settings import Settings, get_settings
from indexer.backend import Backend
from indexer.factory import make_backend
from rpps_import import history


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str  # ready | not ready
    backend: str
    version: str | None
    live: dict[str, str | None]  # kind -> its live index version, None before the first import
    detail: str | None
    missing: list[str] | None = None  # kinds without a live index, when the backend answers


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Dispo",
        version=__version__,
        description="National directory and availability index for the SAS. Every /v1 route needs a caller "
        "holding one of its roles: a person signed in through Pro Santé Connect (a session cookie, and the "
        "X-CSRF-Token header on changes), or a machine client's bearer token (regulator, maintainer, analyst, "
        "vendor). Errors are RFC 9457 problem+json (the "
        "vendors' FHIR routes answer OperationOutcome resources); request bodies are limited in size (413).",
    )
    app.state.settings = settings
    app.state.backend = backend or make_backend(settings)
    app.state.tokens = TokenRegistry.from_settings(settings)
    app.state.oidc = signin.OidcClient(settings) if settings.oidc_issuer else None
    problems.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.include_router(directory.router)
    app.include_router(vendors.router)
    app.include_router(participations.router)
    app.include_router(search.router)
    app.include_router(bookings.router)
    app.include_router(lrm.router)
    app.include_router(fhir.router)
    app.include_router(coverage.router)
    app.include_router(web.router)
    app.include_router(accounts.router)
    app.include_router(signin.router)
    app.include_router(space.router)
    app.include_router(orientations.router)
    app.include_router(imports.router)

    @app.get("/healthz", tags=["health"], summary="The process is up", responses=answers())
    def healthz(_: Annotated[None, Depends(public("a liveness probe, no data"))]) -> Health:
        return Health(status="ok")

    not_ready = {503: {"description": "The backend does not answer, or no directory is live", "model": Readiness}}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="The backend answers and the live indices exist",
        response_model=Readiness,
        responses={**answers(), **not_ready},
    )
    def readyz(_: Annotated[None, Depends(public("a readiness probe: index versions only"))]) -> JSONResponse:
        health = app.state.backend.health()
        body: dict[str, Any] = {
            "backend": health.backend,
            "version": health.version,
            "live": health.live,
            "detail": health.detail,
        }
        missing = [kind for kind, index in health.live.items() if index is None]
        ready = health.reachable and "practice_sites" not in missing
        body["status"] = "ready" if ready else "not ready"
        if health.reachable and missing:
            body["missing"] = missing
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics (administrators)",
        response_class=PlainTextResponse,
        responses=answers(401, 403, 503),
    )
    def prometheus(_: Annotated[Any, Depends(require(*ADMINS))]) -> Response:
        # Gauges come from the persisted vendor status, so they are right whichever process aggregates.
        vendor_statuses(app.state.backend)
        lrm = hub_outbox.summary(app.state.backend, datetime.now(UTC))
        for state, count in lrm.by_state.items():
            metrics.LRM_MESSAGES.labels(state).set(count)
        metrics.LRM_OLDEST.set(lrm.oldest_unacknowledged_s or 0.0)
        metrics.IMPORT_SAS_ALERTS.set(history.sas_alert_totals(app.state.backend))
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        # The generated document, with the schemas of the problems and OperationOutcomes the routes refer to.
        if app.openapi_schema is None:
            FastAPI.openapi(app)["components"]["schemas"].update(problems.schemas())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    return app
