"""The SOS Médecins flow's search (a Schedule search by association SIRET) against a real sandbox on loopback: the
slots of the asked associations' consultation places, whole across pages, each with its place (name, address, phone,
opening hours) and association; bad searches are 400 OperationOutcomes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from addok_like import AddokLike
from fastapi.testclient import TestClient
from support import ADMIN, CHEPY, api_settings, headers, indexed, person, signed_in

from access.accounts import audit_entries
from access.roles import Grant
from aggregation.client import VendorError, make_client, search_schedules
from aggregation.contract import IDNST_SYSTEM, ParseResult, association_idnst, schedule_search_params
from aggregation.scheduler import Aggregator
from analytics.snapshots import take_snapshot
from analytics.tables import coverage
from api.app import create_app
from api.auth import Role
from core.geo import gazetteer
from core.records import Flow, OpeningHours, Participation, ParticipationVia, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxAssociation, SandboxConfig, SandboxPlace
from editor_sandbox.server import SandboxServer
from indexer.backend import Backend
from indexer.registry import get_participation, save_participation, save_vendor

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


def test_an_association_taking_part_is_pulled_and_its_places_are_cards(loaded: Backend, settings: Settings) -> None:
    """An association taking part by SIRET, at a vendor serving the SOS flow: one cycle indexes its places' slots at
    sites of their own; a search near them returns the places as cards (association, place, phone, hours today)."""
    config = SandboxConfig(vendor_id="v", seed=4, associations=[BOURG], practitioners=[CHEPY], churn_rate=0)
    with SandboxServer(config) as server:
        flows = [Flow.individual, Flow.sos]
        save_vendor(loaded, Vendor(vendor_id="v", name="Vendor V", base_url=server.fhir_base, flows=flows))
        association = association_idnst(BOURG.siret)
        save_participation(loaded, Participation(idnps=association, vendors=["v"], via=ParticipationVia.sos))
        save_participation(loaded, Participation(idnps=CHEPY.idnps, vendors=["v"]))
        (report,) = asyncio.run(Aggregator(loaded, settings).run_once())
    assert report.batches == 2 and report.batches_failed == 0 and not report.unplaced and not report.rejected
    slots = indexed(loaded, "v")
    sos = [s for s in slots.values() if s["idnps"] == association]
    assert sos and {s["site_id"] for s in sos} == {f"sos:v:{association}:{p.place_id}" for p in BOURG.places}
    assert any(s["idnps"] == CHEPY.idnps for s in slots.values()), "the vendor's practitioners are pulled as before"

    with TestClient(create_app(api_settings(settings), loaded)) as client:
        r = client.get(
            "/v1/search",
            params={"lat": 46.2052, "lon": 5.2255, "via": "sos", "verify": "false", "seed": 1},
            headers=headers(Role.regulator),
        )
    assert r.status_code == 200, r.text
    cards = r.json()["cards"]
    assert {c["site"]["site_id"] for c in cards} == {s["site_id"] for s in sos}
    bourg = next(c for c in cards if c["site"]["name"] == BOURG.places[0].name)
    assert bourg["practitioner"]["name"] == BOURG.name and bourg["participation"]["via"] == "sos"
    assert bourg["site"]["sos"] and bourg["site"]["phone"] == "+33474000001"
    assert bourg["site"]["hours_today"] == ["08:00-20:00"]
    assert bourg["distance_km"] < 10 and bourg["slot_count"] > 0

    # The analysts' tables count the association's slots apart, in the department of its places.
    summary = take_snapshot(loaded, datetime.now(UTC), staleness_limit_s=3600)
    rows = {r.code: r for r in coverage(loaded, "department", 72, summary.taken_at)}
    ain = rows["01"]
    within = [s for s in sos if datetime.fromisoformat(s["start"]) < datetime.now(UTC) + timedelta(hours=72)]
    assert ain.slots_via_sos == len(within) > 0 and ain.slots_individual > 0 and ain.slots_via_cpts == 0
    assert ain.participants >= 2  # the association, placed by its consultation places, and the practitioner


def test_the_places_of_an_association_are_geocoded_like_any_site(
    loaded: Backend, settings: Settings, addok: str
) -> None:
    """With a geocoder configured, an association's places (sites the directory lacks) are placed at their address,
    not at their commune; the slots carry the position, and the cards show it with its precision."""
    config = SandboxConfig(vendor_id="v", seed=4, associations=[BOURG], churn_rate=0)
    geocoded = settings.model_copy(update={"geocoder_url": addok})
    with SandboxServer(config) as server:
        save_vendor(loaded, Vendor(vendor_id="v", name="V", base_url=server.fhir_base, flows=[Flow.sos]))
        association = association_idnst(BOURG.siret)
        save_participation(loaded, Participation(idnps=association, vendors=["v"], via=ParticipationVia.sos))
        (report,) = asyncio.run(Aggregator(loaded, geocoded).run_once())
    assert report.batches_failed == 0 and not report.unplaced
    viriat = gazetteer().commune("01451")
    at_viriat = [s for s in indexed(loaded, "v").values() if s["site_id"].endswith(":lfc-bourg-2")]
    assert at_viriat and all(s["position"]["precision"] == "housenumber" for s in at_viriat)
    assert at_viriat[0]["location"]["lat"] == pytest.approx(viriat.lat + 0.001)  # the geocoder's, not the commune's
    assert sum(1 for c in AddokLike.calls if c["path"].startswith("/search/csv")) == 2  # one query per place

    with TestClient(create_app(api_settings(settings), loaded)) as client:
        r = client.get(
            "/v1/search",
            params={"lat": viriat.lat, "lon": viriat.lon, "via": "sos", "verify": "false"},
            headers=headers(Role.regulator),
        )
    card = next(c for c in r.json()["cards"] if c["site"]["site_id"].endswith(":lfc-bourg-2"))
    assert card["site"]["position_precision"] == "housenumber"
    assert card["site"]["lat"] == pytest.approx(viriat.lat + 0.001) and card["distance_km"] < 0.2


def test_an_associations_manager_sees_its_places_and_keeps_its_participation(
    loaded: Backend, settings: Settings
) -> None:
    """The manager of an SOS association sees its consultation places with their free slots, changes its vendor and
    what it accepts (kept in the audit log), and reaches no other association."""
    config = SandboxConfig(vendor_id="v", seed=4, associations=[BOURG], churn_rate=0)
    association, other = association_idnst(BOURG.siret), association_idnst(OTHER.siret)
    with SandboxServer(config) as server:
        save_vendor(loaded, Vendor(vendor_id="v", name="Vendor V", base_url=server.fhir_base, flows=[Flow.sos]))
        save_vendor(loaded, Vendor(vendor_id="w", name="Vendor W", base_url=server.fhir_base, flows=[Flow.sos]))
        save_participation(loaded, Participation(idnps=association, vendors=["v"], via=ParticipationVia.sos))
        asyncio.run(Aggregator(loaded, settings).run_once())
    slots = [s for s in indexed(loaded, "v").values() if s["idnps"] == association]
    manager = signed_in(
        loaded, person(loaded, "sas-sos-manager", Grant(Role.structure_manager, structures=frozenset({association})))
    )
    with TestClient(create_app(api_settings(settings), loaded)) as client:
        r = client.get(f"/v1/sos/{association}", headers=manager)
        assert r.status_code == 200, r.text
        seen = r.json()
        assert seen["association"]["name"] == BOURG.name
        assert {v["id"] for v in seen["vendors"]} == {"v", "w"}
        places = {p["place"]["place_id"]: p for p in seen["association"]["places"]}
        assert set(places) == {p.place_id for p in BOURG.places}
        assert sum(p["free_slots"] for p in places.values()) == len(slots) > 0
        assert places["lfc-bourg-1"]["place"]["phone"] == "+33474000001"

        choice = {"vendor": "w", "er_redirection": True}
        r = client.put(f"/v1/sos/{association}/participation", json=choice, headers=manager)
        assert r.status_code == 200, r.text
        assert r.json()["vendors"] == ["w"] and r.json()["via"] == "sos" and r.json()["er_redirection"] is True
        r = client.put(f"/v1/sos/{association}/participation", json={"vendor": "sas"}, headers=manager)
        assert r.status_code == 422 and "SAS calendar" in r.json()["detail"]
        r = client.put(f"/v1/sos/{association}/participation", json={"vendor": "nobody"}, headers=manager)
        assert r.status_code == 422 and r.json()["type"].endswith("unknown-vendor")

        assert client.get(f"/v1/sos/{other}", headers=manager).status_code == 403
        r = client.put(f"/v1/sos/{other}/participation", json={"vendor": "v"}, headers=manager)
        assert r.status_code == 403
        assert client.get(f"/v1/sos/{other}", headers=headers(Role.regulator)).status_code == 404
    saved = get_participation(loaded, association)
    assert saved is not None and saved.vendors == ["w"] and saved.er_redirection
    (entry,) = [e for e in audit_entries(loaded, ADMIN, association) if e["action"] == "participation"]
    assert entry["actor"] == "sas-sos-manager" and entry["detail"]["before"]["vendors"] == ["v"]
