"""What a regulator asks: the search request, its checks, and the slot filters and time window it means.

Every check runs before the index is read, and a refusal says what to fix (`SearchError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.errors import InvalidRequest
from core.geo import PARIS
from indexer.availability import SlotMatch
from search.specialties import known_specialties

DEFAULT_SPECIALTY = "SM54"  # general medicine: what a regulator of the SAS looks for unless told otherwise
BUCKETS_H = {
    "0-4h": (0, 4),
    "4-8h": (4, 8),
    "8-12h": (8, 12),
    "12-24h": (12, 24),
    "24-48h": (24, 48),
    "48-72h": (48, 72),
}
MODALITIES = {"practice": "AMB", "home": "HH", "tele": "VR", "AMB": "AMB", "HH": "HH", "VR": "VR"}
SLOT_TYPES = {"PUBLIC", "PRO", "SNP", "CPTS"}
MAX_RADIUS_KM = 500


class SearchError(InvalidRequest):
    """Bad search input: the message says what to fix."""

    def __init__(self, message: str) -> None:
        super().__init__("Invalid search", f"{message}.", "invalid-search")


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
    er_redirection: bool | None = None  # takes patients redirected from emergency departments
    preferred: str | None = None
    radius_km: float | None = None
    include_without_slots: bool = False
    seed: int | None = None
    limit: int = 10
    cursor: str | None = None


def checked_specialty(req: SearchRequest) -> str | None:
    """Refuse a request that cannot be answered; returns the specialty searched (None for a profession)."""
    if req.specialty and req.profession:
        raise SearchError("give a specialty or a profession, not both")
    specialty = None if req.profession else (req.specialty or DEFAULT_SPECIALTY)
    if specialty and specialty not in known_specialties():
        raise SearchError(f"unknown specialty code {specialty!r}: use a savoir-faire code such as SM54")
    unknown = [t for t in req.slot_types if t not in SLOT_TYPES]
    if unknown:
        raise SearchError(f"unknown slot type(s) {', '.join(unknown)}: use PUBLIC, PRO, SNP or CPTS")
    unknown = [m for m in req.modalities if m not in MODALITIES]
    if unknown:
        raise SearchError(f"unknown modality {', '.join(unknown)}: use practice, home or tele")
    if req.appointment and req.appointment not in ("with", "without"):
        raise SearchError("appointment is 'with' or 'without'")
    unknown = [b for b in req.within if b not in BUCKETS_H]
    if unknown:
        raise SearchError(f"unknown bucket(s) {', '.join(unknown)}: use {', '.join(BUCKETS_H)}")
    if req.radius_km is not None and not 0 < req.radius_km <= MAX_RADIUS_KM:
        raise SearchError(f"radius_km must be above 0 and at most {MAX_RADIUS_KM}")
    if req.limit < 1:
        raise SearchError("limit must be at least 1")
    return specialty


def search_window(req: SearchRequest, now: datetime) -> tuple[datetime, datetime]:
    """From now (or the asked start) to the asked end, by default the end of the day after tomorrow in Paris."""
    local = now.astimezone(PARIS)
    start = req.start or now
    end = req.end or (local + timedelta(days=2)).replace(hour=23, minute=59, second=59, microsecond=0)
    if end <= start:
        raise SearchError("the window must end after it starts")
    if end < now:
        raise SearchError("the window is in the past")
    return max(start, now), end


def slot_filters(req: SearchRequest, specialty: str | None, fresh_vendors: set[str]) -> dict[str, list[str]]:
    """The index filters on slots: fresh vendors only, the specialty or profession, and what the request narrows."""
    filters: dict[str, list[str]] = {"vendor": sorted(fresh_vendors) or ["-none-"]}
    if specialty:
        filters["practitioner_specialty"] = [specialty]
    if req.profession:
        filters["profession"] = [req.profession]
    if req.slot_types:
        filters["type"] = list(req.slot_types)
    if req.modalities:
        filters["modality"] = sorted({MODALITIES[m] for m in req.modalities})
    if req.appointment:
        filters["appointment_type"] = ["ROUTINE" if req.appointment == "with" else "WALKIN"]
    return filters


def time_ranges(
    req: SearchRequest, start: datetime, end: datetime, now: datetime
) -> dict[str, tuple[float | None, float | None]]:
    """Slot starts within the window, narrowed to the asked buckets (hours from now)."""
    low, high = start.timestamp(), end.timestamp()
    if req.within:
        lows = [now.timestamp() + BUCKETS_H[b][0] * 3600 for b in req.within]
        highs = [now.timestamp() + BUCKETS_H[b][1] * 3600 for b in req.within]
        low, high = max(low, min(lows)), min(high, max(highs))
    return {"start": (low, high)}


def slot_match(
    req: SearchRequest,
    specialty: str | None,
    fresh_vendors: set[str],
    hidden: dict[str, set[str]],
    window: tuple[datetime, datetime],
    now: datetime,
) -> SlotMatch:
    """What a slot shown must be: of a fresh vendor and not of a practitioner hidden as stale there, of the specialty
    or profession, as the request narrows it, starting within the window (the part of it still ahead)."""
    start, end = window
    low, high = time_ranges(req, max(start, now), end, now)["start"]
    hidden_ids = {vendor: frozenset(ids) for vendor, ids in hidden.items()}
    return SlotMatch(filters=slot_filters(req, specialty, fresh_vendors), start=(low, high), hidden=hidden_ids)
