"""The slot-search contract: the request's form, and the agency's example Bundles and Slots parsed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from aggregation.contract import MalformedBundle, parse_bundle, parse_slot, slot_search_params
from core.records import Modality, SlotType

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
    assert not isinstance(slot, str), slot
    assert slot.resource_id == resource["id"]
    assert slot.start < slot.end
    assert slot.types and slot.modalities


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": "busy"}, "status is not free"),
        ({"start": None}, "start or end missing or unreadable"),
        ({"end": "2021-11-05T08:00:00.000+00:00"}, "end is not after start"),
        ({"meta": {}}, "no slot type in meta.security"),
        ({"serviceType": [{"text": "Visite"}]}, "no modality in serviceType"),
        ({"appointmentType": None}, "no appointmentType"),
        ({"comment": None}, "no booking URL in comment"),
        ({"comment": "javascript:alert(1)"}, "booking URL is not an http(s) URL"),
    ],
)
def test_contract_violations_are_named(change: dict, reason: str) -> None:
    resource = {k: v for k, v in {**example("Slot-ExampleSlotPSIndiv1.json"), **change}.items() if v is not None}
    assert parse_slot(resource, "ex", FETCHED) == reason


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
