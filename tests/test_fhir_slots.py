"""The slot-search contract: the request's form, the agency's example Bundles and Slots parsed, and the one table
of slot rules that both the platform's parser and the vendors' conformance check apply."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from operator import attrgetter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import rules
from aggregation.contract import (
    BundleContext,
    InstantOutOfRange,
    MalformedBundle,
    parse_bundle,
    parse_instant,
    parse_slot,
    schedule_search_params,
    slot_search_params,
)
from aggregation.rules import NOT_ASKED, SLOT_RULES, Rejected, SlotRule
from core.geo import EARLIEST, LATEST
from core.records import Cpts, Modality, OpeningHours, Slot, SlotType
from editor_sandbox.conformance import check_answer, check_slots

EXAMPLES = Path(__file__).parent / "fixtures" / "fhir"
FETCHED = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def test_request_has_the_contract_parameters() -> None:
    paris = timezone(timedelta(hours=1))
    params = slot_search_params(
        ["810002673899", "810100050075"],
        datetime(2026, 11, 26, 9, 15, tzinfo=paris),
        datetime(2026, 11, 28, 23, 59, 59, 999000, tzinfo=paris),
    )
    assert params == [
        ("start", "ge2026-11-26T09:15:00.000+01:00"),
        ("start", "le2026-11-28T23:59:59.999+01:00"),
        (
            "schedule.actor:Practitioner.identifier",
            "urn:oid:1.2.250.1.71.4.2.1|810002673899,urn:oid:1.2.250.1.71.4.2.1|810100050075",
        ),
        ("status", "free"),
        ("_include", "Slot:schedule"),
        ("_include:iterate", "Schedule:actor"),
    ]
    with pytest.raises(ValueError, match="1 to 25"):
        slot_search_params([str(i) for i in range(26)], FETCHED, FETCHED + timedelta(hours=1))
    with pytest.raises(ValueError, match="1 to 25"):
        slot_search_params([], FETCHED, FETCHED + timedelta(hours=1))


def test_individual_practitioners_bundle() -> None:
    window = (datetime(2021, 11, 4, 14, 19, 35, 760000, tzinfo=UTC), datetime(2021, 11, 6, 23, 59, 59, tzinfo=UTC))
    result = parse_bundle(example("Bundle-ExampleBundlePSIndiv.json"), "ex", FETCHED, window)
    assert result.rejected == {}
    assert result.total == 4
    slots = {s.resource_id: s for s in result.slots}
    assert sorted(slots) == ["ExampleSlotPSIndiv1", "ExampleSlotPSIndiv2", "ExampleSlotPSIndiv3", "ExampleSlotPSIndiv4"]
    one = slots["ExampleSlotPSIndiv1"]
    assert one.slot_id == "ex:ExampleSlotPSIndiv1"
    assert one.start == datetime(2021, 11, 5, 9, 0, tzinfo=UTC) and one.utc_offset == "+00:00"
    assert one.end - one.start == timedelta(minutes=30)
    assert one.types == [SlotType.PUBLIC]
    assert one.modalities == [Modality.AMB, Modality.VR]
    assert one.reasons == ["Visite de contrôle"]
    assert one.specialties == ["SM54", "SM05"]
    assert one.appointment_type == "ROUTINE"
    assert one.booking_url == "https://exemple.com/rdv/com/"
    assert one.idnps == "810100050075" and one.practitioner_name == "Sébastien THOMAS"
    assert one.structure_idnst == "1810004421"
    assert one.place is not None and (one.place.line, one.place.city, one.place.postcode) == (
        "1 rue Mme DELMAS",
        "AGEN",
        "47000",
    )
    walkin = slots["ExampleSlotPSIndiv2"]  # a walk-in slot needs no booking URL
    assert walkin.appointment_type == "WALKIN" and walkin.booking_url is None
    assert walkin.types == [SlotType.PRO] and walkin.structure_idnst == "1810004956"
    assert walkin.place is not None and walkin.place.line == "30 rue Mme DELMAS"
    home = slots["ExampleSlotPSIndiv4"]
    assert home.modalities == [Modality.HH] and home.types == [SlotType.PUBLIC, SlotType.PRO]
    assert home.idnps == "810002673899"


def test_cpts_bundle() -> None:
    result = parse_bundle(example("Bundle-ExampleBundleCPTS.json"), "ex", FETCHED)
    (slot,) = result.slots
    assert slot.types == [SlotType.PUBLIC, SlotType.CPTS]
    assert slot.modalities == [Modality.AMB]
    assert slot.utc_offset == "+02:00" and slot.start == datetime(2024, 6, 12, 14, 40, tzinfo=UTC)
    assert slot.place is not None and slot.place.city == "Aussonne"
    assert slot.idnps is not None
    # Offered through the CPTS its serviceType 604 references (HealthcareService -> Organization).
    assert slot.cpts == [Cpts(idnst="1950047225", name="CPTS AXE MAJEUR", phone="+33102030405")]
    assert slot.reasons == ["Visite de contrôle"], "the CPTS category is no reason"


def test_a_slot_of_two_cpts_names_both_and_one_not_included_names_none() -> None:
    """The agency's second CPTS slot is offered through two CPTS; a vendor that did not include a slot's
    HealthcareService (asked without the CPTS flow) leaves the slot a CPTS slot through no CPTS known."""
    bundle = example("Bundle-ExampleBundleCPTS.json")
    two = example("Slot-ExampleSlotCPTS2.json")
    second_service = example("HealthcareService-ExampleHealthcareServiceCPTS2.json")
    second_org = example("Organization-ExampleOrgaCPTS2.json")
    bundle["entry"] += [
        {"fullUrl": f"https://vendor.example/fhir/{r['resourceType']}/{r['id']}", "resource": r}
        for r in (two, second_service, second_org)
    ]
    slots = {s.resource_id: s for s in parse_bundle(bundle, "ex", FETCHED).slots}
    assert [c.idnst for c in slots["ExampleSlotCPTS2"].cpts] == ["1950047225", "1950046227"]
    assert all(c.name for c in slots["ExampleSlotCPTS2"].cpts)
    bare = example("Bundle-ExampleBundleCPTS.json")
    cpts_resources = ("HealthcareService", "Organization")
    bare["entry"] = [e for e in bare["entry"] if e["resource"]["resourceType"] not in cpts_resources]
    (slot,) = parse_bundle(bare, "ex", FETCHED).slots
    assert slot.cpts == [] and SlotType.CPTS in slot.types


def test_the_cpts_flow_asks_for_the_slots_cpts() -> None:
    window = (FETCHED, FETCHED + timedelta(hours=1))
    plain = slot_search_params(["810002909371"], *window)
    cpts = slot_search_params(["810002909371"], *window, cpts=True)
    assert cpts[: len(plain)] == plain
    assert cpts[len(plain) :] == [
        ("_include", "Slot:service-type-reference"),
        ("_include:iterate", "HealthcareService:organization"),
    ]


def test_sos_medecins_bundle_is_placed_by_structure() -> None:
    result = parse_bundle(example("Bundle-ExampleBundleAgregateurSOS.json"), "ex", FETCHED)
    assert result.rejected == {}
    slots = {s.resource_id: s for s in result.slots}
    assert len(slots) == 4
    one = slots["ExampleSlotSOS1"]
    assert one.idnps is None and one.structure_idnst == "334173748400020"
    assert one.types == [SlotType.PUBLIC, SlotType.SNP]
    assert one.place is not None and one.place.postcode == "35700"
    assert slots["ExampleSlotSOS3"].modalities == [Modality.VR]
    # The consultation place and its association, as a card shows them.
    assert one.structure_name == "SOS Médecins de Rennes"
    assert (one.place.name, one.place.phone, one.place.place_id) == (
        "Centre de consultation Rennes Nord",
        "+33193246789",
        "1111111111",
    )
    week_end = ["tue", "wed", "thu", "fri", "sat", "sun"]
    assert one.place.hours == [OpeningHours(days=week_end, opens="08:00", closes="19:00")]
    lorient = next(s for s in slots.values() if s.place and s.place.city == "LORIENT")
    assert lorient.structure_name == "SOS Médecins Lorient et agglomération"


def test_a_search_by_association_keeps_the_slots_of_the_associations_asked_only() -> None:
    result = parse_bundle(example("Bundle-ExampleBundleAgregateurSOS.json"), "ex", FETCHED, asked={"334173748400020"})
    assert {s.structure_idnst for s in result.slots} == {"334173748400020"} and len(result.slots) == 2
    assert result.rejected == {NOT_ASKED: 2}


def test_the_sos_schedule_search_has_the_contract_parameters() -> None:
    paris = timezone(timedelta(hours=2))
    start, end = datetime(2023, 8, 18, 9, tzinfo=paris), datetime(2023, 8, 20, 8, tzinfo=paris)
    params = schedule_search_params(["34173748400020", "92080466300010"], start, end)
    # The agency's example request, parameter for parameter (its _count aside: paging is the vendor's).
    self_link = example("Bundle-ExampleBundleAgregateurSOS.json")["link"][0]["url"]
    expected = [tuple(p.split("=", 1)) for p in self_link.split("?", 1)[1].replace("%7C", "|").split("&")]
    assert sorted(params) == sorted(
        (k, v.replace("T09:00:00+", "T09:00:00.000+").replace("T08:00:00+", "T08:00:00.000+"))
        for k, v in expected
        if k != "_count"
    )
    with pytest.raises(ValueError, match="1 to 10"):
        schedule_search_params([f"{i:014d}" for i in range(11)], start, end)
    with pytest.raises(ValueError, match="14 digits"):
        schedule_search_params(["334173748400020"], start, end)  # an IDNST, not a SIRET


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("Slot-*.json")))
def test_every_example_slot_is_valid_on_its_own(name: str) -> None:
    resource = example(name)
    slot = parse_slot(resource, "ex", FETCHED)
    assert isinstance(slot, Slot), slot
    assert slot.resource_id == resource["id"]
    assert slot.start < slot.end
    assert slot.types and slot.modalities


@pytest.mark.parametrize(
    ("change", "rule", "reason"),
    [
        ({"status": "busy"}, "status-free", "status is not free"),
        ({"start": None}, "start-end", "start or end missing or unreadable"),
        ({"end": "2021-11-05T08:00:00.000+00:00"}, "end-after-start", "end is not after start"),
        ({"meta": {}}, "slot-type", "no slot type in meta.security"),
        ({"serviceType": [{"text": "Visite"}]}, "modality", "no modality in serviceType"),
        ({"appointmentType": None}, "appointment-type", "no appointmentType"),
        ({"comment": None}, "booking-url", "no booking URL in comment"),
        ({"comment": "javascript:alert(1)"}, "booking-url-http", "booking URL is not an http(s) URL"),
        ({"schedule": {"display": "no reference"}}, "schedule-reference", "no schedule reference"),
    ],
)
def test_contract_violations_are_named(change: dict, rule: str, reason: str) -> None:
    resource = {k: v for k, v in {**example("Slot-ExampleSlotPSIndiv1.json"), **change}.items() if v is not None}
    assert parse_slot(resource, "ex", FETCHED) == Rejected(rule, reason)


def test_slots_outside_the_window_and_unresolvable_schedules_are_counted() -> None:
    bundle = example("Bundle-ExampleBundlePSIndiv.json")
    window = (datetime(2021, 11, 5, 0, 0, tzinfo=UTC), datetime(2021, 11, 6, 0, 0, tzinfo=UTC))
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["id"] != "ExampleSchedule2"]
    result = parse_bundle(bundle, "ex", FETCHED, window)
    assert result.rejected == {"start outside the asked window": 2, "schedule not in the Bundle": 1}
    assert [s.resource_id for s in result.slots] == ["ExampleSlotPSIndiv1"]


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"resourceType": "OperationOutcome"},
        {"resourceType": "Bundle", "type": "collection"},
        {"resourceType": "Bundle", "type": 10**5000},  # too long to write into the reason: named by its JSON type
        {"resourceType": "Bundle", "type": "searchset", "entry": {"resource": {"resourceType": "Slot"}}},
    ],
)
def test_malformed_answers_are_rejected_whole(answer: object) -> None:
    with pytest.raises(MalformedBundle):
        parse_bundle(answer, "ex", FETCHED)


WINDOW = (datetime(2021, 11, 4, 14, 0, tzinfo=UTC), datetime(2021, 11, 6, 23, 59, tzinfo=UTC))
ASKED = ["810002673899", "810100050075"]


def one_slot_answer() -> dict:
    """The agency's example answer cut down to one slot to book (ROUTINE, with its page) and what it refers to."""
    bundle = example("Bundle-ExampleBundlePSIndiv.json")
    keep = {"ExampleSlotPSIndiv1", "ExampleSchedule1", "ExamplePractitioner2", "ExamplePractitionerRoleAgregateur2"}
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["id"] in keep]
    bundle["total"] = 1
    return bundle


def resource(bundle: dict, kind: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind)


def moved(start: str, end: str) -> Callable[[dict], None]:
    return lambda b: resource(b, "Slot").update(start=start, end=end)


# For each rule of the table, an answer breaking it (and only what breaking it implies).
COUNTER_EXAMPLES: dict[str, Callable[[dict], None]] = {
    "slot-id": lambda b: resource(b, "Slot").pop("id"),
    "status-free": lambda b: resource(b, "Slot").update(status="busy-unavailable"),
    "date-range": moved("9999-12-31T23:30:00.000-05:00", "9999-12-31T23:50:00.000-05:00"),
    "start-end": lambda b: resource(b, "Slot").pop("end"),
    "instant-format": moved("2021-11-05T09:00:00Z", "2021-11-05T09:30:00Z"),
    "end-after-start": moved("2021-11-05T09:00:00.000+00:00", "2021-11-05T08:30:00.000+00:00"),
    "not-before-window": moved("2021-11-04T08:00:00.000+00:00", "2021-11-04T08:30:00.000+00:00"),
    "inside-window": moved("2021-11-07T08:00:00.000+00:00", "2021-11-07T08:30:00.000+00:00"),
    "slot-type": lambda b: resource(b, "Slot")["meta"].update(security=[{"code": "PRIVATE"}]),
    "slot-type-codes": lambda b: resource(b, "Slot")["meta"]["security"].append({"code": "PRIVATE"}),
    "modality": lambda b: resource(b, "Slot").update(serviceType=[{"text": "Visite de contrôle"}]),
    "appointment-type": lambda b: resource(b, "Slot").pop("appointmentType"),
    "booking-url-http": lambda b: resource(b, "Slot").update(comment="javascript:alert(1)"),
    "booking-url": lambda b: resource(b, "Slot").pop("comment"),
    "booking-url-walk-in": lambda b: (
        resource(b, "Slot").pop("comment"),
        resource(b, "Slot").update(appointmentType={"coding": [{"code": "WALKIN"}]}),
    ),
    "schedule-reference": lambda b: resource(b, "Slot").update(schedule={"display": "Dr Thomas"}),
    "schedule-in-bundle": lambda b: resource(b, "Slot").update(schedule={"reference": "Schedule/elsewhere"}),
    "someone-behind-schedule": lambda b: resource(b, "Schedule").update(actor=[]),
    "practitioner-asked": lambda b: resource(b, "Practitioner")["identifier"][0].update(value="810000000001"),
}


def parser_verdict(bundle: dict) -> Slot | Rejected:
    return parse_slot(resource(bundle, "Slot"), "ex", FETCHED, WINDOW, BundleContext(bundle["entry"]), ASKED)


def kit_broken_rules(bundle: dict) -> list[str]:
    return [f.rule.rule for f in check_slots(bundle, *WINDOW, ASKED) if not f.kept]


def test_the_uncut_example_keeps_every_rule_on_both_sides() -> None:
    bundle = one_slot_answer()
    assert isinstance(parser_verdict(bundle), Slot)
    assert kit_broken_rules(bundle) == []
    assert [c for c in check_answer(bundle, ASKED, *WINDOW) if not c[1]] == []


def test_every_rule_has_a_counter_example() -> None:
    assert list(COUNTER_EXAMPLES) == [r.rule for r in SLOT_RULES]


@pytest.mark.parametrize("rule", SLOT_RULES, ids=lambda r: r.rule)
def test_the_parser_and_the_conformance_check_apply_the_same_rule(rule: SlotRule) -> None:
    """An enforced rule makes the parser reject the slot with that rule, and the conformance check report it
    first; a tolerated one lets the parser take the slot while the conformance check still reports it."""
    bundle = one_slot_answer()
    COUNTER_EXAMPLES[rule.rule](bundle)
    parsed, broken = parser_verdict(bundle), kit_broken_rules(bundle)
    if rule.enforced:
        assert parsed == Rejected(rule.rule, rule.reason)
        assert broken[0] == rule.rule
    else:
        assert isinstance(parsed, Slot)
        assert broken == [rule.rule]
    failed = {c[0] for c in check_answer(bundle, ASKED, *WINDOW) if not c[1]}
    assert set(rule.requirements) <= failed


def test_a_rule_added_to_the_table_changes_both_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    at_least_an_hour = SlotRule(
        "an-hour-at-least",
        (11,),
        "the slot lasts an hour or more",
        "shorter than an hour",
        lambda f: None if f.start is None or f.end is None else f.end - f.start >= timedelta(hours=1),
    )
    monkeypatch.setattr(rules, "SLOT_RULES", [*SLOT_RULES, at_least_an_hour])
    bundle = one_slot_answer()  # a 30-minute slot
    assert parse_bundle(bundle, "ex", FETCHED, WINDOW).rejected == {"shorter than an hour": 1}
    assert kit_broken_rules(bundle) == ["an-hour-at-least"]
    assert {c[0] for c in check_answer(bundle, ASKED, *WINDOW) if not c[1]} == {11}


def test_a_rule_the_table_tolerates_no_longer_drops_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    tolerant = [replace(r, enforced=False) if r.rule == "booking-url" else r for r in SLOT_RULES]
    monkeypatch.setattr(rules, "SLOT_RULES", tolerant)
    bundle = one_slot_answer()
    COUNTER_EXAMPLES["booking-url"](bundle)
    assert isinstance(parser_verdict(bundle), Slot)
    assert kit_broken_rules(bundle) == ["booking-url"]


# -- what a vendor cannot make the platform take ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("9999-12-31T23:30:00.000-05:00", "9999-12-31T23:50:00.000-05:00"),  # year 10000 in UTC
        ("0001-01-01T00:00:00.000+01:00", "0001-01-01T00:20:00.000+01:00"),  # year 0 in UTC
        ("9999-06-01T09:00:00.000+02:00", "9999-06-01T09:20:00.000+02:00"),
        ("1999-12-31T23:40:00.000+00:00", "2000-01-01T00:10:00.000+00:00"),
        ("2100-12-31T23:50:00.000+00:00", "2101-01-01T00:10:00.000+00:00"),
    ],
)
def test_a_slot_dated_outside_2000_to_2100_is_rejected_with_its_own_reason(start: str, end: str) -> None:
    slot = {**example("Slot-ExampleSlotPSIndiv1.json"), "start": start, "end": end}
    assert parse_slot(slot, "ex", FETCHED) == Rejected("date-range", "start or end outside 2000–2100")


def test_odd_dates_in_a_bundle_are_counted_and_the_other_slots_kept() -> None:
    bundle = example("Bundle-ExampleBundlePSIndiv.json")
    odd = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "ExampleSlotPSIndiv1")
    odd.update(start="0001-01-01T00:00:00.000+01:00", end="0001-01-01T00:30:00.000+01:00")
    result = parse_bundle(bundle, "ex", FETCHED)
    assert result.rejected == {"start or end outside 2000–2100": 1}
    assert result.rejected_examples == {"start or end outside 2000–2100": ["ex:ExampleSlotPSIndiv1"]}
    assert sorted(s.resource_id for s in result.slots) == [
        "ExampleSlotPSIndiv2",
        "ExampleSlotPSIndiv3",
        "ExampleSlotPSIndiv4",
    ]


# Strings shaped like instants, over every year and offset datetime can write, and with the seconds and fractions
# written or not: where the overflows are.
instants = st.builds(
    lambda moment, spec: moment.isoformat(timespec=spec),
    st.datetimes(timezones=st.builds(timezone, st.timedeltas(timedelta(hours=-23), timedelta(hours=23)))),
    st.sampled_from(["minutes", "seconds", "milliseconds", "microseconds"]),
)


@given(st.text() | instants)
def test_reading_an_instant_raises_nothing_but_value_error(value: str) -> None:
    try:
        moment, offset = parse_instant(value)
    except ValueError:
        return
    assert moment.tzinfo is UTC and EARLIEST <= moment < LATEST
    assert len(offset) == 6 and offset[0] in "+-"


@given(instants)
def test_an_instant_is_refused_for_its_range_exactly_when_it_is_outside(value: str) -> None:
    moment = datetime.fromisoformat(value)
    year = moment.year
    outside = year < 1999 or year > 2101 or not EARLIEST <= moment.astimezone(UTC) < LATEST
    if outside:
        with pytest.raises(InstantOutOfRange):
            parse_instant(value)
    else:
        assert parse_instant(value)[0] == moment


def test_slots_of_practitioners_not_asked_for_are_rejected_and_counted() -> None:
    everyone = parse_bundle(example("Bundle-ExampleBundlePSIndiv.json"), "ex", FETCHED)
    others = sorted(s.slot_id for s in everyone.slots if s.idnps != "810100050075")
    assert others  # the example answer holds slots of both its practitioners
    result = parse_bundle(example("Bundle-ExampleBundlePSIndiv.json"), "ex", FETCHED, asked=["810100050075"])
    assert {s.idnps for s in result.slots} == {"810100050075"}
    assert result.rejected == {NOT_ASKED: len(others)}
    assert sorted(result.rejected_examples[NOT_ASKED]) == others
    assert result.slot_entries == everyone.slot_entries  # still read: the Bundle's total counts them


def test_a_slot_with_no_practitioner_behind_it_is_for_no_one_asked() -> None:
    # SOS Médecins slots name a structure only: an answer to a search by practitioner has no place for them.
    result = parse_bundle(example("Bundle-ExampleBundleAgregateurSOS.json"), "ex", FETCHED, asked=["810100050075"])
    assert result.slots == [] and result.rejected == {NOT_ASKED: 4}


def test_the_kit_cannot_tell_who_was_asked_unless_told() -> None:
    bundle = one_slot_answer()
    COUNTER_EXAMPLES["practitioner-asked"](bundle)
    assert "practitioner-asked" not in {f.rule.rule for f in check_slots(bundle, *WINDOW)}
    (finding,) = [f for f in check_slots(bundle, *WINDOW, ASKED) if f.rule.rule == "practitioner-asked"]
    assert not finding.kept and finding.detail.endswith(NOT_ASKED)


# -- however a vendor shapes its answer ------------------------------------------------------------------------
# A value of the wrong JSON type reads as missing: the rule that then fails rejects the slot, or the detail is left
# out of the slot; the answer as a whole never fails for it.


def put(bundle: dict, path: tuple[Any, ...], value: Any) -> None:
    """Set the value at `path` in the answer: from the Bundle itself, or from its first resource of a kind."""
    node: Any = bundle if path[0] == "Bundle" else resource(bundle, path[0])
    for step in path[1:-1]:
        node = node[step]
    node[path[-1]] = value


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("Slot", "id"), 1, "no Slot id"),
        (("Slot", "meta"), "PUBLIC", "no slot type in meta.security"),
        (("Slot", "meta", "security"), ["PUBLIC"], "no slot type in meta.security"),
        (("Slot", "serviceType"), {"coding": [{"code": "AMB"}]}, "no modality in serviceType"),
        (("Slot", "serviceType"), [{"coding": "AMB"}, {"coding": ["VR"]}], "no modality in serviceType"),
        (("Slot", "appointmentType", "coding", 0, "code"), ["ROUTINE"], "no appointmentType"),
        (("Slot", "comment"), "https://[exemple.com/rdv", "booking URL is not an http(s) URL"),
        (("Slot", "schedule", "reference"), ["Schedule/ExampleSchedule1"], "no schedule reference"),
        (("Slot", "schedule"), "Schedule/ExampleSchedule1", "no schedule reference"),
        (("Bundle", "entry", 1, "resource"), "Schedule/ExampleSchedule1", "schedule not in the Bundle"),
        (
            ("Schedule", "actor"),
            {"reference": "Practitioner/ExamplePractitioner2"},
            "no practitioner or structure behind the schedule",
        ),
        (("Practitioner", "identifier", 0, "value"), 810100050075, NOT_ASKED),
        (("Practitioner", "identifier"), {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810100050075"}, NOT_ASKED),
    ],
    ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_a_value_of_the_wrong_type_reads_as_missing_and_its_rule_rejects_the_slot(
    path: tuple[Any, ...], value: Any, reason: str
) -> None:
    bundle = one_slot_answer()
    put(bundle, path, value)
    result = parse_bundle(bundle, "ex", FETCHED, WINDOW, asked=ASKED)
    assert result.slots == [] and result.rejected == {reason: 1} and result.slot_entries == 1


@pytest.mark.parametrize(
    ("path", "value", "field", "read"),
    [
        (("Practitioner", "name", 0, "given"), "Sébastien", "practitioner_name", "THOMAS"),
        (("Practitioner", "name", 0, "given", 0), {"text": "Sébastien"}, "practitioner_name", "THOMAS"),
        (("Practitioner", "name"), ["Sébastien THOMAS"], "practitioner_name", None),
        (("PractitionerRole", "contained", 0, "address", "line"), "1 rue Mme DELMAS", "place.line", None),
        (("PractitionerRole", "contained", 0, "address", "line", 0), 1, "place.line", None),
        (("PractitionerRole", "contained", 0, "address", "postalCode"), 47000, "place.postcode", None),
        (("PractitionerRole", "contained", 0, "address", "city"), ["AGEN"], "place.city", None),
        (("PractitionerRole", "contained"), {"resourceType": "Location", "id": "ExampleLocation3"}, "place", None),
        (("PractitionerRole", "location", 0, "reference"), 3, "place", None),
        (("PractitionerRole", "organization", "identifier", "value"), 1810004421, "structure_idnst", None),
        (("Slot", "serviceType", 2, "text"), 42, "reasons", []),
        (("Slot", "specialty", 0, "coding", 0, "code"), {"code": "SM54"}, "specialties", ["SM05"]),
        (("Slot", "specialty"), "SM54", "specialties", []),
    ],
    ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_a_detail_of_the_wrong_type_reads_as_missing_and_the_slot_is_kept(
    path: tuple[Any, ...], value: Any, field: str, read: Any
) -> None:
    bundle = one_slot_answer()
    put(bundle, path, value)
    (slot,) = parse_bundle(bundle, "ex", FETCHED, WINDOW, asked=ASKED).slots
    assert attrgetter(field)(slot) == read


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("Bundle", "total"), True),
        (("Bundle", "total"), -1),
        (("Bundle", "total"), "1"),
        (("Bundle", "link"), {"relation": "next", "url": "https://exemple.com/ans-sas/Slot?page=2"}),
        (("Bundle", "link"), [{"relation": "next", "url": 2}]),
        (("Bundle", "link"), [{"relation": "next", "url": ["https://exemple.com/ans-sas/Slot?page=2"]}]),
    ],
)
def test_a_total_or_next_link_of_the_wrong_type_reads_as_absent(path: tuple[Any, ...], value: Any) -> None:
    bundle = one_slot_answer()
    put(bundle, path, value)
    result = parse_bundle(bundle, "ex", FETCHED, WINDOW, asked=ASKED)
    assert len(result.slots) == 1
    read = result.total if path[-1] == "total" else result.next_url
    assert read is None


REASONS = {rule.reason for rule in SLOT_RULES}
KINDS = ["Bundle", "Slot", "Schedule", "Practitioner", "PractitionerRole", "Location", "Organization"]
# Keys and strings the parser looks for, so that random values also land where they are read.
FIELDS = [
    "resourceType", "id", "type", "entry", "fullUrl", "resource", "total", "link", "relation", "url", "status",
    "start", "end", "meta", "security", "serviceType", "specialty", "appointmentType", "coding", "system", "code",
    "text", "comment", "schedule", "reference", "actor", "identifier", "value", "name", "given", "family",
    "organization", "location", "contained", "practitioner", "managingOrganization", "address", "line", "city",
    "postalCode",
]  # fmt: skip
WORDS = [
    *KINDS, *FIELDS, "searchset", "next", "free", "PUBLIC", "PRO", "AMB", "VR", "ROUTINE", "WALKIN", "s", "p", "l",
    "Schedule/s", "Practitioner/p", "PractitionerRole/p", "Location/l", "#l", "#", "/", "https://exemple.com/rdv",
    "http://[exemple", "javascript:alert(1)", "urn:oid:1.2.250.1.71.4.2.1", "urn:oid:1.2.250.1.71.4.2.2",
    "810100050075", "2021-11-05T09:00:00.000+00:00", "2021-11-05T09:30:00+01:00", "9999-12-31T23:59:59-23:59",
]  # fmt: skip
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**64, -(2**63) - 1])  # just past what a 64-bit integer holds
    | st.builds(pow, st.just(10), st.integers(4301, 4400))  # past the digits str() writes out
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(WORDS),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
# Characters that make a well-formed string odd: URL delimiters, a full-width '#' (NFKC makes it '#'), the 'Z' an
# instant may end with, a NUL, a space, a letter outside ASCII.
ODD_CHARACTERS = ["[", "]", "#", "/", ":", "%", "@", "Z", " ", "\x00", "\uff03", "é"]


def lean(value: Any) -> Any:
    """An answer without what the parser never reads (profiles, identifier types), so that changes land where it
    reads."""
    if isinstance(value, list):
        return [lean(v) for v in value]
    if isinstance(value, dict):
        return {k: lean(v) for k, v in value.items() if k != "profile" and not (k == "type" and isinstance(v, dict))}
    return value


EXAMPLE_ANSWERS = [
    lean(one_slot_answer()),
    lean(example("Bundle-ExampleBundlePSIndiv.json")),
    lean(example("Bundle-ExampleBundleCPTS.json")),
    lean(example("Bundle-ExampleBundleAgregateurSOS.json")),
]


def assert_every_slot_accepted_or_rejected(answer: Any, **kwargs: Any) -> None:
    """The answer is malformed as a whole, or each of its Slots is taken or rejected for a rule of the table; and
    the vendors' test kit, reading the same answer, reports its checks without stopping on it."""
    checks = check_answer(answer, ASKED, *WINDOW)
    assert checks and all(type(r) is int and type(ok) is bool and isinstance(d, str) for r, ok, d in checks)
    try:
        result = parse_bundle(answer, "ex", FETCHED, **kwargs)
    except MalformedBundle:
        return
    assert len(result.slots) + sum(result.rejected.values()) == result.slot_entries
    assert set(result.rejected) <= REASONS
    assert result.total is None or (type(result.total) is int and result.total >= 0)
    assert result.next_url is None or isinstance(result.next_url, str)


def nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every node in a JSON value, itself first."""
    out = [path]
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        out += nodes(child, (*path, key))
    return out


def parent(root: Any, path: tuple[Any, ...]) -> Any:
    """The node holding the one at `path`."""
    for step in path[:-1]:
        root = root[step]
    return root


@settings(max_examples=500, deadline=None)
@given(st.data(), st.sampled_from(EXAMPLE_ANSWERS), st.sampled_from([None, WINDOW]), st.sampled_from([None, ASKED]))
def test_an_answer_however_mangled_is_read_slot_by_slot_or_rejected_whole(
    data: st.DataObject, example_answer: dict, window: Any, asked: Any
) -> None:
    """An example answer with a few changes: any node replaced by any JSON value, dropped, or repeated (a list
    item), or an odd character written into a string."""
    answer: Any = copy.deepcopy(example_answer)
    for _ in range(data.draw(st.integers(1, 8), label="changes")):
        paths = nodes(answer)
        change = data.draw(st.sampled_from(["replace", "drop", "repeat", "edit"]), label="change")
        if change == "replace":
            path = data.draw(st.sampled_from(paths), label="path")
            value = data.draw(json_values, label="value")
            if path:
                parent(answer, path)[path[-1]] = value
            else:
                answer = value
            continue
        if change == "drop":
            candidates = paths[1:]
        elif change == "repeat":
            candidates = [p for p in paths[1:] if isinstance(parent(answer, p), list)]
        else:
            candidates = [p for p in paths[1:] if isinstance(parent(answer, p)[p[-1]], str)]
        if not candidates:
            continue
        path = data.draw(st.sampled_from(candidates), label="path")
        holder = parent(answer, path)
        if change == "drop":
            del holder[path[-1]]
        elif change == "repeat":
            holder.insert(path[-1], copy.deepcopy(holder[path[-1]]))
        else:
            text = holder[path[-1]]
            at = data.draw(st.integers(0, len(text)), label="at")
            holder[path[-1]] = text[:at] + data.draw(st.sampled_from(ODD_CHARACTERS), label="character") + text[at:]
    assert_every_slot_accepted_or_rejected(answer, window=window, asked=asked)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_is_read_as_a_bundle_or_rejected_whole(value: Any) -> None:
    assert_every_slot_accepted_or_rejected(value, window=WINDOW, asked=ASKED)


random_resources = st.builds(
    lambda kind, rid, fields: {**fields, "resourceType": kind, "id": rid},
    st.sampled_from(KINDS),
    st.sampled_from(["s", "p", "l"]) | json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.fixed_dictionaries({"resource": random_resources}, optional={"fullUrl": json_values}), max_size=4),
    json_values,
    json_values,
)
def test_a_searchset_of_random_resources_is_read_slot_by_slot(entries: list[dict], total: Any, link: Any) -> None:
    answer = {"resourceType": "Bundle", "type": "searchset", "entry": entries, "total": total, "link": link}
    assert_every_slot_accepted_or_rejected(answer, window=WINDOW, asked=ASKED)
