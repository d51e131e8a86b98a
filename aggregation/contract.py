"""The SAS slot-search contract (flows INT_R01, and INT_R04 with the CPTS): the request Dispo sends, and the Bundle
it gets back.

`slot_search_params` builds the agency's query (with the CPTS includes for a vendor serving that flow);
`parse_bundle` resolves a searchset Bundle (Slot -> Schedule -> Practitioner / PractitionerRole with its contained
Location, or Location -> Organization for SOS Médecins; Slot -> HealthcareService -> Organization for the CPTS a slot
is offered through), checks each Slot against the contract's slot rules (`aggregation.rules`) and normalises it to a
canonical `Slot`. Slots that break an enforced rule are counted by reason, never indexed.

What a vendor sends is untrusted: every value is read with the JSON type the contract gives it, and a value of any
other type reads as missing, so a badly shaped Slot is rejected by the rule that then fails instead of failing the
whole answer. Only an answer that is no searchset Bundle at all raises (`MalformedBundle`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aggregation.rules import (
    APPOINTMENT_TYPES,
    MODALITIES,
    SLOT_TYPES,
    Rejected,
    SlotFacts,
    first_broken,
)
from core.geo import EARLIEST, LATEST
from core.records import Cpts, Modality, OpeningHours, Slot, SlotPlace, SlotType, association_idnst

IDNPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
IDNST_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"
MAX_IDENTIFIERS = 25  # the contract allows 1 to 25 practitioners per call
CONTRACT_ACCEPT = "application/json+fhir"  # the Accept header the contract prescribes
REJECTED_EXAMPLES = 3  # slot ids kept per rejection reason
# The CPTS flow (INT_R04): a slot offered through a CPTS has a serviceType coded 604 (TRE_R66, the CPTS's category of
# establishment) whose extension references the CPTS's HealthcareService; the search includes it and its Organization.
# The SOS Médecins flow: a Schedule search by association (the functional guide: 1 to 10 SIRET per call).
MAX_ASSOCIATIONS = 10
SIRET = re.compile(r"^[0-9]{14}$")
DAYS_OF_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CPTS_CATEGORY = "604"
SERVICE_TYPE_REFERENCE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Slot.serviceType"
CPTS_INCLUDES = (("_include", "Slot:service-type-reference"), ("_include:iterate", "HealthcareService:organization"))


class MalformedBundle(ValueError):
    """The answer is not a searchset Bundle: the whole batch is rejected with this reason."""


class InstantOutOfRange(ValueError):
    """An instant that reads well but falls outside the years any slot or appointment can be in."""


def fhir_instant(moment: datetime) -> str:
    """An instant with an explicit offset, as the contract writes it: 2026-11-26T08:00:00.000+01:00."""
    if moment.tzinfo is None:
        raise ValueError("instants must carry a time zone")
    return moment.isoformat(timespec="milliseconds")


def slot_search_params(
    idnps: Sequence[str], start_ge: datetime, start_le: datetime, cpts: bool = False
) -> list[tuple[str, str]]:
    """Query parameters of `GET [base]/Slot` for 1 to 25 practitioners, in the contract's form; with `cpts`, the
    CPTS flow's includes: each slot's HealthcareService (serviceType 604) and the CPTS's Organization."""
    if not 1 <= len(idnps) <= MAX_IDENTIFIERS:
        raise ValueError(f"a slot search names 1 to {MAX_IDENTIFIERS} practitioners, not {len(idnps)}")
    if start_le <= start_ge:
        raise ValueError("the window must end after it starts")
    return [
        ("start", "ge" + fhir_instant(start_ge)),
        ("start", "le" + fhir_instant(start_le)),
        ("schedule.actor:Practitioner.identifier", ",".join(f"{IDNPS_SYSTEM}|{i}" for i in idnps)),
        ("status", "free"),
        ("_include", "Slot:schedule"),
        ("_include:iterate", "Schedule:actor"),
        *(CPTS_INCLUDES if cpts else ()),
    ]


def schedule_search_params(sirets: Sequence[str], start_ge: datetime, start_le: datetime) -> list[tuple[str, str]]:
    """Query parameters of `GET [base]/Schedule` for 1 to 10 SOS Médecins associations (by SIRET), in the contract's
    form: their consultation places' schedules holding a free slot in the window, with the slots, the places and the
    associations."""
    if not 1 <= len(sirets) <= MAX_ASSOCIATIONS:
        raise ValueError(f"a schedule search names 1 to {MAX_ASSOCIATIONS} associations, not {len(sirets)}")
    if any(not SIRET.fullmatch(s) for s in sirets):
        raise ValueError("a SIRET is 14 digits")
    if start_le <= start_ge:
        raise ValueError("the window must end after it starts")
    return [
        ("_revinclude", "Slot:schedule"),
        ("_include", "Schedule:actor:Location"),
        ("_include:iterate", "Location:organization"),
        ("_has:Slot:schedule:start", "ge" + fhir_instant(start_ge)),
        ("_has:Slot:schedule:start", "le" + fhir_instant(start_le)),
        ("_has:Slot:schedule:status", "free"),
        ("actor:Location.organization.identifier", ",".join(f"{IDNST_SYSTEM}|{association_idnst(s)}" for s in sirets)),
    ]


@dataclass
class ParseResult:
    slots: list[Slot] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)  # slots dropped, by the reason of the rule they broke
    # Up to REJECTED_EXAMPLES slot ids of each reason: what a maintainer asks the vendor about.
    rejected_examples: dict[str, list[str]] = field(default_factory=dict)
    next_url: str | None = None
    total: int | None = None
    # Slot entries read, accepted or rejected, each id once: what the Bundle's `total` counts.
    slot_entries: int = 0
    slot_ids: set[str] = field(default_factory=set)  # their ids, to know a Slot again on a later page
    pages: int = 0  # HTTP requests made for this answer, all its pages (set by the client)

    def note_rejected(self, reason: str, slot_ids: list[str]) -> None:
        """Keep these ids as examples of the reason, while it has fewer than REJECTED_EXAMPLES."""
        kept = self.rejected_examples.setdefault(reason, [])
        kept.extend(slot_ids[: max(0, REJECTED_EXAMPLES - len(kept))])


def parse_instant(value: Any) -> tuple[datetime, str]:
    """'2026-03-29T09:00:00.000+02:00' -> (UTC datetime, '+02:00'); raises ValueError for anything else, whatever
    the string: InstantOutOfRange for an instant outside [EARLIEST, LATEST)."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    outside = InstantOutOfRange(f"{value[:40]!r} is outside {EARLIEST.year}–{LATEST.year - 1}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except OverflowError as exc:
        raise outside from exc
    if moment.tzinfo is None:
        raise ValueError("no offset")
    # The year as written is checked first: near year 1 or 9999, moving to UTC overflows.
    if not EARLIEST.year - 1 <= moment.year <= LATEST.year:
        raise outside
    utc = moment.astimezone(UTC)
    if not EARLIEST <= utc < LATEST:
        raise outside
    minutes = int(moment.utcoffset().total_seconds()) // 60  # type: ignore[union-attr]
    sign = "-" if minutes < 0 else "+"
    return utc, f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _text(value: Any) -> str | None:
    """A FHIR string, code, uri or id: the value if it is a string, else missing."""
    return value if isinstance(value, str) else None


def _items(value: Any) -> list[Any]:
    """A repeating FHIR element: the value if it is a list, else none (a lone object or a string is not a list)."""
    return value if isinstance(value, list) else []


def _reference(reference: Any) -> str | None:
    """The text of a FHIR Reference, or None when it is not an object holding a non-empty string."""
    ref = reference.get("reference") if isinstance(reference, dict) else None
    return ref if isinstance(ref, str) and ref else None


def _codes(concepts: Any) -> list[tuple[str | None, str | None, str | None]]:
    """(system, code, text) of every coding (or bare text) in a list of CodeableConcepts. A concept or coding that
    is not an object is skipped; a system, code or text that is not a string reads as missing."""
    out = []
    for concept in _items(concepts):
        if not isinstance(concept, dict):
            continue
        text = _text(concept.get("text"))
        coded = False
        for coding in _items(concept.get("coding")):
            if isinstance(coding, dict):
                out.append((_text(coding.get("system")), _text(coding.get("code")), text))
                coded = True
        if not coded and text:
            out.append((None, None, text))
    return out


class BundleContext:
    """The Bundle's resources, addressable by 'Type/id', by fullUrl, and '#id' within a resource."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.by_ref: dict[str, dict[str, Any]] = {}
        self._behind: dict[str | None, dict[str, Any] | None] = {}
        for entry in entries:
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                continue
            kind, rid = _text(resource.get("resourceType")), _text(resource.get("id"))
            if kind and rid:
                self.by_ref[f"{kind}/{rid}"] = resource
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str) and full_url:
                self.by_ref[full_url] = resource

    def behind(self, reference: Any) -> dict[str, Any] | None:
        """What stands behind a schedule reference (see `_behind`), worked out once per schedule: a Bundle
        holds up to a thousand slots over a few dozen schedules."""
        key = _reference(reference)
        if key not in self._behind:
            schedule = self.resolve(reference)
            self._behind[key] = None if schedule is None else _behind(self, schedule)
        return self._behind[key]  # shared by the schedule's slots: read, never changed

    def resolve(self, reference: Any, container: dict[str, Any] | None = None) -> dict[str, Any] | None:
        ref = _reference(reference)
        if ref is None:
            return None
        if ref.startswith("#"):
            for contained in _items((container or {}).get("contained")):
                if isinstance(contained, dict) and contained.get("id") == ref[1:]:
                    return contained
            return None
        if ref in self.by_ref:
            return self.by_ref[ref]
        tail = "/".join(ref.rstrip("/").split("/")[-2:])  # absolute URL -> Type/id
        return self.by_ref.get(tail)


def _identifier(resource: dict[str, Any] | None, system: str) -> str | None:
    """The value of the resource's first identifier in `system`; a value that is not a string does not count."""
    for ident in _items((resource or {}).get("identifier")):
        if isinstance(ident, dict) and ident.get("system") == system:
            value = ident.get("value")
            if isinstance(value, str) and value:
                return value
    return None


def _place(location: dict[str, Any] | None) -> SlotPlace | None:
    address = (location or {}).get("address")
    if not isinstance(address, dict):
        return None
    lines = [line for line in _items(address.get("line")) if isinstance(line, str)]
    return SlotPlace(
        line=" ".join(lines) or None, city=_text(address.get("city")), postcode=_text(address.get("postalCode"))
    )


def _name(practitioner: dict[str, Any] | None) -> str | None:
    """The first HumanName with a string given name or family name, written 'given... family'."""
    for name in _items((practitioner or {}).get("name")):
        if not isinstance(name, dict):
            continue
        parts = [*_items(name.get("given")), name.get("family")]
        text = " ".join(p for p in parts if isinstance(p, str) and p)
        if text:
            return text
    return None


def slot_facts(
    resource: dict[str, Any],
    window: tuple[datetime, datetime] | None = None,
    context: BundleContext | None = None,
    asked: Collection[str] | None = None,
) -> SlotFacts:
    """What the slot rules look at in a Slot resource; within a Bundle (`context`), who stands behind it; `asked`:
    the IDNPS the search named, when known."""
    start, offset, start_outside = _instant_or_none(resource.get("start"))
    end, _, end_outside = _instant_or_none(resource.get("end"))
    meta = resource.get("meta")
    security = meta.get("security") if isinstance(meta, dict) else None
    codes = tuple(code for _, code, _ in _codes([{"coding": security}]))
    modalities: list[Modality] = []
    reasons: list[str] = []
    for _, code, text in _codes(resource.get("serviceType")):
        if code == CPTS_CATEGORY:  # the CPTS the slot is offered through (`_cpts`), not a reason
            continue
        if code in MODALITIES:
            modality = Modality(code)
            if modality not in modalities:
                modalities.append(modality)
        elif code or text:
            reason = text or code
            if reason and reason not in reasons:
                reasons.append(reason)
    appointment = next((c for _, c, _ in _codes([resource.get("appointmentType")]) if c in APPOINTMENT_TYPES), None)
    schedule = resource.get("schedule")
    return SlotFacts(
        resource_id=_text(resource.get("id")) or None,
        status=resource.get("status"),
        start_text=resource.get("start"),
        end_text=resource.get("end"),
        start=start,
        end=end,
        utc_offset=offset,
        security_codes=codes,
        types=[SlotType(code) for code in codes if code in SLOT_TYPES],
        modalities=modalities,
        reasons=reasons,
        appointment_type=appointment,
        booking_url=resource.get("comment"),
        schedule_ref=_reference(schedule),
        window=window,
        in_bundle=context is not None,
        behind=context.behind(schedule) if context is not None else None,
        out_of_range=start_outside or end_outside,
        asked=None if asked is None else frozenset(asked),
    )


def _instant_or_none(value: Any) -> tuple[datetime | None, str | None, bool]:
    """(UTC instant, offset, False), or (None, None, whether it read as an instant out of range)."""
    try:
        moment, offset = parse_instant(value)
    except InstantOutOfRange:
        return None, None, True
    except ValueError:
        return None, None, False
    return moment, offset, False


def parse_slot(
    resource: dict[str, Any],
    vendor: str,
    fetched_at: datetime,
    window: tuple[datetime, datetime] | None = None,
    context: BundleContext | None = None,
    asked: Collection[str] | None = None,
) -> Slot | Rejected:
    """A canonical Slot, or the first enforced contract rule the resource breaks."""
    facts = slot_facts(resource, window, context, asked)
    broken = first_broken(facts)
    if broken is not None:
        return broken
    # The rules hold: an id, and readable instants.
    assert facts.resource_id is not None and facts.start is not None and facts.end is not None
    assert facts.utc_offset is not None
    return Slot(
        slot_id=f"{vendor}:{facts.resource_id}",
        vendor=vendor,
        resource_id=facts.resource_id,
        start=facts.start,
        end=facts.end,
        utc_offset=facts.utc_offset,
        types=facts.types,
        modalities=facts.modalities,
        appointment_type=facts.appointment_type,
        specialties=[c for _, c, _ in _codes(resource.get("specialty")) if c],
        reasons=facts.reasons,
        booking_url=facts.booking_url,
        fetched_at=fetched_at,
        cpts=_cpts(resource, context) if context is not None else [],
        **(facts.behind or {}),
    )


def _cpts(slot: dict[str, Any], context: BundleContext) -> list[Cpts]:
    """The CPTS a slot is offered through: each serviceType coded 604 references a HealthcareService of the Bundle,
    provided by the CPTS's Organization (its IDNST, name and phone). One the Bundle does not resolve is left out."""
    found: dict[str, Cpts] = {}
    for concept in _items(slot.get("serviceType")):
        if not isinstance(concept, dict) or not any(code == CPTS_CATEGORY for _, code, _ in _codes([concept])):
            continue
        for extension in _items(concept.get("extension")):
            if not isinstance(extension, dict) or extension.get("url") != SERVICE_TYPE_REFERENCE:
                continue
            service = context.resolve(extension.get("valueReference"))
            organization = context.resolve((service or {}).get("providedBy"))
            idnst = _identifier(organization, IDNST_SYSTEM)
            if organization is None or idnst is None or idnst in found:
                continue
            found[idnst] = Cpts(idnst=idnst, name=_text(organization.get("name")) or None, phone=_phone(organization))
    return list(found.values())


def _behind(context: BundleContext, schedule: dict[str, Any]) -> dict[str, Any]:
    """Who and where a schedule's slots are: practitioner, name, structure and place from its actors."""
    out: dict[str, Any] = {}
    for actor_ref in _items(schedule.get("actor")):
        actor = context.resolve(actor_ref)
        if actor is None:
            continue
        kind = actor.get("resourceType")
        if kind == "Practitioner":
            out["idnps"] = _identifier(actor, IDNPS_SYSTEM)
            out["practitioner_name"] = _name(actor)
        elif kind == "PractitionerRole":
            org = actor.get("organization")
            ident = org.get("identifier") if isinstance(org, dict) else None
            value = ident.get("value") if isinstance(ident, dict) else None
            if isinstance(value, str) and value:
                out["structure_idnst"] = value
            for loc_ref in _items(actor.get("location")):
                out["place"] = _place(context.resolve(loc_ref, container=actor)) or out.get("place")
            if out.get("idnps") is None:
                out["idnps"] = _identifier(context.resolve(actor.get("practitioner")), IDNPS_SYSTEM)
        elif kind == "Location":
            out["place"] = _consultation_place(actor)
            organization = context.resolve(actor.get("managingOrganization"))
            out["structure_idnst"] = _identifier(organization, IDNST_SYSTEM) or out.get("structure_idnst")
            out["structure_name"] = _text((organization or {}).get("name")) or out.get("structure_name")
    return out


def _consultation_place(location: dict[str, Any]) -> SlotPlace | None:
    """A Location a schedule stands for (an SOS Médecins consultation place): its address, and its name, phone,
    opening hours and the vendor's identifier of it."""
    place = _place(location)
    if place is None:
        return None
    hours = []
    for entry in _items(location.get("hoursOfOperation")):
        if not isinstance(entry, dict):
            continue
        days = [d for d in _items(entry.get("daysOfWeek")) if d in DAYS_OF_WEEK]
        if days:
            hours.append(
                OpeningHours(days=days, opens=_hhmm(entry.get("openingTime")), closes=_hhmm(entry.get("closingTime")))
            )
    identifiers = [_text(i.get("value")) for i in _items(location.get("identifier")) if isinstance(i, dict)]
    identifier = next((value for value in identifiers if value), None)
    return place.model_copy(
        update={
            "name": _text(location.get("name")) or None,
            "phone": _phone(location),
            "hours": hours or None,
            "place_id": identifier or _text(location.get("id")) or None,
        }
    )


def _hhmm(value: Any) -> str | None:
    """A FHIR time ('08:00:00') as 'HH:MM'; anything else reads as missing."""
    text = _text(value)
    return text[:5] if text and re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?", text) else None


def _phone(resource: dict[str, Any] | None) -> str | None:
    """The first phone of a resource's telecom."""
    for telecom in _items((resource or {}).get("telecom")):
        if isinstance(telecom, dict) and telecom.get("system") == "phone" and _text(telecom.get("value")):
            return telecom["value"]
    return None


def parse_bundle(
    bundle: Any,
    vendor: str,
    fetched_at: datetime,
    window: tuple[datetime, datetime] | None = None,
    already_read: AbstractSet[str] = frozenset(),
    asked: Collection[str] | None = None,
) -> ParseResult:
    """Every Slot of a searchset Bundle, checked and normalised; raises MalformedBundle for a non-Bundle.

    A Slot whose id is in `already_read` (read on an earlier page of the same answer) or repeated within the
    Bundle is kept and counted once. `asked`: the IDNPS the search named; a Slot of anyone else is rejected."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise MalformedBundle("the answer is not a FHIR Bundle")
    asked = None if asked is None else frozenset(asked)  # once for the Bundle, not once per Slot
    kind = bundle.get("type")
    if kind != "searchset":
        # Only a string is quoted back: any other value could be huge, or too deep to write out.
        said = repr(kind[:40]) if isinstance(kind, str) else f"a JSON {type(kind).__name__}"
        raise MalformedBundle(f"Bundle.type is {said}, expected 'searchset'")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise MalformedBundle("Bundle.entry is not a list")
    context = BundleContext([e for e in entries if isinstance(e, dict)])
    total = bundle.get("total")
    # An unsignedInt: JSON true is no count (bool is an int to Python), nor is a negative number.
    result = ParseResult(total=total if type(total) is int and total >= 0 else None)
    for link in _items(bundle.get("link")):
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url:
                result.next_url = url
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Slot":
            continue
        rid = _text(resource.get("id")) or None
        if rid is not None:  # a Slot without an id cannot be known again: it counts each time, and is rejected
            if rid in already_read or rid in result.slot_ids:
                continue
            result.slot_ids.add(rid)
        result.slot_entries += 1
        parsed = parse_slot(resource, vendor, fetched_at, window, context, asked)
        if isinstance(parsed, Rejected):
            result.rejected[parsed.reason] += 1
            result.note_rejected(parsed.reason, [f"{vendor}:{rid}"] if rid is not None else [])
        else:
            result.slots.append(parsed)
    return result
