"""CPTS as structures of the directory, on both backends: members named by the participation list (a `cpts` column,
row-checked) and by the API's edits, members and vendors learnt from the CPTS flow's answers of a real sandbox, the
name and phone of the FINESS establishment when the directory has it, the territory where the members practise; the
routes and the command that show them, and the cards whose vendor left the CPTS's phone out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi.testclient import TestClient
from support import CHEPY, KRISTIAN, api_settings, assert_problem, headers, person, signed_in
from test_cli import run
from test_cpts import CPTS, MEMBER, _pull

from access.roles import Grant, Role
from aggregation.scheduler import Aggregator
from api.app import create_app
from core.records import Address, Flow, Participation, ParticipationVia, Structure, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxConfig, SandboxCpts
from editor_sandbox.server import SandboxServer
from indexer.backend import Backend
from indexer.documents import structure_document
from indexer.registry import save_participation, save_vendor
from rpps_import.cpts import cpts_idnst, get_cpts, list_cpts
from rpps_import.pipeline import load_participations

BUGEY = "1010006040"
LIST = f"""idnps,vendors,via,cpts,siret
{CHEPY.idnps},alpha,cpts,010006040,
{KRISTIAN.idnps},alpha,practice,{BUGEY},
0019200575,alpha,,CPTS du coin,
,alpha,sos,{BUGEY},31234567800017
"""
# The agency's example CPTS (Organization ExampleOrgaCPTS1), as a FINESS establishment of category 604.
AXE_MAJEUR = Structure(
    finess="950047225",
    name="CPTS AXE MAJEUR",
    address=Address(street="rue de la Gare", postcode="95000", insee_code="95127", commune="CERGY"),
    department_code="95",
    phone="01 02 03 04 05",
    category_code="604",
)


def _vendors(backend: Backend) -> None:
    save_vendor(backend, Vendor(vendor_id="alpha", name="alpha", base_url="http://alpha.test/fhir"))


def test_the_participation_list_names_each_cpts_members(loaded: Backend, settings: Settings, tmp_path: Path) -> None:
    _vendors(loaded)
    path = tmp_path / "participations.csv"
    path.write_text(LIST, encoding="utf-8")
    summary = load_participations(path, loaded, settings)
    assert summary.lines_accepted == 2
    assert summary.rejected_by_reason == {"invalid CPTS": 1, "association in a CPTS": 1}
    bugey = get_cpts(loaded, BUGEY)
    assert bugey is not None and bugey.members == sorted([CHEPY.idnps, KRISTIAN.idnps])
    assert bugey.territory == ["01"] and bugey.seen_members == [] and bugey.vendors == []
    assert [c.idnst for c in list_cpts(loaded, department="01")] == [BUGEY]
    assert [c.idnst for c in list_cpts(loaded, member=KRISTIAN.idnps)] == [BUGEY]
    assert list_cpts(loaded, department="95") == []

    path.write_text(f"idnps,vendors,cpts\n{CHEPY.idnps},alpha,\n{KRISTIAN.idnps},alpha,{BUGEY}\n", encoding="utf-8")
    load_participations(path, loaded, settings, force=True)  # a new list: CHEPY left the CPTS
    assert get_cpts(loaded, BUGEY).members == [KRISTIAN.idnps]

    with TestClient(create_app(api_settings(settings), loaded)) as c:
        body = {"idnps": CHEPY.idnps, "vendors": ["alpha"], "via": "cpts", "cpts": "010006040"}
        r = c.put(f"/v1/participations/{CHEPY.idnps}", json=body, headers=headers(Role.maintainer))
        assert r.status_code == 200 and r.json()["cpts"] == BUGEY
        assert get_cpts(loaded, BUGEY).members == sorted([CHEPY.idnps, KRISTIAN.idnps])
        r = c.put(f"/v1/participations/{CHEPY.idnps}", json=body | {"cpts": "x"}, headers=headers(Role.maintainer))
        assert r.status_code == 422 and "cpts" in r.json()["detail"]
        r = c.put(f"/v1/participations/{CHEPY.idnps}", json=body | {"cpts": None}, headers=headers(Role.maintainer))
        assert r.status_code == 200 and get_cpts(loaded, BUGEY).members == [KRISTIAN.idnps]


def test_a_vendors_answers_teach_the_directory_its_cpts(loaded: Backend, settings: Settings) -> None:
    _pull(loaded, settings, [Flow.individual, Flow.cpts])
    bugey = get_cpts(loaded, CPTS.idnst)
    assert bugey is not None and bugey.name == CPTS.name and bugey.phone == CPTS.phone
    assert bugey.seen_members == [MEMBER.idnps] and bugey.members == [] and bugey.vendors == ["v"]
    assert bugey.territory == ["01"] and bugey.seen_at is not None
    _pull(loaded, settings, [Flow.individual, Flow.cpts])  # nothing new: nothing written (a write moves seen_at)
    assert get_cpts(loaded, CPTS.idnst) == bugey

    with TestClient(create_app(api_settings(settings), loaded)) as c:
        r = c.get(f"/v1/cpts/{CPTS.idnst}", headers=headers(Role.regulator))
        assert r.status_code == 200 and r.json()["seen_members"] == [MEMBER.idnps]
        listed = c.get("/v1/cpts", params={"member": MEMBER.idnps}, headers=headers(Role.maintainer)).json()
        assert [x["idnst"] for x in listed["cpts"]] == [CPTS.idnst]
        assert c.get("/v1/cpts", params={"department": "95"}, headers=headers(Role.maintainer)).json()["cpts"] == []
        assert c.get("/v1/cpts/1999999999", headers=headers(Role.regulator)).status_code == 404
        assert c.get("/v1/cpts/abc", headers=headers(Role.regulator)).status_code == 422
        assert c.get(f"/v1/cpts/{CPTS.idnst}").status_code == 401


def test_a_cpts_the_finess_file_has_is_named_by_it_and_its_phone_completes_the_cards(
    loaded: Backend, settings: Settings
) -> None:
    live = loaded.live_index("structures")
    loaded.write(live, [structure_document(AXE_MAJEUR)])
    loaded.refresh(live)
    axe = SandboxCpts(idnst=cpts_idnst(AXE_MAJEUR.finess), name="Axe Majeur", phone=None)  # the vendor gives no phone
    member = CHEPY.model_copy(update={"cpts": axe})
    config = SandboxConfig(vendor_id="v", seed=2, practitioners=[member], churn_rate=0)
    with SandboxServer(config) as server:
        save_vendor(loaded, Vendor(vendor_id="v", name="V", base_url=server.fhir_base, flows=list(Flow)))
        save_participation(loaded, Participation(idnps=CHEPY.idnps, vendors=["v"], via=ParticipationVia.cpts))
        (report,) = asyncio.run(Aggregator(loaded, settings).run_once())
    assert report.cpts_seen == 1 and report.slots_by_flow["cpts"] > 0
    known = get_cpts(loaded, axe.idnst)
    assert known is not None and known.finess == AXE_MAJEUR.finess and known.name == AXE_MAJEUR.name
    assert known.phone == AXE_MAJEUR.phone and known.territory == ["01", "95"]

    with TestClient(create_app(api_settings(settings), loaded)) as client:
        params = {"lat": 45.7597, "lon": 5.6866, "profession": "94", "via": "cpts", "verify": "false"}
        (card,) = client.get("/v1/search", params=params, headers=headers(Role.regulator)).json()["cards"]
    assert card["cpts"] == [{"idnst": axe.idnst, "name": "Axe Majeur", "phone": AXE_MAJEUR.phone}]


def test_dispo_show_cpts(tmp_path: Path, monkeypatch) -> None:
    from indexer.factory import make_backend
    from rpps_import.cpts import record_members

    monkeypatch.setenv("DISPO_DATA_DIR", str(tmp_path / "dispo"))
    monkeypatch.setenv("DISPO_BACKEND", "sqlite")
    backend = make_backend(Settings())
    record_members(backend, {BUGEY: {CHEPY.idnps}})
    backend.close()
    r = run("show", "cpts", BUGEY)
    assert r.exit_code == 0 and f"IDNST {BUGEY}" in r.output and "named by the participation list: 1" in r.output
    assert run("show", "cpts", "1999999999").exit_code == 1


def test_a_structure_manager_keeps_their_cpts_members_and_no_other(loaded: Backend, settings: Settings) -> None:
    save_participation(loaded, Participation(idnps=CHEPY.idnps, vendors=["sas"]))
    client = TestClient(create_app(api_settings(settings), loaded))
    mine, theirs = "1010006040", "1010006041"
    manager = signed_in(
        loaded, person(loaded, "sas-cpts-manager", Grant(Role.structure_manager, structures=frozenset({mine})))
    )
    added = client.put(f"/v1/cpts/{mine}/members/{CHEPY.idnps}", headers=manager)
    assert added.status_code == 200, added.text
    assert added.json()["cpts"] == mine
    assert CHEPY.idnps in client.get(f"/v1/cpts/{mine}", headers=manager).json()["members"]
    assert_problem(client.get(f"/v1/cpts/{theirs}", headers=manager), 403)
    assert_problem(client.put(f"/v1/cpts/{theirs}/members/{CHEPY.idnps}", headers=manager), 403)
    assert_problem(client.put(f"/v1/cpts/{mine}/members/{KRISTIAN.idnps}", headers=manager), 404)  # not taking part
    assert client.delete(f"/v1/cpts/{mine}/members/{CHEPY.idnps}", headers=manager).json()["cpts"] is None
    assert_problem(client.delete(f"/v1/cpts/{mine}/members/{CHEPY.idnps}", headers=manager), 404)
    changes = client.get("/v1/audit", params={"account": CHEPY.idnps}, headers=headers(Role.maintainer)).json()
    assert [e["action"] for e in changes if e["actor"] == "sas-cpts-manager"] == ["cpts-member", "cpts-member"]
