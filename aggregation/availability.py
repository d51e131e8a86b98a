"""Free slots in the index: mapping vendor slots to directory sites, and reconciling a batch idempotently.

After a successful call for a batch of practitioners, the indexed slots of exactly those practitioners
from that vendor are reconciled with the answer: new ones inserted, changed ones updated, vanished ones
removed, unchanged ones not rewritten. Slots of other vendors, and of practitioners outside the batch,
are never touched, nor written: a slot the answer gives for anyone else is counted and dropped. A failed call
reconciles nothing.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any
from weakref import WeakKeyDictionary

import orjson

from aggregation.rules import NOT_ASKED
from aggregation.status import STATUS, failing_groups
from aggregation.unavailability import away_at, periods_by_practitioner
from core.geo import gazetteer
from core.records import Address, Position, PositionPrecision, Slot, SlotPlace, is_association
from core.text import fold
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live, iterate_all, scan
from rpps_import.geocode import GeocodeQuery, Geocoder

KIND = "slots"
# Fields left out of a slot's content hash: a change in them alone (a new fetch time) does not make the slot worth
# rewriting.
_VOLATILE = {"fetched_at", "content_hash"}
# Where a slot's site comes from: the national directory, the vendor's own address for a site the directory lacks, or
# an SOS Médecins consultation place (its association takes part in the SAS by SIRET: no practitioner behind it).
DIRECTORY, VENDOR, SOS = "directory", "vendor", "sos"
SAS_VENDOR = "sas"  # the slots of the SAS calendars practitioners keep in Dispo (`aggregation.sas_calendar`)
EXAMPLES = 3  # slot ids kept per reason a slot was dropped, for a maintainer to look one up at the vendor
NOT_IN_DIRECTORY = "practitioner not in the directory"
NO_ADDRESS = "no matching site and no usable vendor address"
NO_MATCH = "no matching site"


@dataclass
class ReconcileStats:
    inserted: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    expired: int = 0
    vendor_declared: int = 0  # slots written or kept on a vendor-declared site
    unavailable: int = 0  # slots in a period the practitioner declared unavailable: left out

    def add(self, other: ReconcileStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def ensure_slots_index(backend: Backend) -> str:
    """The live slots index, created empty on first use."""
    return ensure_live(backend, KIND)


def slot_document(slot: Slot, site: dict[str, Any]) -> dict[str, Any]:
    """The slot's document: the record placed on `site`, plus what searches filter on from that site."""
    doc = slot.model_dump(mode="json", exclude_none=True)
    if not doc.get("cpts"):  # most slots: no key, so their hash stays what releases before the CPTS flow made it
        doc.pop("cpts", None)
    doc["site_id"] = site["site_id"]
    doc["site_source"] = site.get("site_source", DIRECTORY)
    practitioner = site.get("practitioner") or {}
    doc["profession_code"] = practitioner.get("profession_code")
    doc["practitioner_specialties"] = [s["code"] for s in practitioner.get("specialties", [])]
    if site.get("location") is not None:
        doc["location"] = site["location"]
    if doc["site_source"] != DIRECTORY and site.get("position") is not None:
        # A declared site lives only in its slots: they carry where it was placed, and how precisely.
        doc["position"] = site["position"]
    stable = {k: v for k, v in doc.items() if k not in _VOLATILE}
    doc["content_hash"] = hashlib.blake2b(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()
    return doc


class Unplaced(dict[str, int]):
    """Counts of slots that could not be placed (or were not the batch's to place), by reason, with up to EXAMPLES
    slot ids of each reason."""

    def __init__(self) -> None:
        super().__init__()
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, slot_id: str) -> None:
        self[reason] = self.get(reason, 0) + 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < EXAMPLES:
            kept.append(slot_id)


def vendor_site(
    vendor_id: str, idnps: str, place: SlotPlace | None, practitioner: dict[str, Any]
) -> dict[str, Any] | None:
    """A site built from the vendor's address, for a practitioner of the directory at an address it lacks: placed at
    its commune's centroid as imports place a site without a geocoder, or None when the address names no commune
    the postcode base knows. The id depends only on the vendor, the practitioner and the folded address, so the
    same address gives the same site on every cycle."""
    if place is None or not place.postcode:
        return None
    gaz = gazetteer()
    area = gaz.postcode_area(place.postcode)
    if area is None:
        return None
    # A postcode may cover several communes: the vendor's city names which one; otherwise the postcode's centre.
    named = [c for c in (gaz.commune(i) for i in area.communes) if c is not None and fold(c.name) == fold(place.city)]
    if named:
        commune = named[0]
        position = Position(
            lat=commune.lat, lon=commune.lon, precision=PositionPrecision.municipality, source="laposte-commune"
        )
        insee = commune.insee
    else:
        single = len(area.communes) == 1
        precision = PositionPrecision.municipality if single else PositionPrecision.postcode
        position = Position(lat=area.lat, lon=area.lon, precision=precision, source="laposte-postcode")
        insee = area.communes[0] if single else None
    address = Address(street=place.line, postcode=place.postcode, insee_code=insee, commune=place.city)
    key = "|".join(fold(v) for v in (place.line, place.postcode, place.city))
    digest = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    return {
        "site_id": f"vendor:{vendor_id}:{idnps}:{digest}",
        "site_source": VENDOR,
        "practitioner": practitioner,
        "address": address.model_dump(exclude_none=True),
        "position": position.model_dump(mode="json"),
        "location": {"lat": position.lat, "lon": position.lon},
    }


def sos_site(
    vendor_id: str, association: str | None, association_name: str | None, place: SlotPlace | None
) -> dict[str, Any] | None:
    """The site of an SOS Médecins consultation place, from what the vendor says of it (the directory has no such
    place): placed at its commune as `vendor_site` places an address, named after the place and its association, with
    its phone and opening hours. The id depends on the vendor, the association and the vendor's id of the place."""
    if place is None or association is None or not is_association(association):
        return None
    practitioner = {
        "idnps": association,
        "last_name": association_name or "SOS Médecins",
        "profession_code": "10",
        "profession_label": "SOS Médecins",
        "specialties": [{"code": "SM54"}],  # general practice, what the associations' doctors offer
    }
    site = vendor_site(vendor_id, association, place, practitioner)
    if site is None:
        return None
    key = place.place_id or site["site_id"].rsplit(":", 1)[1]
    return site | {
        "site_id": f"sos:{vendor_id}:{association}:{key}",
        "site_source": SOS,
        "name": place.name,
        "phone": place.phone,
        "hours": [h.model_dump() for h in place.hours or []],
    }


def declared_sites(backend: Backend, site_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Sites the vendors declared (at addresses the directory lacks, or SOS Médecins consultation places), by id,
    rebuilt from one of their slots as the aggregator built them: with the practitioner as the directory knows them,
    at the position the slot carries."""
    wanted = set(site_ids)
    if not wanted:
        return {}
    docs: dict[str, dict[str, Any]] = {}
    fields = ("site_id", "vendor", "idnps", "place", "structure_idnst", "structure_name", "position")
    for hit in scan(backend, KIND, GeoQuery(filters={"site": sorted(wanted)}, fields=fields)):
        docs.setdefault(hit.doc["site_id"], hit.doc)
        if len(docs) == len(wanted):  # one slot of each site is enough
            break
    idnps = sorted({d["idnps"] for d in docs.values() if not is_association(d["idnps"])})
    practitioners: dict[str, dict[str, Any]] = {}
    if idnps:
        for doc in iterate_all(backend, "practice_sites", {"idnps": idnps}):
            practitioners[doc["practitioner"]["idnps"]] = doc["practitioner"]
    out: dict[str, dict[str, Any]] = {}
    for site_id, doc in docs.items():
        place = SlotPlace.model_validate(doc["place"]) if doc.get("place") else None
        if is_association(doc["idnps"]):
            site = sos_site(doc["vendor"], doc.get("structure_idnst"), doc.get("structure_name"), place)
        else:
            site = vendor_site(doc["vendor"], doc["idnps"], place, practitioners.get(doc["idnps"], {}))
        if site is None or site["site_id"] != site_id:
            continue
        if doc.get("position"):
            position = doc["position"]
            site |= {"position": position, "location": {"lat": position["lat"], "lon": position["lon"]}}
        out[site_id] = site
    return out


class SiteMapper:
    """Maps a vendor slot to a practice site: a directory site by structure (FINESS, SIRET, rang), then by postcode
    (and street, when several sites share it), else a site the vendor declares at an address the directory lacks."""

    def __init__(self, backend: Backend, geocoder: Geocoder | None = None) -> None:
        self.backend, self.geocoder = backend, geocoder
        self._cache: dict[str, list[dict[str, Any]]] = {}
        self._positions: dict[str, Position | None] = {}  # declared site id -> the geocoder's position of it

    def sites(self, idnps: str) -> list[dict[str, Any]]:
        if idnps not in self._cache:
            self.prefetch([idnps])
        return self._cache[idnps]

    def prefetch(self, idnps: Sequence[str]) -> None:
        """Read the sites of a whole batch of practitioners in one query rather than one query each
        (a national cycle places slots of 60,000 practitioners)."""
        missing = [i for i in dict.fromkeys(idnps) if i not in self._cache]
        if not missing:
            return
        found: dict[str, list[dict[str, Any]]] = {i: [] for i in missing}
        for doc in iterate_all(self.backend, "practice_sites", {"idnps": missing}):
            found[doc["practitioner"]["idnps"]].append(doc)
        self._cache.update(found)

    def place(self, slot: Slot) -> dict[str, Any] | None:
        """The site document the slot belongs to, or None when it cannot be placed (see `unplaced_reason`)."""
        if slot.idnps is None:
            return None
        if is_association(slot.idnps):
            return self._geocoded(sos_site(slot.vendor, slot.structure_idnst, slot.structure_name, slot.place))
        sites = self.sites(slot.idnps)
        if not sites:  # a vendor's word alone does not make a practitioner: the directory must know them
            return None
        if slot.site_id is not None:  # a slot Dispo makes itself (a SAS calendar's) names its site
            return next((s for s in sites if s["site_id"] == slot.site_id), None)
        idnst = slot.structure_idnst or ""
        prefix, number = idnst[:1], idnst[1:]
        for site in sites:
            if (
                (prefix == "1" and number and number == site.get("finess_site"))
                or (prefix == "3" and number and number == site.get("siret"))
                or (idnst and idnst == site.get("structure_technical_id"))
            ):
                return site
        postcode = slot.place.postcode if slot.place else None
        line = fold(slot.place.line) if slot.place else ""
        by_postcode = [s for s in sites if postcode and (s.get("address") or {}).get("postcode") == postcode]
        if len(by_postcode) == 1:
            return by_postcode[0]
        by_street = [s for s in by_postcode if line and fold(Address(**s["address"]).street_line()) == line]
        if len(by_street) == 1:
            return by_street[0]
        if not by_postcode or (line and not by_street):  # an address none of the directory's sites has
            declared = self._geocoded(vendor_site(slot.vendor, slot.idnps, slot.place, sites[0]["practitioner"]))
            if declared is not None:
                return declared
        located = [s for s in sites if s.get("location")]
        return located[0] if len(located) == 1 and not idnst else None

    def _geocoded(self, site: dict[str, Any] | None) -> dict[str, Any] | None:
        """A site the vendor declares, placed at its address by the geocoder as imports place the directory's sites
        (once per site and cycle; the geocoder keeps its answers), else left at its commune."""
        if site is None or self.geocoder is None:
            return site
        key = site["site_id"]
        if key not in self._positions:
            address = site["address"]
            query = GeocodeQuery(
                street=address.get("street") or "",
                postcode=address.get("postcode"),
                insee_code=address.get("insee_code"),
                commune=address.get("commune"),
            )
            self._positions[key] = self.geocoder.geocode([query])[0] if query.street else None
        position = self._positions[key]
        if position is None:
            return site
        return site | {
            "position": position.model_dump(mode="json"),
            "location": {"lat": position.lat, "lon": position.lon},
        }

    def unplaced_reason(self, slot: Slot) -> str:
        """Why `place` found no site for this slot."""
        if slot.idnps is not None and is_association(slot.idnps):
            return NO_ADDRESS
        if not self.sites(slot.idnps or ""):
            return NOT_IN_DIRECTORY
        postcode = slot.place.postcode if slot.place else None
        if not any(
            postcode and (s.get("address") or {}).get("postcode") == postcode for s in self.sites(slot.idnps or "")
        ):
            return NO_ADDRESS
        return NO_MATCH


def reconcile(
    backend: Backend,
    vendor_id: str,
    idnps: Sequence[str],
    slots: Sequence[Slot],
    mapper: SiteMapper,
    now: datetime,
) -> tuple[ReconcileStats, Unplaced]:
    """Make the index hold exactly `slots` for these practitioners at this vendor. Returns stats and the
    count of slots that could not be placed on a site, or were for practitioners other than `idnps` (by reason,
    with examples)."""
    index = ensure_slots_index(backend)
    asked = set(idnps)
    mapper.prefetch(idnps)
    away = periods_by_practitioner(backend, idnps)
    stats = ReconcileStats()
    unplaced = Unplaced()
    existing = {
        hit.doc["slot_id"]: hit.doc.get("content_hash", "")
        for hit in scan(
            backend,
            KIND,
            GeoQuery(filters={"vendor": [vendor_id], "idnps": list(idnps)}, fields=("slot_id", "content_hash")),
        )
    }
    to_write = []
    seen: set[str] = set()
    handled: set[str] = set()
    for slot in slots:
        if slot.slot_id in handled:  # the same slot given twice is one slot: written and counted once
            continue
        handled.add(slot.slot_id)
        if slot.idnps not in asked:
            # Written, it could stay for good: only a call asking this vendor for its practitioner removes it.
            unplaced.add(NOT_ASKED, slot.slot_id)
            continue
        if slot.start < now:  # already started: no longer bookable
            stats.expired += 1
            continue
        if slot.idnps in away and away_at(away[slot.idnps], slot.start):
            stats.unavailable += 1  # and removed if it was indexed: it is not among those seen
            continue
        site = mapper.place(slot)
        if site is None:
            unplaced.add(mapper.unplaced_reason(slot), slot.slot_id)
            continue
        doc = slot_document(slot, site)
        if doc["site_source"] in (VENDOR, SOS):
            stats.vendor_declared += 1
        seen.add(slot.slot_id)
        old = existing.get(slot.slot_id)
        if old is None:
            stats.inserted += 1
            to_write.append(doc)
        elif old != doc["content_hash"]:
            stats.updated += 1
            to_write.append(doc)
        else:
            stats.unchanged += 1
    vanished = [slot_id for slot_id in existing if slot_id not in seen]
    if to_write:
        backend.write(index, to_write)
    if vanished:
        stats.removed = backend.delete(index, vanished)
    return stats, unplaced


@dataclass
class VendorStatuses:
    """What freshness reads of the vendors' statuses: each one's last success and its failing practitioners grouped
    by instant of failure, earliest first. Parsed once and kept while the statuses are unchanged (`freshness`)."""

    last_success: dict[str, datetime] = field(default_factory=dict)
    instants: dict[str, list[float]] = field(default_factory=dict)  # ascending; every vendor with a state is a key
    groups: dict[str, list[list[str]]] = field(default_factory=dict)  # the IDNPS of each instant, in the same order
    _stale: dict[str, tuple[int, frozenset[str]]] = field(default_factory=dict, init=False, repr=False)
    _failing: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False)

    def failed_before(self, vendor: str, cutoff: float) -> frozenset[str]:
        """The practitioners of this vendor failing since before `cutoff`: the groups up to it, gathered once for
        as long as the cutoff stays between the same two instants."""
        k = bisect_left(self.instants.get(vendor, ()), cutoff)
        if not k:
            return frozenset()
        found = self._stale.get(vendor)
        if found is None or found[0] != k:
            found = self._stale[vendor] = (k, frozenset(chain.from_iterable(self.groups[vendor][:k])))
        return found[1]

    def failing(self, vendor: str) -> frozenset[str]:
        """The practitioners whose last batch at this vendor failed, however recently: gathered when first asked,
        as only the few vendors of a page's cards are."""
        found = self._failing.get(vendor)
        if found is None:
            found = self._failing[vendor] = frozenset(chain.from_iterable(self.groups.get(vendor, ())))
        return found


@dataclass
class Freshness:
    """Which indexed slots are too old to show as free: those of a vendor without a successful call for
    longer than the staleness limit, or of practitioners whose batches have failed for that long. They
    stay in the index (and in counts) until the vendor answers again."""

    fresh_vendors: set[str]
    stale_practitioners: dict[str, frozenset[str]]  # vendor -> IDNPS
    statuses: VendorStatuses = field(default_factory=VendorStatuses)

    @property
    def stale_vendors(self) -> set[str]:
        """Vendors with an aggregation state whose slots are hidden for staleness."""
        return set(self.statuses.instants) - self.fresh_vendors

    def failing(self, vendor: str) -> frozenset[str]:
        return self.statuses.failing(vendor)

    def age_s(self, slot_doc: dict[str, Any], now: datetime) -> float:
        """How old the information is: since the vendor last confirmed this practitioner's agenda."""
        vendor = slot_doc.get("vendor", "")
        if vendor == SAS_VENDOR:  # a SAS calendar lives in Dispo: the index is its agenda
            return 0.0
        confirmed = datetime.fromisoformat(slot_doc["fetched_at"])
        success = self.statuses.last_success.get(vendor)
        if success is not None and slot_doc.get("idnps") not in self.failing(vendor):
            confirmed = max(confirmed, success)
        return max(0.0, (now - confirmed).total_seconds())

    def is_fresh(self, slot_doc: dict[str, Any]) -> bool:
        vendor = slot_doc.get("vendor", "")
        return vendor in self.fresh_vendors and slot_doc.get("idnps") not in self.stale_practitioners.get(vendor, ())


# What freshness reads of a vendor's status: not its last cycle's report, which names every failing practitioner's
# reason and is the larger part of the document.
_FRESHNESS_FIELDS = ("vendor_id", "last_success_at", "failing")
# The statuses each backend last gave, with the revision they were read at (`Backend.revision`).
_READ: WeakKeyDictionary[Backend, tuple[Hashable, VendorStatuses]] = WeakKeyDictionary()


def read_statuses(backend: Backend) -> VendorStatuses:
    """The vendors' statuses as freshness needs them, read again only when they have changed: every search asks,
    and reading them meant decoding every failing practitioner of every vendor (tens of milliseconds on the
    embedded index, a hundred on Elasticsearch, which parses the whole documents to pick their fields)."""
    revision = backend.revision(STATUS)
    kept = _READ.get(backend)
    if revision is not None and kept is not None and kept[0] == revision:
        return kept[1]
    statuses = VendorStatuses()
    for hit in backend.search(STATUS, GeoQuery(limit=1000, fields=_FRESHNESS_FIELDS)).hits:
        status = hit.doc
        vendor = status["vendor_id"]
        if status.get("last_success_at") is not None:
            statuses.last_success[vendor] = datetime.fromisoformat(status["last_success_at"])
        by_instant = sorted((datetime.fromisoformat(since).timestamp(), ids) for since, ids in failing_groups(status))
        statuses.instants[vendor] = [instant for instant, _ in by_instant]
        statuses.groups[vendor] = [ids for _, ids in by_instant]
    if revision is not None:  # read after the revision: a write in between is read again next time, never missed
        _READ[backend] = (revision, statuses)
    return statuses


def freshness(backend: Backend, now: datetime, limit_s: float) -> Freshness:
    cutoff = now.timestamp() - limit_s
    statuses = read_statuses(backend)
    fresh = {vendor for vendor, at in statuses.last_success.items() if at.timestamp() >= cutoff}
    fresh.add(SAS_VENDOR)  # the SAS calendars live in Dispo itself: their slots are as fresh as the index
    stale = {vendor: statuses.failed_before(vendor, cutoff) for vendor in statuses.instants}
    return Freshness(fresh, {vendor: ids for vendor, ids in stale.items() if ids}, statuses)
