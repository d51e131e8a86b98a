"""The practitioner's space: a practitioner taking part (or their delegate) declares their participation, keeps
their SAS calendar and unavailability periods, and sees their appointments and figures. Administrators reach every
practitioner's; every change is kept in the audit log, attributed."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from access.accounts import record_change
from access.roles import Principal, Role
from aggregation import sas_calendar, unavailability
from aggregation.availability import SAS_VENDOR, ReconcileStats
from aggregation.sas_calendar import SasCalendar
from api.deps import ADMINS, get_backend, get_settings, require
from api.params import Idnps
from api.participations import declared
from api.problems import Problem, problems
from booking import orientations
from booking.bookings import FollowedAppointment, appointments_of_practitioner
from core.errors import DispoError
from core.records import Orientation, Participation, ParticipationVia, iso_week
from core.settings import Settings
from indexer.backend import Backend
from indexer.registry import get_participation, list_vendors
from search.directory import PractitionerAnswer, cpts_listing, practitioner_answer

router = APIRouter(prefix="/v1/space", tags=["practitioner's space"], responses=problems(400, 401, 403, 404, 422, 503))
ACTS_FOR = "an effecteur: themself; a delegate: their practitioners"
CALLER = Depends(require(*ADMINS, Role.effecteur, Role.delegate, narrowed=ACTS_FOR))


def _for(principal: Principal, idnps: str) -> str:
    """The practitioner, once the caller may act for them; the caller's label for the audit log."""
    if not principal.holds(ADMINS) and not principal.acts_for(idnps):
        raise Problem(403, "Forbidden", f"You do not act for practitioner {idnps}.", "forbidden")
    return principal.label


class Choice(BaseModel):
    id: str
    name: str | None


class PeriodView(BaseModel):
    period_id: str
    start: datetime
    end: datetime
    reason: str | None


class Figures(BaseModel):
    slots_offered: int  # free slots indexed now, every source
    sas_calendar_slots: int  # of which from the SAS calendar
    appointments_by_week: dict[str, int]  # ISO week (2026-W49) -> SAS appointments starting that week
    orientations_by_week: dict[str, int]  # ISO week -> orientations without a slot received


class Space(BaseModel):
    directory: PractitionerAnswer
    participation: Participation | None
    calendar: SasCalendar
    calendar_updated_by: str | None
    unavailability: list[PeriodView]
    appointments: list[FollowedAppointment]
    orientations: list[Orientation]  # patients sent without a slot, of the last eight weeks
    figures: Figures
    vendors: list[Choice]  # the booking software one may choose, besides the SAS calendar
    cpts: list[Choice]  # the CPTS of the practitioner's departments


@router.get("/{idnps}", response_model=Space, summary="A practitioner's space: everything they declared and received")
def space(
    idnps: Idnps,
    backend: Annotated[Backend, Depends(get_backend)],
    settings: Annotated[Settings, Depends(get_settings)],
    principal: Annotated[Principal, CALLER],
) -> Space:
    _for(principal, idnps)
    try:
        directory = practitioner_answer(backend, idnps, settings.staleness_limit_s)
    except DispoError as exc:
        raise Problem(404, "Not found", exc.detail, "not-found") from exc
    stored = sas_calendar.calendar_document(backend, idnps)
    now = datetime.now(UTC)
    appointments = appointments_of_practitioner(backend, idnps, now - timedelta(days=56))
    weeks = Counter(iso_week(a.start) for a in appointments)
    sent = orientations.orientations(backend, idnps=idnps, since=now - timedelta(days=56))
    indexed = backend.live_index("slots") is not None
    offered = backend.count("slots", {"idnps": [idnps]}) if indexed else 0
    from_calendar = backend.count("slots", {"idnps": [idnps], "vendor": [SAS_VENDOR]}) if indexed else 0
    departments = sorted({s.department_code for s in directory.sites if s.department_code})
    cpts = [c for d in departments for c in cpts_listing(backend, d).cpts]
    return Space(
        directory=directory,
        participation=get_participation(backend, idnps),
        calendar=SasCalendar.model_validate(stored["calendar"]) if stored else SasCalendar(),
        calendar_updated_by=stored.get("updated_by") if stored else None,
        unavailability=[
            PeriodView(period_id=p.period_id, start=p.start, end=p.end, reason=p.reason)
            for p in unavailability.periods(backend, idnps)
            if p.end > now
        ],
        appointments=appointments,
        orientations=sent,
        figures=Figures(
            slots_offered=offered,
            sas_calendar_slots=from_calendar,
            appointments_by_week=dict(sorted(weeks.items())),
            orientations_by_week=dict(sorted(Counter(iso_week(o.at) for o in sent).items())),
        ),
        vendors=[Choice(id=v.vendor_id, name=v.name) for v in list_vendors(backend, enabled_only=True)],
        cpts=[Choice(id=c.idnst, name=c.name) for c in cpts],
    )


class ParticipationChoice(BaseModel):
    """What a practitioner declares: how they take part, where their slots come from."""

    via: ParticipationVia = ParticipationVia.practice
    vendor: str | None = Field(default=None, description="their booking software; none: the SAS calendar in Dispo")
    extra_patients: bool = False
    er_redirection: bool = False
    cpts: str | None = None
    active: bool = True


@router.put("/{idnps}/participation", response_model=Participation, summary="Declare or change one's participation")
def put_participation(
    idnps: Idnps,
    body: ParticipationChoice,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, CALLER],
) -> Participation:
    _for(principal, idnps)
    wanted = Participation(
        idnps=idnps,
        vendors=[body.vendor] if body.vendor else [SAS_VENDOR],
        via=body.via,
        extra_patients=body.extra_patients,
        er_redirection=body.er_redirection,
        cpts=body.cpts,
        active=body.active,
    )
    return declared(backend, principal, wanted)


class Published(BaseModel):
    inserted: int
    removed: int
    unchanged: int


def _published(stats: ReconcileStats) -> Published:
    return Published(inserted=stats.inserted, removed=stats.removed, unchanged=stats.unchanged)


@router.put("/{idnps}/calendar", response_model=Published, summary="Keep one's SAS calendar: its slots are indexed now")
def put_calendar(
    idnps: Idnps,
    body: SasCalendar,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, CALLER],
) -> Published:
    by = _for(principal, idnps)
    try:
        stats = sas_calendar.save_calendar(backend, idnps, body, by)
    except ValueError as exc:
        raise Problem(422, "Invalid calendar", f"{exc}.", "invalid-request") from exc
    record_change(backend, principal, idnps, "calendar", {"openings": len(body.weekly), "one_offs": len(body.one_offs)})
    return _published(stats)


class PeriodRequest(BaseModel):
    start: datetime
    end: datetime
    reason: str | None = Field(default=None, max_length=200)


@router.post("/{idnps}/unavailability", response_model=PeriodView, status_code=201, summary="Declare a period away")
def add_period(
    idnps: Idnps,
    body: PeriodRequest,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, CALLER],
) -> PeriodView:
    by = _for(principal, idnps)
    try:
        period = unavailability.add_period(backend, idnps, body.start, body.end, body.reason, by)
    except unavailability.InvalidPeriod as exc:
        raise Problem(422, "Invalid period", f"{exc}.", "invalid-request") from exc
    record_change(backend, principal, idnps, "unavailability", {"added": period.period_id})
    return PeriodView(period_id=period.period_id, start=period.start, end=period.end, reason=period.reason)


@router.delete(
    "/{idnps}/unavailability/{period_id}", status_code=204, summary="Withdraw a period away", responses=problems(404)
)
def remove_period(
    idnps: Idnps,
    period_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")],
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, CALLER],
) -> None:
    by = _for(principal, idnps)
    if not unavailability.remove_period(backend, idnps, period_id, by):
        raise Problem(404, "Not found", f"No period {period_id} for {idnps}.", "not-found")
    record_change(backend, principal, idnps, "unavailability", {"removed": period_id})
    sas_calendar.publish(backend, idnps)  # the SAS calendar's slots of the period come back now
