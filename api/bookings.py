"""Booking on the patient's behalf (start), and the follow-up of appointments vendors report back."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from aggregation.client import VendorError, make_client, search_slots
from api.auth import Principal, Role
from api.deps import get_backend, require
from api.problems import Problem
from booking.accounts import ensure_account
from core.records import Appointment, AppointmentStatus, BookingAttempt, Slot
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live
from indexer.registry import get_vendor

router = APIRouter(prefix="/v1", tags=["bookings"])
RECHECK_DEADLINE_S = 1.0


class BookingStart(BaseModel):
    slot_id: str


class BookingStarted(BaseModel):
    attempt_id: str
    booking_url: str  # the vendor's page, with origin=sas
    verified: bool  # the vendor confirmed the slot just now (False when it did not answer in time)


def with_origin_sas(url: str) -> str:
    """Merge origin=sas into a URL's query, keeping its other parameters (and replacing any other origin)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "origin"]
    query.append(("origin", "sas"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _recheck(backend: Backend, slot: dict[str, Any]) -> bool | None:
    """True if the vendor still offers the slot, False if not, None if it did not answer in time."""
    vendor = get_vendor(backend, slot["vendor"])
    if vendor is None:
        return None
    start = datetime.fromisoformat(slot["start"])
    quick = vendor.model_copy(update={"timeout_s": min(vendor.timeout_s, RECHECK_DEADLINE_S)})

    async def ask() -> set[str]:
        async with make_client(quick) as client:
            result = await search_slots(
                client,
                quick,
                [slot["idnps"]],
                start - timedelta(minutes=1),
                start + timedelta(minutes=1),
                datetime.now(UTC),
            )
        return {s.slot_id for s in result.slots}

    try:
        return slot["slot_id"] in asyncio.run(asyncio.wait_for(ask(), RECHECK_DEADLINE_S))
    except (VendorError, TimeoutError):
        return None


def _next_slots(backend: Backend, idnps: str, now: datetime) -> list[Slot]:
    hits = backend.search(
        "slots", GeoQuery(filters={"idnps": [idnps]}, ranges={"start": (now.timestamp(), None)}, limit=200)
    ).hits
    return sorted((Slot.model_validate(h.doc) for h in hits), key=lambda s: (s.start, s.slot_id))[:5]


@router.post("/bookings", response_model=BookingStarted, status_code=201, summary="Start booking a slot")
def start_booking(
    body: BookingStart,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(Role.regulator))],
) -> BookingStarted:
    slot = backend.get("slots", body.slot_id)
    now = datetime.now(UTC)
    if slot is None or datetime.fromisoformat(slot["start"]) < now:
        raise Problem(
            404, "Slot not found", f"{body.slot_id} is not a free slot any more; search again.", "slot-not-found"
        )
    if not slot.get("booking_url"):
        raise Problem(
            422, "No booking page", "this slot is a walk-in slot: the patient can go without booking.", "walk-in"
        )
    still_free = _recheck(backend, slot)
    if still_free is False:
        live = backend.live_index("slots")
        if live is not None:
            backend.delete(live, [slot["slot_id"]])
            backend.refresh(live)
        raise Problem(
            409,
            "Slot taken",
            "The vendor no longer offers this slot; here are the practitioner's next free slots.",
            "slot-taken",
            next_slots=[s.model_dump(mode="json") for s in _next_slots(backend, slot["idnps"], now)],
        )
    vendor = get_vendor(backend, slot["vendor"])
    if vendor is not None:
        # The regulator needs an account at the vendor before its page can book on their behalf.
        ensure_account(backend, vendor, principal.label)
    attempt = BookingAttempt(
        attempt_id=uuid.uuid4().hex,
        regulator=principal.label,
        slot_id=slot["slot_id"],
        idnps=slot["idnps"],
        vendor=slot["vendor"],
        slot_start=datetime.fromisoformat(slot["start"]),
        at=now,
        verified=still_free is True,
    )
    index = ensure_live(backend, "booking_attempts")
    backend.write(index, [attempt.model_dump(mode="json")])
    return BookingStarted(
        attempt_id=attempt.attempt_id, booking_url=with_origin_sas(slot["booking_url"]), verified=attempt.verified
    )


class AppointmentCounts(BaseModel):
    by_department: dict[str, dict[str, int]]  # department -> status -> count
    by_vendor: dict[str, dict[str, int]]


@router.get("/appointments", response_model=list[Appointment], summary="Appointments a regulator booked")
def appointments(
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(Role.regulator))],
    status: Annotated[list[AppointmentStatus] | None, Query()] = None,
    department: Annotated[list[str] | None, Query()] = None,
    start_from: datetime | None = None,
    start_to: datetime | None = None,
) -> list[Appointment]:
    filters: dict[str, list[str]] = {"operator": [principal.label]}
    if status:
        filters["status"] = [s.value for s in status]
    if department:
        filters["department"] = department
    ranges = {"start": (start_from.timestamp() if start_from else None, start_to.timestamp() if start_to else None)}
    hits = backend.search("appointments", GeoQuery(filters=filters, ranges=ranges, limit=1000)).hits
    return sorted((Appointment.model_validate(h.doc) for h in hits), key=lambda a: (a.start, a.appointment_id))


@router.get("/appointments/counts", response_model=AppointmentCounts, summary="Appointments per territory and vendor")
def counts(
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, Depends(require(Role.analyst, Role.maintainer))],
) -> AppointmentCounts:
    from indexer.lifecycle import iterate_all

    by_dep: dict[str, Counter[str]] = {}
    by_vendor: dict[str, Counter[str]] = {}
    for doc in iterate_all(backend, "appointments"):
        by_dep.setdefault(doc.get("department_code") or "unknown", Counter())[doc["status"]] += 1
        by_vendor.setdefault(doc["vendor"], Counter())[doc["status"]] += 1
    return AppointmentCounts(
        by_department={k: dict(v) for k, v in by_dep.items()}, by_vendor={k: dict(v) for k, v in by_vendor.items()}
    )


@router.get("/regulator-accounts", summary="Regulator accounts at vendors: state per regulator and vendor")
def regulator_accounts(
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, Depends(require(Role.maintainer))],
    regulator: str | None = None,
    vendor: str | None = None,
) -> list[dict[str, Any]]:
    filters = {k: [v] for k, v in (("regulator", regulator), ("vendor", vendor)) if v}
    return [h.doc for h in backend.search("regulator_accounts", GeoQuery(filters=filters, limit=1000)).hits]


@router.post("/regulator-accounts/{vendor_id}", summary="Create or update my account at a vendor now")
def push_my_account(
    vendor_id: str,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(Role.regulator))],
) -> dict[str, Any]:
    vendor = get_vendor(backend, vendor_id)
    if vendor is None:
        raise Problem(404, "Not found", f"no vendor {vendor_id!r}", "not-found")
    return ensure_account(backend, vendor, principal.label, force=True)
