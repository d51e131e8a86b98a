"""`GET /v1/search`: what a regulator on the phone needs — nearby practitioners who can see the patient soon."""

from __future__ import annotations

import time
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Query
from pydantic import BaseModel

from analytics.snapshots import outcome_of, record_outcome
from api.auth import Role
from api.deps import get_backend, get_settings, require
from api.problems import Problem
from core.settings import Settings
from core.text import split_codes
from indexer.backend import Backend
from indexer.registry import list_vendors
from search.engine import PARIS, SearchError, SearchRequest, run_search

router = APIRouter(prefix="/v1", tags=["search"])
GROUPS = {0: "preferred", 1: "participant", 2: "other", 3: "no_slots"}
DAYS = ("today", "tomorrow", "day_after")


class CardSlot(BaseModel):
    slot_id: str
    start: datetime
    end: datetime
    types: list[str]
    modalities: list[str]
    appointment_type: str
    vendor: str
    vendor_name: str
    booking_url: str | None
    age_s: int  # how old the information is
    verified: bool  # re-checked with the vendor for this answer


class CardPractitioner(BaseModel):
    idnps: str
    name: str
    profession: str | None
    specialties: list[str]


class CardSite(BaseModel):
    site_id: str
    name: str | None
    address: str | None
    phone: str | None
    lat: float | None
    lon: float | None
    position_precision: str | None


class CardParticipation(BaseModel):
    via: str
    extra_patients: bool
    vendors: list[str]


class Card(BaseModel):
    rank: int
    group: Literal["preferred", "participant", "other", "no_slots"]
    distance_km: float
    practitioner: CardPractitioner
    site: CardSite
    participation: CardParticipation | None
    slots: dict[str, list[CardSlot]]  # today, tomorrow, day_after (Europe/Paris)
    slot_count: int


class ResolvedPlace(BaseModel):
    lat: float
    lon: float
    precision: str
    zone: bool
    department: str | None
    label: str | None


class RadiusStep(BaseModel):
    radius_km: float
    practitioners_with_slots: int


class Explanation(BaseModel):
    radius_steps: list[RadiusStep]
    radius_source: str  # sas-2025 (the agency's table), fallback, or request
    practitioners_in_reach: int
    practitioners_with_slots: int
    practitioners_without_slots: int
    stale_vendors: list[str]
    message: str | None


class Verification(BaseModel):
    vendors_asked: int
    vendors_answered: int
    slots_confirmed: int
    slots_gone: int  # no longer offered by the vendor: removed from the card and the index
    cards_emptied: int  # replaced by the next candidates
    timed_out: list[str]  # vendors that did not answer within the deadline: their cards stay unverified
    failed: list[str]


class SearchAnswer(BaseModel):
    place: ResolvedPlace
    radius_km: float
    window_start: datetime
    window_end: datetime
    specialty: str | None
    profession: str | None
    seed: int
    total: int
    cards: list[Card]
    next_cursor: str | None
    verification: Verification | None  # None when verify=false
    explanation: Explanation


@router.get("/search", response_model=SearchAnswer, summary="Nearest practitioners with a free slot")
def search(
    background: BackgroundTasks,
    backend: Annotated[Backend, Depends(get_backend)],
    settings: Annotated[Settings, Depends(get_settings)],
    _: Annotated[Any, Depends(require(Role.regulator))],
    address: Annotated[str | None, Query(max_length=300)] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
    postcode: Annotated[str | None, Query(pattern=r"^\d{5}$")] = None,
    insee: Annotated[str | None, Query(pattern=r"^(\d{5}|2[ABab]\d{3})$")] = None,
    department: Annotated[str | None, Query(pattern=r"^(\d{2,3}|2[ABab])$")] = None,
    specialty: Annotated[str | None, Query(pattern=r"^[A-Z]{2,4}\d{2,3}$", description="default SM54")] = None,
    profession: Annotated[str | None, Query(pattern=r"^\d{2}$")] = None,
    start: datetime | None = None,
    end: datetime | None = None,
    within: Annotated[list[str] | None, Query(description="0-4h, 4-8h, 8-12h, 12-24h, 24-48h, 48-72h")] = None,
    slot_type: Annotated[list[str] | None, Query(description="PUBLIC, PRO, SNP, CPTS")] = None,
    modality: Annotated[list[str] | None, Query(description="practice, home, tele")] = None,
    appointment: Annotated[Literal["with", "without"] | None, Query()] = None,
    via: Annotated[list[str] | None, Query(description="practice, cpts, msp, sos")] = None,
    extra_patients: bool | None = None,
    preferred: Annotated[str | None, Query(pattern=r"^(8\d{11}|0\d{9})$", description="the patient's doctor")] = None,
    radius_km: Annotated[float | None, Query(gt=0, le=500)] = None,
    include_without_slots: bool = False,
    seed: Annotated[int | None, Query(ge=0, lt=2**31)] = None,
    verify: Annotated[bool, Query(description="re-check the page's slots with their vendors")] = True,
    limit: Annotated[int, Query(ge=1)] = 10,
    cursor: str | None = None,
) -> SearchAnswer:
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
        preferred=preferred,
        radius_km=radius_km,
        include_without_slots=include_without_slots,
        seed=seed,
        limit=limit,
        cursor=cursor,
    )
    started = time.perf_counter()
    try:
        result = run_search(
            backend,
            req,
            geocoder=address_geocoder(settings),
            staleness_limit_s=settings.staleness_limit_s,
            verify_deadline_s=settings.verify_deadline_s if verify else 0.0,
        )
    except SearchError as exc:
        raise Problem(422, "Invalid search", f"{exc}.", "invalid-search") from exc
    answer = build_answer(backend, settings, result, req)
    if cursor is None:  # a search, not a later page of one: its outcome is kept for analysts, after the answer
        outcome = outcome_of(result, limit, (time.perf_counter() - started) * 1000)
        background.add_task(record_outcome, backend, outcome)
    return answer


@cache
def _geocoder(url: str, cache_dir: str, min_score: float, rps: float, retries: int) -> Any:
    from pathlib import Path

    from rpps_import.geocode import AddokGeocoder

    return AddokGeocoder(
        url,
        cache_path=Path(cache_dir) / "geocoder.db",
        min_score=min_score,
        requests_per_second=rps,
        retries=retries,
        timeout_s=2.0,
    )


def address_geocoder(settings: Settings) -> Any:
    """The configured BAN/addok geocoder for typed addresses, or None (offline: postcode or commune)."""
    if not settings.geocoder_url:
        return None
    return _geocoder(
        settings.geocoder_url,
        str(settings.data_dir / "cache"),
        settings.geocoder_min_score,
        settings.geocoder_rps,
        min(settings.geocoder_retries, 1),
    )


def build_answer(backend: Backend, settings: Settings, result: dict[str, Any], req: SearchRequest) -> SearchAnswer:
    now = result["now"]
    vendors = {v.vendor_id: v.name for v in list_vendors(backend)}
    fresh = result["freshness"]  # the search's own view of vendor freshness: not read twice
    participations = {}
    cards = []
    today = now.astimezone(PARIS).date()
    for rank, cand in enumerate(result["cards"], start=1 + _offset(req)):
        site = backend.get("practice_sites", cand.site_id) or {}
        p = site.get("practitioner", {})
        if cand.idnps not in participations:
            participations[cand.idnps] = backend.get("participations", cand.idnps)
        part = participations[cand.idnps]
        grouped: dict[str, list[CardSlot]] = {d: [] for d in DAYS}
        for doc in cand.slots:
            start = datetime.fromisoformat(doc["start"])
            day = (start.astimezone(PARIS).date() - today).days
            if not 0 <= day < len(DAYS):
                continue
            grouped[DAYS[day]].append(
                CardSlot(
                    slot_id=doc["slot_id"],
                    start=start,
                    end=datetime.fromisoformat(doc["end"]),
                    types=doc["types"],
                    modalities=doc["modalities"],
                    appointment_type=doc["appointment_type"],
                    vendor=doc["vendor"],
                    vendor_name=vendors.get(doc["vendor"], doc["vendor"]),
                    booking_url=doc.get("booking_url"),
                    age_s=0 if doc.get("verified") else int(fresh.age_s(doc, now)),
                    verified=bool(doc.get("verified")),
                )
            )
        address = site.get("address") or {}
        position = site.get("position") or {}
        cards.append(
            Card(
                rank=rank,
                group=GROUPS[cand.group],
                distance_km=round(cand.distance_km, 1),
                practitioner=CardPractitioner(
                    idnps=cand.idnps,
                    name=" ".join(x for x in (p.get("title"), p.get("first_name"), p.get("last_name")) if x),
                    profession=p.get("profession_label"),
                    specialties=[s["code"] for s in p.get("specialties", [])],
                ),
                site=CardSite(
                    site_id=cand.site_id,
                    name=site.get("name"),
                    address=_label(address),
                    phone=site.get("phone"),
                    lat=position.get("lat"),
                    lon=position.get("lon"),
                    position_precision=position.get("precision"),
                ),
                participation=CardParticipation(
                    via=part["via"], extra_patients=part["extra_patients"], vendors=part["vendors"]
                )
                if part
                else None,
                slots=grouped,
                slot_count=len(cand.slots),
            )
        )
    place = result["place"]
    expl = result["explanation"]
    rule = result["radius_rule"]
    source = "request" if req.radius_km is not None else rule.source
    message = None
    if not cards:
        message = (
            f"No practitioner with a free slot within {result['radius_km']:g} km: {expl['practitioners_in_reach']} "
            f"practitioner(s) of this specialty are in reach, none with a matching free slot in the window."
        )
        if expl["stale_vendors"]:
            message += f" {len(expl['stale_vendors'])} vendor(s) have not answered recently."
    elif expl["practitioners_with_slots"] < 5:
        message = (
            f"Only {expl['practitioners_with_slots']} practitioner(s) with slots up to {result['radius_km']:g} km."
        )
    return SearchAnswer(
        place=ResolvedPlace(
            lat=place.lat,
            lon=place.lon,
            precision=place.precision,
            zone=place.zone,
            department=place.department,
            label=place.label,
        ),
        radius_km=result["radius_km"],
        window_start=result["window"][0],
        window_end=result["window"][1],
        specialty=result["specialty"],
        profession=result["profession"],
        seed=result["seed"],
        total=result["total"],
        cards=cards,
        next_cursor=result["next_cursor"],
        verification=Verification(**vars(result["verification"])) if result["verification"] else None,
        explanation=Explanation(radius_source=source, message=message, **expl),
    )


def _offset(req: SearchRequest) -> int:
    if not req.cursor:
        return 0
    from search.engine import decode_search_cursor

    return int(decode_search_cursor(req.cursor)["offset"])


def _label(address: dict[str, Any]) -> str | None:
    from core.records import Address

    return Address.model_validate(address).label() if address else None
