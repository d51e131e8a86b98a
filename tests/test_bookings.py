"""Booking on the patient's behalf and appointments reported back, on both backends, over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ADMIN, CHEPY, KRISTIAN, person, signed_in

from access import accounts
from access.roles import Grant
from aggregation.scheduler import Aggregator
from api.app import create_app
from api.auth import Role, new_token
from booking.accounts import ensure_account
from booking.appointments import AppointmentRejected, parse_appointment
from booking.bookings import with_origin_sas
from core.records import Participation, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxConfig
from editor_sandbox.server import SandboxServer, ThreadedServer
from indexer.backend import Backend
from indexer.lifecycle import ensure_live, iterate_all
from indexer.registry import get_vendor, save_participation, save_vendor

EXAMPLES = Path(__file__).parent / "fixtures" / "fhir"
REGULATOR = "reg-6f1c0a52"  # the regulator's platform identifier: the label of their token


@dataclass
class Loop:
    backend: Backend
    api: ThreadedServer
    sandbox: SandboxServer
    tokens: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def fhir(self, method: str, who: str, body: object, **params) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.request(
            method,
            f"{self.api.url}/fhir/Appointment",
            content=content,
            params=params,
            headers={**self.headers(who), "Content-Type": "application/fhir+json"},
        )


@pytest.fixture
def loop(loaded: Backend, settings: Settings) -> Iterator[Loop]:
    made = {
        "regulator": new_token(Role.regulator, REGULATOR),
        "analyst": new_token(Role.analyst, "ars"),
        "maintainer": new_token(Role.maintainer, "ops"),
        "v": new_token(Role.vendor, "v"),
        "w": new_token(Role.vendor, "w"),
    }
    configured = settings.model_copy(update={"tokens": ",".join(entry for _, entry in made.values())})
    tokens = {k: token for k, (token, _) in made.items()}
    with ThreadedServer(create_app(configured, loaded), name="api") as api:
        config = SandboxConfig(
            vendor_id="v",
            seed=9,
            practitioners=[CHEPY, KRISTIAN],
            churn_rate=0.0,
            platform_url=api.url + "/fhir",
            platform_token=tokens["v"],
        )
        with SandboxServer(config) as sandbox:
            save_vendor(loaded, Vendor(vendor_id="v", name="Agenda V", base_url=sandbox.fhir_base))
            # Another vendor with its own agendas, reached at the same sandbox for regulator accounts.
            save_vendor(loaded, Vendor(vendor_id="w", name="Agenda W", base_url=sandbox.fhir_base))
            for p in (CHEPY, KRISTIAN):
                save_participation(loaded, Participation(idnps=p.idnps, vendors=["v"]))
            asyncio.run(Aggregator(loaded, configured).run_once())
            yield Loop(loaded, api, sandbox, tokens)


@pytest.fixture
def reporting(loop: Loop) -> Loop:
    """The loop once REGULATOR has an account at vendor v, as their first booking there gives them: v may report
    appointments they booked."""
    give_account(loop, REGULATOR, "v")
    return loop


def give_account(loop: Loop, regulator: str, vendor_id: str) -> None:
    """Push the regulator's account to the vendor, as a booking start does."""
    vendor = get_vendor(loop.backend, vendor_id)
    assert vendor is not None
    assert asyncio.run(ensure_account(loop.backend, vendor, regulator))["state"] == "created"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def appointment(idnps: str = CHEPY.idnps, **changes) -> dict:
    start = datetime.now(UTC) + timedelta(hours=5)
    body = {
        "resourceType": "Appointment",
        "extension": [
            {
                "url": "http://interopsante.org/fhir/StructureDefinition/FrAppointmentOperator",
                "valueReference": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": REGULATOR}},
            }
        ],
        "identifier": [{"system": "urn:test", "value": "a-1"}],
        "status": "booked",
        "start": start.isoformat(timespec="seconds"),
        "end": (start + timedelta(minutes=20)).isoformat(timespec="seconds"),
        "participant": [
            {"actor": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": idnps}}, "status": "accepted"}
        ],
    }
    body.update(changes)
    return body


def test_origin_sas_is_merged_into_the_booking_url() -> None:
    assert with_origin_sas("https://v.test/rdv/42?lang=fr&origin=web#top") == (
        "https://v.test/rdv/42?lang=fr&origin=sas#top"
    )
    assert with_origin_sas("https://v.test/rdv/42") == "https://v.test/rdv/42?origin=sas"


def test_the_agency_examples_are_accepted(loop: Loop) -> None:
    # The examples name practitioner 810100050075: put them in the directory first.
    index = ensure_live(loop.backend, "practice_sites")
    site = loop.backend.get("practice_sites", "0019402726:F010000032:S")
    loop.backend.write(
        index,
        [{**site, "site_id": "810100050075:x:L", "practitioner": {**site["practitioner"], "idnps": "810100050075"}}],
    )
    loop.backend.refresh(index)
    # Vendor v serves them, and knows the regulator the examples name.
    save_participation(loop.backend, Participation(idnps="810100050075", vendors=["v"]))
    give_account(loop, "3456780581/11242343", "v")
    first = loop.fhir("POST", "v", example("Appointment-1.json"))
    assert first.status_code == 201, first.text
    assert first.headers["Location"].startswith("/fhir/Appointment/v-")
    # The second example is the same appointment (same identifier), cancelled: an update of the first.
    second = loop.fhir("POST", "v", example("Appointment-2.json"))
    assert second.status_code == 200 and second.json()["status"] == "cancelled"
    stored = loop.backend.get("appointments", "v:b6e39355-8a61-4556-b340-36f7b95fec6a")
    assert [h["status"] for h in stored["history"]] == ["booked", "cancelled"]
    assert stored["operator"] == "3456780581/11242343"
    read = httpx.get(f"{loop.api.url}{first.headers['Location']}", headers=loop.headers("v"))
    assert read.status_code == 200 and read.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "status", "diagnostic"),
    [
        (appointment(idnps="810000000099"), 422, "not in the directory"),
        (appointment(extension=[]), 422, "FrAppointmentOperator"),
        (appointment(status="pending"), 422, "status"),
        (appointment(end="2020-01-01T00:00:00+01:00"), 422, "end must be after start"),
        (appointment(identifier=[]), 422, "identifier"),
        (b"{not json", 400, "not JSON"),
        ({"resourceType": "Patient"}, 400, "not a FHIR Appointment"),
    ],
)
def test_rejections_are_operation_outcomes(reporting: Loop, body: object, status: int, diagnostic: str) -> None:
    r = reporting.fhir("POST", "v", body)
    assert r.status_code == status
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome" and diagnostic in outcome["issue"][0]["diagnostics"]


def test_only_vendors_write_and_only_their_own(reporting: Loop) -> None:
    loop = reporting
    assert loop.fhir("POST", "regulator", appointment()).status_code == 403
    assert loop.fhir("POST", "v", appointment()).status_code == 201
    # Vendor w serves CHEPY too and knows the regulator: the appointment is still v's alone.
    save_participation(loop.backend, Participation(idnps=CHEPY.idnps, vendors=["v", "w"]))
    give_account(loop, REGULATOR, "w")
    r = loop.fhir("PUT", "w", appointment(status="cancelled"), identifier="urn:test|a-1")
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"


def test_duplicates_are_stored_once_and_older_updates_never_win(reporting: Loop) -> None:
    loop = reporting
    assert loop.fhir("POST", "v", appointment(meta={"versionId": "1"})).status_code == 201
    assert loop.fhir("POST", "v", appointment(meta={"versionId": "1"})).status_code == 200
    r = loop.fhir("PUT", "v", appointment(status="cancelled", meta={"versionId": "3"}), identifier="urn:test|a-1")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    late = loop.fhir("PUT", "v", appointment(status="fulfilled", meta={"versionId": "2"}), identifier="urn:test|a-1")
    assert late.status_code == 200 and late.json()["status"] == "cancelled"
    stored = loop.backend.get("appointments", "v:a-1")
    assert [h["status"] for h in stored["history"]] == ["booked", "cancelled"]
    assert loop.backend.count("appointments") == 1


def test_a_vendor_reports_only_for_practitioners_taking_part_through_it(reporting: Loop) -> None:
    loop = reporting
    elsewhere = appointment(idnps=KRISTIAN.idnps)  # in the directory, taking part through w only
    save_participation(loop.backend, Participation(idnps=KRISTIAN.idnps, vendors=["w"]))
    r = loop.fhir("POST", "v", elsewhere)
    assert r.status_code == 422
    diagnostics = r.json()["issue"][0]["diagnostics"]
    assert diagnostics.endswith(f": practitioner {KRISTIAN.idnps} takes no part in the SAS through vendor v")
    save_participation(loop.backend, Participation(idnps=KRISTIAN.idnps, vendors=["v"], active=False))
    assert loop.fhir("POST", "v", elsewhere).status_code == 422
    save_participation(loop.backend, Participation(idnps=KRISTIAN.idnps, vendors=["v"]))
    assert loop.fhir("POST", "v", elsewhere).status_code == 201
    assert loop.backend.count("appointments") == 1


def test_a_vendor_reports_only_for_regulators_it_has_an_account_for(reporting: Loop) -> None:
    loop = reporting
    stranger = appointment()
    stranger["extension"][0]["valueReference"]["identifier"]["value"] = "reg-never-booked-here"
    r = loop.fhir("POST", "v", stranger)
    assert r.status_code == 422
    assert r.json()["issue"][0]["diagnostics"].endswith(": regulator reg-never-booked-here has no account at vendor v")
    give_account(loop, "reg-never-booked-here", "w")  # an account at another vendor is no account at v
    assert loop.fhir("POST", "v", stranger).status_code == 422
    assert loop.backend.live_index("appointments") is None or loop.backend.count("appointments") == 0


def test_an_accepted_appointment_keeps_its_later_statuses_after_the_practitioner_leaves(reporting: Loop) -> None:
    loop = reporting
    assert loop.fhir("POST", "v", appointment(meta={"versionId": "1"})).status_code == 201
    save_participation(loop.backend, Participation(idnps=CHEPY.idnps, vendors=["v"], active=False))
    done = loop.fhir("PUT", "v", appointment(status="fulfilled", meta={"versionId": "2"}), identifier="urn:test|a-1")
    assert done.status_code == 200 and done.json()["status"] == "fulfilled"
    # A new appointment for them is refused, and so is moving the accepted one to a practitioner v does not serve.
    assert loop.fhir("POST", "v", appointment(identifier=[{"value": "a-2"}])).status_code == 422
    save_participation(loop.backend, Participation(idnps=KRISTIAN.idnps, vendors=["w"]))
    moved = appointment(idnps=KRISTIAN.idnps, meta={"versionId": "3"})
    assert loop.fhir("PUT", "v", moved, identifier="urn:test|a-1").status_code == 422


LONG_ID = "x" * 129
LONG_URI = "urn:" + "x" * 509  # 513 characters


def with_operator(value: str) -> dict:
    body = appointment()
    body["extension"][0]["valueReference"]["identifier"]["value"] = value
    return body


@pytest.mark.parametrize(
    ("body", "diagnostic"),
    [
        (appointment(identifier=[{"system": "urn:test", "value": LONG_ID}]), "identifier.value is longer than 128"),
        (appointment(identifier=[{"system": LONG_URI, "value": "a-1"}]), "identifier.system is longer than 512"),
        (appointment(idnps=LONG_ID), "participant.actor.identifier.value is longer than 128"),
        (with_operator(LONG_ID), "FrAppointmentOperator identifier is longer than 128"),
        (appointment(meta={"versionId": LONG_ID}), "meta.versionId is longer than 128"),
        (appointment(identifier=[{"system": "urn:test", "value": {"nested": "object"}}]), "must be a string"),
    ],
)
def test_what_a_vendor_makes_the_platform_store_is_bounded(reporting: Loop, body: dict, diagnostic: str) -> None:
    r = reporting.fhir("POST", "v", body)
    assert r.status_code == 422 and diagnostic in r.json()["issue"][0]["diagnostics"]
    assert reporting.backend.live_index("appointments") is None or reporting.backend.count("appointments") == 0


def test_identifiers_and_versions_are_stored_up_to_their_bounds_and_not_beyond(reporting: Loop) -> None:
    system, value, version = "urn:" + "x" * 508, "y" * 128, "9" * 128
    body = appointment(identifier=[{"system": system, "value": value}], meta={"versionId": version})
    r = reporting.fhir("POST", "v", body)
    assert r.status_code == 201, r.text
    stored = reporting.backend.get("appointments", f"v:{value}")
    assert (stored["identifier_system"], stored["version"]) == (system, version)
    for longer in (
        appointment(identifier=[{"system": system + "x", "value": value}]),
        appointment(identifier=[{"system": system, "value": value + "y"}]),
        appointment(identifier=[{"system": system, "value": value}], meta={"versionId": version + "9"}),
    ):
        assert reporting.fhir("POST", "v", longer).status_code == 422
    assert reporting.backend.count("appointments") == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
PATHS = [
    ("identifier",),
    ("identifier", 0),
    ("identifier", 0, "value"),
    ("identifier", 0, "system"),
    ("status",),
    ("start",),
    ("end",),
    ("meta",),
    ("meta", "versionId"),
    ("meta", "lastUpdated"),
    ("participant",),
    ("participant", 0),
    ("participant", 0, "actor"),
    ("participant", 0, "actor", "identifier"),
    ("participant", 0, "actor", "identifier", "value"),
    ("extension",),
    ("extension", 0),
    ("extension", 0, "valueReference"),
    ("extension", 0, "valueReference", "identifier"),
    ("extension", 0, "valueReference", "identifier", "value"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(PATHS), json_values)
def test_whatever_a_field_holds_the_vendor_gets_an_answer_not_an_error(
    reporting: Loop, path: tuple[str | int, ...], value: object
) -> None:
    body = appointment(meta={"versionId": "1", "lastUpdated": "2026-01-01T00:00:00+01:00"})
    holder: Any = body
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    try:
        parse_appointment(body, "v", reporting.backend, datetime.now(UTC))
    except AppointmentRejected as exc:
        assert exc.status == 422


def test_the_full_loop(loop: Loop) -> None:
    api, reg = loop.api.url, loop.headers("regulator")
    # The sample directory has no general practitioner: search the profession of the sandbox's practitioners.
    found = httpx.get(
        f"{api}/v1/search",
        params={"lat": 45.76, "lon": 5.69, "profession": "94", "radius_km": 80},
        headers=reg,
        timeout=10,
    ).json()
    card = found["cards"][0]
    slot = next(s for day in ("today", "tomorrow", "day_after") for s in card["slots"][day] if s["booking_url"])
    started = httpx.post(f"{api}/v1/bookings", json={"slot_id": slot["slot_id"]}, headers=reg, timeout=10)
    assert started.status_code == 201, started.text
    url = started.json()["booking_url"]
    assert parse_qs(urlsplit(url).query)["origin"] == ["sas"] and started.json()["verified"] is True
    # The regulator's account was pushed to the vendor before its first booking there (FrPractitionerRegul).
    accounts = httpx.get(f"{api}/v1/regulator-accounts", headers=loop.headers("maintainer")).json()
    assert [(a["regulator"], a["vendor"], a["state"]) for a in accounts] == [(REGULATOR, "v", "created")]
    assert REGULATOR in loop.sandbox.app.state.accounts
    pushed = httpx.post(f"{api}/v1/regulator-accounts/v", headers=reg).json()
    assert pushed["state"] == "updated" and pushed["attempts"] == 2
    # The regulator books in the vendor's page, which reports the appointment back to the platform.
    page = httpx.get(url)
    assert page.status_code == 200 and "via le SAS" in page.text
    booked = httpx.post(url.split("?")[0] + "?origin=sas", data={"operator": REGULATOR})
    assert booked.status_code == 201 and booked.json()["reported"] == 201
    assert loop.backend.get("slots", slot["slot_id"]) is None  # gone from search at once
    again = httpx.get(
        f"{api}/v1/search",
        params={"lat": 45.76, "lon": 5.69, "profession": "94", "radius_km": 80, "verify": "false"},
        headers=reg,
    ).json()
    shown = {s["slot_id"] for c in again["cards"] for day in c["slots"].values() for s in day}
    assert slot["slot_id"] not in shown
    mine = httpx.get(f"{api}/v1/appointments", headers=reg).json()
    assert [(a["idnps"], a["status"]) for a in mine] == [(card["practitioner"]["idnps"], "booked")]
    # Later the patient cancels at the vendor: the platform is told; the slot does not come back by itself.
    identifier = mine[0]["identifier_value"]
    assert (
        httpx.post(f"{loop.sandbox.url}/_appointments/{identifier}/status", json={"status": "cancelled"}).json()[
            "reported"
        ]
        == 200
    )
    mine = httpx.get(f"{api}/v1/appointments", headers=reg).json()
    assert mine[0]["status"] == "cancelled" and [h["status"] for h in mine[0]["history"]] == ["booked", "cancelled"]
    assert loop.backend.get("slots", slot["slot_id"]) is None
    counts = httpx.get(f"{api}/v1/appointments/counts", headers=loop.headers("analyst")).json()
    assert counts["by_vendor"] == {"v": {"cancelled": 1}} and counts["by_department"] == {"01": {"cancelled": 1}}
    assert httpx.get(f"{api}/v1/appointments", params={"status": "booked"}, headers=reg).json() == []


def test_a_slot_taken_elsewhere_is_a_409_with_the_next_slots(loop: Loop) -> None:
    api, reg = loop.api.url, loop.headers("regulator")
    docs = sorted(iterate_all(loop.backend, "slots", {"idnps": [CHEPY.idnps]}), key=lambda d: d["start"])
    taken = next(d for d in docs if d.get("booking_url"))
    httpx.post(f"{loop.sandbox.url}/booking/{taken['resource_id']}")  # booked by someone else, not via the SAS
    r = httpx.post(f"{api}/v1/bookings", json={"slot_id": taken["slot_id"]}, headers=reg, timeout=10)
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["next_slots"] and all(s["slot_id"] != taken["slot_id"] for s in body["next_slots"])
    assert loop.backend.get("slots", taken["slot_id"]) is None
    assert httpx.post(f"{api}/v1/bookings", json={"slot_id": "nope"}, headers=reg).status_code == 404


def test_a_regulators_account_at_a_vendor_is_their_dispo_account(loop: Loop) -> None:
    """INT_R02 from the people's accounts: the id and name a regulator signed in with, pushed again when the name
    changes in Dispo."""
    api = loop.api.url
    reg = signed_in(
        loop.backend, person(loop.backend, "sas-ricart", Grant(Role.regulator, frozenset({"01"})), name="P. RICART")
    )
    assert httpx.post(f"{api}/v1/regulator-accounts/v", headers=reg).json()["state"] == "created"
    pushed = loop.sandbox.app.state.accounts["sas-ricart"]
    assert pushed["identifier"][0]["value"] == "sas-ricart" and pushed["name"] == [{"text": "P. RICART"}]

    accounts.save_account(loop.backend, ADMIN, "sas-ricart", None, None, "Pauline RICART")
    found = httpx.get(
        f"{api}/v1/search", params={"lat": 45.76, "lon": 5.69, "profession": "94", "radius_km": 80}, headers=reg
    ).json()
    slot = next(s for c in found["cards"] for day in c["slots"].values() for s in day if s["booking_url"])
    assert httpx.post(f"{api}/v1/bookings", json={"slot_id": slot["slot_id"]}, headers=reg).status_code == 201
    assert loop.sandbox.app.state.accounts["sas-ricart"]["name"] == [{"text": "Pauline RICART"}]
