"""Slots from a real sandbox vendor reconciled into the index, on both backends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from support import CHEPY, KRISTIAN, indexed

from aggregation.availability import SiteMapper, ensure_slots_index, reconcile
from aggregation.client import make_client, search_slots
from core.records import Slot, SlotType, Vendor
from editor_sandbox.agenda import SandboxConfig, SandboxPractitioner, SandboxSite
from editor_sandbox.server import SandboxServer
from indexer.backend import Backend

STRANGER = SandboxPractitioner(
    idnps="810000000001", family="NOBODY", sites=[SandboxSite(idnst="1999999999", postcode="75001")]
)
IDS = [CHEPY.idnps, KRISTIAN.idnps, STRANGER.idnps]
# One instant for the vendors and for reconciliation: no slot starts or ends between two reads of a test.
NOW = datetime(2026, 11, 24, 9, 10, tzinfo=UTC)  # a Tuesday, 10:10 in Paris


def serve(config: SandboxConfig) -> SandboxServer:
    """A sandbox vendor whose clock stands at NOW."""
    return SandboxServer(config, clock=lambda: NOW)


def fetch(server: SandboxServer, vendor_id: str) -> list[Slot]:
    """The vendor's free slots over the two days from NOW, through Dispo's contract client."""
    vendor = Vendor(vendor_id=vendor_id, name=vendor_id, base_url=server.fhir_base, timeout_s=5)

    async def go() -> list[Slot]:
        async with make_client(vendor) as client:
            return (await search_slots(client, vendor, IDS, NOW, NOW + timedelta(days=2), NOW)).slots

    return asyncio.run(go())


def test_reconciliation_inserts_updates_removes_and_skips_unchanged(loaded: Backend) -> None:
    config = SandboxConfig(vendor_id="a", seed=3, practitioners=[CHEPY, KRISTIAN, STRANGER], churn_rate=0.0)
    with serve(config) as server:
        slots = fetch(server, "a")
        mapper = SiteMapper(loaded)
        stats, unplaced = reconcile(loaded, "a", IDS, slots, mapper, NOW)
        stranger = sum(1 for s in slots if s.idnps == STRANGER.idnps)
        assert stats.inserted == len(slots) - stranger > 0
        assert unplaced == {"practitioner not in the directory": stranger}
        docs = indexed(loaded)
        assert len(docs) == stats.inserted
        chepy_site = loaded.get("practice_sites", "0019402726:F010000032:S")
        assert chepy_site is not None
        chepy_docs = [doc for doc in docs.values() if doc["idnps"] == CHEPY.idnps]
        assert chepy_docs  # placed on the site of the directory that the vendor's structure names
        for doc in chepy_docs:
            assert doc["site_id"] == chepy_site["site_id"]
            assert doc["location"] == chepy_site["location"]

        again, _ = reconcile(loaded, "a", IDS, fetch(server, "a"), mapper, NOW)
        assert (again.inserted, again.updated, again.removed, again.unchanged) == (0, 0, 0, stats.inserted)

        booked = next(s for s in slots if s.idnps == CHEPY.idnps and s.booking_url)
        httpx.post(f"{server.url}/booking/{booked.resource_id}")
        fresh = fetch(server, "a")
        changed = next(s for s in fresh if s.idnps == KRISTIAN.idnps)
        fresh = [s.model_copy(update={"types": [SlotType.SNP, SlotType.PRO]}) if s is changed else s for s in fresh]
        third, _ = reconcile(loaded, "a", IDS, fresh, mapper, NOW)
        assert (third.inserted, third.updated, third.removed) == (0, 1, 1)
        docs = indexed(loaded)
        assert booked.slot_id not in docs
        assert docs[changed.slot_id]["types"] == ["SNP", "PRO"]


def test_other_vendors_and_other_practitioners_are_never_touched(loaded: Backend) -> None:
    mapper = SiteMapper(loaded)
    with (
        serve(SandboxConfig(vendor_id="a", seed=1, practitioners=[CHEPY, KRISTIAN], churn_rate=0)) as a,
        serve(SandboxConfig(vendor_id="b", seed=2, practitioners=[CHEPY], churn_rate=0)) as b,
    ):
        reconcile(loaded, "a", IDS, fetch(a, "a"), mapper, NOW)
        reconcile(loaded, "b", IDS, fetch(b, "b"), mapper, NOW)
        b_before = indexed(loaded, "b")
        a_before = indexed(loaded, "a")
        assert b_before and {d["idnps"] for d in a_before.values()} == {CHEPY.idnps, KRISTIAN.idnps}
        # Vendor a now answers nothing for CHEPY only: only a's CHEPY slots go.
        stats, _ = reconcile(loaded, "a", [CHEPY.idnps], [], mapper, NOW)
        assert stats.removed == sum(1 for d in a_before.values() if d["idnps"] == CHEPY.idnps)
        assert indexed(loaded, "b") == b_before
        assert {d["idnps"] for d in indexed(loaded, "a").values()} == {KRISTIAN.idnps}


def test_slots_already_over_are_not_indexed(loaded: Backend) -> None:
    with serve(SandboxConfig(vendor_id="a", seed=1, practitioners=[CHEPY], churn_rate=0)) as server:
        slots = fetch(server, "a")
    assert slots
    later = max(s.end for s in slots)
    stats, _ = reconcile(loaded, "a", [CHEPY.idnps], slots, SiteMapper(loaded), later)
    assert stats.expired == len(slots) and stats.inserted == 0
    ensure_slots_index(loaded)
    assert indexed(loaded) == {}
