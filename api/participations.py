"""Participation routes: who takes part in the SAS and through which vendor (administrators; a practitioner, or
their delegate, reads their own)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from access.accounts import record_change
from access.roles import Principal, Role
from aggregation.availability import SAS_VENDOR
from api.deps import ADMINS, get_backend, require
from api.params import Idnps
from api.problems import Problem, problems
from core.records import Participation
from indexer.backend import Backend
from indexer.registry import get_participation, get_vendor, participants, save_participation
from rpps_import.cpts import cpts_idnst, move_member

router = APIRouter(prefix="/v1/participations", tags=["participations"], responses=problems(401, 403, 422, 503))
ADMIN = Depends(require(*ADMINS))
ACTS_FOR = "an effecteur: themself; a delegate: their practitioners"


@router.get("", response_model=list[Participation], summary="Participations, optionally of one vendor")
def list_participations(
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, ADMIN],
    vendor: Annotated[str | None, Query()] = None,
    active_only: bool = False,
) -> list[Participation]:
    return participants(backend, vendor, active_only=active_only)


@router.get(
    "/{idnps}", response_model=Participation, summary="One practitioner's participation", responses=problems(404)
)
def get_one(
    idnps: Idnps,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(*ADMINS, Role.effecteur, Role.delegate, narrowed=ACTS_FOR))],
) -> Participation:
    if not principal.holds(ADMINS) and not principal.acts_for(idnps):
        raise Problem(403, "Forbidden", f"You do not act for practitioner {idnps}.", "forbidden")
    found = get_participation(backend, idnps)
    if found is None:
        raise Problem(404, "Not found", f"{idnps} does not take part in the SAS.", "not-found")
    return found


@router.put(
    "/{idnps}", response_model=Participation, summary="Declare or update a participation", responses=problems(400)
)
def put_one(
    idnps: Idnps,
    participation: Participation,
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, ADMIN],
) -> Participation:
    if participation.idnps != idnps:
        raise Problem(422, "Inconsistent IDNPS", "The body's idnps must match the URL.", "invalid-request")
    return checked(backend, participation)


def checked(backend: Backend, participation: Participation) -> Participation:
    """Save a participation once its vendors are registered (or the SAS calendar) and its CPTS well named."""
    idnps = participation.idnps
    unknown = [v for v in participation.vendors if v != SAS_VENDOR and get_vendor(backend, v) is None]
    if unknown:
        raise Problem(
            422,
            "Unknown vendor",
            f"Declare vendor(s) {', '.join(unknown)} first (PUT /v1/vendors/{{id}}).",
            "unknown-vendor",
        )
    if participation.cpts is not None:
        try:
            participation.cpts = cpts_idnst(participation.cpts)
        except ValueError as exc:
            raise Problem(422, "Invalid CPTS", f"cpts: {exc}.", "invalid-request") from exc
    before = get_participation(backend, idnps)
    saved = save_participation(backend, participation)
    move_member(backend, idnps, before.cpts if before else None, participation.cpts)
    return saved


def declared(backend: Backend, principal: Principal, wanted: Participation) -> Participation:
    """A participation declared by a person (a practitioner, their delegate, a structure's manager): saved as
    `checked` saves it, the change kept in the audit log with who made it."""
    before = get_participation(backend, wanted.idnps)
    saved = checked(backend, wanted)
    was = before.model_dump(mode="json") if before else None
    change = {"before": was, "after": saved.model_dump(mode="json")}
    record_change(backend, principal, wanted.idnps, "participation", change)
    return saved
