"""The SAS calendar: free slots a practitioner without an interfaced booking software offers in Dispo itself — a
weekly pattern per practice site, one-off openings, closed days — edited in their space (kind `sas_calendars`).

Its slots are indexed like any vendor's, under the vendor `sas`, over the next days (`HORIZON_DAYS`): written when
the calendar changes and again by the scheduler as days pass, through the same reconciliation (new slots added,
slots no longer in the calendar removed, periods of unavailability kept out). A slot booked in Dispo
(`booking.sas_booking`) is never written again. Times are Paris wall-clock times, as practitioners think of them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, model_validator

from aggregation.availability import KIND as SLOTS
from aggregation.availability import SAS_VENDOR, ReconcileStats, SiteMapper, reconcile
from core.records import Modality, Participation, Slot, SlotType
from indexer.backend import Backend
from indexer.lifecycle import ensure_live, iterate_all
from indexer.registry import get_participation, save_participation

KIND = "sas_calendars"
BOOKINGS = "sas_bookings"  # the SAS slots taken, by slot id (`booking.sas_booking`)
HORIZON_DAYS = 7
PARIS = ZoneInfo("Europe/Paris")


class Opening(BaseModel):
    """From `start` to `end` (Paris time), slots of `slot_minutes` at this practice site."""

    site_id: str = Field(min_length=1, max_length=120)
    start: time
    end: time
    slot_minutes: int = Field(default=15, ge=5, le=240)
    slot_type: SlotType = SlotType.SNP
    modality: Modality = Modality.AMB

    @model_validator(mode="after")
    def _ordered(self) -> Opening:
        if self.end <= self.start:
            raise ValueError("an opening ends after it starts")
        return self


class WeeklyOpening(Opening):
    """An opening every week on this day."""

    weekday: int = Field(ge=0, le=6)  # 0 Monday … 6 Sunday


class OneOffOpening(Opening):
    """An opening on one day, beside the weekly pattern."""

    day: date


class SasCalendar(BaseModel):
    """A practitioner's SAS calendar, as they edit it."""

    weekly: list[WeeklyOpening] = Field(default_factory=list, max_length=50)
    one_offs: list[OneOffOpening] = Field(default_factory=list, max_length=200)
    closed_days: list[date] = Field(default_factory=list, max_length=400)  # no weekly opening on these days


def get_calendar(backend: Backend, idnps: str) -> SasCalendar | None:
    if backend.live_index(KIND) is None:
        return None
    doc = backend.get(KIND, idnps)
    return SasCalendar.model_validate(doc["calendar"]) if doc else None


def save_calendar(
    backend: Backend, idnps: str, calendar: SasCalendar, by: str, now: datetime | None = None
) -> ReconcileStats:
    """Keep the calendar, make the practitioner a participant through it (beside their vendors, if any), and index its
    slots now; raises ValueError naming a site that is not the practitioner's."""
    at = now or datetime.now(UTC)
    sites = {s["site_id"] for s in SiteMapper(backend).sites(idnps)}
    unknown = sorted({o.site_id for o in [*calendar.weekly, *calendar.one_offs]} - sites)
    if unknown:
        raise ValueError(f"site {', '.join(unknown)} is not one of the practitioner's practice sites")
    index = ensure_live(backend, KIND)
    doc = {"idnps": idnps, "calendar": calendar.model_dump(mode="json"), "updated_by": by, "updated_at": at.isoformat()}
    taking_part = get_participation(backend, idnps)
    if taking_part is None:  # keeping a SAS calendar is taking part through it
        save_participation(backend, Participation(idnps=idnps, vendors=[SAS_VENDOR]))
    elif SAS_VENDOR not in taking_part.vendors:
        save_participation(backend, taking_part.model_copy(update={"vendors": [*taking_part.vendors, SAS_VENDOR]}))
    backend.write(index, [doc])
    backend.refresh(index)
    return publish(backend, idnps, at)


def slots_of(idnps: str, calendar: SasCalendar, now: datetime, days: int = HORIZON_DAYS) -> list[Slot]:
    """The calendar's slots from now over the next `days` days, earliest first."""
    today = now.astimezone(PARIS).date()
    closed = set(calendar.closed_days)
    openings: list[tuple[date, Opening]] = []
    for n in range(days + 1):
        day = today + timedelta(days=n)
        if day not in closed:
            openings += [(day, o) for o in calendar.weekly if o.weekday == day.weekday()]
        openings += [(day, o) for o in calendar.one_offs if o.day == day]
    out: dict[str, Slot] = {}
    for day, opening in openings:
        step = timedelta(minutes=opening.slot_minutes)
        begin = datetime.combine(day, opening.start, PARIS)
        until = datetime.combine(day, opening.end, PARIS)
        while begin + step <= until:
            if begin > now:
                slot = _slot(idnps, opening, begin, begin + step, now)
                out.setdefault(slot.slot_id, slot)
            begin += step
    return sorted(out.values(), key=lambda s: (s.start, s.slot_id))


def _slot(idnps: str, opening: Opening, begin: datetime, end: datetime, now: datetime) -> Slot:
    # One id per practitioner, site and start: the same slot whatever rule gives it, stable from one writing to the
    # next (so that a booked one is known again).
    site_key = opening.site_id.replace(":", "_")
    resource = f"{idnps}-{site_key}-{begin.astimezone(UTC).strftime('%Y%m%dT%H%M')}"
    return Slot(
        slot_id=f"{SAS_VENDOR}:{resource}",
        vendor=SAS_VENDOR,
        resource_id=resource,
        start=begin.astimezone(UTC),
        end=end.astimezone(UTC),
        utc_offset=begin.strftime("%z")[:3] + ":" + begin.strftime("%z")[3:],
        types=[opening.slot_type],
        modalities=[opening.modality],
        appointment_type="ROUTINE",
        idnps=idnps,
        site_id=opening.site_id,
        fetched_at=now,
    )


def publish(backend: Backend, idnps: str, now: datetime | None = None) -> ReconcileStats:
    """Make the index hold the calendar's slots to come, less those already booked."""
    at = now or datetime.now(UTC)
    calendar = get_calendar(backend, idnps) or SasCalendar()
    slots = slots_of(idnps, calendar, at)
    taken = booked(backend, [s.slot_id for s in slots])
    stats, _ = reconcile(
        backend, SAS_VENDOR, [idnps], [s for s in slots if s.slot_id not in taken], SiteMapper(backend), at
    )
    backend.refresh(ensure_live(backend, SLOTS))
    return stats


def publish_all(backend: Backend, now: datetime | None = None) -> ReconcileStats:
    """Every calendar's slots, as days pass (the scheduler's task)."""
    total = ReconcileStats()
    if backend.live_index(KIND) is None:
        return total
    for doc in list(iterate_all(backend, KIND)):
        total.add(publish(backend, doc["idnps"], now))
    return total


def booked(backend: Backend, slot_ids: list[str]) -> set[str]:
    if not slot_ids or backend.live_index(BOOKINGS) is None:
        return set()
    return set(backend.get_many(BOOKINGS, slot_ids))


def calendar_document(backend: Backend, idnps: str) -> dict[str, Any] | None:
    """The stored calendar with who changed it last and when."""
    if backend.live_index(KIND) is None:
        return None
    return backend.get(KIND, idnps)
