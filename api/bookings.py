"""Booking routes: start booking a slot on the patient's behalf, follow appointments and regulator accounts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from access.roles import Principal, Role
from api.deps import ADMINS, ANALYSTS, BOOKERS, get_backend, require
from api.params import Instant, VendorId
from api.problems import problems
from booking import bookings, sas_booking
from booking.bookings import FollowedAppointment
from core.records import AppointmentStatus
from indexer.backend import Backend

TERRITORY = (Role.territorial_referent, Role.territorial_admin)
FOLLOWED = "the regulation's roles: the appointments they booked; referents and administrators: their territories'"
router = APIRouter(prefix="/v1", tags=["bookings"], responses=problems(401, 403, 503))


class BookingStart(BaseModel):
    slot_id: str = Field(min_length=1, max_length=300)  # `<vendor>:<the vendor's slot id>`


class BookingStarted(BaseModel):
    attempt_id: str | None  # a vendor's slot: the opening of its page
    booking_url: str | None  # the vendor's page, with origin=sas; none for a SAS-calendar slot, booked here
    verified: bool  # the vendor confirmed the slot just now (False when it did not answer in time)
    appointment_id: str | None = None  # a SAS-calendar slot: the appointment, booked already


class AppointmentCounts(BaseModel):
    by_department: dict[str, dict[str, int]]  # department -> status -> count
    by_vendor: dict[str, dict[str, int]]


@router.post(
    "/bookings",
    response_model=BookingStarted,
    status_code=201,
    summary="Start booking a slot (a vendor's: its page; a SAS calendar's: booked at once)",
    responses=problems(400, 404, 409, 422),
)
async def start_booking(
    body: BookingStart,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(*BOOKERS))],
) -> BookingStarted:
    if sas_booking.is_sas_slot(body.slot_id):
        booked = await run_in_threadpool(sas_booking.book, backend, body.slot_id, principal.label)
        return BookingStarted(attempt_id=None, booking_url=None, verified=True, appointment_id=booked.appointment_id)
    # The regulator's account at the vendor (INT_R02) is the person's Dispo account: its id and name.
    started = await bookings.start_booking(backend, body.slot_id, principal.label, principal.name)
    return BookingStarted(
        attempt_id=started.attempt.attempt_id, booking_url=started.booking_url, verified=started.attempt.verified
    )


@router.get(
    "/appointments",
    response_model=list[FollowedAppointment],
    summary="Appointments one booked (or, for a territory's referents and administrators, those of their territories), "
    "with where their transmission to the SAMU stands",
    responses=problems(422),
)
def appointments(
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(*BOOKERS, *TERRITORY, narrowed=FOLLOWED))],
    status: Annotated[list[AppointmentStatus] | None, Query()] = None,
    department: Annotated[list[str] | None, Query()] = None,
    start_from: Instant | None = None,
    start_to: Instant | None = None,
) -> list[FollowedAppointment]:
    if principal.holds(BOOKERS):
        return bookings.appointments_of(backend, principal.label, status, department, start_from, start_to)
    mine = principal.territories(TERRITORY) or frozenset()
    wanted = [d for d in (department or sorted(mine)) if d in mine]
    if not wanted:
        return []
    return bookings.appointments_of(backend, None, status, wanted, start_from, start_to)


@router.get("/appointments/counts", response_model=AppointmentCounts, summary="Appointments per territory and vendor")
def counts(
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, Depends(require(*ANALYSTS))],
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
    _: Annotated[Any, Depends(require(*ADMINS))],
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
    principal: Annotated[Principal, Depends(require(*BOOKERS, narrowed="one's own account"))],
) -> dict[str, Any]:
    return await bookings.push_account(backend, vendor_id, principal.label, principal.name)
