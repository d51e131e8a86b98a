"""Checks of a vendor's slot-search answer against the verifiable requirements of the agency's test kit
(requirement set `agg-psindiv`). Used on our sandbox in the tests, and usable on any vendor's answer.

Each check returns (requirement id, passed, detail). Requirements about mTLS, or marked "Not
Verifiable" by the kit, are not checked here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from aggregation.contract import IDNPS_SYSTEM, IDNST_SYSTEM, parse_instant

INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.000[+-]\d{2}:\d{2}$")
POSTCODE = re.compile(r"^[0-9]{5}$")
RPPS_IDNPS = re.compile(r"^8\d{11}$")
SLOT_TYPES = {"PUBLIC", "PRO", "SNP", "CPTS"}
MODALITIES = {"AMB", "HH", "VR"}

Check = tuple[int, bool, str]


def check_answer(bundle: dict[str, Any], asked: Sequence[str], start_ge: datetime, start_le: datetime) -> list[Check]:
    """Every check on one answer to a search for the `asked` IDNPS in [start_ge, start_le]."""
    return list(_checks(bundle, set(asked), start_ge, start_le))


def _checks(bundle: dict[str, Any], asked: set[str], start_ge: datetime, start_le: datetime) -> Iterator[Check]:
    yield 14, bundle.get("resourceType") == "Bundle" and bundle.get("type") == "searchset", "Bundle.type searchset"
    entries = [e.get("resource", {}) for e in bundle.get("entry", []) or []]
    by_ref = {f"{r.get('resourceType')}/{r.get('id')}": r for r in entries}
    slots = [r for r in entries if r.get("resourceType") == "Slot"]
    if not slots:
        yield 8, bundle.get("total", 0) == 0 and not entries, "no slot: an empty Bundle with total 0"
        return
    practitioners = [r for r in entries if r.get("resourceType") == "Practitioner"]
    roles = [r for r in entries if r.get("resourceType") == "PractitionerRole"]
    yield 15, bool(practitioners), f"{len(practitioners)} Practitioner(s)"
    yield 19, bool(roles), f"{len(roles)} PractitionerRole(s)"
    for slot in slots:
        sid = slot.get("id")
        yield 10, slot.get("status") == "free", f"Slot/{sid} status {slot.get('status')!r}"
        has_times = bool(slot.get("start")) and bool(slot.get("end"))
        yield 11, has_times, f"Slot/{sid} start and end"
        if has_times:
            yield 45, bool(INSTANT.match(slot["start"]) and INSTANT.match(slot["end"])), f"Slot/{sid} instant format"
            start, _ = parse_instant(slot["start"])
            yield 5, start >= start_ge, f"Slot/{sid} not before start=ge"
            yield 7, start_ge <= start <= start_le, f"Slot/{sid} inside the asked window"
        ref = (slot.get("schedule") or {}).get("reference")
        yield 12, bool(ref), f"Slot/{sid} schedule.reference"
        yield 43, ref in by_ref, f"Slot/{sid} schedule {ref} in the Bundle"
        codes = {s.get("code") for s in (slot.get("meta") or {}).get("security", [])}
        yield 23, bool(codes & SLOT_TYPES), f"Slot/{sid} meta.security {sorted(c for c in codes if c)}"
        yield 46, bool(codes) and codes <= SLOT_TYPES, f"Slot/{sid} slot type codes"
        service = {c.get("code") for st in slot.get("serviceType", []) for c in st.get("coding", [])}
        yield 24, bool(service & MODALITIES), f"Slot/{sid} serviceType modality"
        yield 48, bool(service & MODALITIES), f"Slot/{sid} serviceType.coding.code"
        appointment = {c.get("code") for c in (slot.get("appointmentType") or {}).get("coding", [])}
        yield 49, bool(appointment & {"ROUTINE", "WALKIN"}), f"Slot/{sid} appointmentType"
        url = slot.get("comment") or ""
        yield 25, url.startswith(("http://", "https://")), f"Slot/{sid} booking URL in comment"
    for schedule in (r for r in entries if r.get("resourceType") == "Schedule"):
        for actor in schedule.get("actor", []):
            yield 44, actor.get("reference") in by_ref, f"Schedule/{schedule.get('id')} actor {actor.get('reference')}"
    for p in practitioners:
        values = [i.get("value", "") for i in p.get("identifier", []) if i.get("system") == IDNPS_SYSTEM]
        yield 16, bool(values), f"Practitioner/{p.get('id')} national identifier"
        yield 17, bool(values) and all(RPPS_IDNPS.match(v) for v in values), f"Practitioner/{p.get('id')} {values}"
        yield 18, bool(values) and all(v in asked for v in values), f"Practitioner/{p.get('id')} is one asked for"
    for role in roles:
        rid = role.get("id")
        org = (role.get("organization") or {}).get("identifier") or {}
        value = str(org.get("value", ""))
        ok = org.get("system") == IDNST_SYSTEM and value[:1] in ("1", "3") and len(value) in (10, 15)
        yield 20, ok, f"PractitionerRole/{rid} organization FINESS/SIRET {value!r}"
        yield 21, (role.get("practitioner") or {}).get("reference") in by_ref, f"PractitionerRole/{rid} practitioner"
        locations = [c for c in role.get("contained", []) if c.get("resourceType") == "Location"]
        yield 22, bool(locations), f"PractitionerRole/{rid} contained Location"
        for loc in locations:
            address = loc.get("address") or {}
            yield 38, bool(address.get("line")), f"PractitionerRole/{rid} address.line"
            yield 39, bool(address.get("city")), f"PractitionerRole/{rid} address.city"
            yield 40, bool(POSTCODE.match(str(address.get("postalCode", "")))), f"PractitionerRole/{rid} postalCode"
        refs = [loc_ref.get("reference", "") for loc_ref in role.get("location", [])]
        yield (
            42,
            all(r.startswith("#") and any(c.get("id") == r[1:] for c in locations) for r in refs),
            (f"PractitionerRole/{rid} location references its contained Location"),
        )
