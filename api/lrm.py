"""Routes of the transmission to the SAMU's regulation software (maintainers): the messages and their states, and
which SAMU receives each department's appointments."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from api.auth import Role
from api.deps import get_backend, require
from api.problems import Problem, problems
from booking import hub_outbox
from booking.hub_outbox import State
from indexer.backend import Backend

router = APIRouter(prefix="/v1/lrm", tags=["lrm"], responses=problems(401, 403, 422, 503))
MAINTAINER = Depends(require(Role.maintainer))
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
    _: Annotated[Any, MAINTAINER],
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
def recipients(backend: Annotated[Backend, Depends(get_backend)], _: Annotated[Any, MAINTAINER]) -> dict[str, str]:
    return hub_outbox.recipients(backend)


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
    _: Annotated[Any, MAINTAINER],
) -> Recipient:
    try:
        hub_outbox.set_recipient(backend, department, body.recipient, datetime.now(UTC))
    except ValueError as exc:
        raise Problem(422, "Invalid recipient", str(exc), "invalid-request") from exc
    return body
