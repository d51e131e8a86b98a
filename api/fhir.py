"""The FHIR endpoint vendors call (vendor role): appointments booked through the SAS (flow INT_R03).

A vendor's token label is its vendor id: a vendor writes and reads only its own appointments.
Errors are OperationOutcome resources: 400 for what is not a FHIR Appointment, 422 for a business rule.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from access.roles import Principal, Role
from api.deps import get_backend, require
from api.problems import FhirResponse, Problem, fhir_resources, outcomes
from booking.appointments import AppointmentRejected, find_by_identifier, parse_appointment, record, to_fhir
from indexer.backend import Backend
from indexer.registry import get_vendor

router = APIRouter(prefix="/fhir", tags=["fhir (vendors)"])
FHIR_JSON = "application/fhir+json"


def _vendor(backend: Backend, principal: Principal) -> str:
    if get_vendor(backend, principal.label) is None:
        raise Problem(
            403, "Forbidden", f"the token's vendor {principal.label!r} is not a registered vendor", "forbidden"
        )
    return principal.label


async def _body(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Malformed FHIR", f"the body is not JSON: {exc}", "malformed") from exc


def _parse(body: Any, vendor: str, backend: Backend):
    try:
        return parse_appointment(body, vendor, backend, datetime.now(UTC))
    except AppointmentRejected as exc:
        raise Problem(exc.status, "Appointment rejected", str(exc), "appointment-rejected") from exc


def _answer(outcome, status: int) -> JSONResponse:
    location = f"/fhir/Appointment/{outcome.appointment.appointment_id.replace(':', '-')}"
    return JSONResponse(
        to_fhir(outcome.appointment), status_code=status, media_type=FHIR_JSON, headers={"Location": location}
    )


@router.post(
    "/Appointment",
    summary="Report an appointment booked through the SAS",
    response_class=FhirResponse,
    responses={**fhir_resources(200, 201), **outcomes(400, 401, 403, 422, 503)},
)
async def create(
    request: Request,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(Role.vendor, narrowed="a vendor: its own slots and appointments"))],
) -> JSONResponse:
    vendor = _vendor(backend, principal)
    appointment = _parse(await _body(request), vendor, backend)
    _own(backend, vendor, appointment.identifier_value)
    outcome = record(backend, appointment)
    return _answer(outcome, 201 if outcome.created else 200)


@router.put(
    "/Appointment",
    summary="Conditional update: PUT /fhir/Appointment?identifier=[system|]value",
    response_class=FhirResponse,
    responses={**fhir_resources(200, 201), **outcomes(400, 401, 403, 422, 503)},
)
async def update(
    request: Request,
    identifier: str,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(Role.vendor, narrowed="a vendor: its own slots and appointments"))],
) -> JSONResponse:
    vendor = _vendor(backend, principal)
    appointment = _parse(await _body(request), vendor, backend)
    value = identifier.rpartition("|")[2]
    if value != appointment.identifier_value:
        raise Problem(
            422, "Appointment rejected", "the identifier in the URL and in the body differ", "appointment-rejected"
        )
    _own(backend, vendor, value)
    outcome = record(backend, appointment)
    return _answer(outcome, 201 if outcome.created else 200)


@router.get(
    "/Appointment/{resource_id}",
    summary="Read back one of the vendor's appointments",
    response_class=FhirResponse,
    responses={**fhir_resources(200), **outcomes(401, 403, 404, 422, 503)},
)
def read(
    resource_id: str,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(Role.vendor, narrowed="a vendor: its own slots and appointments"))],
) -> JSONResponse:
    vendor = _vendor(backend, principal)
    prefix = vendor + "-"
    value = resource_id[len(prefix) :] if resource_id.startswith(prefix) else None
    found = [a for a in find_by_identifier(backend, value) if a.vendor == vendor] if value else []
    if not found:
        raise Problem(404, "Not found", f"no appointment {resource_id}", "not-found")
    return JSONResponse(to_fhir(found[0]), media_type=FHIR_JSON)


def _own(backend: Backend, vendor: str, identifier_value: str) -> None:
    others = [a for a in find_by_identifier(backend, identifier_value) if a.vendor != vendor]
    if others:
        raise Problem(403, "Forbidden", "this appointment was reported by another vendor", "forbidden")
