"""Routes of the transmission to the SAMU's regulation software: the messages and their states (administrators), and
which SAMU receives each department's appointments (administrators, and a territorial administrator for their own
departments)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from access.roles import Principal, Role
from api.deps import ADMINS, get_backend, require
from api.problems import Problem, problems
from booking import hub_outbox
from booking.hub_outbox import State
from indexer.backend import Backend

router = APIRouter(prefix="/v1/lrm", tags=["lrm"], responses=problems(401, 403, 422, 503))
ADMIN = Depends(require(*ADMINS))
TERRITORY_ADMIN = Depends(
    require(*ADMINS, Role.territorial_admin, narrowed="a territorial administrator: their departments")
)
DEPARTMENT = r"^(\d{2,3}|2[AB])$"


class Message(BaseModel):
    appointment_id: str
    key: str
    seq: int
    method: str
    state: State
    queued_at: datetime
    sent_at: datetime | None
    acknowledged_at: datetime | None
    attempts: int
    error: dict[str, Any] | None
    department: str | None


class Messages(BaseModel):
    by_state: dict[str, int]
    oldest_unacknowledged_s: float | None
    messages: list[Message]


@router.get("/messages", response_model=Messages, summary="Messages to the SAMU's regulation software")
def messages(
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, ADMIN],
    state: Annotated[State | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> Messages:
    summary = hub_outbox.summary(backend, datetime.now(UTC))
    rows = hub_outbox.rows(backend, state.value if state else None, limit)
    return Messages(
        by_state=summary.by_state,
        oldest_unacknowledged_s=summary.oldest_unacknowledged_s,
        messages=[Message.model_validate(asdict(r)) for r in rows],
    )


class Recipient(BaseModel):
    recipient: str


@router.get("/recipients", response_model=dict[str, str], summary="The SAMU set for each department")
def recipients(
    backend: Annotated[Backend, Depends(get_backend)], principal: Annotated[Principal, TERRITORY_ADMIN]
) -> dict[str, str]:
    mine = principal.territories((*ADMINS, Role.territorial_admin))
    return {d: r for d, r in hub_outbox.recipients(backend).items() if mine is None or d in mine}


@router.put(
    "/recipients/{department}",
    response_model=Recipient,
    summary="Set the SAMU of a department",
    responses=problems(400),
)
def set_recipient(
    department: Annotated[str, Path(pattern=DEPARTMENT)],
    body: Recipient,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, TERRITORY_ADMIN],
) -> Recipient:
    mine = principal.territories((*ADMINS, Role.territorial_admin))
    if mine is not None and department not in mine:
        raise Problem(403, "Forbidden", f"Department {department} is outside your territories.", "forbidden")
    try:
        hub_outbox.set_recipient(backend, department, body.recipient, datetime.now(UTC))
    except ValueError as exc:
        raise Problem(422, "Invalid recipient", str(exc), "invalid-request") from exc
    return body
