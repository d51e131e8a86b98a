"""Availability as the search asks for it: the *sites* within reach that hold a matching free slot, then the slots
of the few sites a page shows.

A search ranks sites, not slots: a dense circle holds tens of thousands of free slots over a few thousand sites, and
only the sites are needed to rank them (a site belongs to one practitioner and has one position). Each backend
answers natively: the embedded index from a per-site summary kept in the same transaction as the slots
(`indexer.sqlite_slots`), Elasticsearch by collapsing the slots of a circle on their site (`indexer.es_backend`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The slot filters the availability queries understand, by what they describe. A site is one practitioner at one
# position: their profession and specialties are the site's; the rest is each slot's own.
SITE_FILTERS = ("profession", "practitioner_specialty")
SLOT_FILTERS = ("vendor", "type", "modality", "appointment_type")


@dataclass(frozen=True)
class SlotMatch:
    """What a free slot must be for its site to count: filter values (any of each list), slot starts within
    `start` (epoch seconds, either end open), and none of the `hidden` practitioners' slots at a vendor (their
    last answers are too old to show)."""

    filters: Mapping[str, list[str]] = field(default_factory=dict)
    start: tuple[float | None, float | None] = (None, None)
    hidden: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.filters) - set(SITE_FILTERS) - set(SLOT_FILTERS)
        if unknown:
            raise KeyError(f"unknown slot filter {sorted(unknown)[0]!r}")

    def site_filters(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.filters.items() if k in SITE_FILTERS and v}

    def slot_filters(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.filters.items() if k in SLOT_FILTERS and v}

    def hidden_pairs(self) -> dict[str, list[str]]:
        """Vendor -> its hidden practitioners, sorted (for stable queries), vendors without any left out."""
        return {v: sorted(ids) for v, ids in sorted(self.hidden.items()) if ids}


@dataclass(frozen=True)
class SiteInReach:
    """A site holding at least one matching free slot, its practitioner and its distance from the centre."""

    site_id: str
    idnps: str
    distance_km: float


@dataclass(frozen=True)
class SlotCount:
    """Free slots of one practitioner at one site through one vendor starting within one day of a period (day 0
    from the period's start to 24 hours later, and so on), counted by the engine: how many, and by slot type and
    modality (a slot of two types counts in both)."""

    site_id: str
    vendor: str
    idnps: str
    day: int
    slots: int
    by_type: dict[str, int]
    by_modality: dict[str, int]
