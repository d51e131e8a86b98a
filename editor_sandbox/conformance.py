"""Checks of a vendor's slot-search answer against the verifiable requirements of the agency's test kit
(requirement set `agg-psindiv`). Used on our sandbox in the tests, and on any vendor's answer by
`dispo vendors check`.

Every check on a Slot comes from the contract's slot rules (`aggregation.rules`), the table the platform's
parser enforces, so a vendor is told exactly what the platform will drop, and also what the kit requires
that the platform tolerates. Each rule is reported under the test-kit requirements it answers. The checks on
the answer as a whole (its type, its practitioners, their roles and places) are this module's own.

Each check returns (requirement id, passed, detail). Requirements about mTLS, or marked "Not
Verifiable" by the kit, are not checked here.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aggregation.contract import (
    CPTS_CATEGORY,
    IDNPS_SYSTEM,
    IDNST_SYSTEM,
    SERVICE_TYPE_REFERENCE,
    BundleContext,
    slot_facts,
)
from aggregation.rules import SlotRule, verdicts

POSTCODE = re.compile(r"^[0-9]{5}$")
RPPS_IDNPS = re.compile(r"^8\d{11}$")

Check = tuple[int, bool, str]


@dataclass(frozen=True)
class SlotFinding:
    """One slot rule applied to one Slot of the answer."""

    slot_id: str
    rule: SlotRule
    kept: bool

    @property
    def detail(self) -> str:
        return f"Slot/{self.slot_id} {self.rule.rule}: {self.rule.checks if self.kept else self.rule.reason}"


def _dict(value: Any) -> dict[str, Any]:
    """A vendor's object, or an empty one for anything else: the kit reports what is missing, never stops."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in _list(value) if isinstance(item, dict)]


def check_slots(
    bundle: Any, start_ge: datetime, start_le: datetime, asked: Collection[str] | None = None
) -> list[SlotFinding]:
    """Every slot rule that applies to each Slot of an answer to a search in [start_ge, start_le] (for the `asked`
    IDNPS; unknown, the rules on who the slots are for cannot tell)."""
    entries = _dicts(_dict(bundle).get("entry"))
    context = BundleContext(entries)
    asked = None if asked is None else frozenset(asked)
    findings = []
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != "Slot":
            continue
        facts = slot_facts(resource, (start_ge, start_le), context, asked)
        slot_id = _text(resource.get("id"))[:64] or "(no string id)"
        findings += [SlotFinding(slot_id, rule, kept) for rule, kept in verdicts(facts)]
    return findings


def check_answer(bundle: Any, asked: Sequence[str], start_ge: datetime, start_le: datetime) -> list[Check]:
    """Every check on one answer to a search for the `asked` IDNPS in [start_ge, start_le]; an answer of any shape
    gets its checks, failed where it is not what the kit requires."""
    return list(_checks(bundle, set(asked), start_ge, start_le))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _checks(bundle: Any, asked: set[str], start_ge: datetime, start_le: datetime) -> Iterator[Check]:
    answer = _dict(bundle)
    yield 14, answer.get("resourceType") == "Bundle" and answer.get("type") == "searchset", "Bundle.type searchset"
    entries = [_dict(e.get("resource")) for e in _dicts(answer.get("entry"))]
    by_ref = {f"{_text(r.get('resourceType'))}/{_text(r.get('id'))}": r for r in entries}
    slots = [r for r in entries if r.get("resourceType") == "Slot"]
    if not slots:
        yield 8, answer.get("total", 0) == 0 and not entries, "no slot: an empty Bundle with total 0"
        return
    practitioners = [r for r in entries if r.get("resourceType") == "Practitioner"]
    roles = [r for r in entries if r.get("resourceType") == "PractitionerRole"]
    yield 15, bool(practitioners), f"{len(practitioners)} Practitioner(s)"
    yield 19, bool(roles), f"{len(roles)} PractitionerRole(s)"
    for finding in check_slots(answer, start_ge, start_le, asked):
        for requirement in finding.rule.requirements:
            yield requirement, finding.kept, finding.detail
    for schedule in (r for r in entries if r.get("resourceType") == "Schedule"):
        for actor in _dicts(schedule.get("actor")):
            reference = _text(actor.get("reference"))
            yield 44, reference in by_ref, f"Schedule/{_text(schedule.get('id'))} actor {reference[:80]}"
    for p in practitioners:
        pid = _text(p.get("id"))[:64]
        values = [_text(i.get("value")) for i in _dicts(p.get("identifier")) if i.get("system") == IDNPS_SYSTEM]
        yield 16, bool(values), f"Practitioner/{pid} national identifier"
        yield 17, bool(values) and all(RPPS_IDNPS.match(v) for v in values), f"Practitioner/{pid} {values}"
        yield 18, bool(values) and all(v in asked for v in values), f"Practitioner/{pid} is one asked for"
    for role in roles:
        rid = _text(role.get("id"))[:64]
        org = _dict(_dict(role.get("organization")).get("identifier"))
        value = _text(org.get("value"))
        ok = org.get("system") == IDNST_SYSTEM and value[:1] in ("1", "3") and len(value) in (10, 15)
        yield 20, ok, f"PractitionerRole/{rid} organization FINESS/SIRET {value[:40]!r}"
        practitioner = _text(_dict(role.get("practitioner")).get("reference"))
        yield 21, practitioner in by_ref, f"PractitionerRole/{rid} practitioner"
        locations = [c for c in _dicts(role.get("contained")) if c.get("resourceType") == "Location"]
        yield 22, bool(locations), f"PractitionerRole/{rid} contained Location"
        for loc in locations:
            address = _dict(loc.get("address"))
            yield 38, bool(address.get("line")), f"PractitionerRole/{rid} address.line"
            yield 39, bool(address.get("city")), f"PractitionerRole/{rid} address.city"
            yield 40, bool(POSTCODE.match(_text(address.get("postalCode")))), f"PractitionerRole/{rid} postalCode"
        refs = [_text(loc_ref.get("reference")) for loc_ref in _dicts(role.get("location"))]
        yield (
            42,
            all(r.startswith("#") and any(c.get("id") == r[1:] for c in locations) for r in refs),
            (f"PractitionerRole/{rid} location references its contained Location"),
        )


def check_cpts(bundle: Any) -> list[tuple[bool, str]]:
    """The CPTS flow's answer: each Slot offered through a CPTS (a serviceType coded 604) references, by the
    service-type-reference extension, a HealthcareService the Bundle includes, provided by an Organization the Bundle
    includes with its IDNST (`_include=Slot:service-type-reference`, `_include:iterate=HealthcareService:organization`).
    """
    entries = _dicts(_dict(bundle).get("entry"))
    context = BundleContext(entries)
    out: list[tuple[bool, str]] = []
    for resource in (_dict(e.get("resource")) for e in entries):
        if resource.get("resourceType") != "Slot":
            continue
        slot_id = _text(resource.get("id"))[:64]
        for concept in _dicts(resource.get("serviceType")):
            if not any(c.get("code") == CPTS_CATEGORY for c in _dicts(concept.get("coding"))):
                continue
            references = [
                e.get("valueReference")
                for e in _dicts(concept.get("extension"))
                if e.get("url") == SERVICE_TYPE_REFERENCE
            ]
            out.append((bool(references), f"Slot/{slot_id} serviceType 604 references its HealthcareService"))
            for reference in references:
                service = context.resolve(reference)
                out.append((service is not None, f"Slot/{slot_id} HealthcareService included"))
                organization = context.resolve(_dict(service).get("providedBy"))
                identifiers = _dicts(_dict(organization).get("identifier"))
                values = [_text(i.get("value")) for i in identifiers if i.get("system") == IDNST_SYSTEM]
                out.append((organization is not None, f"Slot/{slot_id} the CPTS's Organization included"))
                out.append((any(values), f"Slot/{slot_id} the CPTS's Organization has its IDNST"))
    return out
