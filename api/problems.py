"""RFC 9457 problem details for every error the API returns."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import DispoError
from indexer.backend import BackendUnavailable, InvalidCursor

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An HTTP-level refusal (authentication, roles, a body that does not match its URL)."""

    def __init__(self, status: int, title: str, detail: str, slug: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.slug, self.extra = status, title, detail, slug, extra


FHIR_CODES = {
    400: "structure",
    401: "login",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    422: "business-rule",
    503: "transient",
}


def problem_response(
    request: Request, status: int, title: str, detail: str, slug: str | None = None, **extra: Any
) -> JSONResponse:
    if request.url.path.startswith("/fhir"):
        # Vendors speak FHIR: their errors are OperationOutcome resources.
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": FHIR_CODES.get(status, "processing"), "diagnostics": f"{title}: {detail}"}
            ],
        }
        return JSONResponse(outcome, status_code=status, media_type="application/fhir+json")
    body: dict[str, Any] = {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc.status, exc.title, exc.detail, exc.slug, **exc.extra)

    @app.exception_handler(DispoError)
    async def _domain(request: Request, exc: DispoError) -> JSONResponse:
        return problem_response(request, exc.status, exc.title, exc.detail, exc.slug, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(request, 422, "Invalid request", detail, "invalid-request", errors=errors)

    @app.exception_handler(InvalidCursor)
    async def _cursor(request: Request, exc: InvalidCursor) -> JSONResponse:
        return problem_response(
            request, 422, "Invalid cursor", f"{exc}; start again without a cursor", "invalid-cursor"
        )

    @app.exception_handler(BackendUnavailable)
    async def _unavailable(request: Request, exc: BackendUnavailable) -> JSONResponse:
        return problem_response(
            request,
            503,
            "Search backend unavailable",
            "The index cannot be reached right now; retry in a few seconds.",
            "backend-unavailable",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed"}
        return problem_response(request, exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail))
