"""The regulator's answer: cards grouped by day with their slots, the place, the radius and an explanation.

Built from what the search engine found; shared by the API and the command line.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import asdict
from datetime import date, datetime
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel

from aggregation.availability import SAS_VENDOR, SOS, VENDOR, declared_sites
from core.geo import PARIS
from core.records import Address, Position
from core.secrets import derive, server_key
from core.settings import Settings
from indexer.backend import Backend
from indexer.registry import list_vendors
from rpps_import.geocode import AddokGeocoder
from search.candidates import participations_of, sites_of
from search.engine import SearchRequest, SearchResult, run_search
from search.radius import MIN_WITH_SLOTS

SAS_CALENDAR_NAME = "Agenda SAS"  # how a SAS calendar's slots name their source on cards

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
    cpts: list[str] = []  # IDNST of the CPTS the slot is offered through (the card's `cpts` names them)


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
    declared_by_vendor: bool = False  # an address the vendor gives that the directory lacks, placed at its commune
    sos: bool = False  # an SOS Médecins consultation place (`name` is the place's, the practitioner its association)
    hours_today: list[str] = []  # the place's opening hours today (Europe/Paris), "08:00-19:00", when the vendor says


class CardParticipation(BaseModel):
    via: str
    extra_patients: bool
    vendors: list[str]
    er_redirection: bool = False  # takes patients redirected from emergency departments


class CardCpts(BaseModel):
    """A CPTS some of the card's slots are offered through: the regulator may call it."""

    idnst: str
    name: str | None
    phone: str | None


class Card(BaseModel):
    rank: int
    group: Literal["preferred", "participant", "other", "no_slots"]
    distance_km: float
    practitioner: CardPractitioner
    site: CardSite
    participation: CardParticipation | None
    slots: dict[str, list[CardSlot]]  # today, tomorrow, day_after (Europe/Paris)
    slot_count: int
    cpts: list[CardCpts] = []  # the CPTS the card's slots are offered through, first seen first


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
    vendors_answered: int  # every practitioner asked of the vendor got a complete answer in time
    practitioners_asked: int  # every practitioner of the page, once per vendor serving them (25 per call at most)
    practitioners_answered: int  # of those, answered completely in time: only their slots can be confirmed or gone
    slots_confirmed: int
    slots_gone: int  # no longer offered by the vendor: removed from the card and the index
    cards_emptied: int  # replaced by the next candidates
    timed_out: list[str]  # vendors that did not answer within the deadline: their cards stay unverified
    failed: list[str]  # vendors whose calls failed or answered incompletely: those cards stay unverified too


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


class RecentAddresses:
    """Typed addresses placed lately, in memory only: a patient's address and its position are never written
    anywhere, yet the later pages of a search (and a regulator typing the same address again) do not ask the
    geocoder twice. At most `size` entries, each forgotten after `ttl_s`."""

    def __init__(self, geocoder: AddokGeocoder, size: int = 1_024, ttl_s: float = 600.0) -> None:
        self.geocoder, self.size, self.ttl_s = geocoder, size, ttl_s
        self._recent: OrderedDict[str, tuple[float, Position | None]] = OrderedDict()
        self._lock = threading.Lock()

    def geocode_one(self, text: str) -> Position | None:
        now = time.monotonic()
        with self._lock:
            hit = self._recent.get(text)
            if hit is not None and now - hit[0] < self.ttl_s:
                self._recent.move_to_end(text)
                return hit[1]
        position = self.geocoder.geocode_one(text)
        with self._lock:
            self._recent[text] = (now, position)
            self._recent.move_to_end(text)
            while len(self._recent) > self.size:
                self._recent.popitem(last=False)
        return position


@cache
def _geocoder(url: str, min_score: float, rps: float, retries: int) -> RecentAddresses:
    # No disk cache, unlike imports' geocoding of the directory's public addresses: these are patients' places.
    return RecentAddresses(
        AddokGeocoder(
            url, cache_path=None, min_score=min_score, requests_per_second=rps, retries=retries, timeout_s=2.0
        )
    )


def address_geocoder(settings: Settings) -> RecentAddresses | None:
    """The configured BAN/addok geocoder for typed addresses, or None (offline: postcode or commune)."""
    if not settings.geocoder_url:
        return None
    return _geocoder(
        settings.geocoder_url,
        settings.geocoder_min_score,
        settings.geocoder_rps,
        min(settings.geocoder_retries, 1),
    )


def search_as_configured(
    backend: Backend, settings: Settings, req: SearchRequest, verify: bool = True
) -> tuple[SearchResult, SearchAnswer]:
    """The regulator search with the deployment's geocoder, staleness limit, verification deadline (none when
    `verify` is off) and secret key (its cursors are valid on every instance sharing it): what the API and the
    command line both run."""
    result = run_search(
        backend,
        req,
        geocoder=address_geocoder(settings),
        staleness_limit_s=settings.staleness_limit_s,
        verify_deadline_s=settings.verify_deadline_s if verify else 0.0,
        cursor_key=derive(server_key(settings), "cursor"),
    )
    return result, build_answer(backend, settings, result, req)


def build_answer(backend: Backend, settings: Settings, result: SearchResult, req: SearchRequest) -> SearchAnswer:
    """The answer to show: the page's cards with their sites, participations and slots by day, and why."""
    now = result.now
    vendors = {v.vendor_id: v.name for v in list_vendors(backend)}
    fresh = result.freshness  # the search's own view of vendor freshness: not read twice
    sites = sites_of(backend, result.cards)
    sites.update(declared_sites(backend, [c.site_id for c in result.cards if c.site_id not in sites and c.slots]))
    participations = participations_of(backend, (c.idnps for c in result.cards))
    cards = []
    today = now.astimezone(PARIS).date()
    for rank, cand in enumerate(result.cards, start=1 + result.offset):
        site = sites.get(cand.site_id, {})
        p = site.get("practitioner", {})
        part = participations.get(cand.idnps)
        grouped: dict[str, list[CardSlot]] = {d: [] for d in DAYS}
        cpts: dict[str, CardCpts] = {}
        for doc in cand.slots:
            for c in doc.get("cpts") or []:
                cpts.setdefault(c["idnst"], CardCpts(idnst=c["idnst"], name=c.get("name"), phone=c.get("phone")))
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
                    vendor_name=vendors.get(
                        doc["vendor"], SAS_CALENDAR_NAME if doc["vendor"] == SAS_VENDOR else doc["vendor"]
                    ),
                    booking_url=doc.get("booking_url"),
                    age_s=0 if doc.get("verified") else int(fresh.age_s(doc, now)),
                    verified=bool(doc.get("verified")),
                    cpts=[c["idnst"] for c in doc.get("cpts") or []],
                )
            )
        address = site.get("address") or {}
        position = site.get("position") or {}
        cards.append(
            Card(
                rank=rank,
                group=cand.group.name,
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
                    declared_by_vendor=site.get("site_source") in (VENDOR, SOS),
                    sos=site.get("site_source") == SOS,
                    hours_today=_hours_on(site.get("hours") or [], today),
                ),
                participation=CardParticipation(
                    via=part["via"],
                    extra_patients=part["extra_patients"],
                    vendors=part["vendors"],
                    er_redirection=bool(part.get("er_redirection")),
                )
                if part
                else None,
                slots=grouped,
                slot_count=len(cand.slots),
                cpts=list(cpts.values()),
            )
        )
    _complete_cpts([c for card in cards for c in card.cpts if c.name is None or c.phone is None], backend)
    place = result.place
    expl = result.explanation
    source = "request" if req.radius_km is not None else result.radius_rule.source
    message = None
    if not cards:
        message = (
            f"No practitioner with a free slot within {result.radius_km:g} km: {expl.practitioners_in_reach} "
            f"practitioner(s) of this specialty are in reach, none with a matching free slot in the window."
        )
        if expl.stale_vendors:
            message += f" {len(expl.stale_vendors)} vendor(s) have not answered recently."
    elif expl.practitioners_with_slots < MIN_WITH_SLOTS:
        message = f"Only {expl.practitioners_with_slots} practitioner(s) with slots up to {result.radius_km:g} km."
    return SearchAnswer(
        place=ResolvedPlace(
            lat=place.lat,
            lon=place.lon,
            precision=place.precision,
            zone=place.zone,
            department=place.department,
            label=place.label,
        ),
        radius_km=result.radius_km,
        window_start=result.window[0],
        window_end=result.window[1],
        specialty=result.specialty,
        profession=result.profession,
        seed=result.seed,
        total=result.total,
        cards=cards,
        next_cursor=result.next_cursor,
        verification=Verification(**asdict(result.verification)) if result.verification else None,
        explanation=Explanation(
            radius_steps=[RadiusStep(**asdict(step)) for step in expl.radius_steps],
            radius_source=source,
            practitioners_in_reach=expl.practitioners_in_reach,
            practitioners_with_slots=expl.practitioners_with_slots,
            practitioners_without_slots=expl.practitioners_without_slots,
            stale_vendors=list(expl.stale_vendors),
            message=message,
        ),
    )


def _complete_cpts(partial: list[CardCpts], backend: Backend) -> None:
    """The name and phone a vendor left out of a CPTS, from the directory's CPTS (`rpps_import.cpts`)."""
    if not partial:
        return
    known = backend.get_many("cpts", sorted({c.idnst for c in partial}))
    for c in partial:
        doc = known.get(c.idnst) or {}
        c.name, c.phone = c.name or doc.get("name"), c.phone or doc.get("phone")


def _hours_on(hours: list[dict[str, Any]], day: date) -> list[str]:
    """A place's opening hours on a day, from its hoursOfOperation as the vendor gave them."""
    weekday = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[day.weekday()]
    return [f"{h.get('opens') or '?'}-{h.get('closes') or '?'}" for h in hours if weekday in h.get("days", [])]


def _label(address: dict[str, Any]) -> str | None:
    return Address.model_validate(address).label() if address else None
