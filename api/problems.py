"""RFC 9457 problem details for every error the API returns, and their documentation in the OpenAPI.

Details are bounded: whatever a caller sent (an identifier, a field name) is quoted shortened, so an error never
echoes a large input back.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import DispoError
from indexer.backend import BackendUnavailable, InvalidCursor

PROBLEM_JSON = "application/problem+json"
FHIR_JSON = "application/fhir+json"
LONGEST_WORD = 80  # a longer run of characters in a detail is someone's input: cut to its start and an ellipsis
LONGEST_DETAIL = 1000


class Problem(Exception):
    """An HTTP-level refusal (authentication, roles, a body that does not match its URL)."""

    def __init__(self, status: int, title: str, detail: str, slug: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.slug, self.extra = status, title, detail, slug, extra


class BodyTooLarge(StarletteHTTPException):
    """A request body over the limit, found while it was read (see `api.limits`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes; send less.")


class ProblemDetails(BaseModel):
    """An RFC 9457 problem: `type` names the kind of problem (`/problems/<slug>`), `detail` says what to do."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str
    title: str
    status: int
    detail: str
    instance: str


class OperationOutcomeIssue(BaseModel):
    severity: str
    code: str
    diagnostics: str


class OperationOutcome(BaseModel):
    """The FHIR routes' errors."""

    model_config = ConfigDict(extra="allow")

    resourceType: str
    issue: list[OperationOutcomeIssue]


# What each status means on these routes, as the OpenAPI tells it.
MEANINGS = {
    400: "A malformed request: a cursor not (or no longer) valid for this request, a body that cannot be read",
    401: "No bearer token, or an unknown one",
    403: "The token's role cannot use this route",
    404: "The record asked for does not exist",
    409: "The record changed meanwhile",
    413: "The request body is over the size limit",
    422: "A parameter or body field is invalid; the problem lists each one",
    501: "The optional `analytics` extra is not installed",
    503: "The index cannot be reached; retry in a few seconds",
}
FHIR_CODES = {
    400: "structure",
    401: "login",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    413: "too-costly",
    422: "business-rule",
    503: "transient",
}
HTTP_REFUSALS = {
    400: ("Malformed body", "malformed-body"),
    404: ("Not found", "not-found"),
    405: ("Method not allowed", "method-not-allowed"),
}
PROBLEM_REF = "#/components/schemas/Problem"
OUTCOME_REF = "#/components/schemas/OperationOutcome"


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route answering these problems as problem+json, and 413, which every route may."""
    return {
        status: {"description": MEANINGS[status], "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}}
        for status in sorted({*statuses, 413})
    }


def outcomes(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The same for the FHIR routes, whose errors are OperationOutcome resources."""
    return {
        status: {"description": MEANINGS[status], "content": {FHIR_JSON: {"schema": {"$ref": OUTCOME_REF}}}}
        for status in sorted({*statuses, 413})
    }


class FhirResponse(JSONResponse):
    """What the FHIR routes answer (their handlers build it): the media type documented for them."""

    media_type = FHIR_JSON


def fhir_resources(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a FHIR route answering an Appointment resource with these statuses."""
    schema = {"type": "object", "description": "a FHIR Appointment (FrAppointmentSAS)"}
    return {s: {"description": "The appointment", "content": {FHIR_JSON: {"schema": schema}}} for s in statuses}


def schemas() -> dict[str, Any]:
    """The component schemas the responses above refer to."""
    found: dict[str, Any] = {"Problem": ProblemDetails.model_json_schema()}
    outcome = OperationOutcome.model_json_schema(ref_template="#/components/schemas/{model}")
    found.update(outcome.pop("$defs", {}))
    found["OperationOutcome"] = outcome
    return found


def bounded(text: str) -> str:
    """`text` with every run of more than LONGEST_WORD characters cut short, and at most LONGEST_DETAIL long."""
    text = re.sub(rf"\S{{{LONGEST_WORD + 1},}}", lambda m: m.group(0)[: LONGEST_WORD - 20] + "…", text)
    return text if len(text) <= LONGEST_DETAIL else text[: LONGEST_DETAIL - 1] + "…"


def problem_response(
    request: Request, status: int, title: str, detail: str, slug: str | None = None, **extra: Any
) -> JSONResponse:
    detail = bounded(detail)
    if request.url.path.startswith("/fhir"):
        # Vendors speak FHIR: their errors are OperationOutcome resources.
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": FHIR_CODES.get(status, "processing"), "diagnostics": f"{title}: {detail}"}
            ],
        }
        return JSONResponse(outcome, status_code=status, media_type=FHIR_JSON)
    body: dict[str, Any] = {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": bounded(request.url.path),
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
            {
                "field": bounded(".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0])),
                "message": bounded(e["msg"]),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(request, 422, "Invalid request", detail, "invalid-request", errors=errors)

    @app.exception_handler(InvalidCursor)
    async def _cursor(request: Request, exc: InvalidCursor) -> JSONResponse:
        reason = str(exc)
        return problem_response(
            request,
            400,
            "Invalid cursor",
            f"{reason[:1].upper()}{reason[1:]}: search again without the cursor.",
            "invalid-cursor",
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

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return problem_response(request, 413, "Content too large", str(exc.detail), "body-too-large")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's and FastAPI's own refusals: an unknown path or method, and a body that cannot even be read
        # as text (FastAPI answers 400 for it; a body that is not JSON is a 422 naming the body).
        title, slug = HTTP_REFUSALS.get(exc.status_code, ("Error", None))
        return problem_response(request, exc.status_code, title, str(exc.detail), slug)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug: the server logs it whole; the caller gets a problem like any other, without the internals.
        return problem_response(
            request, 500, "Internal error", "The server failed to answer; retry, or tell its maintainers.", "internal"
        )
