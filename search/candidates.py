"""Candidates: the practice sites a search may show, each with its matching free slots, distance and group.

Read from the index: the sites of a circle holding a matching slot (nearest first, a row per site), the slots of the
few sites a page shows, the sites without a slot; the candidates' sites and their practitioners' SAS participations
are read by key, all of them at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

from aggregation.availability import Freshness
from aggregation.unavailability import Period, away_at
from indexer.availability import SlotMatch
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import scan
from search.place import Place
from search.request import SearchRequest

# What freshness, live verification and cards read of a slot: not places, names or hashes.
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
    "cpts",
)

Filters = dict[str, list[str]]


class Group(IntEnum):
    """Ranking groups, shown in this order: the patient's own doctor, SAS participants, other practitioners
    with slots, then (when asked) practitioners without a slot."""

    preferred = 0
    participant = 1
    other = 2
    no_slots = 3


@dataclass
class Candidate:
    site_id: str
    idnps: str
    distance_km: float
    slots: list[dict[str, Any]]
    group: Group = Group.other
    key: tuple[Any, ...] = ()  # its place in the ranking (`search.rank.RankKey`), set when ranked

    @property
    def shown(self) -> bool:
        """A card is shown with slots, or as a practitioner without slots when those were asked for."""
        return bool(self.slots) or self.group is Group.no_slots


def in_circle(backend: Backend, place: Place, radius_km: float, match: SlotMatch) -> list[Candidate]:
    """Every site of the circle with at least one matching fresh free slot, nearest first, without its slots (the
    backend reads a row per site: ranking needs nothing else)."""
    return [
        Candidate(s.site_id, s.idnps, s.distance_km, [])
        for s in backend.sites_with_slots(place.lat, place.lon, radius_km, match)
    ]


def read_slots(
    backend: Backend,
    candidates: list[Candidate],
    match: SlotMatch,
    fresh: Freshness,
    away: dict[str, list[Period]] | None = None,
) -> list[Candidate]:
    """These candidates, in their order, each with its matching fresh free slots as they are now (earliest first);
    one left without any since it was ranked is dropped, one without slots by design kept. No slot starts in a period
    its practitioner declared away (reconciliation keeps them out of the index; this catches one written while the
    period was being declared)."""
    wanted = {c.site_id: c for c in candidates if c.group is not Group.no_slots}
    for cand in wanted.values():
        cand.slots = []
    for doc in backend.slots_of_sites(wanted, match, SLOT_FIELDS):
        periods = (away or {}).get(doc.get("idnps") or "")
        if periods and away_at(periods, datetime.fromisoformat(doc["start"])):
            continue
        if fresh.is_fresh(doc):
            wanted[doc["site_id"]].slots.append(doc)
    for cand in wanted.values():
        cand.slots.sort(key=lambda d: (d["start"], d["slot_id"]))
    return [c for c in candidates if c.shown]


def without_slots(
    backend: Backend,
    place: Place,
    radius_km: float,
    specialty: str | None,
    profession: str | None,
    with_slots: set[str],
) -> list[Candidate]:
    """The sites of the specialty (or profession) in the circle that have no matching slot, nearest first."""
    query = GeoQuery(lat=place.lat, lon=place.lon, radius_km=radius_km, filters=_practitioners(specialty, profession))
    return [
        Candidate(hit.doc["site_id"], hit.doc["practitioner"]["idnps"], hit.distance_km or 0.0, [], Group.no_slots)
        for hit in scan(backend, "practice_sites", query, backend.max_page)
        if hit.doc["site_id"] not in with_slots
    ]


def count_in_reach(
    backend: Backend, place: Place, radius_km: float, specialty: str | None, profession: str | None
) -> int:
    """How many sites of the specialty (or profession) the circle holds, with slots or not."""
    return backend.count_sites_in_reach(place.lat, place.lon, radius_km, _practitioners(specialty, profession))


def participations_of(backend: Backend, idnps: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The SAS participation of each practitioner who declared one, by IDNPS (read by key)."""
    return backend.get_many("participations", idnps)


def admit(
    candidates: list[Candidate],
    participations: dict[str, dict[str, Any]],
    req: SearchRequest,
    away: dict[str, list[Period]] | None = None,
    now: datetime | None = None,
) -> list[Candidate]:
    """The candidates whose practitioner's SAS participation passes the request's filters: one of the ways asked for
    (`via`: individually, through a CPTS, an MSP, SOS Médecins), taking extra patients or not, taking patients
    redirected from emergency departments or not; and not shown as a card without slots while away."""
    kept = []
    for c in candidates:
        p = participations.get(c.idnps)
        if req.via and (p is None or p.get("via") not in req.via):
            continue
        if req.extra_patients is not None and (p is None or bool(p.get("extra_patients")) != req.extra_patients):
            continue
        if req.er_redirection is not None and (p is None or bool(p.get("er_redirection")) != req.er_redirection):
            continue
        periods = (away or {}).get(c.idnps)
        if periods and c.group is Group.no_slots and now is not None and away_at(periods, now):
            continue
        kept.append(c)
    return kept


def sites_of(backend: Backend, candidates: list[Candidate]) -> dict[str, dict[str, Any]]:
    """The candidates' practice sites by site id (read by key)."""
    return backend.get_many("practice_sites", (c.site_id for c in candidates))


def _practitioners(specialty: str | None, profession: str | None) -> Filters:
    return {"specialty": [specialty]} if specialty else {"profession": [profession or ""]}
