"""Analysts' tables, computed from coverage snapshots, search outcomes and appointments.

Each table's row is a pydantic model whose field descriptions are the data dictionary: the API's
schema, the CSV/Parquet exports and `data_dictionary.md` all come from these classes.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from analytics import areas
from analytics.snapshots import AREA_LEVELS, HORIZONS, KIND, NATIONAL, OUTCOMES
from core.records import iso_week
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import scan
from indexer.registry import list_vendors

TYPES = {"PUBLIC": "slots_public", "PRO": "slots_pro", "SNP": "slots_snp", "CPTS": "slots_cpts"}
MODALITIES = {"AMB": "slots_practice", "HH": "slots_home", "VR": "slots_tele"}
VIA = {"practice": "slots_individual", "cpts": "slots_via_cpts", "msp": "slots_via_msp", "sos": "slots_via_sos"}


class CoverageArea(BaseModel):
    """Coverage of one area at one snapshot, for one horizon."""

    snapshot: str = Field(description="Snapshot instant, UTC (YYYY-MM-DDTHH:MM:SSZ).")
    level: str = Field(description="national, territory (SAS territory), department or commune.")
    code: str = Field(description="FR, the territory name (SAS-01), the department code or the INSEE code.")
    name: str | None = Field(description="Area name (departments of a territory; commune name).")
    department: str | None = Field(description="Department of a department or commune row.")
    population: int | None = Field(
        description="Inhabitants: ANCT density 2020 x the agency's area 2025; empty for communes, Guyane and Mayotte."
    )
    horizon_h: int = Field(description="Slots starting from the snapshot instant to this many hours later.")
    participants: int = Field(description="Active SAS participants with a practice site in the area.")
    practitioners_with_slots: int = Field(description="Practitioners with at least one free slot in the horizon.")
    slots: int = Field(description="Free slots in the horizon (vendors fresh at snapshot time only).")
    slots_per_10k: float | None = Field(description="Free slots per 10,000 inhabitants.")
    practitioners_with_slots_per_10k: float | None = Field(
        description="Practitioners with a free slot per 10,000 inhabitants."
    )
    slots_public: int = Field(description="Free slots of type PUBLIC (open to everyone).")
    slots_pro: int = Field(description="Free slots of type PRO (health professionals).")
    slots_snp: int = Field(description="Free slots of type SNP (reserved for SAS regulation).")
    slots_cpts: int = Field(description="Free slots of type CPTS.")
    slots_practice: int = Field(description="Free slots at the practice (AMB).")
    slots_home: int = Field(description="Free home-visit slots (HH).")
    slots_tele: int = Field(description="Free teleconsultation slots (VR).")
    slots_individual: int = Field(description="Free slots of practitioners taking part in their own name.")
    slots_via_cpts: int = Field(description="Free slots of practitioners taking part through their CPTS.")
    slots_via_msp: int = Field(description="Free slots of practitioners taking part through their MSP.")
    slots_via_sos: int = Field(description="Free slots of SOS Médecins associations' consultation places.")


class UnderServed(BaseModel):
    """Regulator searches of a period by territory and hour of day (Europe/Paris)."""

    territory: str = Field(description="SAS territory of the searched place (unknown when it could not be placed).")
    department: str | None = Field(description="Department of the searched place.")
    hour: int = Field(description="Hour of day, Europe/Paris (0-23).")
    searches: int = Field(description="First pages of regulator searches.")
    under_served: int = Field(description="Searches with fewer than 5 cards with slots.")
    under_served_share: float = Field(description="under_served / searches.")
    enlarged_share: float = Field(description="Share of searches whose radius was enlarged at least once.")
    median_radius_km: float = Field(description="Median radius finally used, km.")
    verification_changed: int = Field(description="Searches whose page changed on live re-check with vendors.")
    median_latency_ms: float = Field(description="Median server-side search time, ms.")


class SearchActivity(BaseModel):
    """Regulator searches per clock hour of a period (the chart's bars)."""

    hour_start: datetime = Field(description="Start of the clock hour, UTC.")
    searches: int = Field(description="First pages of regulator searches in that hour.")
    under_served: int = Field(description="Of which with fewer than 5 cards with slots.")


class VendorRow(BaseModel):
    """What each vendor feeds the index with, and how reliably, over a period."""

    vendor_id: str = Field(description="Vendor identifier in the registry.")
    name: str = Field(description="Vendor name.")
    enabled: bool = Field(description="Whether the aggregator pulls it.")
    snapshots: int = Field(description="Snapshots of the period the figures come from.")
    participants: int = Field(description="Active participants the vendor serves (last snapshot).")
    slots_72h: int = Field(description="Free slots the vendor holds in the index within 72 h (last snapshot).")
    share_of_slots: float | None = Field(description="slots_72h / all vendors' slots_72h (last snapshot).")
    requests: int = Field(description="Slot searches sent to the vendor during the period.")
    errors: int = Field(description="Of which failed (timeout, connection, HTTP error, bad answer).")
    error_rate: float | None = Field(description="errors / requests.")
    latency_p95_ms: float | None = Field(description="95th percentile over the period of each cycle's p95 latency.")
    staleness_max_s: float | None = Field(description="Longest time since the last success seen at a snapshot.")
    staleness_mean_s: float | None = Field(description="Mean of that time over the period's snapshots.")
    breaker: str | None = Field(description="Circuit breaker at the last snapshot: closed, open, half-open.")


class AppointmentRow(BaseModel):
    """Appointments booked through the SAS, by territory and status, for appointments starting in a period."""

    territory: str = Field(description="SAS territory of the practitioner's site (unknown when not placed).")
    department: str | None = Field(description="Department of the practitioner's site.")
    status: str = Field(description="booked, fulfilled, noshow or cancelled (as last reported by the vendor).")
    appointments: int = Field(description="Number of appointments.")


class OrientationRow(BaseModel):
    """Orientations without a slot that regulators recorded, by territory, kind and week, in a period."""

    territory: str = Field(description="SAS territory of the site the patient was sent to (unknown when not placed).")
    department: str | None = Field(description="Department of that site.")
    kind: str = Field(description="extra_patients (surnuméraire), sos (an SOS Médecins place) or er_redirection.")
    week: str = Field(description="ISO week of the orientation, 2026-W49.")
    orientations: int = Field(description="Number of orientations.")
    accepted: int = Field(description="Of which the regulator recorded as accepted.")


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @classmethod
    def last(cls, days: float = 7.0, end: datetime | None = None) -> Period:
        end = end or datetime.now(UTC)
        return cls(end - timedelta(days=days), end)

    @property
    def ranges(self) -> tuple[float, float]:
        return self.start.timestamp(), self.end.timestamp()


def _rows(backend: Backend, filters: dict[str, list[str]], period: Period | None = None) -> list[dict[str, Any]]:
    if backend.live_index(KIND) is None:
        return []
    ranges = {"taken": period.ranges} if period else {}
    return [h.doc for h in scan(backend, KIND, GeoQuery(filters=filters, ranges=ranges))]


def snapshots(backend: Backend, period: Period | None = None) -> list[str]:
    """Snapshot instants, oldest first (one national row each)."""
    return sorted(r["snapshot"] for r in _rows(backend, {"level": ["national"]}, period))


def latest_snapshot(backend: Backend, at: datetime | None = None) -> str | None:
    """The last snapshot taken at or before `at` (now by default)."""
    at = at or datetime.now(UTC)
    # Look back a day first (snapshots are at least hourly), then over everything kept.
    for days in (1, None):
        period = Period(at - timedelta(days=days), at) if days else Period(datetime(1970, 1, 1, tzinfo=UTC), at)
        found = snapshots(backend, period)
        if found:
            return found[-1]
    return None


def _name(level: str, code: str) -> str | None:
    if level == "national":
        return "France"
    if level == "department":
        dep = areas.department(code)
        return dep.name if dep else None
    if level == "territory":
        return ", ".join(d.name for d in areas.territories().get(code, [])) or None
    return areas.commune_name(code)


def _population(level: str, code: str) -> int | None:
    if level == "department":
        dep = areas.department(code)
        return dep.population if dep else None
    if level == "territory":
        return areas.territory_population(code)
    if level == "national":
        return sum(d.population for d in areas.departments().values() if d.population) or None
    return None


def _per_10k(value: int, population: int | None) -> float | None:
    return round(value * 10_000 / population, 3) if population else None


def coverage_rows(doc: dict[str, Any], horizon: int) -> CoverageArea:
    level, code = doc["level"], doc["code"]
    population = _population(level, code)
    by_type = (doc.get("by_type") or {}).get(str(horizon), {})
    by_modality = (doc.get("by_modality") or {}).get(str(horizon), {})
    by_via = (doc.get("by_via") or {}).get(str(horizon), {})  # empty in snapshots taken before it was counted
    slots, practitioners = int(doc[f"slots_{horizon}h"]), int(doc[f"practitioners_{horizon}h"])
    return CoverageArea(
        snapshot=doc["snapshot"],
        level=level,
        code=code,
        name=_name(level, code),
        department=doc.get("department"),
        population=population,
        horizon_h=horizon,
        participants=int(doc["participants"]),
        practitioners_with_slots=practitioners,
        slots=slots,
        slots_per_10k=_per_10k(slots, population),
        practitioners_with_slots_per_10k=_per_10k(practitioners, population),
        **{column: int(by_type.get(t, 0)) for t, column in TYPES.items()},
        **{column: int(by_modality.get(m, 0)) for m, column in MODALITIES.items()},
        **{column: int(by_via.get(v, 0)) for v, column in VIA.items()},
    )


def _check(level: str, horizon: int) -> None:
    if level not in (*AREA_LEVELS, "national"):
        raise ValueError(f"unknown level {level!r}: use national, territory, department or commune")
    if horizon not in HORIZONS:
        raise ValueError(f"unknown horizon {horizon}: use 24, 48 or 72")


def coverage(
    backend: Backend, level: str = "department", horizon: int = 48, at: datetime | None = None
) -> list[CoverageArea]:
    """Every area of a level at the latest snapshot (or the last one before `at`), by code."""
    _check(level, horizon)
    snap = latest_snapshot(backend, at)
    if snap is None:
        return []
    docs = _rows(backend, {"snapshot": [snap], "level": [level]})
    return sorted((coverage_rows(d, horizon) for d in docs), key=lambda r: r.code)


def evolution(
    backend: Backend, level: str = "national", code: str | None = None, horizon: int = 48, period: Period | None = None
) -> list[CoverageArea]:
    """One area's rows over a period, oldest first (every area of the level when no code is given)."""
    _check(level, horizon)
    if level == "commune" and not code:
        raise ValueError("give a commune's INSEE code: commune series are only kept one at a time")
    filters = {"level": [level], **({"code": [code]} if code else {})}
    if level == "national":
        filters["code"] = [NATIONAL]
    docs = _rows(backend, filters, period or Period.last())
    return sorted((coverage_rows(d, horizon) for d in docs), key=lambda r: (r.snapshot, r.code))


def _outcomes(backend: Backend, period: Period) -> list[dict[str, Any]]:
    if backend.live_index(OUTCOMES) is None:
        return []
    return [h.doc for h in scan(backend, OUTCOMES, GeoQuery(ranges={"at": period.ranges}))]


def under_served(backend: Backend, period: Period | None = None) -> list[UnderServed]:
    groups: dict[tuple[str, str | None, int], list[dict[str, Any]]] = defaultdict(list)
    for doc in _outcomes(backend, period or Period.last()):
        groups[(doc.get("territory") or "unknown", doc.get("department"), int(doc["hour"]))].append(doc)
    rows = []
    for (territory, department, hour), docs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2])):
        n = len(docs)
        under = sum(1 for d in docs if d["under_served"])
        rows.append(
            UnderServed(
                territory=territory,
                department=department,
                hour=hour,
                searches=n,
                under_served=under,
                under_served_share=round(under / n, 4),
                enlarged_share=round(sum(1 for d in docs if d["enlargements"] > 0) / n, 4),
                median_radius_km=float(statistics.median(d["radius_km"] for d in docs)),
                verification_changed=sum(1 for d in docs if d["verification_changed"]),
                median_latency_ms=float(statistics.median(d["latency_ms"] for d in docs)),
            )
        )
    return rows


def search_activity(backend: Backend, period: Period | None = None) -> list[SearchActivity]:
    counts: dict[datetime, Counter[str]] = defaultdict(Counter)
    for doc in _outcomes(backend, period or Period.last()):
        hour = datetime.fromisoformat(doc["at"]).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        counts[hour]["searches"] += 1
        counts[hour]["under_served"] += int(bool(doc["under_served"]))
    return [
        SearchActivity(hour_start=h, searches=c["searches"], under_served=c["under_served"])
        for h, c in sorted(counts.items())
    ]


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[94], 1)


def vendors(backend: Backend, period: Period | None = None) -> list[VendorRow]:
    period = period or Period.last()
    by_vendor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in _rows(backend, {"level": ["vendor"]}, period):
        by_vendor[doc["code"]].append(doc)
    # Request and error counters are cumulative: the period's traffic is its last value minus the last one
    # before the period (looked for over the day before; none means the counters started in the period).
    before: dict[str, dict[str, Any]] = {}
    for doc in _rows(backend, {"level": ["vendor"]}, Period(period.start - timedelta(days=1), period.start)):
        if doc["code"] not in before or doc["snapshot"] > before[doc["code"]]["snapshot"]:
            before[doc["code"]] = doc
    last_snapshot = max((d["snapshot"] for docs in by_vendor.values() for d in docs), default=None)
    held_total = sum(int(d["slots_72h"]) for docs in by_vendor.values() for d in docs if d["snapshot"] == last_snapshot)
    rows = []
    for vendor in sorted(list_vendors(backend), key=lambda v: v.vendor_id):
        docs = sorted(by_vendor.get(vendor.vendor_id, []), key=lambda d: d["snapshot"])
        last = docs[-1] if docs else {}
        base = before.get(vendor.vendor_id, {})
        requests = int(last.get("requests", 0)) - int(base.get("requests", 0))
        errors = int(last.get("errors", 0)) - int(base.get("errors", 0))
        if requests < 0:  # the vendor's state was reset in between: count from the reset
            requests, errors = int(last.get("requests", 0)), int(last.get("errors", 0))
        staleness = [float(d["staleness_s"]) for d in docs if d.get("staleness_s") is not None]
        held = int(last.get("slots_72h", 0)) if last.get("snapshot") == last_snapshot else 0
        rows.append(
            VendorRow(
                vendor_id=vendor.vendor_id,
                name=vendor.name,
                enabled=vendor.enabled,
                snapshots=len(docs),
                participants=int(last.get("participants", 0)),
                slots_72h=held,
                share_of_slots=round(held / held_total, 4) if held_total else None,
                requests=max(0, requests),
                errors=max(0, errors),
                error_rate=round(errors / requests, 4) if requests > 0 else None,
                latency_p95_ms=_p95([float(d["latency_p95_ms"]) for d in docs if d.get("latency_p95_ms") is not None]),
                staleness_max_s=round(max(staleness), 1) if staleness else None,
                staleness_mean_s=round(statistics.fmean(staleness), 1) if staleness else None,
                breaker=last.get("breaker"),
            )
        )
    return rows


def appointments(backend: Backend, period: Period | None = None) -> list[AppointmentRow]:
    period = period or Period.last()
    if backend.live_index("appointments") is None:
        return []
    counts: Counter[tuple[str, str | None, str]] = Counter()
    for hit in scan(backend, "appointments", GeoQuery(ranges={"start": period.ranges})):
        dep = hit.doc.get("department_code")
        counts[(areas.territory_of(dep) or "unknown", dep, hit.doc["status"])] += 1
    return [
        AppointmentRow(territory=t, department=d, status=s, appointments=n)
        for (t, d, s), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][2]))
    ]


def orientations(backend: Backend, period: Period | None = None) -> list[OrientationRow]:
    period = period or Period.last()
    if backend.live_index("orientations") is None:
        return []
    counts: Counter[tuple[str, str | None, str, str]] = Counter()
    accepted: Counter[tuple[str, str | None, str, str]] = Counter()
    for hit in scan(backend, "orientations", GeoQuery(ranges={"at": period.ranges})):
        dep = hit.doc.get("department_code")
        week = iso_week(datetime.fromisoformat(hit.doc["at"]))
        key = (areas.territory_of(dep) or "unknown", dep, hit.doc["kind"], week)
        counts[key] += 1
        accepted[key] += hit.doc.get("outcome") == "accepted"
    return [
        OrientationRow(territory=t, department=d, kind=k, week=w, orientations=n, accepted=accepted[(t, d, k, w)])
        for (t, d, k, w), n in sorted(counts.items(), key=lambda kv: (kv[0][3], kv[0][0], kv[0][2]))
    ]


@dataclass(frozen=True)
class Table:
    name: str
    model: type[BaseModel]
    build: Callable[[Backend, Period], list[Any]]
    about: str


def _coverage_all(backend: Backend, period: Period) -> list[CoverageArea]:
    return [
        r for level in ("national", *AREA_LEVELS) for h in HORIZONS for r in coverage(backend, level, h, period.end)
    ]


def _evolution_all(backend: Backend, period: Period) -> list[CoverageArea]:
    return [
        r
        for level in ("national", "territory", "department")
        for h in HORIZONS
        for r in evolution(backend, level, None, h, period)
    ]


TABLES = {
    t.name: t
    for t in (
        Table("coverage", CoverageArea, _coverage_all, "Every area at the last snapshot, for 24, 48 and 72 h."),
        Table("evolution", CoverageArea, _evolution_all, "National, territory and department rows of every snapshot."),
        Table("under_served", UnderServed, under_served, "Regulator searches by territory and hour of day."),
        Table("search_activity", SearchActivity, search_activity, "Regulator searches per clock hour."),
        Table("vendors", VendorRow, vendors, "Vendor table over the period."),
        Table("appointments", AppointmentRow, appointments, "Appointments by territory and status."),
        Table("orientations", OrientationRow, orientations, "Orientations without a slot by territory, kind and week."),
    )
}


def snapshot_instant(snapshot: str) -> datetime:
    return datetime.strptime(snapshot, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
