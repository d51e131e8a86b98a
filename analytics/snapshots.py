"""Coverage snapshots and search outcomes: what analysts' tables are computed from.

A snapshot reads the index once (active participations, their practice sites, the free slots of the
next 72 hours, the vendors' aggregation state) and stores compact rows per department, SAS territory,
commune, vendor and for the whole country. Taken after aggregation runs and on a schedule (at least
hourly); pruned by retention so the time series stays small. Area rows count the slots regulators could
see at that instant (fresh vendors only); vendor rows count every slot a vendor holds, fresh or not.

A search outcome is recorded per first page of a regulator search, reduced to what analysis needs
(`SearchOutcome`): the place becomes a commune, a department and a territory.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aggregation.availability import declared_sites, freshness
from aggregation.status import STATUS
from analytics.areas import commune_of, territory_of
from core.geo import PARIS, department_of_insee
from core.records import SearchOutcome
from core.settings import Settings
from indexer.availability import SlotCount
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live, iterate_all, scan
from indexer.registry import list_vendors

log = logging.getLogger("dispo.coverage")

KIND = "coverage"
OUTCOMES = "search_outcomes"
HORIZONS = (24, 48, 72)
LEVELS = ("national", "territory", "department", "commune", "vendor")
AREA_LEVELS = ("territory", "department", "commune")
NATIONAL = "FR"
UNDER_SERVED_BELOW = 5  # the agency's radii aim at about five practitioners with slots


def snapshot_id(taken_at: datetime) -> str:
    """Second-resolution UTC instant: sorts as text in time order, on every backend."""
    return taken_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Area:
    """An area's participants and free slots, kept per day from now: a slot of day d is within every horizon past
    d x 24 h, so horizons are summed once when the row is made rather than at each of the engine's counts."""

    participants: set[str] = field(default_factory=set)
    day_practitioners: list[set[str]] = field(default_factory=lambda: [set() for _ in HORIZONS])
    day_slots: list[int] = field(default_factory=lambda: [0] * len(HORIZONS))
    day_types: list[dict[str, int]] = field(default_factory=lambda: [{} for _ in HORIZONS])
    day_modalities: list[dict[str, int]] = field(default_factory=lambda: [{} for _ in HORIZONS])
    day_via: list[dict[str, int]] = field(default_factory=lambda: [{} for _ in HORIZONS])  # by participation mode
    vendor_participants: dict[str, set[str]] = field(default_factory=dict)
    vendor_days: dict[str, list[int]] = field(default_factory=dict)

    def add_slots(self, count: SlotCount, via: str) -> None:
        day = count.day
        self.day_slots[day] += count.slots
        self.day_via[day][via] = self.day_via[day].get(via, 0) + count.slots
        self.day_practitioners[day].add(count.idnps)
        for found, into in ((count.by_type, self.day_types[day]), (count.by_modality, self.day_modalities[day])):
            for key, n in found.items():
                into[key] = into.get(key, 0) + n
        held = self.vendor_days.get(count.vendor)
        if held is None:
            held = self.vendor_days[count.vendor] = [0] * len(HORIZONS)
        held[day] += count.slots

    def slots_within(self, hours: int) -> int:
        return sum(self.day_slots[: HORIZONS.index(hours) + 1])

    def row(self, with_vendors: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"participants": len(self.participants)}
        by_type: dict[str, dict[str, int]] = {}
        by_modality: dict[str, dict[str, int]] = {}
        by_via: dict[str, dict[str, int]] = {}
        for i, h in enumerate(HORIZONS):
            out[f"practitioners_{h}h"] = len(set().union(*self.day_practitioners[: i + 1]))
            out[f"slots_{h}h"] = sum(self.day_slots[: i + 1])
            by_type[str(h)] = _summed(self.day_types[: i + 1])
            by_modality[str(h)] = _summed(self.day_modalities[: i + 1])
            by_via[str(h)] = _summed(self.day_via[: i + 1])
        out["by_type"], out["by_modality"], out["by_via"] = by_type, by_modality, by_via
        if with_vendors:
            vendors = set(self.vendor_participants) | set(self.vendor_days)
            none = [0] * len(HORIZONS)
            out["by_vendor"] = {
                v: {
                    "participants": len(self.vendor_participants.get(v, ())),
                    **{f"slots_{h}h": sum(self.vendor_days.get(v, none)[: i + 1]) for i, h in enumerate(HORIZONS)},
                }
                for v in sorted(vendors)
            }
        return out


def _summed(days: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for day in days:
        for key, n in day.items():
            total[key] = total.get(key, 0) + n
    return total


@dataclass(frozen=True)
class SnapshotSummary:
    snapshot: str
    taken_at: datetime
    rows: int
    participants: int
    slots_72h: int
    pruned: int
    duration_s: float


def _sites_of(backend: Backend, idnps: list[str]) -> Iterator[dict[str, Any]]:
    for i in range(0, len(idnps), 500):
        yield from (h.doc for h in scan(backend, "practice_sites", GeoQuery(filters={"idnps": idnps[i : i + 500]})))


def _place(site: dict[str, Any]) -> tuple[str | None, str | None]:
    address = site.get("address") or {}
    location = site.get("location") or {}
    insee, dep = commune_of(address.get("insee_code"), location.get("lat"), location.get("lon"))
    return insee, site.get("department_code") or dep


def take_snapshot(
    backend: Backend,
    now: datetime | None = None,
    staleness_limit_s: float = 900.0,
    retention_days: float = 90.0,
    commune_retention_days: float = 7.0,
) -> SnapshotSummary:
    """Compute and store one snapshot at `now`; prune rows and outcomes beyond retention."""
    t0 = time.perf_counter()
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    snap = snapshot_id(now)
    fresh = freshness(backend, now, staleness_limit_s)
    areas: dict[tuple[str, str], _Area] = {}

    def area(level: str, code: str) -> _Area:
        found = areas.get((level, code))
        if found is None:
            found = areas[(level, code)] = _Area()
        return found

    def keys(insee: str | None, dep: str | None) -> list[tuple[str, str]]:
        out = [("national", NATIONAL)]
        if dep:
            out += [("department", dep), ("territory", territory_of(dep) or "")]
        if insee:
            out.append(("commune", insee))
        return out

    participations = [p for p in iterate_all(backend, "participations") if p.get("active")]
    vendors_of = {p["idnps"]: list(p.get("vendors") or []) for p in participations}
    via_of = {p["idnps"]: p.get("via") or "practice" for p in participations}
    site_place: dict[str, tuple[str | None, str | None]] = {}
    placed: set[str] = set()
    for site in _sites_of(backend, sorted(vendors_of)):
        idnps = site["practitioner"]["idnps"]
        site_place[site["site_id"]] = place = _place(site)
        placed.add(idnps)
        for key in keys(*place):
            a = area(*key)
            a.participants.add(idnps)
            for v in vendors_of.get(idnps, []):
                a.vendor_participants.setdefault(v, set()).add(idnps)
    national = area("national", NATIONAL)
    for idnps, vendors in vendors_of.items():  # participants without a site in the directory count nationally
        national.participants.add(idnps)
        for v in vendors:
            national.vendor_participants.setdefault(v, set()).add(idnps)

    by_vendor: dict[str, _Area] = {}
    # The engine counts the slots of the next 72 hours by site, vendor, practitioner and day; they are summed up
    # here by area, never read one by one.
    counts = backend.slot_counts(now.timestamp(), len(HORIZONS))
    unknown = sorted({c.site_id for c in counts} - set(site_place))
    found = backend.get_many("practice_sites", unknown)
    # Sites the vendors declared (SOS Médecins places above all): their participants have no directory site, so the
    # places make them participants of their areas.
    declared = declared_sites(backend, [i for i in unknown if i not in found])
    for site_id in unknown:
        site = found.get(site_id) or declared.get(site_id)
        site_place[site_id] = _place(site) if site else (None, None)
    for count in counts:
        via = via_of.get(count.idnps, "practice")
        by_vendor.setdefault(count.vendor, _Area()).add_slots(count, via)
        if not fresh.is_fresh({"vendor": count.vendor, "idnps": count.idnps}):
            continue
        for key in keys(*site_place[count.site_id]):
            a = area(*key)
            a.add_slots(count, via)
            if count.site_id in declared:
                a.participants.add(count.idnps)

    rows: list[dict[str, Any]] = []
    for (level, code), a in areas.items():
        if not code:
            continue
        department = {"department": code, "commune": department_of_insee(code)}.get(level)
        rows.append(
            {
                "row_id": f"{snap}|{level}|{code}",
                "snapshot": snap,
                "taken_at": now.isoformat(),
                "level": level,
                "code": code,
                "department": department,
                **a.row(with_vendors=level != "commune"),
            }
        )
    rows += _vendor_rows(backend, snap, now, by_vendor, vendors_of)
    index = ensure_live(backend, KIND)
    for i in range(0, len(rows), 2000):
        backend.write(index, rows[i : i + 2000])
    backend.refresh(index)
    pruned = prune(backend, now, retention_days, commune_retention_days)
    return SnapshotSummary(
        snap,
        now,
        len(rows),
        len(vendors_of),
        national.slots_within(72),
        pruned,
        time.perf_counter() - t0,
    )


def _vendor_rows(
    backend: Backend,
    snap: str,
    now: datetime,
    by_vendor: dict[str, _Area],
    vendors_of: dict[str, list[str]],
) -> list[dict[str, Any]]:
    participants: dict[str, set[str]] = {}
    for idnps, vendors in vendors_of.items():
        for v in vendors:
            participants.setdefault(v, set()).add(idnps)
    rows = []
    for vendor in list_vendors(backend):
        v = vendor.vendor_id
        a = by_vendor.get(v, _Area())
        a.participants = participants.get(v, set())
        status = backend.get(STATUS, v) or {}
        success = status.get("last_success_at")
        row = {
            "row_id": f"{snap}|vendor|{v}",
            "snapshot": snap,
            "taken_at": now.isoformat(),
            "level": "vendor",
            "code": v,
            **a.row(with_vendors=False),
            "requests": int(status.get("requests", 0)),
            "errors": int(sum((status.get("errors_by_kind") or {}).values())),
            "breaker": status.get("breaker") or ("disabled" if not vendor.enabled else None),
        }
        if status.get("latency_p95_ms") is not None:
            row["latency_p95_ms"] = float(status["latency_p95_ms"])
        if success:
            row["staleness_s"] = max(0.0, (now - datetime.fromisoformat(success)).total_seconds())
        rows.append(row)
    return rows


def _delete_matching(backend: Backend, kind: str, query: GeoQuery, id_field: str) -> int:
    if backend.live_index(kind) is None:
        return 0
    index = ensure_live(backend, kind)
    total = 0
    while True:
        hits = backend.search(kind, GeoQuery(filters=query.filters, ranges=query.ranges, limit=5000)).hits
        if not hits:
            break
        total += backend.delete(index, [h.doc[id_field] for h in hits])
        backend.refresh(index)
    return total


def prune(backend: Backend, now: datetime, retention_days: float, commune_retention_days: float) -> int:
    """Drop snapshot rows and search outcomes older than their retention; returns how many went."""
    old = (now - timedelta(days=retention_days)).timestamp()
    old_communes = (now - timedelta(days=min(commune_retention_days, retention_days))).timestamp()
    keep_levels = [lv for lv in LEVELS if lv != "commune"]
    n = _delete_matching(
        backend, KIND, GeoQuery(filters={"level": keep_levels}, ranges={"taken": (None, old - 1)}), "row_id"
    )
    n += _delete_matching(
        backend, KIND, GeoQuery(filters={"level": ["commune"]}, ranges={"taken": (None, old_communes - 1)}), "row_id"
    )
    n += _delete_matching(backend, OUTCOMES, GeoQuery(ranges={"at": (None, old - 1)}), "outcome_id")
    return n


# -- search outcomes -----------------------------------------------------------------------------------


class OutcomePlace(Protocol):
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...
    @property
    def precision(self) -> str: ...
    @property
    def department(self) -> str | None: ...


class OutcomeExplanation(Protocol):
    @property
    def radius_steps(self) -> Sequence[object]: ...
    @property
    def practitioners_with_slots(self) -> int: ...


class OutcomeVerification(Protocol):
    @property
    def slots_gone(self) -> int: ...
    @property
    def cards_emptied(self) -> int: ...


class OutcomeCard(Protocol):
    @property
    def slots(self) -> Sequence[object]: ...


class SearchedResult(Protocol):
    """What an outcome reads of a search result (`search.engine.SearchResult`, which analytics may not import)."""

    @property
    def now(self) -> datetime: ...
    @property
    def place(self) -> OutcomePlace: ...
    @property
    def cards(self) -> Sequence[OutcomeCard]: ...
    @property
    def explanation(self) -> OutcomeExplanation: ...
    @property
    def verification(self) -> OutcomeVerification | None: ...
    @property
    def specialty(self) -> str | None: ...
    @property
    def profession(self) -> str | None: ...
    @property
    def radius_km(self) -> float: ...


def outcome_of(result: SearchedResult, limit: int, latency_ms: float) -> SearchOutcome:
    """Reduce a first-page search result (`search.engine.run_search`) to its outcome."""
    place = result.place
    at = result.now.astimezone(UTC).replace(microsecond=0)
    commune = None
    department = place.department
    if place.precision != "department":
        commune, found_dep = commune_of(None, place.lat, place.lon)
        department = department or found_dep
    cards_with_slots = sum(1 for c in result.cards if c.slots)
    explanation = result.explanation
    found = explanation.practitioners_with_slots
    verification = result.verification
    changed = bool(verification and (verification.slots_gone or verification.cards_emptied))
    # A page asked smaller than five cards says nothing of scarcity: judge on what was found then.
    shown = cards_with_slots if limit >= UNDER_SERVED_BELOW else found
    return SearchOutcome(
        outcome_id=uuid.uuid4().hex,
        at=at,
        hour=at.astimezone(PARIS).hour,
        department=department,
        territory=territory_of(department),
        commune=commune,
        place_kind=place.precision,
        specialty=result.specialty,
        profession=result.profession,
        radius_km=float(result.radius_km),
        enlargements=max(0, len(explanation.radius_steps) - 1),
        practitioners_with_slots=found,
        cards_with_slots=cards_with_slots,
        under_served=shown < UNDER_SERVED_BELOW,
        verified=verification is not None,
        verification_changed=changed,
        latency_ms=round(latency_ms, 1),
    )


def record_outcome(backend: Backend, outcome: SearchOutcome) -> None:
    """Store an outcome; analysis must never break a search, so failures are logged, not raised."""
    try:
        index = ensure_live(backend, OUTCOMES)
        backend.write(index, [outcome.model_dump(mode="json")])
    except Exception:
        log.exception("could not record a search outcome")


def snapshot_now(backend: Backend, settings: Settings, now: datetime | None = None) -> SnapshotSummary:
    """A snapshot with the deployment's staleness limit and retention."""
    return take_snapshot(
        backend,
        now,
        staleness_limit_s=settings.staleness_limit_s,
        retention_days=settings.coverage_retention_days,
        commune_retention_days=settings.coverage_commune_retention_days,
    )
