"""Where a vendor's slots land: a directory site when the vendor names one, else a site the vendor declares at an
address the directory lacks; nothing dropped without a reason and examples in the cycle report. Both backends,
against a real sandbox vendor on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

from support import CHEPY, KRISTIAN, indexed

from aggregation.puller import CycleReport
from aggregation.scheduler import Aggregator
from core.geo import gazetteer
from core.records import Participation, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxConfig, SandboxPractitioner, SandboxSite
from editor_sandbox.app import UNKNOWN_LINE, unknown_site
from editor_sandbox.server import SandboxServer
from indexer.backend import Backend
from indexer.registry import save_participation, save_vendor
from search.answer import build_answer
from search.engine import SearchRequest, run_search

NOT_IN_DIRECTORY = "practitioner not in the directory"
STRANGER = SandboxPractitioner(
    idnps="810000000001", family="NOBODY", sites=[SandboxSite(idnst="1999999999", postcode="75001")]
)


def cycle(backend: Backend, settings: Settings, who: list[SandboxPractitioner], **knobs: Any) -> CycleReport:
    """One aggregation cycle of a sandbox vendor serving `who`, every one of them declared as taking part."""
    config = SandboxConfig(vendor_id="v", seed=4, practitioners=who, churn_rate=0, **knobs)
    with SandboxServer(config) as server:
        save_vendor(backend, Vendor(vendor_id="v", name="v", base_url=server.fhir_base, timeout_s=5))
        for p in who:
            save_participation(backend, Participation(idnps=p.idnps, vendors=["v"]))
        (report,) = asyncio.run(Aggregator(backend, settings).run_once())
    return report


def test_a_site_the_directory_lacks_becomes_a_vendor_declared_site_at_its_commune(
    loaded: Backend, settings: Settings
) -> None:
    report = cycle(loaded, settings, [CHEPY, KRISTIAN], unknown_sites=[CHEPY.idnps])
    elsewhere = unknown_site(CHEPY.sites[0].postcode)
    commune = gazetteer().postcode_area(elsewhere.postcode)
    assert commune is not None and len(commune.communes) == 1
    docs = indexed(loaded)
    chepy = [d for d in docs.values() if d["idnps"] == CHEPY.idnps]
    assert chepy, "the slots at an address the directory lacks are kept"
    assert report.unplaced == {}
    assert report.as_dict()["vendor_declared_sites"] == len(chepy)
    for doc in chepy:
        assert doc["site_source"] == "vendor"
        assert doc["site_id"].startswith(f"vendor:v:{CHEPY.idnps}:")
        assert doc["location"] == {"lat": commune.lat, "lon": commune.lon}
        assert doc["place"] == {"line": UNKNOWN_LINE, "city": elsewhere.city, "postcode": elsewhere.postcode}
    assert len({d["site_id"] for d in chepy}) == 1  # one address, one site
    # Still the directory's practitioner: searches filter on the profession and specialties the directory gives.
    directory = loaded.get("practice_sites", "0019402726:F010000032:S")
    assert directory is not None
    assert {d["profession_code"] for d in chepy} == {directory["practitioner"]["profession_code"]}

    # Searchable near that commune, and flagged on the card.
    req = SearchRequest(
        lat=commune.lat, lon=commune.lon, profession=directory["practitioner"]["profession_code"], radius_km=5, limit=50
    )
    result = run_search(loaded, req, staleness_limit_s=settings.staleness_limit_s)
    answer = build_answer(loaded, settings, result, req)
    card = next(c for c in answer.cards if c.practitioner.idnps == CHEPY.idnps)
    assert card.site.declared_by_vendor is True
    assert (card.site.lat, card.site.lon) == (commune.lat, commune.lon)
    assert card.site.address is not None and UNKNOWN_LINE in card.site.address
    assert card.practitioner.name and "CHEPY" in card.practitioner.name.upper()
    assert card.slot_count > 0

    # The same address on the next cycle is the same site.
    again = cycle(loaded, settings, [CHEPY, KRISTIAN], unknown_sites=[CHEPY.idnps])
    assert (again.stats.inserted, again.stats.removed) == (0, 0)
    assert {d["site_id"] for d in indexed(loaded).values() if d["idnps"] == CHEPY.idnps} == {chepy[0]["site_id"]}


def test_slots_matched_by_structure_or_postcode_stay_on_directory_sites(loaded: Backend, settings: Settings) -> None:
    # KRISTIAN's vendor names no structure the directory knows, only the postcode of the directory's site.
    by_postcode = KRISTIAN.model_copy(
        update={"sites": [SandboxSite(idnst="1999999998", line="ailleurs", postcode=KRISTIAN.sites[0].postcode)]}
    )
    report = cycle(loaded, settings, [CHEPY, by_postcode])
    docs = indexed(loaded)
    assert {d["idnps"] for d in docs.values()} == {CHEPY.idnps, KRISTIAN.idnps}
    assert {d["site_source"] for d in docs.values()} == {"directory"}
    assert not any(d["site_id"].startswith("vendor:") for d in docs.values())
    assert report.as_dict()["vendor_declared_sites"] == 0


def test_a_practitioner_unknown_to_the_directory_stays_unplaced_with_a_reason_and_examples(
    loaded: Backend, settings: Settings
) -> None:
    report = cycle(loaded, settings, [CHEPY, STRANGER])
    docs = indexed(loaded)
    assert STRANGER.idnps not in {d["idnps"] for d in docs.values()}
    summary = report.as_dict()
    assert summary["unplaced"][NOT_IN_DIRECTORY] > 0
    examples = summary["examples"]["unplaced"][NOT_IN_DIRECTORY]
    assert 1 <= len(examples) <= 3
    assert all(e.startswith(f"v:{STRANGER.idnps}-") for e in examples)
    assert summary["examples"]["rejected"] == {}
    assert summary["vendor_declared_sites"] == 0
    # The report as the vendor status keeps it.
    status = loaded.get("vendor_status", "v")
    assert status is not None
    assert status["last_cycle"]["examples"]["unplaced"][NOT_IN_DIRECTORY] == examples
