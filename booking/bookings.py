"""Booking on the patient's behalf: the slot re-checked with its vendor, the regulator's account pushed to the
vendor if needed, the attempt recorded, and the vendor's page returned with `origin=sas`."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel

from aggregation.client import VendorError, make_client, search_participants
from booking import hub_outbox
from booking.accounts import ensure_account
from core.errors import Conflict, InvalidRequest, NotFound
from core.records import Appointment, AppointmentStatus, BookingAttempt, Slot
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live, iterate_all
from indexer.registry import get_vendor

RECHECK_DEADLINE_S = 1.0  # the regulator is on the phone: a vendor slower than this books unverified


def with_origin_sas(url: str) -> str:
    """Merge origin=sas into a URL's query, keeping its other parameters (and replacing any other origin)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "origin"]
    query.append(("origin", "sas"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


async def recheck(backend: Backend, slot: dict[str, Any]) -> bool | None:
    """True if the vendor still offers the slot, False if not, None if it did not answer in time."""
    vendor = await asyncio.to_thread(get_vendor, backend, slot["vendor"])
    if vendor is None:
        return None
    start = datetime.fromisoformat(slot["start"])
    quick = vendor.model_copy(update={"timeout_s": min(vendor.timeout_s, RECHECK_DEADLINE_S)})

    async def ask() -> set[str]:
        async with make_client(quick) as client:
            result = await search_participants(
                client,
                quick,
                [slot["idnps"]],
                start - timedelta(minutes=1),
                start + timedelta(minutes=1),
                datetime.now(UTC),
            )
        return {s.slot_id for s in result.slots}

    try:
        return slot["slot_id"] in await asyncio.wait_for(ask(), RECHECK_DEADLINE_S)
    except (VendorError, TimeoutError):
        return None


def next_slots(backend: Backend, idnps: str, now: datetime, count: int = 5) -> list[Slot]:
    """The practitioner's next indexed free slots, earliest first."""
    hits = backend.search(
        "slots", GeoQuery(filters={"idnps": [idnps]}, ranges={"start": (now.timestamp(), None)}, limit=200)
    ).hits
    return sorted((Slot.model_validate(h.doc) for h in hits), key=lambda s: (s.start, s.slot_id))[:count]


@dataclass(frozen=True)
class BookingStarted:
    attempt: BookingAttempt
    booking_url: str  # the vendor's page, with origin=sas


async def start_booking(backend: Backend, slot_id: str, regulator: str, name: str | None = None) -> BookingStarted:
    """Start booking `slot_id` for `regulator`.

    Raises NotFound for a slot gone or past, InvalidRequest for a walk-in slot (nothing to book), and
    Conflict, with the practitioner's next free slots, when the vendor says it is taken (it then leaves the
    index at once).
    """
    slot = await asyncio.to_thread(backend.get, "slots", slot_id)
    now = datetime.now(UTC)
    if slot is None or datetime.fromisoformat(slot["start"]) < now:
        raise NotFound("Slot not found", f"{slot_id} is not a free slot any more; search again.", "slot-not-found")
    if not slot.get("booking_url"):
        raise InvalidRequest(
            "No booking page", "this slot is a walk-in slot: the patient can go without booking.", "walk-in"
        )
    still_free = await recheck(backend, slot)
    if still_free is False:
        await asyncio.to_thread(_forget, backend, slot["slot_id"])
        following = await asyncio.to_thread(next_slots, backend, slot["idnps"], now)
        raise Conflict(
            "Slot taken",
            "The vendor no longer offers this slot; here are the practitioner's next free slots.",
            "slot-taken",
            next_slots=[s.model_dump(mode="json") for s in following],
        )
    vendor = await asyncio.to_thread(get_vendor, backend, slot["vendor"])
    if vendor is not None:
        # The regulator needs an account at the vendor before its page can book on their behalf.
        await ensure_account(backend, vendor, regulator, name=name)
    attempt = BookingAttempt(
        attempt_id=uuid.uuid4().hex,
        regulator=regulator,
        slot_id=slot["slot_id"],
        idnps=slot["idnps"],
        vendor=slot["vendor"],
        slot_start=datetime.fromisoformat(slot["start"]),
        at=now,
        verified=still_free is True,
    )
    await asyncio.to_thread(_record, backend, attempt)
    return BookingStarted(attempt=attempt, booking_url=with_origin_sas(slot["booking_url"]))


def _forget(backend: Backend, slot_id: str) -> None:
    live = backend.live_index("slots")
    if live is not None:
        backend.delete(live, [slot_id])
        backend.refresh(live)


def _record(backend: Backend, attempt: BookingAttempt) -> None:
    backend.write(ensure_live(backend, "booking_attempts"), [attempt.model_dump(mode="json")])


class Transmission(BaseModel):
    """Where the latest message about an appointment to the SAMU's regulation software stands (`booking.hub_outbox`)."""

    state: str  # queued, sent, acknowledged, failed, expired, held
    method: str  # CreateAppointment or UpdateAppointment
    queued_at: datetime
    sent_at: datetime | None = None
    acknowledged_at: datetime | None = None
    error: str | None = None  # the Hub's or the LRM's error, or why it is held


class FollowedAppointment(Appointment):
    """An appointment as its regulator follows it: with where its transmission to the SAMU stands."""

    transmission: Transmission | None = None


def _followed(doc: dict[str, Any]) -> FollowedAppointment:
    entries = sorted(doc.get(hub_outbox.FIELD) or [], key=lambda e: e["seq"])
    last = entries[-1] if entries else None
    transmission = None
    if last is not None:
        error = last.get("error") or {}
        said = " ".join(str(x) for x in (error.get("code"), error.get("text"), error.get("cause")) if x) or None
        transmission = Transmission(
            state=last["state"],
            method=last["content"].get("method", ""),
            queued_at=last["queued_at"],
            sent_at=last.get("sent_at"),
            acknowledged_at=last.get("acknowledged_at"),
            error=said,
        )
    return FollowedAppointment.model_validate(doc | {"transmission": transmission})


def appointments_of(
    backend: Backend,
    regulator: str | None,
    statuses: list[AppointmentStatus] | None = None,
    departments: list[str] | None = None,
    start_from: datetime | None = None,
    start_to: datetime | None = None,
) -> list[FollowedAppointment]:
    """A regulator's own appointments (all of the departments asked, with no regulator named), earliest first, each
    with where its transmission to the SAMU stands."""
    filters: dict[str, list[str]] = {"operator": [regulator]} if regulator is not None else {}
    if statuses:
        filters["status"] = [s.value for s in statuses]
    if departments:
        filters["department"] = departments
    ranges = {"start": (start_from.timestamp() if start_from else None, start_to.timestamp() if start_to else None)}
    hits = backend.search("appointments", GeoQuery(filters=filters, ranges=ranges, limit=1000)).hits
    return sorted((_followed(h.doc) for h in hits), key=lambda a: (a.start, a.appointment_id))


def appointments_of_practitioner(backend: Backend, idnps: str, since: datetime) -> list[FollowedAppointment]:
    """The SAS appointments a practitioner received (starting since `since`), earliest first."""
    if backend.live_index("appointments") is None:
        return []
    query = GeoQuery(filters={"idnps": [idnps]}, ranges={"start": (since.timestamp(), None)}, limit=1000)
    return sorted((_followed(h.doc) for h in backend.search("appointments", query).hits), key=lambda a: a.start)


@dataclass(frozen=True)
class AppointmentCounts:
    by_department: dict[str, dict[str, int]]  # department -> status -> count
    by_vendor: dict[str, dict[str, int]]


def appointment_counts(backend: Backend) -> AppointmentCounts:
    by_dep: dict[str, Counter[str]] = {}
    by_vendor: dict[str, Counter[str]] = {}
    for doc in iterate_all(backend, "appointments"):
        by_dep.setdefault(doc.get("department_code") or "unknown", Counter())[doc["status"]] += 1
        by_vendor.setdefault(doc["vendor"], Counter())[doc["status"]] += 1
    return AppointmentCounts(
        by_department={k: dict(v) for k, v in by_dep.items()}, by_vendor={k: dict(v) for k, v in by_vendor.items()}
    )


def regulator_accounts(
    backend: Backend, regulator: str | None = None, vendor: str | None = None
) -> list[dict[str, Any]]:
    filters = {k: [v] for k, v in (("regulator", regulator), ("vendor", vendor)) if v}
    return [h.doc for h in backend.search("regulator_accounts", GeoQuery(filters=filters, limit=1000)).hits]


async def push_account(backend: Backend, vendor_id: str, regulator: str, name: str | None = None) -> dict[str, Any]:
    """Create or update the regulator's account at the vendor now."""
    vendor = await asyncio.to_thread(get_vendor, backend, vendor_id)
    if vendor is None:
        raise NotFound("Not found", f"no vendor {vendor_id!r}", "not-found")
    return await ensure_account(backend, vendor, regulator, force=True, name=name)
