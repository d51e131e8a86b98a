"""Directory routes: practice sites around a point, practitioners by IDNPS, structures by FINESS, CPTS, SOS Médecins
associations; and what structure managers keep: a CPTS's members, an SOS association's participation and vendor."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from access.accounts import record_change
from access.roles import Principal, Role
from aggregation.availability import SAS_VENDOR
from api.deps import ADMINS, DIRECTORY_READERS, get_backend, get_settings, require
from api.params import Finess, Idnps
from api.participations import declared
from api.problems import Problem, problems
from booking import orientations
from core.errors import DispoError
from core.records import CptsStructure, Participation, ParticipationVia, Structure, iso_week
from core.settings import Settings
from indexer.backend import Backend
from indexer.registry import get_participation, list_vendors, save_participation
from rpps_import.cpts import move_member
from search.directory import (
    CptsListing,
    PractitionerAnswer,
    SiteSearchAnswer,
    SosAssociation,
    cpts_answer,
    cpts_listing,
    practitioner_answer,
    site_search,
    sos_answer,
    structure_answer,
)

router = APIRouter(prefix="/v1", tags=["directory"], responses=problems(401, 403, 422, 503))


@router.get(
    "/practice-sites/search",
    response_model=SiteSearchAnswer,
    summary="Practice sites nearest first",
    responses=problems(400),
)
def search_practice_sites(
    backend: Annotated[Backend, Depends(get_backend)],
    settings: Annotated[Settings, Depends(get_settings)],
    _: Annotated[Any, Depends(require(*DIRECTORY_READERS))],
    lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
    postcode: Annotated[str | None, Query(pattern=r"^\d{5}$")] = None,
    insee: Annotated[str | None, Query(pattern=r"^(\d{5}|2[ABab]\d{3})$")] = None,
    radius_km: Annotated[float, Query(gt=0, le=500)] = 10.0,
    specialty: Annotated[list[str] | None, Query(description="savoir-faire code(s), e.g. SM54")] = None,
    profession: Annotated[list[str] | None, Query(description="profession code(s), e.g. 10")] = None,
    department: Annotated[list[str] | None, Query()] = None,
    mode: Annotated[list[str] | None, Query(description="L libéral, S salarié, B bénévole")] = None,
    q: Annotated[str | None, Query(max_length=100, description="name, accents and case ignored")] = None,
    limit: Annotated[int, Query(ge=1)] = 20,
    cursor: str | None = None,
) -> SiteSearchAnswer:
    return site_search(
        backend,
        settings,
        lat=lat,
        lon=lon,
        postcode=postcode,
        insee=insee,
        radius_km=radius_km,
        specialty=specialty,
        profession=profession,
        department=department,
        mode=mode,
        q=q,
        limit=limit,
        cursor=cursor,
    )


@router.get(
    "/practitioners/{idnps}",
    response_model=PractitionerAnswer,
    summary="A practitioner and their sites",
    responses=problems(404),
)
def get_practitioner(
    idnps: Idnps,
    backend: Annotated[Backend, Depends(get_backend)],
    settings: Annotated[Settings, Depends(get_settings)],
    _: Annotated[Any, Depends(require(*DIRECTORY_READERS))],
) -> PractitionerAnswer:
    return practitioner_answer(backend, idnps, settings.staleness_limit_s)


@router.get("/structures/{finess}", response_model=Structure, summary="A FINESS establishment", responses=problems(404))
def get_structure(
    finess: Finess,
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, Depends(require(*DIRECTORY_READERS))],
) -> Structure:
    return structure_answer(backend, finess)


@router.get("/cpts", response_model=CptsListing, summary="CPTS of a department, or of a practitioner")
def list_cpts(
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, Depends(require(*DIRECTORY_READERS))],
    department: Annotated[str | None, Query(pattern=r"^(\d{2,3}|2[AB])$", description="department code")] = None,
    member: Annotated[str | None, Query(pattern=r"^(8\d{11}|0\d{9})$", description="a member's IDNPS")] = None,
) -> CptsListing:
    return cpts_listing(backend, department, member)


Idnst = Annotated[str, Path(pattern=r"^(1[0-9][0-9AB][0-9]{7}|3[0-9]{14})$", description="1 + FINESS or 3 + SIRET")]
MANAGES = "a structure manager: their structures"


@router.get("/cpts/{idnst}", response_model=CptsStructure, summary="A CPTS and its members", responses=problems(404))
def get_cpts(
    idnst: Idnst,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(*DIRECTORY_READERS, Role.structure_manager, narrowed=MANAGES))],
) -> CptsStructure:
    _manages(principal, idnst)
    return cpts_answer(backend, idnst)


def _manages(principal: Principal, idnst: str) -> None:
    if not principal.holds(DIRECTORY_READERS) and not principal.manages(idnst):
        raise Problem(403, "Forbidden", f"You do not manage structure {idnst}.", "forbidden")


@router.put(
    "/cpts/{idnst}/members/{idnps}",
    response_model=Participation,
    summary="Name a participating practitioner a member of the CPTS",
    responses=problems(404),
)
def add_member(
    idnst: Idnst,
    idnps: Idnps,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(*ADMINS, Role.structure_manager, narrowed=MANAGES))],
) -> Participation:
    return _member(backend, principal, idnst, idnps, idnst)


@router.delete(
    "/cpts/{idnst}/members/{idnps}",
    response_model=Participation,
    summary="Take a practitioner out of the CPTS's members",
    responses=problems(404),
)
def remove_member(
    idnst: Idnst,
    idnps: Idnps,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(*ADMINS, Role.structure_manager, narrowed=MANAGES))],
) -> Participation:
    return _member(backend, principal, idnst, idnps, None)


def _member(backend: Backend, principal: Principal, idnst: str, idnps: str, after: str | None) -> Participation:
    """A CPTS's manager keeps its list of members: the practitioners' participations name it (or no longer do)."""
    if not principal.holds(ADMINS) and not principal.manages(idnst):
        raise Problem(403, "Forbidden", f"You do not manage CPTS {idnst}.", "forbidden")
    before = get_participation(backend, idnps)
    if before is None:
        raise Problem(404, "Not found", f"{idnps} takes no part in the SAS: they declare it first.", "not-found")
    if after is None and before.cpts != idnst:
        raise Problem(404, "Not found", f"{idnps} is not a member of CPTS {idnst}.", "not-found")
    saved = save_participation(backend, before.model_copy(update={"cpts": after}))
    move_member(backend, idnps, before.cpts, after)
    record_change(backend, principal, idnps, "cpts-member", {"cpts": idnst, "before": before.cpts, "after": after})
    return saved


SosIdnst = Annotated[str, Path(pattern=r"^3[0-9]{14}$", description="an SOS Médecins association: 3 + its SIRET")]


class VendorChoice(BaseModel):
    id: str
    name: str | None


class SosSpace(BaseModel):
    association: SosAssociation
    orientations_by_week: dict[str, int]  # ISO week -> patients sent to its places without a slot (eight weeks)
    vendors: list[VendorChoice]  # the registered booking software its places' slots may come from


@router.get("/sos/{idnst}", response_model=SosSpace, summary="An SOS Médecins association", responses=problems(404))
def get_sos(
    idnst: SosIdnst,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(*DIRECTORY_READERS, Role.structure_manager, narrowed=MANAGES))],
) -> SosSpace:
    _manages(principal, idnst)
    try:
        association = sos_answer(backend, idnst)
    except DispoError as exc:
        raise Problem(404, "Not found", exc.detail, "not-found") from exc
    since = datetime.now(UTC) - timedelta(days=56)
    weeks = Counter(iso_week(o.at) for o in orientations.orientations(backend, idnps=idnst, since=since))
    vendors = [VendorChoice(id=v.vendor_id, name=v.name) for v in list_vendors(backend, enabled_only=True)]
    return SosSpace(association=association, orientations_by_week=dict(sorted(weeks.items())), vendors=vendors)


class SosParticipationChoice(BaseModel):
    """What an association declares: the booking software its places' slots come from, and what it accepts."""

    vendor: str
    extra_patients: bool = False
    er_redirection: bool = False
    active: bool = True


@router.put(
    "/sos/{idnst}/participation",
    response_model=Participation,
    summary="Declare or change an SOS Médecins association's participation",
    responses=problems(400, 404),
)
def put_sos_participation(
    idnst: SosIdnst,
    body: SosParticipationChoice,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(*ADMINS, Role.structure_manager, narrowed=MANAGES))],
) -> Participation:
    if not principal.holds(ADMINS) and not principal.manages(idnst):
        raise Problem(403, "Forbidden", f"You do not manage association {idnst}.", "forbidden")
    if body.vendor == SAS_VENDOR:
        why = "An association's places come from its booking software: the SAS calendar is a practitioner's."
        raise Problem(422, "Unknown vendor", why, "unknown-vendor")
    wanted = Participation(
        idnps=idnst,
        vendors=[body.vendor],
        via=ParticipationVia.sos,
        extra_patients=body.extra_patients,
        er_redirection=body.er_redirection,
        active=body.active,
    )
    return declared(backend, principal, wanted)
