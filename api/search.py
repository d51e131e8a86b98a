"""`GET /v1/search`: what a regulator on the phone needs — nearby practitioners who can see the patient soon."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Response

from analytics.snapshots import outcome_of, record_outcome
from api.deps import BOOKERS, get_backend, get_settings, require
from api.params import Instant
from api.problems import Problem, problems
from core.settings import Settings
from core.text import split_codes
from indexer.backend import Backend
from search.answer import SearchAnswer, search_as_configured
from search.engine import SearchRequest

router = APIRouter(prefix="/v1", tags=["search"])


@router.get(
    "/search",
    response_model=SearchAnswer,
    summary="Nearest practitioners with a free slot",
    description="A later page repeats the first page's parameters with its `next_cursor`; a cursor that is "
    "altered, expired (after an hour) or given with other parameters is refused (400).",
    responses=problems(400, 401, 403, 422, 503),
)
def search(
    background: BackgroundTasks,
    backend: Annotated[Backend, Depends(get_backend)],
    settings: Annotated[Settings, Depends(get_settings)],
    _: Annotated[Any, Depends(require(*BOOKERS))],
    address: Annotated[str | None, Query(max_length=300)] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
    postcode: Annotated[str | None, Query(pattern=r"^\d{5}$")] = None,
    insee: Annotated[str | None, Query(pattern=r"^(\d{5}|2[ABab]\d{3})$")] = None,
    department: Annotated[str | None, Query(pattern=r"^(\d{2,3}|2[ABab])$")] = None,
    specialty: Annotated[str | None, Query(pattern=r"^[A-Z]{2,4}\d{2,3}$", description="default SM54")] = None,
    profession: Annotated[str | None, Query(pattern=r"^\d{2}$")] = None,
    start: Instant | None = None,
    end: Instant | None = None,
    within: Annotated[list[str] | None, Query(description="0-4h, 4-8h, 8-12h, 12-24h, 24-48h, 48-72h")] = None,
    slot_type: Annotated[list[str] | None, Query(description="PUBLIC, PRO, SNP, CPTS")] = None,
    modality: Annotated[list[str] | None, Query(description="practice, home, tele")] = None,
    appointment: Annotated[Literal["with", "without"] | None, Query()] = None,
    via: Annotated[list[str] | None, Query(description="practice, cpts, msp, sos")] = None,
    extra_patients: bool | None = None,
    er_redirection: Annotated[bool | None, Query(description="takes patients redirected from emergencies")] = None,
    preferred: Annotated[str | None, Query(pattern=r"^(8\d{11}|0\d{9})$", description="the patient's doctor")] = None,
    radius_km: Annotated[float | None, Query(gt=0, le=500)] = None,
    include_without_slots: bool = False,
    seed: Annotated[int | None, Query(ge=0, lt=2**31)] = None,
    verify: Annotated[bool, Query(description="re-check the page's slots with their vendors")] = True,
    limit: Annotated[int, Query(ge=1)] = 10,
    cursor: str | None = None,
) -> Response:
    if limit > 50:
        raise Problem(422, "Page too large", "limit must be at most 50 cards.", "invalid-request")
    req = SearchRequest(
        lat=lat,
        lon=lon,
        address=address,
        postcode=postcode,
        insee=insee,
        department=department,
        specialty=specialty,
        profession=profession,
        start=start,
        end=end,
        within=split_codes(within),
        slot_types=split_codes(slot_type),
        modalities=split_codes(modality),
        appointment=appointment,
        via=split_codes(via),
        extra_patients=extra_patients,
        er_redirection=er_redirection,
        preferred=preferred,
        radius_km=radius_km,
        include_without_slots=include_without_slots,
        seed=seed,
        limit=limit,
        cursor=cursor,
    )
    started = time.perf_counter()
    # A bad request raises `SearchError`, an `InvalidRequest` the problem handlers answer as a 422.
    result, answer = search_as_configured(backend, settings, req, verify)
    if cursor is None:  # a search, not a later page of one: its outcome is kept for analysts, after the answer
        outcome = outcome_of(result, limit, (time.perf_counter() - started) * 1000)
        background.add_task(record_outcome, backend, outcome)
    # Serialised once, by the model itself: the answer is built from typed records, and validating its hundreds of
    # slots again against `response_model` (which still documents it) doubled the cost of a dense page.
    return Response(answer.model_dump_json(), media_type="application/json")
