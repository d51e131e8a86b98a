"""Booking routes: start booking a slot on the patient's behalf, follow appointments and regulator accounts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api.auth import Principal, Role
from api.deps import get_backend, require
from api.params import Instant, VendorId
from api.problems import problems
from booking import bookings
from booking.bookings import FollowedAppointment
from core.records import AppointmentStatus
from indexer.backend import Backend

router = APIRouter(prefix="/v1", tags=["bookings"], responses=problems(401, 403, 503))


class BookingStart(BaseModel):
    slot_id: str = Field(min_length=1, max_length=300)  # `<vendor>:<the vendor's slot id>`


class BookingStarted(BaseModel):
    attempt_id: str
    booking_url: str  # the vendor's page, with origin=sas
    verified: bool  # the vendor confirmed the slot just now (False when it did not answer in time)


class AppointmentCounts(BaseModel):
    by_department: dict[str, dict[str, int]]  # department -> status -> count
    by_vendor: dict[str, dict[str, int]]


@router.post(
    "/bookings",
    response_model=BookingStarted,
    status_code=201,
    summary="Start booking a slot",
    responses=problems(400, 404, 409, 422),
)
async def start_booking(
    body: BookingStart,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(Role.regulator))],
) -> BookingStarted:
    started = await bookings.start_booking(backend, body.slot_id, principal.label)
    return BookingStarted(
        attempt_id=started.attempt.attempt_id, booking_url=started.booking_url, verified=started.attempt.verified
    )


@router.get(
    "/appointments",
    response_model=list[FollowedAppointment],
    summary="Appointments a regulator booked, with where their transmission to the SAMU stands",
    responses=problems(422),
)
def appointments(
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(Role.regulator))],
    status: Annotated[list[AppointmentStatus] | None, Query()] = None,
    department: Annotated[list[str] | None, Query()] = None,
    start_from: Instant | None = None,
    start_to: Instant | None = None,
) -> list[FollowedAppointment]:
    return bookings.appointments_of(backend, principal.label, status, department, start_from, start_to)


@router.get("/appointments/counts", response_model=AppointmentCounts, summary="Appointments per territory and vendor")
def counts(
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, Depends(require(Role.analyst, Role.maintainer))],
) -> AppointmentCounts:
    found = bookings.appointment_counts(backend)
    return AppointmentCounts(by_department=found.by_department, by_vendor=found.by_vendor)


@router.get(
    "/regulator-accounts",
    summary="Regulator accounts at vendors: state per regulator and vendor",
    responses=problems(422),
)
def regulator_accounts(
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, Depends(require(Role.maintainer))],
    regulator: str | None = None,
    vendor: str | None = None,
) -> list[dict[str, Any]]:
    return bookings.regulator_accounts(backend, regulator, vendor)


@router.post(
    "/regulator-accounts/{vendor_id}",
    summary="Create or update my account at a vendor now",
    responses=problems(404, 422),
)
async def push_my_account(
    vendor_id: VendorId,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(Role.regulator))],
) -> dict[str, Any]:
    return await bookings.push_account(backend, vendor_id, principal.label)
