"""What a vendor's CapabilityStatement must declare for its flows, read from the agency's statements; the sandbox
declares it for the flows it serves; `dispo vendors check` reports each flow's missing parameter and checks the CPTS
includes and the SOS Médecins schedule search against a real sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from support import CHEPY
from test_cli import run
from test_cpts import MEMBER
from test_sos import BOURG

from aggregation.capability import agency_statement, capability_statement, check_capability, parameter_code
from aggregation.contract import association_idnst
from core.records import Flow
from editor_sandbox.agenda import SandboxConfig
from editor_sandbox.server import SandboxServer


@pytest.mark.parametrize("flow", list(Flow))
def test_the_agency_statement_of_a_flow_meets_its_own_requirements(flow: Flow) -> None:
    findings = check_capability(agency_statement(flow), [flow])
    assert findings and all(f.ok for f in findings), [f.detail for f in findings if not f.ok]


def test_parameter_codes_are_those_of_the_requests() -> None:
    base = "http://hl7.org/fhir/SearchParameter/"
    assert parameter_code({"definition": base + "Schedule-actor", "name": "SearchSchedule-actor"}) == "actor"
    assert parameter_code({"definition": base + "Resource-has"}) == "_has"
    sp = "https://interop.esante.gouv.fr/ig/fhir/sas/SearchParameter/slot-sp-start"
    assert parameter_code({"definition": sp, "name": "SPDateDebutSlot"}) == "start"
    assert parameter_code({"name": "start"}) == "start"


def test_a_statement_serving_fewer_flows_misses_what_the_others_require() -> None:
    individual = capability_statement([Flow.individual], "v")
    assert all(f.ok for f in check_capability(individual, [Flow.individual]))
    missing = {f.detail for f in check_capability(individual, [Flow.cpts, Flow.sos]) if not f.ok}
    assert "cpts: Slot _include Slot:service-type-reference" in missing
    assert "cpts: Slot _include HealthcareService:organization" in missing
    assert "sos: Schedule _revinclude Slot:schedule" in missing
    assert "sos: Schedule _include Schedule:actor:Location" in missing
    assert any(d.startswith("sos: Schedule parameter _has") for d in missing)
    assert any(d.startswith("sos: Location parameter organization") for d in missing)
    assert not any(d.startswith("cpts: Slot parameter start") for d in missing)  # the individual flow has it
    for nothing in (None, [], {"resourceType": "Bundle"}, {"resourceType": "CapabilityStatement", "rest": "x"}):
        assert not any(f.ok for f in check_capability(nothing, [Flow.sos]))


def test_the_sandbox_declares_the_flows_it_serves() -> None:
    with SandboxServer(SandboxConfig(practitioners=[CHEPY], associations=[BOURG])) as server:
        statement = httpx.get(server.fhir_base + "/metadata").json()
        assert all(f.ok for f in check_capability(statement, list(Flow)))
        assert agency_statement(Flow.sos)["url"] in statement["instantiates"]
    with SandboxServer(SandboxConfig(practitioners=[CHEPY])) as server:  # no association: no SOS flow
        statement = httpx.get(server.fhir_base + "/metadata").json()
        assert not all(f.ok for f in check_capability(statement, [Flow.sos]))


def test_vendors_check_covers_the_cpts_and_sos_flows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPO_DATA_DIR", str(tmp_path / "dispo"))
    monkeypatch.setenv("DISPO_BACKEND", "sqlite")
    association = association_idnst(BOURG.siret)
    member = MEMBER.model_copy(update={"idnps": "810100050075"})  # an RPPS number, as the test kit requires
    config = SandboxConfig(vendor_id="s", practitioners=[member], associations=[BOURG], churn_rate=0.0)
    with SandboxServer(config) as server:
        add = ("vendors", "add", "s", "--base-url", server.fhir_base, "--flow", "individual", "--flow", "cpts")
        assert run(*add, "--flow", "sos").exit_code == 0
        r = run("vendors", "check", "s", "--idnps", member.idnps, "--idnps", association, "--json")
        assert r.exit_code == 0, r.output
        answer = json.loads(r.stdout)
        assert answer["status"] == {"metadata": 200, "slot search": 200}
        assert set(answer["checks"]) == {"capability", "slot search", "cpts", "sos"}
        assert answer["checks"]["cpts"] >= 4 and answer["checks"]["sos"] > 1
        assert not any(answer["failed_by_section"].values())

        # The vendor no longer declares the CPTS and SOS flows.
        httpx.post(server.url + "/_control", json={"flows": ["individual"]})
        r = run("vendors", "check", "s", "--idnps", member.idnps, "--idnps", association)
        assert r.exit_code == 1
        assert "sos: Schedule _revinclude Slot:schedule" in r.output and "capability:" in r.output
        assert "cpts: Slot _include Slot:service-type-reference" in r.output
