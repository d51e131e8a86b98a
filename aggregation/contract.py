"""The SAS slot-search contract (flow INT_R01): the request Dispo sends, and the Bundle it gets back.

`slot_search_params` builds the agency's query; `parse_bundle` resolves a searchset Bundle (Slot ->
Schedule -> Practitioner / PractitionerRole with its contained Location, or Location -> Organization
for SOS Médecins), checks each Slot against the contract's slot rules (`aggregation.rules`) and normalises
it to a canonical `Slot`. Slots that break an enforced rule are counted by reason, never indexed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aggregation.rules import APPOINTMENT_TYPES, MODALITIES, SLOT_TYPES, Rejected, SlotFacts, first_broken
from core.records import Modality, Slot, SlotPlace, SlotType

IDNPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
IDNST_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"
MAX_IDENTIFIERS = 25  # the contract allows 1 to 25 practitioners per call
CONTRACT_ACCEPT = "application/json+fhir"  # the Accept header the contract prescribes
REJECTED_EXAMPLES = 3  # slot ids kept per rejection reason


class MalformedBundle(ValueError):
    """The answer is not a searchset Bundle: the whole batch is rejected with this reason."""


def fhir_instant(moment: datetime) -> str:
    """An instant with an explicit offset, as the contract writes it: 2026-11-26T08:00:00.000+01:00."""
    if moment.tzinfo is None:
        raise ValueError("instants must carry a time zone")
    return moment.isoformat(timespec="milliseconds")


def slot_search_params(idnps: Sequence[str], start_ge: datetime, start_le: datetime) -> list[tuple[str, str]]:
    """Query parameters of `GET [base]/Slot` for 1 to 25 practitioners, in the contract's form."""
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
    """'2026-03-29T09:00:00.000+02:00' -> (UTC datetime, '+02:00'); raises ValueError."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("no offset")
    minutes = int(moment.utcoffset().total_seconds()) // 60  # type: ignore[union-attr]
    sign = "-" if minutes < 0 else "+"
    return moment.astimezone(UTC), f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _codes(concepts: Any) -> list[tuple[str | None, str | None, str | None]]:
    """(system, code, text) of every coding (or bare text) in a list of CodeableConcepts."""
    out = []
    for concept in concepts or []:
        if not isinstance(concept, dict):
            continue
        codings = concept.get("coding") or []
        for coding in codings:
            out.append((coding.get("system"), coding.get("code"), concept.get("text")))
        if not codings and concept.get("text"):
            out.append((None, None, concept["text"]))
    return out


class BundleContext:
    """The Bundle's resources, addressable by 'Type/id', by fullUrl, and '#id' within a resource."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.by_ref: dict[str, dict[str, Any]] = {}
        self._behind: dict[Any, dict[str, Any] | None] = {}
        for entry in entries:
            resource = entry.get("resource") or {}
            kind, rid = resource.get("resourceType"), resource.get("id")
            if kind and rid:
                self.by_ref[f"{kind}/{rid}"] = resource
            if entry.get("fullUrl"):
                self.by_ref[entry["fullUrl"]] = resource

    def behind(self, reference: Any) -> dict[str, Any] | None:
        """What stands behind a schedule reference (see `_behind`), worked out once per schedule: a Bundle
        holds up to a thousand slots over a few dozen schedules."""
        key = (reference or {}).get("reference") if isinstance(reference, dict) else None
        if key not in self._behind:
            schedule = self.resolve(reference)
            self._behind[key] = None if schedule is None else _behind(self, schedule)
        return self._behind[key]  # shared by the schedule's slots: read, never changed

    def resolve(self, reference: Any, container: dict[str, Any] | None = None) -> dict[str, Any] | None:
        ref = (reference or {}).get("reference") if isinstance(reference, dict) else None
        if not ref:
            return None
        if ref.startswith("#"):
            for contained in (container or {}).get("contained", []):
                if contained.get("id") == ref[1:]:
                    return contained
            return None
        if ref in self.by_ref:
            return self.by_ref[ref]
        tail = "/".join(ref.rstrip("/").split("/")[-2:])  # absolute URL -> Type/id
        return self.by_ref.get(tail)


def _identifier(resource: dict[str, Any] | None, system: str) -> str | None:
    for ident in (resource or {}).get("identifier", []) or []:
        if isinstance(ident, dict) and ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def _place(location: dict[str, Any] | None) -> SlotPlace | None:
    address = (location or {}).get("address")
    if not isinstance(address, dict):
        return None
    lines = address.get("line") or []
    return SlotPlace(line=" ".join(lines) or None, city=address.get("city"), postcode=address.get("postalCode"))


def _name(practitioner: dict[str, Any] | None) -> str | None:
    for name in (practitioner or {}).get("name", []) or []:
        parts = [*(name.get("given") or []), name.get("family") or ""]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return None


def slot_facts(
    resource: dict[str, Any],
    window: tuple[datetime, datetime] | None = None,
    context: BundleContext | None = None,
) -> SlotFacts:
    """What the slot rules look at in a Slot resource; within a Bundle (`context`), who stands behind it."""
    start, offset = _instant_or_none(resource.get("start"))
    end, _ = _instant_or_none(resource.get("end"))
    meta = resource.get("meta")
    security = meta.get("security") if isinstance(meta, dict) else None
    codes = tuple(code for _, code, _ in _codes([{"coding": security if isinstance(security, list) else []}]))
    modalities: list[Modality] = []
    reasons: list[str] = []
    for _, code, text in _codes(resource.get("serviceType")):
        if code in MODALITIES:
            modality = Modality(code)
            if modality not in modalities:
                modalities.append(modality)
        elif code or text:
            reason = text or code
            if reason and reason not in reasons:
                reasons.append(reason)
    appointment = next(
        (c for _, c, _ in _codes([resource.get("appointmentType") or {}]) if c in APPOINTMENT_TYPES), None
    )
    schedule = resource.get("schedule")
    return SlotFacts(
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
        schedule_ref=schedule.get("reference") if isinstance(schedule, dict) else None,
        window=window,
        in_bundle=context is not None,
        behind=context.behind(schedule) if context is not None else None,
    )


def _instant_or_none(value: Any) -> tuple[datetime | None, str | None]:
    try:
        return parse_instant(value)
    except ValueError:
        return None, None


def parse_slot(
    resource: dict[str, Any],
    vendor: str,
    fetched_at: datetime,
    window: tuple[datetime, datetime] | None = None,
    context: BundleContext | None = None,
) -> Slot | Rejected:
    """A canonical Slot, or the first enforced contract rule the resource breaks."""
    facts = slot_facts(resource, window, context)
    broken = first_broken(facts)
    if broken is not None:
        return broken
    assert facts.start is not None and facts.end is not None and facts.utc_offset is not None  # the rules hold
    return Slot(
        slot_id=f"{vendor}:{resource.get('id')}",
        vendor=vendor,
        resource_id=str(resource.get("id")),
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
        **(facts.behind or {}),
    )


def _behind(context: BundleContext, schedule: dict[str, Any]) -> dict[str, Any]:
    """Who and where a schedule's slots are: practitioner, name, structure and place from its actors."""
    out: dict[str, Any] = {}
    for actor_ref in schedule.get("actor", []) or []:
        actor = context.resolve(actor_ref)
        if actor is None:
            continue
        kind = actor.get("resourceType")
        if kind == "Practitioner":
            out["idnps"] = _identifier(actor, IDNPS_SYSTEM)
            out["practitioner_name"] = _name(actor)
        elif kind == "PractitionerRole":
            org = actor.get("organization") or {}
            ident = org.get("identifier") if isinstance(org, dict) else None
            if isinstance(ident, dict) and ident.get("value"):
                out["structure_idnst"] = str(ident["value"])
            for loc_ref in actor.get("location", []) or []:
                out["place"] = _place(context.resolve(loc_ref, container=actor)) or out.get("place")
            if out.get("idnps") is None:
                out["idnps"] = _identifier(context.resolve(actor.get("practitioner")), IDNPS_SYSTEM)
        elif kind == "Location":
            out["place"] = _place(actor)
            organization = context.resolve(actor.get("managingOrganization"))
            out["structure_idnst"] = _identifier(organization, IDNST_SYSTEM) or out.get("structure_idnst")
    return out


def parse_bundle(
    bundle: Any,
    vendor: str,
    fetched_at: datetime,
    window: tuple[datetime, datetime] | None = None,
    already_read: AbstractSet[str] = frozenset(),
) -> ParseResult:
    """Every Slot of a searchset Bundle, checked and normalised; raises MalformedBundle for a non-Bundle.

    A Slot whose id is in `already_read` (read on an earlier page of the same answer) or repeated within the
    Bundle is kept and counted once."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise MalformedBundle("the answer is not a FHIR Bundle")
    if bundle.get("type") != "searchset":
        raise MalformedBundle(f"Bundle.type is {bundle.get('type')!r}, expected 'searchset'")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise MalformedBundle("Bundle.entry is not a list")
    context = BundleContext([e for e in entries if isinstance(e, dict)])
    result = ParseResult(total=bundle.get("total") if isinstance(bundle.get("total"), int) else None)
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            result.next_url = link["url"]
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Slot":
            continue
        rid = resource.get("id")
        if rid is not None:  # a Slot without an id cannot be known again: it counts each time
            if str(rid) in already_read or str(rid) in result.slot_ids:
                continue
            result.slot_ids.add(str(rid))
        result.slot_entries += 1
        parsed = parse_slot(resource, vendor, fetched_at, window, context)
        if isinstance(parsed, Rejected):
            result.rejected[parsed.reason] += 1
            result.note_rejected(parsed.reason, [f"{vendor}:{rid}"] if rid is not None else [])
        else:
            result.slots.append(parsed)
    return result
