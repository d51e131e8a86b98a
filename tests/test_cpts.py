"""The CPTS flow (INT_R04) against a real sandbox on loopback, on both backends: a vendor declared serving it is asked
for its slots' CPTS, the slots offered through a CPTS keep it (IDNST, name, phone), and a regulator's card names it;
a vendor not declared serving it is asked as before, and its CPTS slots name no CPTS."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient
from support import CHEPY, KRISTIAN, api_settings, headers, indexed

from aggregation.scheduler import Aggregator
from api.app import create_app
from api.auth import Role
from core.records import Flow, Participation, ParticipationVia, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxConfig, SandboxCpts
from editor_sandbox.server import SandboxServer, free_port
from indexer.backend import Backend
from indexer.registry import save_participation, save_vendor

CPTS = SandboxCpts(idnst="1010006040", name="CPTS du Bugey", phone="+33479000000")
MEMBER = CHEPY.model_copy(update={"cpts": CPTS})  # takes part through the CPTS; KRISTIAN individually


def _pull(backend: Backend, settings: Settings, flows: list[Flow], port: int | None = None) -> dict[str, dict]:
    """One cycle of vendor `v` (its slots' booking pages name its port: the same port, the same slots)."""
    config = SandboxConfig(vendor_id="v", seed=2, practitioners=[MEMBER, KRISTIAN], churn_rate=0)
    with SandboxServer(config, port=port) as server:
        save_vendor(backend, Vendor(vendor_id="v", name="Vendor V", base_url=server.fhir_base, flows=flows))
        save_participation(backend, Participation(idnps=MEMBER.idnps, vendors=["v"], via=ParticipationVia.cpts))
        save_participation(backend, Participation(idnps=KRISTIAN.idnps, vendors=["v"]))
        (report,) = asyncio.run(Aggregator(backend, settings).run_once())
    assert report.batches_failed == 0 and not report.rejected
    return indexed(backend, "v")


def test_a_vendor_serving_the_cpts_flow_gives_its_slots_cpts(loaded: Backend, settings: Settings) -> None:
    slots = _pull(loaded, settings, [Flow.individual, Flow.cpts])
    through = [s for s in slots.values() if "CPTS" in s["types"] and s["idnps"] == MEMBER.idnps]
    assert through, "the sandbox's agendas hold CPTS slots"
    assert all(s["cpts"] == [CPTS.model_dump()] for s in through)
    assert {tuple(s["types"]) for s in through} == {("CPTS",), ("PUBLIC", "CPTS")}, "some are open to everyone too"
    others = [s for s in slots.values() if s not in through]
    assert others and all("cpts" not in s for s in others), "only the member's CPTS slots are offered through it"

    with TestClient(create_app(api_settings(settings), loaded)) as client:
        r = client.get(
            "/v1/search",
            # CHEPY is an occupational therapist (94) in Belley.
            params={
                "lat": 45.7597,
                "lon": 5.6866,
                "profession": "94",
                "via": "cpts",
                "slot_type": "CPTS",
                "verify": "false",
            },
            headers=headers(Role.regulator),
        )
    assert r.status_code == 200, r.text
    (card,) = r.json()["cards"]
    assert card["practitioner"]["idnps"] == MEMBER.idnps and card["participation"]["via"] == "cpts"
    assert card["cpts"] == [CPTS.model_dump()]
    shown = [slot for day in card["slots"].values() for slot in day]
    assert shown and all(slot["cpts"] == [CPTS.idnst] for slot in shown)

    with TestClient(create_app(api_settings(settings), loaded)) as client:
        params = {"lat": 45.7597, "lon": 5.6866, "profession": "94", "slot_type": "PUBLIC", "verify": "false"}
        r = client.get("/v1/search", params=params, headers=headers(Role.regulator))
    # A regulator asking for slots open to everyone sees those offered through a CPTS too.
    card = next(c for c in r.json()["cards"] if c["practitioner"]["idnps"] == MEMBER.idnps)
    public = [slot for day in card["slots"].values() for slot in day]
    assert card["cpts"] == [CPTS.model_dump()] and {tuple(slot["cpts"]) for slot in public} == {(CPTS.idnst,), ()}


def test_a_vendor_not_declared_serving_it_is_asked_as_before(loaded: Backend, settings: Settings) -> None:
    slots = _pull(loaded, settings, [Flow.individual])
    through = [s for s in slots.values() if "CPTS" in s["types"]]
    assert through and all("cpts" not in s for s in through), "asked without the includes: no CPTS resolved"


def test_the_cpts_a_slot_is_offered_through_is_part_of_its_content(loaded: Backend, settings: Settings) -> None:
    """A cycle that learns the slots' CPTS rewrites those slots only; the next, unchanged, writes nothing."""
    port = free_port()
    before = _pull(loaded, settings, [Flow.individual], port)
    slots = _pull(loaded, settings, [Flow.individual, Flow.cpts], port)
    learnt = {i for i, s in slots.items() if s.get("cpts")}
    assert learnt and {i for i in slots if slots[i]["content_hash"] != before[i]["content_hash"]} == learnt
    assert set(slots) == set(before)
    again = _pull(loaded, settings, [Flow.individual, Flow.cpts], port)
    assert {i: s["content_hash"] for i, s in again.items()} == {i: s["content_hash"] for i, s in slots.items()}
