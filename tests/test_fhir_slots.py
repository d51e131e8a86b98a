"""The slot-search contract: the request's form, the agency's example Bundles and Slots parsed, and the one table
of slot rules that both the platform's parser and the vendors' conformance check apply."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from aggregation import rules
from aggregation.contract import BundleContext, MalformedBundle, parse_bundle, parse_slot, slot_search_params
from aggregation.rules import SLOT_RULES, Rejected, SlotRule
from core.records import Modality, Slot, SlotType
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
    "answer", [[], {"resourceType": "OperationOutcome"}, {"resourceType": "Bundle", "type": "collection"}]
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
    "status-free": lambda b: resource(b, "Slot").update(status="busy-unavailable"),
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
}


def parser_verdict(bundle: dict) -> Slot | Rejected:
    return parse_slot(resource(bundle, "Slot"), "ex", FETCHED, WINDOW, BundleContext(bundle["entry"]))


def kit_broken_rules(bundle: dict) -> list[str]:
    return [f.rule.rule for f in check_slots(bundle, *WINDOW) if not f.kept]


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
