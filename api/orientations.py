"""Orientations without a slot: recorded by the regulation from a card, then their outcome; followed by the regulator
(their own) and by a territory's referents and administrators (their territories')."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from access.roles import Principal, Role
from api.deps import BOOKERS, get_backend, require
from api.problems import problems
from booking import orientations
from core.records import Orientation, OrientationKind, OrientationOutcome
from indexer.backend import Backend

router = APIRouter(prefix="/v1/orientations", tags=["orientations"], responses=problems(400, 401, 403, 422, 503))
TERRITORY = (Role.territorial_referent, Role.territorial_admin)
FOLLOWED = "the regulation's roles: their own; referents and administrators: their territories'"


class OrientationRequest(BaseModel):
    idnps: str = Field(pattern=r"^(8\d{11}|0\d{9}|3\d{14})$", description="the practitioner, or an SOS association")
    site_id: str = Field(min_length=1, max_length=200)
    kind: OrientationKind
    outcome: OrientationOutcome = OrientationOutcome.pending


class OutcomeRequest(BaseModel):
    outcome: OrientationOutcome


@router.post(
    "",
    response_model=Orientation,
    status_code=201,
    summary="Record an orientation without a slot",
    responses=problems(404),
)
async def record(
    body: OrientationRequest,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(*BOOKERS))],
) -> Orientation:
    return await run_in_threadpool(
        orientations.record_orientation, backend, principal.label, body.idnps, body.site_id, body.kind, body.outcome
    )


@router.patch(
    "/{orientation_id}", response_model=Orientation, summary="Record an orientation's outcome", responses=problems(404)
)
def outcome(
    orientation_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")],
    body: OutcomeRequest,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(*BOOKERS, narrowed="one's own orientations"))],
) -> Orientation:
    return orientations.set_outcome(backend, orientation_id, principal.label, body.outcome)


@router.get("", response_model=list[Orientation], summary="Orientations one recorded (or of one's territories)")
def followed(
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, Depends(require(*BOOKERS, *TERRITORY, narrowed=FOLLOWED))],
) -> list[Orientation]:
    if principal.holds(BOOKERS):
        return orientations.orientations(backend, operator=principal.label)
    mine = sorted(principal.territories(TERRITORY) or ())
    return orientations.orientations(backend, departments=mine) if mine else []
