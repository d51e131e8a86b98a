"""The slot rules of the SAS slot-search contract, declared once as a table.

Both sides of the contract read this table: the platform's parser (`aggregation.contract.parse_slot`) rejects
a Slot that fails an *enforced* rule, reporting the first one it fails; the test-kit check offered to vendors
(`editor_sandbox.conformance`) reports every rule a Slot fails, under the agency's test-kit requirement ids.
Rules the kit requires but the platform can live with (a walk-in slot without a booking page, an instant
written without milliseconds) are *tolerated*: reported to vendors, never a reason to drop a slot.

A rule looks at the `SlotFacts` read once from the Slot resource (see `aggregation.contract.slot_facts`).
Its test answers True (kept), False (broken) or None (cannot tell here: no asked window or practitioners, not
read within a Bundle, or the values it needs are missing, which an earlier rule reports).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from core.geo import EARLIEST, LATEST
from core.records import Modality, SlotType

SLOT_TYPES = frozenset(SlotType.__members__)  # TRE_R314 codes, in meta.security
MODALITIES = frozenset(Modality.__members__)  # v3-ActCode codes, in serviceType
APPOINTMENT_TYPES = frozenset({"ROUTINE", "WALKIN"})  # v2-0276 codes, in appointmentType
INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.000[+-]\d{2}:\d{2}$")  # the contract's writing
NOT_ASKED = "practitioner not asked for in this call"


@dataclass(frozen=True, slots=True)
class SlotFacts:
    """What the rules look at, read once from a Slot resource."""

    resource_id: str | None  # Slot.id; None when missing, empty or not a string
    status: Any
    start_text: Any  # start and end as written
    end_text: Any
    start: datetime | None  # in UTC; None when missing or unreadable
    end: datetime | None
    utc_offset: str | None  # the offset start was written with, '+01:00'
    security_codes: tuple[Any, ...]  # every meta.security code, known or not
    types: list[SlotType]
    modalities: list[Modality]
    reasons: list[str]  # serviceType entries that are not modalities: free-text reasons
    appointment_type: str | None
    booking_url: Any  # Slot.comment
    schedule_ref: Any  # Slot.schedule.reference
    window: tuple[datetime, datetime] | None = None  # the window asked for, when known
    in_bundle: bool = False  # read within a Bundle, where the schedule was looked up
    behind: dict[str, Any] | None = None  # who and where stand behind the schedule; None: not in the Bundle
    out_of_range: bool = False  # start or end reads as an instant, outside [EARLIEST, LATEST)
    asked: frozenset[str] | None = None  # the IDNPS (or the associations' IDNST) the search named, when known


@dataclass(frozen=True)
class SlotRule:
    """One rule: a stable `rule` id, the test-kit `requirements` it answers, what it `checks` and the `reason`
    a Slot breaking it is given."""

    rule: str
    requirements: tuple[int, ...]
    checks: str
    reason: str
    test: Callable[[SlotFacts], bool | None]
    enforced: bool = True  # False: the kit requires it, the platform still takes the slot


@dataclass(frozen=True)
class Rejected:
    """A Slot the platform does not take: the `rule` it breaks and the `reason` counted in reports."""

    rule: str
    reason: str


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:  # what urlsplit cannot split (an unclosed '[', a host NFKC changes) is no URL to give a patient
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _in_range(f: SlotFacts) -> bool | None:
    if f.out_of_range:
        return False
    return None if f.start is None or f.end is None else True


def _times(f: SlotFacts) -> bool | None:
    return None if f.out_of_range else f.start is not None and f.end is not None


def _instant_format(f: SlotFacts) -> bool | None:
    if not (isinstance(f.start_text, str) and isinstance(f.end_text, str)):
        return None
    return bool(INSTANT.match(f.start_text) and INSTANT.match(f.end_text))


def _end_after_start(f: SlotFacts) -> bool | None:
    return None if f.start is None or f.end is None else f.end > f.start


def _not_before_window(f: SlotFacts) -> bool | None:
    return None if f.start is None or f.window is None else f.start >= f.window[0]


def _inside_window(f: SlotFacts) -> bool | None:
    return None if f.start is None or f.window is None else f.window[0] <= f.start <= f.window[1]


def _only_slot_types(f: SlotFacts) -> bool:
    return bool(f.security_codes) and all(code in SLOT_TYPES for code in f.security_codes)


def _url_is_http(f: SlotFacts) -> bool | None:
    return None if f.booking_url is None else _is_http_url(f.booking_url)


def _url_to_book(f: SlotFacts) -> bool | None:
    return None if f.appointment_type != "ROUTINE" else f.booking_url is not None


def _url_for_walk_in(f: SlotFacts) -> bool | None:
    return None if f.appointment_type == "ROUTINE" else f.booking_url is not None


def _schedule_in_bundle(f: SlotFacts) -> bool | None:
    return None if not f.in_bundle or not f.schedule_ref else f.behind is not None


def _someone_behind(f: SlotFacts) -> bool | None:
    if not f.in_bundle or f.behind is None:
        return None
    return f.behind.get("idnps") is not None or f.behind.get("structure_idnst") is not None


def _practitioner_asked(f: SlotFacts) -> bool | None:
    """The practitioner behind the slot was asked for (individual and CPTS flows); or, for an SOS Médecins search by
    association, the association (its IDNST: 3 + SIRET) behind the slot's place."""
    if f.asked is None or not f.in_bundle or f.behind is None:
        return None
    return f.behind.get("idnps") in f.asked or f.behind.get("structure_idnst") in f.asked


# In the order the parser tries them: a slot is rejected for the first enforced rule it breaks.
SLOT_RULES: list[SlotRule] = [
    SlotRule(
        "slot-id",
        (),  # no test-kit requirement names it: every resource a FHIR server returns has one
        "the Slot has an id",
        "no Slot id",
        # Without one a slot can be neither told from the vendor's other slots nor booked back by its id.
        lambda f: f.resource_id is not None,
    ),
    SlotRule("status-free", (10,), "status is 'free'", "status is not free", lambda f: f.status == "free"),
    SlotRule(
        "date-range",
        (11,),
        f"start and end are within {EARLIEST.year}–{LATEST.year - 1}",
        f"start or end outside {EARLIEST.year}–{LATEST.year - 1}",
        _in_range,
    ),
    SlotRule(
        "start-end", (11,), "start and end are instants with an offset", "start or end missing or unreadable", _times
    ),
    SlotRule(
        "instant-format",
        (45,),
        "start and end are written YYYY-MM-DDThh:mm:ss.000+hh:mm",
        "start or end not written YYYY-MM-DDThh:mm:ss.000+hh:mm",
        _instant_format,
        enforced=False,  # any ISO 8601 instant with an offset reads the same
    ),
    SlotRule("end-after-start", (11,), "end is after start", "end is not after start", _end_after_start),
    SlotRule(
        "not-before-window", (5,), "start is not before start=ge", "start outside the asked window", _not_before_window
    ),
    SlotRule(
        "inside-window", (7,), "start is inside the asked window", "start outside the asked window", _inside_window
    ),
    SlotRule(
        "slot-type",
        (23,),
        "meta.security names a slot type (PUBLIC, PRO, SNP, CPTS)",
        "no slot type in meta.security",
        lambda f: bool(f.types),
    ),
    SlotRule(
        "slot-type-codes",
        (46,),
        "every meta.security code is a slot type",
        "a meta.security code is not a slot type",
        _only_slot_types,
        enforced=False,  # the known types are kept, the others ignored
    ),
    SlotRule(
        "modality",
        (24, 48),
        "serviceType.coding.code names a modality (AMB, HH, VR)",
        "no modality in serviceType",
        lambda f: bool(f.modalities),
    ),
    SlotRule(
        "appointment-type",
        (49,),
        "appointmentType.coding.code is ROUTINE or WALKIN",
        "no appointmentType",
        lambda f: f.appointment_type is not None,
    ),
    SlotRule(
        "booking-url-http",
        (25,),
        "the booking URL in comment is an http(s) URL",
        "booking URL is not an http(s) URL",
        _url_is_http,
    ),
    SlotRule(
        "booking-url", (25,), "a slot to book has its booking URL in comment", "no booking URL in comment", _url_to_book
    ),
    SlotRule(
        "booking-url-walk-in",
        (25,),
        "a walk-in slot has a booking URL in comment too",
        "no booking URL in comment for a walk-in slot",
        _url_for_walk_in,
        enforced=False,  # a walk-in slot needs no booking: the patient just goes
    ),
    SlotRule(
        "schedule-reference",
        (12,),
        "schedule.reference is given",
        "no schedule reference",
        lambda f: bool(f.schedule_ref),
    ),
    SlotRule(
        "schedule-in-bundle",
        (43,),
        "the schedule is in the Bundle",
        "schedule not in the Bundle",
        _schedule_in_bundle,
    ),
    SlotRule(
        "someone-behind-schedule",
        (43,),
        "the schedule's actors name a practitioner or a structure",
        "no practitioner or structure behind the schedule",
        _someone_behind,
    ),
    SlotRule(
        "practitioner-asked",
        (18,),
        "the schedule's practitioner is one the search asked for",
        NOT_ASKED,
        # Indexed, a slot of anyone else would stay: reconciling a batch touches only the batch's practitioners.
        _practitioner_asked,
    ),
]


def first_broken(facts: SlotFacts) -> Rejected | None:
    """The first enforced rule the slot breaks, or None when the platform takes it."""
    for rule in SLOT_RULES:
        if rule.enforced and rule.test(facts) is False:
            return Rejected(rule.rule, rule.reason)
    return None


def verdicts(facts: SlotFacts) -> Iterator[tuple[SlotRule, bool]]:
    """Every rule that applies to the slot, enforced or tolerated, with whether the slot keeps it."""
    for rule in SLOT_RULES:
        kept = rule.test(facts)
        if kept is not None:
            yield rule, kept
