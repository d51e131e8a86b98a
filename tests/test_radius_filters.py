"""The radius rule counts what was asked for, on both backends: a search widens from the city radius until five
practitioners hold a slot the *whole* request keeps — its slot filters (type, modality, appointment kind, window,
specialty or profession) and its participation filters (`via`, `extra_patients`).

Each case lays out, near the place, five practitioners whose slots (or participations) miss one filter and one that
passes it, and beyond the city radius four more that pass: the search must widen to reach five."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aggregation.status import STATUS
from core.records import Participation, ParticipationVia
from indexer.backend import Backend
from indexer.lifecycle import ensure_live
from indexer.registry import save_participation
from search.engine import SearchRequest, run_search
from search.place import resolve_place
from search.radius import rule_for

PLACE = (46.2052, 5.2255)  # Bourg-en-Bresse (Ain)
NOW = datetime.now(UTC).replace(microsecond=0)
SOON = NOW + timedelta(hours=2)  # within 0-4h


@dataclass
class Practitioner:
    """What one practitioner's slot and participation are; a case changes one of them for those that miss."""

    slot: dict[str, Any] = field(
        default_factory=lambda: {
            "types": ["PUBLIC"],
            "modalities": ["AMB"],
            "appointment_type": "ROUTINE",
            "start": SOON,
            "profession_code": "10",
            "practitioner_specialties": ["SM54"],
        }
    )
    via: ParticipationVia = ParticipationVia.practice
    extra_patients: bool = False


def missing(**slot: Any) -> Callable[[Practitioner], None]:
    def change(p: Practitioner) -> None:
        p.slot |= slot

    return change


# filter -> (the request's parameters, how a practitioner misses it, how one passes it)
CASES: dict[str, tuple[dict[str, Any], Callable[[Practitioner], None], Callable[[Practitioner], None]]] = {
    "via": (
        {"via": ["sos"]},
        lambda p: None,
        lambda p: setattr(p, "via", ParticipationVia.sos),
    ),
    "extra_patients": (
        {"extra_patients": True},
        lambda p: None,
        lambda p: setattr(p, "extra_patients", True),
    ),
    "slot_type": ({"slot_types": ["SNP"]}, lambda p: None, missing(types=["SNP"])),
    "modality": ({"modalities": ["home"]}, lambda p: None, missing(modalities=["HH"])),
    "appointment": ({"appointment": "without"}, lambda p: None, missing(appointment_type="WALKIN")),
    "within": ({"within": ["0-4h"]}, missing(start=NOW + timedelta(hours=30)), lambda p: None),
    "specialty": ({"specialty": "SM26"}, lambda p: None, missing(practitioner_specialties=["SM26"])),
    "profession": ({"profession": "40", "specialty": None}, lambda p: None, missing(profession_code="40")),
}


def _at(km_north: float, km_east: float) -> tuple[float, float]:
    lat = PLACE[0] + km_north / 111.2
    return lat, PLACE[1] + km_east / (111.2 * math.cos(math.radians(lat)))


def _lay_out(backend: Backend, case: str, near_km: float, far_km: float) -> set[str]:
    """Five practitioners missing the filter and one passing it near the place, four passing beyond the city
    radius; returns the IDNPS of those passing."""
    _request, miss, passes = CASES[case]
    slots, passing = [], set()
    layout = [(near_km, miss)] * 5 + [(near_km, passes)] + [(far_km, passes)] * 4
    for n, (km, change) in enumerate(layout):
        p = Practitioner()
        change(p)
        idnps = f"8{n:010d}"
        angle = 2 * math.pi * n / len(layout)
        lat, lon = _at(km * math.cos(angle), km * math.sin(angle))
        start = p.slot.pop("start")
        slots.append(
            {
                "slot_id": f"v1:{idnps}-0",
                "vendor": "v1",
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=20)).isoformat(),
                "idnps": idnps,
                "site_id": f"site-{idnps}",
                "site_source": "directory",
                "location": {"lat": lat, "lon": lon},
                "fetched_at": NOW.isoformat(),
                **p.slot,
            }
        )
        save_participation(
            backend, Participation(idnps=idnps, vendors=["v1"], via=p.via, extra_patients=p.extra_patients)
        )
        if change is passes:
            passing.add(idnps)
    index = ensure_live(backend, "slots")
    backend.write(index, slots)
    backend.refresh(index)
    status = ensure_live(backend, STATUS)
    backend.write(status, [{"vendor_id": "v1", "last_success_at": NOW.isoformat(), "failing": {}}])
    backend.refresh(status)
    return passing


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_circle_widens_until_five_practitioners_pass_every_filter(backend: Backend, case: str) -> None:
    place = resolve_place(lat=PLACE[0], lon=PLACE[1])
    assert place is not None
    rule = rule_for(place.department)
    passing = _lay_out(backend, case, near_km=rule.city_km / 3, far_km=rule.city_km + rule.step_km / 2)
    params = {"specialty": "SM54"} | CASES[case][0]
    req = SearchRequest(lat=PLACE[0], lon=PLACE[1], seed=1, limit=20, **params)
    result = run_search(backend, req, now=NOW, staleness_limit_s=900)
    assert result.radius_km == rule.city_km + rule.step_km, f"stayed at {result.radius_km} km"
    assert [step.practitioners_with_slots for step in result.explanation.radius_steps] == [1, 5]
    assert {c.idnps for c in result.cards} == passing
    assert result.total == 5
