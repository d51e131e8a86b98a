"""Regulator search: the nearest practitioners with a free slot in the window, neutral and explained.

A search is a pipeline of small steps on one query:
    resolve the place -> choose the radius steps -> gather candidates (slots in the circle, fresh vendors,
    filters) -> enlarge until enough practitioners have slots -> rank (groups, distance bands, seeded
    shuffle; never the vendor) -> page -> cards (slots grouped by day) -> explanation.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

import orjson

from aggregation.availability import freshness
from core.geo import PARIS, department_of_postcode, gazetteer, radius_code
from core.text import fold
from indexer.backend import Backend, GeoQuery, InvalidCursor
from indexer.lifecycle import ensure_live, scan

MIN_WITH_SLOTS = 5  # the agency's radii aim at about five practitioners with slots
BAND_KM = 0.3  # practitioners within the same 300 m band are "at the same distance": shuffled, not sorted
BUCKETS_H = {
    "0-4h": (0, 4),
    "4-8h": (4, 8),
    "8-12h": (8, 12),
    "12-24h": (12, 24),
    "24-48h": (24, 48),
    "48-72h": (48, 72),
}
MODALITIES = {"practice": "AMB", "home": "HH", "tele": "VR", "AMB": "AMB", "HH": "HH", "VR": "VR"}
# What ranking, freshness, live verification and cards read of a slot: a dense circle holds tens of thousands
# of slots, and reading only these fields (not places, names, hashes) halves the time spent decoding them.
SLOT_FIELDS = (
    "slot_id",
    "site_id",
    "idnps",
    "vendor",
    "start",
    "end",
    "types",
    "modalities",
    "appointment_type",
    "booking_url",
    "fetched_at",
    "profession_code",
    "practitioner_specialties",
)
SLOT_TYPES = {"PUBLIC", "PRO", "SNP", "CPTS"}


class SearchError(ValueError):
    """Bad search input: the message says what to fix."""


@cache
def known_specialties() -> frozenset[str]:
    """Savoir-faire codes (TRE_R38 / TRE_G15) from the shipped correspondence table."""
    with (resources.files("core") / "data" / "correspondance_profession_savoirfaire.csv").open(
        encoding="utf-8-sig"
    ) as fh:
        return frozenset(row["Code savoir-faire"].strip() for row in csv.DictReader(fh) if row["Code savoir-faire"])


@dataclass(frozen=True)
class RadiusRule:
    city_km: float
    step_km: float
    county_km: float
    barycentre: tuple[float, float] | None
    source: str  # "sas-2025" or "fallback"


# Departments the agency published no radius for (zeros in the table) or that are missing from it.
# Mayotte is ~40 km across, Guyane's population lives along a 300 km coast: radii sized accordingly.
FALLBACK_RULES = {
    "976": RadiusRule(10, 10, 40, (-12.7806, 45.2279), "fallback"),
    "973": RadiusRule(30, 30, 300, (4.9372, -52.3260), "fallback"),
}
DEFAULT_RULE = RadiusRule(20, 10, 100, None, "fallback")


@cache
def radius_table() -> dict[str, RadiusRule]:
    rules: dict[str, RadiusRule] = {}
    with (resources.files("core") / "data" / "sas_search_radius_2025.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            city, county = float(row["cityDefaultRadius"]), float(row["countyRadius"])
            if city <= 0 or county <= 0:
                continue
            rules[radius_code(row["code"])] = RadiusRule(
                city,
                float(row["enlargementValue"]) or city,
                county,
                (float(row["barycentreCityLat"]), float(row["barycentreCityLon"])),
                "sas-2025",
            )
    return rules


def rule_for(department: str | None) -> RadiusRule:
    if department is None:
        return DEFAULT_RULE
    return radius_table().get(department) or FALLBACK_RULES.get(department) or DEFAULT_RULE


@dataclass(frozen=True)
class Place:
    lat: float
    lon: float
    precision: str  # point | address | municipality | postcode | department
    zone: bool  # a zone (department, postcode, commune) is ordered by seeded shuffle only
    department: str | None
    label: str | None = None


def resolve_place(
    *,
    lat: float | None = None,
    lon: float | None = None,
    address: str | None = None,
    postcode: str | None = None,
    insee: str | None = None,
    department: str | None = None,
    geocoder: Any = None,
) -> Place:
    gaz = gazetteer()
    if (lat is None) != (lon is None):
        raise SearchError("give both lat and lon, or neither")
    if lat is not None and lon is not None:
        nearest = nearest_department(lat, lon)
        return Place(lat, lon, "point", False, nearest)
    if department:
        dep = department.upper().zfill(2) if department.isdigit() else department.upper()
        rule = rule_for(dep)
        if rule.barycentre is None:
            raise SearchError(f"unknown department {department!r}")
        return Place(rule.barycentre[0], rule.barycentre[1], "department", True, dep, f"département {dep}")
    if insee:
        commune = gaz.commune(insee.upper())
        if commune is None:
            raise SearchError(f"no commune with INSEE code {insee!r}")
        return Place(
            commune.lat, commune.lon, "municipality", True, commune.department, f"{commune.name} ({commune.insee})"
        )
    if postcode:
        area = gaz.postcode_area(postcode)
        if area is None:
            raise SearchError(f"no commune with postcode {postcode!r}")
        return Place(area.lat, area.lon, "postcode", True, department_of_postcode(postcode), postcode)
    if address:
        return _geocode_address(address, geocoder)
    raise SearchError("give a location: address, lat and lon, postcode, INSEE code or department")


def _geocode_address(address: str, geocoder: Any) -> Place:
    """The geocoder when configured; offline, the postcode or commune named in the address."""
    if geocoder is not None:
        found = geocoder.geocode_one(address)
        if found is not None:
            return Place(
                found.lat, found.lon, found.precision.value, False, nearest_department(found.lat, found.lon), address
            )
    gaz = gazetteer()
    words = address.replace(",", " ").split()
    for word in words:
        if len(word) == 5 and word.isdigit():
            area = gaz.postcode_area(word)
            if area is not None:
                return Place(area.lat, area.lon, "postcode", False, department_of_postcode(word), address)
    wanted = fold(address)
    best = None
    for commune in gaz.communes.values():
        name = fold(commune.name)
        if name and f" {name} " in f" {wanted} " and (best is None or len(name) > len(fold(best.name))):
            best = commune
    if best is not None:
        return Place(best.lat, best.lon, "municipality", False, best.department, address)
    raise SearchError(f"the address {address!r} could not be located: add its postcode or commune")


def nearest_department(lat: float, lon: float) -> str | None:
    commune = gazetteer().nearest_commune(lat, lon)
    return commune.department if commune else None


@dataclass
class SearchRequest:
    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    postcode: str | None = None
    insee: str | None = None
    department: str | None = None
    specialty: str | None = None
    profession: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    within: list[str] = field(default_factory=list)
    slot_types: list[str] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    appointment: str | None = None  # "with" (ROUTINE) or "without" (WALKIN)
    via: list[str] = field(default_factory=list)
    extra_patients: bool | None = None
    preferred: str | None = None
    radius_km: float | None = None
    include_without_slots: bool = False
    seed: int | None = None
    limit: int = 10
    cursor: str | None = None


@dataclass
class Candidate:
    site_id: str
    idnps: str
    distance_km: float
    slots: list[dict[str, Any]]
    group: int = 2
    key: tuple[Any, ...] = ()


def _window(req: SearchRequest, now: datetime) -> tuple[datetime, datetime]:
    local = now.astimezone(PARIS)
    start = req.start or now
    end = req.end or (local + timedelta(days=2)).replace(hour=23, minute=59, second=59, microsecond=0)
    if end <= start:
        raise SearchError("the window must end after it starts")
    if end < now:
        raise SearchError("the window is in the past")
    return max(start, now), end


def _shuffle_key(seed: int, site_id: str) -> str:
    return hashlib.blake2b(f"{seed}:{site_id}".encode(), digest_size=8).hexdigest()


def encode_search_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(state)).decode().rstrip("=")


def decode_search_cursor(cursor: str) -> dict[str, Any]:
    try:
        state = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(state, dict) or not {"snapshot", "offset"} <= set(state):
            raise ValueError
        return state
    except ValueError as exc:
        raise InvalidCursor("the cursor is not one this API returned") from exc


def run_search(
    backend: Backend,
    req: SearchRequest,
    now: datetime | None = None,
    staleness_limit_s: float = 900.0,
    geocoder: Any = None,
    verify_deadline_s: float = 0.0,
) -> dict[str, Any]:
    """The whole search; `verify_deadline_s` > 0 re-checks the page's cards live under that deadline."""
    now = now or datetime.now(UTC)
    state = decode_search_cursor(req.cursor) if req.cursor else None
    if req.specialty and req.profession:
        raise SearchError("give a specialty or a profession, not both")
    specialty = None if req.profession else (req.specialty or "SM54")
    if specialty and specialty not in known_specialties():
        raise SearchError(f"unknown specialty code {specialty!r}: use a savoir-faire code such as SM54")
    place = resolve_place(
        lat=req.lat,
        lon=req.lon,
        address=req.address,
        postcode=req.postcode,
        insee=req.insee,
        department=req.department,
        geocoder=geocoder,
    )
    if state is not None:
        return _next_page(backend, req, state, place, specialty, now, staleness_limit_s, verify_deadline_s)
    start, end = _window(req, now)
    seed = req.seed if req.seed is not None else random.randrange(2**31)
    fresh = freshness(backend, now, staleness_limit_s)
    filters = _slot_filters(req, specialty, fresh.fresh_vendors)
    ranges = _time_ranges(req, start, end, now)
    rule = rule_for(place.department)
    steps = _radius_steps(req, place, rule)
    tried: list[dict[str, Any]] = []
    candidates: dict[str, Candidate] = {}
    radius = steps[-1]
    for radius in steps:
        candidates = _gather(backend, place, radius, filters, ranges, fresh)
        tried.append({"radius_km": radius, "practitioners_with_slots": len({c.idnps for c in candidates.values()})})
        if len({c.idnps for c in candidates.values()}) >= MIN_WITH_SLOTS:
            break
    ranked = _rank(backend, list(candidates.values()), place, seed, req)
    if req.include_without_slots:
        ranked += _without_slots(backend, place, radius, specialty, req.profession, set(candidates), seed)
    page, next_offset, verification = _page(backend, ranked, 0, req, (start, end), now, verify_deadline_s)
    in_reach = _count_in_reach(backend, place, radius, specialty, req.profession)
    with_slots = len({c.idnps for c in candidates.values()})
    explanation = {
        "radius_steps": tried,
        "practitioners_in_reach": in_reach,
        "practitioners_with_slots": with_slots,
        "practitioners_without_slots": max(0, in_reach - with_slots),
        "stale_vendors": sorted(fresh.stale_vendors),
    }
    cursor = None
    if next_offset < len(ranked):
        snapshot = _save_snapshot(
            backend,
            now,
            {
                "seed": seed,
                "radius_km": radius,
                "window": [start.isoformat(), end.isoformat()],
                "order": [[c.site_id, c.idnps, c.distance_km, c.group] for c in ranked],
                "explanation": explanation,
            },
        )
        cursor = encode_search_cursor({"snapshot": snapshot, "offset": next_offset})
    return {
        "place": place,
        "radius_km": radius,
        "radius_rule": rule,
        "window": (start, end),
        "seed": seed,
        "specialty": specialty,
        "profession": req.profession,
        "cards": page,
        "total": len(ranked),
        "next_cursor": cursor,
        "explanation": explanation,
        "verification": verification,
        "freshness": fresh,
        "now": now,
    }


SNAPSHOTS = "search_snapshots"
SNAPSHOT_TTL_S = 3600


def _save_snapshot(backend: Backend, now: datetime, payload: dict[str, Any]) -> str:
    """Keep the ranked order for later pages; drop snapshots older than the TTL on the way."""
    index = ensure_live(backend, SNAPSHOTS)
    snapshot_id = hashlib.blake2b(orjson.dumps(payload["order"]) + now.isoformat().encode(), digest_size=12).hexdigest()
    backend.write(index, [{"snapshot_id": snapshot_id, "created_at": now.isoformat(), "payload": payload}])
    expired = backend.search(
        SNAPSHOTS, GeoQuery(ranges={"created": (None, now.timestamp() - SNAPSHOT_TTL_S)}, limit=500)
    ).hits
    if expired:
        backend.delete(index, [h.doc["snapshot_id"] for h in expired])
    return snapshot_id


def _next_page(
    backend: Backend,
    req: SearchRequest,
    state: dict[str, Any],
    place: Place,
    specialty: str | None,
    now: datetime,
    staleness_limit_s: float,
    verify_deadline_s: float,
) -> dict[str, Any]:
    """A later page: the snapshot's order, each site's slots as they are now (gone ones skipped)."""
    doc = backend.get(SNAPSHOTS, str(state["snapshot"]))
    if doc is None:
        raise InvalidCursor("the cursor has expired (searches are kept one hour); search again")
    snap = doc["payload"]
    start, end = (datetime.fromisoformat(x) for x in snap["window"])
    fresh = freshness(backend, now, staleness_limit_s)
    filters = _slot_filters(req, specialty, fresh.fresh_vendors)
    ranges = _time_ranges(req, max(start, now), end, now)
    offset = int(state["offset"])
    order = snap["order"][offset : offset + 4 * req.limit]
    slots: dict[str, list[dict[str, Any]]] = {}
    site_ids = [row[0] for row in order]
    for i in range(0, len(site_ids), 500):
        chunk = site_ids[i : i + 500]
        for hit in backend.search(
            "slots",
            GeoQuery(filters={**filters, "site": chunk}, ranges=ranges, limit=50 * len(chunk), fields=SLOT_FIELDS),
        ).hits:
            if fresh.is_fresh(hit.doc):
                slots.setdefault(hit.doc["site_id"], []).append(hit.doc)
    candidates = []
    for site_id, idnps, distance, group in order:
        found = sorted(slots.get(site_id, []), key=lambda d: (d["start"], d["slot_id"]))
        candidates.append(Candidate(site_id, idnps, distance, found, group))
    page, consumed, verification = _page(backend, candidates, 0, req, (start, end), now, verify_deadline_s)
    next_offset = offset + consumed
    rule = rule_for(place.department)
    return {
        "place": place,
        "radius_km": snap["radius_km"],
        "radius_rule": rule,
        "window": (start, end),
        "seed": snap["seed"],
        "specialty": specialty,
        "profession": req.profession,
        "cards": page,
        "total": len(snap["order"]),
        "next_cursor": encode_search_cursor({"snapshot": state["snapshot"], "offset": next_offset})
        if next_offset < len(snap["order"])
        else None,
        "explanation": snap["explanation"],
        "verification": verification,
        "freshness": fresh,
        "now": now,
        "offset": offset,
    }


def _page(
    backend: Backend,
    ranked: list[Candidate],
    offset: int,
    req: SearchRequest,
    window: tuple[datetime, datetime],
    now: datetime,
    deadline_s: float,
) -> tuple[list[Candidate], int, Any]:
    """The next `limit` cards from `offset`; with a deadline, re-checked live, emptied cards replaced by the
    next candidates while time remains. Returns the page, where the next page starts, and what was verified."""
    if deadline_s <= 0:
        page, position = [], offset
        while len(page) < req.limit and position < len(ranked):
            if ranked[position].slots or ranked[position].group == 3:
                page.append(ranked[position])
            position += 1
        return page, position, None
    import time

    from aggregation.verify import VerifyReport, verify_cards
    from indexer.registry import list_vendors

    vendors = {v.vendor_id: v for v in list_vendors(backend, enabled_only=True)}
    total = VerifyReport()
    page: list[Candidate] = []
    position = offset
    t_end = time.monotonic() + deadline_s
    while len(page) < req.limit and position < len(ranked):
        batch = ranked[position : position + req.limit - len(page)]
        position += len(batch)
        remaining = t_end - time.monotonic()
        if remaining > 0.02:
            report = verify_cards(backend, [c for c in batch if c.slots], vendors, window, now, remaining)
            total.add(report)
        page += [c for c in batch if c.slots or c.group == 3]
    return page, position, total


def _slot_filters(req: SearchRequest, specialty: str | None, fresh_vendors: set[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {"vendor": sorted(fresh_vendors) or ["-none-"]}
    if specialty:
        filters["practitioner_specialty"] = [specialty]
    if req.profession:
        filters["profession"] = [req.profession]
    if req.slot_types:
        unknown = [t for t in req.slot_types if t not in SLOT_TYPES]
        if unknown:
            raise SearchError(f"unknown slot type(s) {', '.join(unknown)}: use PUBLIC, PRO, SNP or CPTS")
        filters["type"] = list(req.slot_types)
    if req.modalities:
        unknown = [m for m in req.modalities if m not in MODALITIES]
        if unknown:
            raise SearchError(f"unknown modality {', '.join(unknown)}: use practice, home or tele")
        filters["modality"] = sorted({MODALITIES[m] for m in req.modalities})
    if req.appointment:
        if req.appointment not in ("with", "without"):
            raise SearchError("appointment is 'with' or 'without'")
        filters["appointment_type"] = ["ROUTINE" if req.appointment == "with" else "WALKIN"]
    return filters


def _time_ranges(
    req: SearchRequest, start: datetime, end: datetime, now: datetime
) -> dict[str, tuple[float | None, float | None]]:
    low, high = start.timestamp(), end.timestamp()
    if req.within:
        unknown = [b for b in req.within if b not in BUCKETS_H]
        if unknown:
            raise SearchError(f"unknown bucket(s) {', '.join(unknown)}: use {', '.join(BUCKETS_H)}")
        lows = [now.timestamp() + BUCKETS_H[b][0] * 3600 for b in req.within]
        highs = [now.timestamp() + BUCKETS_H[b][1] * 3600 for b in req.within]
        low, high = max(low, min(lows)), min(high, max(highs))
    return {"start": (low, high)}


def _radius_steps(req: SearchRequest, place: Place, rule: RadiusRule) -> list[float]:
    if req.radius_km is not None:
        if not 0 < req.radius_km <= 500:
            raise SearchError("radius_km must be above 0 and at most 500")
        return [req.radius_km]
    if place.precision == "department":
        return [rule.county_km]
    steps, r = [], rule.city_km
    while r < rule.county_km:
        steps.append(r)
        r += rule.step_km
    steps.append(rule.county_km)
    return steps


def _gather(
    backend: Backend,
    place: Place,
    radius: float,
    filters: dict[str, list[str]],
    ranges: dict[str, tuple[float | None, float | None]],
    fresh: Any,
) -> dict[str, Candidate]:
    """Every site with at least one matching free slot in the circle, nearest first (slots scanned by distance)."""
    candidates: dict[str, Candidate] = {}
    query = GeoQuery(lat=place.lat, lon=place.lon, radius_km=radius, filters=filters, ranges=ranges, fields=SLOT_FIELDS)
    for hit in scan(backend, "slots", query, backend.max_page):
        doc = hit.doc
        if not fresh.is_fresh(doc) or not doc.get("site_id"):
            continue
        cand = candidates.get(doc["site_id"])
        if cand is None:
            cand = candidates[doc["site_id"]] = Candidate(doc["site_id"], doc["idnps"], hit.distance_km or 0.0, [])
        cand.slots.append(doc)
    return candidates


def _participations(backend: Backend, idnps: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(idnps), 500):
        chunk = idnps[i : i + 500]
        out.update(
            {
                h.doc["idnps"]: h.doc
                for h in backend.search("participations", GeoQuery(filters={"idnps": chunk}, limit=len(chunk))).hits
            }
        )
    return out


def _rank(
    backend: Backend, candidates: list[Candidate], place: Place, seed: int, req: SearchRequest
) -> list[Candidate]:
    participations = _participations(backend, sorted({c.idnps for c in candidates}))
    kept = []
    for c in candidates:
        p = participations.get(c.idnps)
        if req.via and (p is None or p.get("via") not in req.via):
            continue
        if req.extra_patients is not None and (p is None or bool(p.get("extra_patients")) != req.extra_patients):
            continue
        c.group = 0 if req.preferred and c.idnps == req.preferred else (1 if p and p.get("active") else 2)
        band = 0 if place.zone else int(c.distance_km // BAND_KM)
        c.key = (c.group, band, _shuffle_key(seed, c.site_id))
        c.slots.sort(key=lambda d: (d["start"], d["slot_id"]))
        kept.append(c)
    return sorted(kept, key=lambda c: c.key)


def _without_slots(
    backend: Backend,
    place: Place,
    radius: float,
    specialty: str | None,
    profession: str | None,
    with_slots: set[str],
    seed: int,
) -> list[Candidate]:
    filters = {"specialty": [specialty]} if specialty else {"profession": [profession or ""]}
    out = []
    query = GeoQuery(lat=place.lat, lon=place.lon, radius_km=radius, filters=filters)
    for hit in scan(backend, "practice_sites", query, backend.max_page):
        if hit.doc["site_id"] in with_slots:
            continue
        band = 0 if place.zone else int((hit.distance_km or 0) // BAND_KM)
        out.append(
            Candidate(
                hit.doc["site_id"],
                hit.doc["practitioner"]["idnps"],
                hit.distance_km or 0.0,
                [],
                3,
                (3, band, _shuffle_key(seed, hit.doc["site_id"])),
            )
        )
    return sorted(out, key=lambda c: c.key)


def _count_in_reach(
    backend: Backend, place: Place, radius: float, specialty: str | None, profession: str | None
) -> int:
    filters = {"specialty": [specialty]} if specialty else {"profession": [profession or ""]}
    return backend.search(
        "practice_sites", GeoQuery(lat=place.lat, lon=place.lon, radius_km=radius, filters=filters, limit=1)
    ).total
