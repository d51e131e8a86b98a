"""Orientations without a slot: a regulator sends a patient to a practitioner who accepts them (surnuméraire,
redirection from emergencies) or to an SOS Médecins place, records the outcome; the orientation shows in their
follow-up, the practitioner's space, a territory's follow-up and the analysts' tables (per territory, kind, week)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from support import CHEPY, KRISTIAN, REG, api_settings, assert_problem, headers, person, signed_in

from access.roles import Grant, Role
from aggregation.availability import SiteMapper
from analytics.tables import Period, orientations
from api.app import create_app
from core.records import Participation, iso_week
from core.settings import Settings
from indexer.backend import Backend
from indexer.registry import save_participation


def site(backend: Backend, idnps: str) -> str:
    return next(s["site_id"] for s in SiteMapper(backend).sites(idnps) if s.get("location"))


def test_orientations_are_recorded_followed_and_counted(loaded: Backend, settings: Settings) -> None:
    save_participation(loaded, Participation(idnps=CHEPY.idnps, vendors=["sas"], extra_patients=True))
    save_participation(loaded, Participation(idnps=KRISTIAN.idnps, vendors=["sas"]))
    client = TestClient(create_app(api_settings(settings), loaded))
    sent = {"idnps": CHEPY.idnps, "site_id": site(loaded, CHEPY.idnps), "kind": "extra_patients"}
    first = client.post("/v1/orientations", json=sent, headers=REG)
    assert first.status_code == 201, first.text
    assert (first.json()["outcome"], first.json()["department_code"]) == ("pending", "01")
    second = client.post("/v1/orientations", json=sent | {"outcome": "refused"}, headers=REG).json()

    # Only where the practitioner takes such patients, and at their own site.
    refused = client.post("/v1/orientations", json=sent | {"kind": "er_redirection"}, headers=REG)
    assert "emergencies" in assert_problem(refused, 422)["detail"]
    other = {"idnps": KRISTIAN.idnps, "site_id": site(loaded, KRISTIAN.idnps), "kind": "extra_patients"}
    assert_problem(client.post("/v1/orientations", json=other, headers=REG), 422)
    elsewhere = sent | {"site_id": site(loaded, KRISTIAN.idnps)}
    assert_problem(client.post("/v1/orientations", json=elsewhere, headers=REG), 404)

    # The outcome, by the regulator who recorded it only.
    oid = first.json()["orientation_id"]
    other_regulator = signed_in(loaded, person(loaded, "sas-reg2", Grant(Role.regulator, frozenset({"01"}))))
    patched = client.patch(f"/v1/orientations/{oid}", json={"outcome": "accepted"}, headers=other_regulator)
    assert_problem(patched, 404)
    done = client.patch(f"/v1/orientations/{oid}", json={"outcome": "accepted"}, headers=REG).json()
    assert done["outcome"] == "accepted" and done["outcome_at"] is not None

    mine = client.get("/v1/orientations", headers=REG).json()
    assert {o["orientation_id"]: o["outcome"] for o in mine} == {oid: "accepted", second["orientation_id"]: "refused"}
    assert client.get("/v1/orientations", headers=other_regulator).json() == []
    referent01 = signed_in(loaded, person(loaded, "sas-ref01", Grant(Role.territorial_referent, frozenset({"01"}))))
    referent69 = signed_in(loaded, person(loaded, "sas-ref69", Grant(Role.territorial_referent, frozenset({"69"}))))
    assert len(client.get("/v1/orientations", headers=referent01).json()) == 2
    assert client.get("/v1/orientations", headers=referent69).json() == []

    doctor = signed_in(loaded, person(loaded, CHEPY.idnps, Grant(Role.effecteur), idnps=CHEPY.idnps))
    space = client.get(f"/v1/space/{CHEPY.idnps}", headers=doctor).json()
    assert sorted(o["outcome"] for o in space["orientations"]) == ["accepted", "refused"]
    assert sum(space["figures"]["orientations_by_week"].values()) == 2

    (row,) = orientations(loaded, Period.last(1))
    assert (row.territory, row.department, row.kind, row.orientations, row.accepted) == (
        "SAS-01",
        "01",
        "extra_patients",
        2,
        1,
    )
    assert row.week == iso_week(datetime.now(UTC))
    assert (
        orientations(loaded, Period(datetime.now(UTC) - timedelta(days=30), datetime.now(UTC) - timedelta(days=20)))
        == []
    )
    table = client.get("/v1/coverage/orientations", headers=headers(Role.analyst)).json()
    assert [(r["kind"], r["orientations"], r["accepted"]) for r in table] == [("extra_patients", 2, 1)]
    csv = client.get("/v1/coverage/export/orientations.csv", headers=headers(Role.analyst))
    assert csv.status_code == 200 and "extra_patients" in csv.text
