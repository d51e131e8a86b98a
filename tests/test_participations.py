"""The participation registry on both backends: CSV load with a row-level report, API edits."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import api_settings, headers

from api.app import create_app
from api.auth import Role
from core.records import ParticipationVia, Vendor
from core.report import FileRejected
from core.settings import Settings
from indexer.backend import Backend
from indexer.lifecycle import ImportRefused
from indexer.registry import get_participation, participants, save_vendor
from rpps_import.pipeline import load_participations

CSV = """idnps,vendors,via,extra_patients,active
810106476764,alpha,practice,oui,true
0019402726,alpha|beta,cpts,,
0019401140,beta,msp,non,false
81010647676,alpha,,,
0019200575,gamma,,,
0019600048,alpha,hospital,,
0019602432,alpha,,peut-être,
0019402726,alpha,,,
0018602292,,,,
"""


@pytest.fixture
def vendors(backend: Backend) -> Backend:
    for vendor_id in ("alpha", "beta"):
        save_vendor(backend, Vendor(vendor_id=vendor_id, name=vendor_id, base_url=f"http://{vendor_id}.test/fhir"))
    return backend


def test_csv_load_reports_every_row(vendors: Backend, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "participations.csv"
    path.write_text(CSV, encoding="utf-8")
    summary = load_participations(path, vendors, settings)
    assert summary.lines_read == 9 and summary.lines_accepted == 3
    assert summary.rejected_by_reason == {
        "invalid IDNPS": 1,
        "unknown vendor": 1,
        "unknown participation mode": 1,
        "invalid yes/no value": 1,
        "duplicate participant": 1,
        "no vendor": 1,
    }
    problems = Path(summary.report_file or "").read_text(encoding="utf-8")
    assert "6,rejected,unknown vendor,gamma (declare it with `dispo vendors add`)" in problems
    p = get_participation(vendors, "0019402726")
    assert p is not None and p.vendors == ["alpha", "beta"] and p.via == ParticipationVia.cpts and p.active
    assert get_participation(vendors, "810106476764").extra_patients is True
    assert [x.idnps for x in participants(vendors, "beta")] == ["0019402726"]  # the other is inactive
    assert len(participants(vendors, "beta", active_only=False)) == 2


ASSOCIATIONS = """idnps,vendors,via,extra_patients,active,siret
810106476764,alpha,practice,,,
,alpha,sos,,,34173748400020
,beta,,,,39208046630010
,alpha,,,,3920804663001
,alpha,cpts,,,39208046630028
0019402726,alpha,,,,39208046630036
,alpha,sos,,,34173748400020
,alpha,,,,
"""


def test_sos_associations_take_part_by_siret(vendors: Backend, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "participations.csv"
    path.write_text(ASSOCIATIONS, encoding="utf-8")
    summary = load_participations(path, vendors, settings)
    assert summary.lines_read == 8 and summary.lines_accepted == 3
    assert summary.rejected_by_reason == {
        "invalid SIRET": 1,
        "association not via SOS": 1,
        "IDNPS and SIRET": 1,
        "duplicate participant": 1,
        "invalid IDNPS": 1,
    }
    rennes = get_participation(vendors, "334173748400020")
    assert rennes is not None and rennes.via == ParticipationVia.sos and rennes.vendors == ["alpha"]
    lorient = get_participation(vendors, "339208046630010")
    assert lorient is not None and lorient.via == ParticipationVia.sos, "an association row is SOS by default"


def test_bad_files_and_big_drops_keep_the_registry(vendors: Backend, settings: Settings, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(CSV, encoding="utf-8")
    load_participations(good, vendors, settings)
    live = vendors.live_index("participations")
    bad = tmp_path / "bad.csv"
    bad.write_text("practitioner;editor\n1;2\n", encoding="utf-8")
    with pytest.raises(FileRejected, match="missing column"):
        load_participations(bad, vendors, settings)
    small = tmp_path / "small.csv"
    small.write_text("idnps,vendors\n810106476764,alpha\n", encoding="utf-8")
    with pytest.raises(ImportRefused):
        load_participations(small, vendors, settings)
    assert vendors.live_index("participations") == live


def test_api_edits_one_participation(vendors: Backend, settings: Settings) -> None:
    with TestClient(create_app(api_settings(settings), vendors)) as c:
        body = {"idnps": "810106476764", "vendors": ["alpha"], "via": "sos", "extra_patients": True}
        assert c.put("/v1/participations/810106476764", json=body, headers=headers(Role.analyst)).status_code == 403
        r = c.put("/v1/participations/810106476764", json=body, headers=headers(Role.maintainer))
        assert r.status_code == 200 and r.json()["via"] == "sos"
        r = c.put(
            "/v1/participations/810106476764", json={**body, "vendors": ["nope"]}, headers=headers(Role.maintainer)
        )
        assert r.status_code == 422 and "nope" in r.json()["detail"]
        assert c.get("/v1/participations/810106476764", headers=headers(Role.maintainer)).json()["active"] is True
        assert c.get("/v1/participations/000", headers=headers(Role.maintainer)).status_code == 404
        listed = c.get("/v1/participations", params={"vendor": "alpha"}, headers=headers(Role.maintainer)).json()
        assert [p["idnps"] for p in listed] == ["810106476764"]
