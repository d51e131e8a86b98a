"""The SOS Médecins flow's search (a Schedule search by association SIRET) against a real sandbox on loopback: the
slots of the asked associations' consultation places, whole across pages, each with its place (name, address, phone,
opening hours) and association; bad searches are 400 OperationOutcomes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from aggregation.client import VendorError, make_client, search_schedules
from aggregation.contract import IDNST_SYSTEM, ParseResult, schedule_search_params
from core.records import OpeningHours, Vendor
from editor_sandbox.agenda import SandboxAssociation, SandboxConfig, SandboxPlace
from editor_sandbox.server import SandboxServer

BOURG = SandboxAssociation(
    siret="31234567800017",
    name="SOS Médecins Bourg-en-Bresse",
    places=[
        SandboxPlace(
            place_id="lfc-bourg-1",
            name="Centre de consultation Bourg Centre",
            line="2 avenue Alsace Lorraine",
            city="BOURG EN BRESSE",
            postcode="01000",
            phone="+33474000001",
        ),
        SandboxPlace(
            place_id="lfc-bourg-2",
            name="Centre de consultation Viriat",
            line="900 route de Paris",
            city="VIRIAT",
            postcode="01440",
            phone="+33474000002",
            hours=[{"daysOfWeek": ["sat", "sun"], "openingTime": "09:00:00", "closingTime": "18:00:00"}],
        ),
    ],
)
OTHER = SandboxAssociation(
    siret="39876543200011",
    name="SOS Médecins Lyon",
    places=[SandboxPlace(place_id="lfc-lyon", name="Lyon Part-Dieu", line="1 rue", city="LYON", postcode="69003")],
)


def _search(server: SandboxServer, sirets: list[str], **config: int) -> ParseResult:
    vendor = Vendor(vendor_id="sos", name="SOS", base_url=server.fhir_base)
    start = datetime.now(UTC)

    async def ask() -> ParseResult:
        async with make_client(vendor) as client:
            return await search_schedules(client, vendor, sirets, start, start + timedelta(days=2), start)

    return asyncio.run(ask())


def test_the_slots_of_the_associations_asked_with_their_places() -> None:
    config = SandboxConfig(vendor_id="sos", seed=4, associations=[BOURG, OTHER], churn_rate=0)
    with SandboxServer(config) as server:
        result = _search(server, [BOURG.siret])
        assert result.slots and not result.rejected
        assert {s.structure_idnst for s in result.slots} == {"3" + BOURG.siret}
        assert {s.structure_name for s in result.slots} == {BOURG.name}
        assert all(s.idnps is None for s in result.slots)
        places = {s.place.place_id: s.place for s in result.slots if s.place}
        assert set(places) == {"lfc-bourg-1", "lfc-bourg-2"}, "both places have slots in two days"
        viriat = places["lfc-bourg-2"]
        assert (viriat.name, viriat.phone, viriat.postcode) == (BOURG.places[1].name, "+33474000002", "01440")
        assert viriat.hours == [OpeningHours(days=["sat", "sun"], opens="09:00", closes="18:00")]
        everyone = _search(server, [BOURG.siret, OTHER.siret])
        assert {s.structure_idnst for s in everyone.slots} == {"3" + BOURG.siret, "3" + OTHER.siret}
        assert _search(server, ["30000000000000"]).slots == []  # an association the vendor does not serve
        # Paged by the vendor (five slots a page): every page read, the same slots.
        server.config.page_size = 5
        paged = _search(server, [BOURG.siret])
        assert paged.pages > 1 and sorted(s.slot_id for s in paged.slots) == sorted(s.slot_id for s in result.slots)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"_has:Slot:schedule:status": "busy"}, "status=free"),
        ({"actor:Location.organization.identifier": f"{IDNST_SYSTEM}|1010000024"}, "3<SIRET>"),
        ({"actor:Location.organization.identifier": None}, "mandatory"),
        ({"_has:Slot:schedule:start": None}, "mandatory"),
    ],
)
def test_a_bad_schedule_search_is_a_400_operation_outcome(change: dict, fragment: str) -> None:
    start = datetime.now(UTC)
    good = schedule_search_params([BOURG.siret], start, start + timedelta(days=1))
    # The contract's parameters, one of them changed or left out.
    asked = [(k, v) for k, v in good if k not in change] + [(k, v) for k, v in change.items() if v is not None]
    with SandboxServer(SandboxConfig(vendor_id="sos", associations=[BOURG])) as server:
        r = httpx.get(server.fhir_base + "/Schedule", params=asked)
    assert r.status_code == 400
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and fragment in body["issue"][0]["diagnostics"]


def test_a_vendor_refusing_the_search_fails_the_call() -> None:
    with SandboxServer(SandboxConfig(vendor_id="sos", associations=[BOURG])) as server:
        vendor = Vendor(vendor_id="sos", name="SOS", base_url=server.fhir_base + "/nowhere")
        start = datetime.now(UTC)

        async def ask() -> ParseResult:
            async with make_client(vendor) as client:
                return await search_schedules(client, vendor, [BOURG.siret], start, start + timedelta(days=1), start)

        with pytest.raises(VendorError) as failed:
            asyncio.run(ask())
    assert failed.value.kind == "http"
