"""The directory: practice sites around a place, a practitioner with their sites and slots, a structure.

Shared by the API and the command line; bad input raises `InvalidRequest`, an unknown record `NotFound`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from aggregation.availability import KIND as SLOTS
from aggregation.availability import freshness
from core.errors import InvalidRequest, NotFound
from core.geo import gazetteer
from core.records import (
    CptsStructure,
    Participation,
    PracticeSite,
    Practitioner,
    Slot,
    SlotPlace,
    Structure,
    is_association,
)
from core.settings import Settings
from core.text import fold, split_codes
from indexer.backend import Backend, GeoQuery, decode_cursor, encode_cursor
from indexer.lifecycle import scan
from indexer.registry import get_participation
from rpps_import.cpts import get_cpts, list_cpts
from search.place import resolve_place


class ResolvedLocation(BaseModel):
    lat: float
    lon: float
    precision: str  # point | municipality | postcode
    label: str | None = None


class SiteResult(BaseModel):
    distance_km: float | None
    site: PracticeSite


class SiteSearchAnswer(BaseModel):
    location: ResolvedLocation | None
    radius_km: float | None
    total: int
    results: list[SiteResult]
    next_cursor: str | None


class PractitionerAnswer(BaseModel):
    practitioner: Practitioner
    sites: list[PracticeSite]
    slots: list[Slot] = []  # indexed free slots still to come, earliest first
    stale_slots_hidden: int = 0  # slots of a vendor silent for longer than the staleness limit


def resolve_location(
    lat: float | None, lon: float | None, postcode: str | None, insee: str | None
) -> ResolvedLocation | None:
    """The centre of a site search, resolved as the regulator search resolves its place; None without one."""
    place = resolve_place(lat=lat, lon=lon, postcode=postcode, insee=insee)
    if place is None:
        return None
    precision = place.precision
    area = gazetteer().postcode_area(postcode) if precision == "postcode" else None
    if area is not None and len(area.communes) == 1:
        precision = "municipality"  # a postcode of one commune is as precise as the commune
    return ResolvedLocation(lat=place.lat, lon=place.lon, precision=precision, label=place.label)


def site_search(
    backend: Backend,
    settings: Settings,
    *,
    lat: float | None = None,
    lon: float | None = None,
    postcode: str | None = None,
    insee: str | None = None,
    radius_km: float = 10.0,
    specialty: list[str] | None = None,
    profession: list[str] | None = None,
    department: list[str] | None = None,
    mode: list[str] | None = None,
    q: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> SiteSearchAnswer:
    """Practice sites nearest first (or by name), filtered by codes, one page at a time."""
    if limit > settings.max_page_size:
        raise InvalidRequest("Page too large", f"limit must be at most {settings.max_page_size}.", "invalid-request")
    location = resolve_location(lat, lon, postcode, insee)
    text = fold(q) or None
    if location is None and text is None:
        raise InvalidRequest(
            "Missing location",
            "Give lat and lon, a postcode, an INSEE code, or a name (q).",
            "invalid-location",
        )
    filters = {
        name: values
        for name, values in (
            ("specialty", split_codes(specialty)),
            ("profession", split_codes(profession)),
            ("department", split_codes(department)),
            ("mode", split_codes(mode)),
        )
        if values
    }
    after = decode_cursor(cursor)
    query = GeoQuery(
        lat=location.lat if location else None,
        lon=location.lon if location else None,
        radius_km=radius_km if location else None,
        filters=filters,
        text=text,
        limit=limit,
        after=after,
    )
    page = backend.search("practice_sites", query)
    results = [
        SiteResult(
            distance_km=round(h.distance_km, 3) if h.distance_km is not None else None,
            site=PracticeSite.model_validate(h.doc),
        )
        for h in page.hits
    ]
    return SiteSearchAnswer(
        location=location,
        radius_km=radius_km if location else None,
        total=page.total,
        results=results,
        next_cursor=encode_cursor(page.next_after) if len(page.hits) == limit else None,
    )


def practitioner_answer(backend: Backend, idnps: str, staleness_limit_s: float = 900.0) -> PractitionerAnswer:
    page = backend.search("practice_sites", GeoQuery(filters={"idnps": [idnps]}, limit=200))
    if not page.hits:
        raise NotFound("Not found", f"No practitioner with IDNPS {idnps!r} in the directory.", "not-found")
    sites = [PracticeSite.model_validate(h.doc) for h in page.hits]
    now = datetime.now(UTC)
    fresh = freshness(backend, now, staleness_limit_s)
    docs = [h.doc for h in backend.search("slots", GeoQuery(filters={"idnps": [idnps]}, limit=500)).hits]
    upcoming = [d for d in docs if datetime.fromisoformat(d["start"]) >= now]
    shown = sorted((Slot.model_validate(d) for d in upcoming if fresh.is_fresh(d)), key=lambda s: (s.start, s.slot_id))
    return PractitionerAnswer(
        practitioner=sites[0].practitioner, sites=sites, slots=shown, stale_slots_hidden=len(upcoming) - len(shown)
    )


def structure_answer(backend: Backend, finess: str) -> Structure:
    doc = backend.get("structures", finess)
    if doc is None:
        raise NotFound("Not found", f"No establishment with FINESS {finess!r}.", "not-found")
    return Structure.model_validate(doc)


def cpts_answer(backend: Backend, idnst: str) -> CptsStructure:
    found = get_cpts(backend, idnst)
    if found is None:
        raise NotFound("Not found", f"No CPTS with IDNST {idnst!r} in the directory.", "not-found")
    return found


class CptsListing(BaseModel):
    cpts: list[CptsStructure]


def cpts_listing(backend: Backend, department: str | None = None, member: str | None = None) -> CptsListing:
    """The CPTS of a department, or a practitioner's, by IDNST."""
    return CptsListing(cpts=list_cpts(backend, department, member))


class SosPlace(BaseModel):
    """An SOS Médecins consultation place as its association's vendor declares it, with its free slots now."""

    site_id: str
    vendor: str
    place: SlotPlace
    free_slots: int


class SosAssociation(BaseModel):
    idnst: str  # 3 + SIRET
    name: str | None  # as the vendor names the association
    participation: Participation | None
    places: list[SosPlace]


def sos_answer(backend: Backend, idnst: str) -> SosAssociation:
    """An SOS Médecins association: its participation and its consultation places. The places are those its vendor
    declares with the slots it offers now (the registers know none): a place without a free slot is not listed."""
    if not is_association(idnst):
        raise InvalidRequest("Invalid association", f"{idnst!r} is not 3 + a SIRET.", "invalid-request")
    participation = get_participation(backend, idnst)
    places: dict[str, SosPlace] = {}
    name = None
    if backend.live_index(SLOTS) is not None:
        fields = ("site_id", "vendor", "place", "structure_name")
        # One association's slots over the window: a bounded set, read for their places only.
        for hit in scan(backend, SLOTS, GeoQuery(filters={"idnps": [idnst]}, fields=fields)):
            doc = hit.doc
            name = name or doc.get("structure_name")
            known = places.get(doc["site_id"])
            if known is None:
                place = SlotPlace.model_validate(doc.get("place") or {})
                places[doc["site_id"]] = SosPlace(
                    site_id=doc["site_id"], vendor=doc["vendor"], place=place, free_slots=1
                )
            else:
                known.free_slots += 1
    if participation is None and not places:
        raise NotFound("Not found", f"No SOS Médecins association {idnst!r} takes part in the SAS.", "not-found")
    ordered = sorted(places.values(), key=lambda p: (fold(p.place.name or ""), p.site_id))
    return SosAssociation(idnst=idnst, name=name, participation=participation, places=ordered)
