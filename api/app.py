"""The FastAPI application: routes, error format, and the objects shared by requests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aggregation import metrics
from aggregation.status import vendor_statuses
from api import bookings, coverage, directory, fhir, participations, problems, search, vendors, web
from api.auth import Role, TokenRegistry
from api.deps import require
from core import __version__
from core.settings import Settings, get_settings
from indexer.backend import Backend
from indexer.factory import make_backend


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Dispo",
        version=__version__,
        description="National directory and availability index for the SAS. Every /v1 route needs a bearer "
        "token with a role (regulator, maintainer, analyst, vendor). Errors are RFC 9457 problem+json.",
    )
    app.state.settings = settings
    app.state.backend = backend or make_backend(settings)
    app.state.tokens = TokenRegistry.from_settings(settings)
    problems.install(app)
    app.include_router(directory.router)
    app.include_router(vendors.router)
    app.include_router(participations.router)
    app.include_router(search.router)
    app.include_router(bookings.router)
    app.include_router(fhir.router)
    app.include_router(coverage.router)
    app.include_router(web.router)

    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The backend answers and the live indices exist")
    def readyz() -> JSONResponse:
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

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics (maintainer token)")
    def prometheus(_: Annotated[Any, Depends(require(Role.maintainer))]) -> Response:
        # Gauges come from the persisted vendor status, so they are right whichever process aggregates.
        vendor_statuses(app.state.backend)
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
