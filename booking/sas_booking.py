"""Booking a SAS-calendar slot inside Dispo: no vendor's page, the regulator books it here. The slot is taken by one
compare-and-set on its own document (kind `sas_bookings`): of two regulators booking it at once, exactly one wins,
on every backend; the other is told it is taken, with the practitioner's next free slots. The appointment then goes
through the same record, follow-up and transmission to the SAMU as a vendor's (`booking.appointments.record`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aggregation.availability import KIND as SLOTS
from aggregation.availability import SAS_VENDOR
from aggregation.sas_calendar import BOOKINGS
from booking.appointments import participant_department, record
from booking.bookings import next_slots
from core.errors import Conflict, NotFound
from core.records import Appointment, AppointmentStatus
from indexer.backend import Backend
from indexer.lifecycle import ensure_live

IDENTIFIER_SYSTEM = "urn:dispo:sas-calendar"  # the appointments Dispo itself books


def is_sas_slot(slot_id: str) -> bool:
    return slot_id.startswith(f"{SAS_VENDOR}:")


def book(backend: Backend, slot_id: str, regulator: str, now: datetime | None = None) -> Appointment:
    """Take the slot for the regulator and record the appointment; raises NotFound (gone or past) or Conflict
    (taken by another meanwhile, with the next slots)."""
    at = now or datetime.now(UTC)
    slot = backend.get(SLOTS, slot_id) if backend.live_index(SLOTS) is not None else None
    taken_doc = backend.get(BOOKINGS, slot_id) if backend.live_index(BOOKINGS) is not None else None
    if (slot is None and taken_doc is None) or (slot is not None and datetime.fromisoformat(slot["start"]) < at):
        raise NotFound("Slot not found", f"{slot_id} is not a free slot any more; search again.", "slot-not-found")
    if slot is None and taken_doc is not None:
        raise _taken(backend, taken_doc["idnps"], slot_id, at)
    if slot is None or slot.get("vendor") != SAS_VENDOR:
        raise NotFound("Slot not found", f"{slot_id} is not a SAS-calendar slot.", "slot-not-found")
    identifier = uuid.uuid4().hex
    appointment_id = f"{SAS_VENDOR}:{identifier}"
    ensure_live(backend, BOOKINGS)
    won = False

    def take(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal won
        won = doc is None
        if not won:
            return None
        return {
            "slot_id": slot_id,
            "idnps": slot["idnps"],
            "regulator": regulator,
            "appointment_id": appointment_id,
            "at": at.isoformat(),
        }

    backend.update(BOOKINGS, slot_id, take)
    if not won:
        raise _taken(backend, slot["idnps"], slot_id, at)
    index = ensure_live(backend, SLOTS)
    backend.delete(index, [slot_id])  # gone from searches at once
    backend.refresh(index)
    appointment = Appointment(
        appointment_id=appointment_id,
        vendor=SAS_VENDOR,
        identifier_system=IDENTIFIER_SYSTEM,
        identifier_value=identifier,
        status=AppointmentStatus.booked,
        start=datetime.fromisoformat(slot["start"]),
        end=datetime.fromisoformat(slot["end"]),
        idnps=slot["idnps"],
        operator=regulator,
        department_code=participant_department(backend, SAS_VENDOR, slot["idnps"]),
        last_updated=at,
    )
    record(backend, appointment, at)
    return appointment


def _taken(backend: Backend, idnps: str, slot_id: str, at: datetime) -> Conflict:
    # Read while the winner may not have taken it out of the index yet: the slot itself is never offered back.
    following = [s for s in next_slots(backend, idnps, at, 6) if s.slot_id != slot_id][:5]
    return Conflict(
        "Slot taken",
        "Another regulator has just booked this slot; here are the practitioner's next free slots.",
        "slot-taken",
        next_slots=[s.model_dump(mode="json") for s in following],
    )
