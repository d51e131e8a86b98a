"""What a vendor sends is untrusted: slots of practitioners it was not asked about, dates no agenda holds, an
appointment in year 9999. On both backends, against real sandbox vendors on loopback: what is wrong is counted
and left out, the rest of the answer is taken, and nothing fails."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from support import CHEPY, KRISTIAN, TOKENS, api_settings, indexed

from aggregation.availability import SiteMapper, reconcile
from aggregation.puller import CycleReport
from aggregation.rules import NOT_ASKED
from aggregation.scheduler import Aggregator
from api.app import create_app
from api.auth import Role
from booking.accounts import ensure_account
from core.records import Modality, Participation, Slot, SlotType, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxConfig
from editor_sandbox.server import SandboxServer
from indexer.backend import Backend
from indexer.registry import save_participation, save_vendor

OUT_OF_RANGE = "start or end outside 2000–2100"
NOBODY = "810999999999"  # an IDNPS the directory does not know


@pytest.fixture
def chepy_at_v(loaded: Backend) -> Backend:
    """CHEPY takes part in the SAS through vendor v; KRISTIAN, also in the directory, through vendor w only."""
    save_participation(loaded, Participation(idnps=CHEPY.idnps, vendors=["v"]))
    save_participation(loaded, Participation(idnps=KRISTIAN.idnps, vendors=["w"]))
    return loaded


def cycle_of_v(backend: Backend, settings: Settings, **knobs: object) -> tuple[CycleReport, dict[str, dict]]:
    """One aggregation cycle of a sandbox vendor v serving CHEPY and KRISTIAN with these knobs: its report, and
    v's slots in the index after it."""
    config = SandboxConfig(vendor_id="v", seed=4, practitioners=[CHEPY, KRISTIAN], churn_rate=0, **knobs)
    with SandboxServer(config) as server:
        save_vendor(backend, Vendor(vendor_id="v", name="Vendor V", base_url=server.fhir_base, timeout_s=3))
        (report,) = asyncio.run(Aggregator(backend, settings).run_once())
    return report, indexed(backend, "v")


def test_slots_of_practitioners_not_asked_for_are_counted_and_never_indexed(
    chepy_at_v: Backend, settings: Settings
) -> None:
    clean_report, clean = cycle_of_v(chepy_at_v, settings)
    assert clean and {doc["idnps"] for doc in clean.values()} == {CHEPY.idnps}
    assert NOT_ASKED not in clean_report.rejected and NOT_ASKED not in clean_report.unplaced
    # Now every answer adds a slot of KRISTIAN (in the directory, at another vendor) and one of someone unknown.
    report, held = cycle_of_v(chepy_at_v, settings, foreign_practitioners=[KRISTIAN.idnps, NOBODY])
    assert report.batches == 1 and report.batches_failed == 0
    assert held.keys() == clean.keys()  # CHEPY's slots, all of them, and nobody else's
    assert (report.stats.inserted, report.stats.removed) == (0, 0)
    # The parser rejects them (the reconciliation's own check is the second line, tested below).
    assert report.rejected[NOT_ASKED] == 2 and NOT_ASKED not in report.unplaced
    examples = report.rejected_examples[NOT_ASKED]
    assert sorted(e.split(":")[1].split("-")[0] for e in examples) == sorted([KRISTIAN.idnps, NOBODY])


def test_slots_dated_9999_and_0001_are_rejected_and_the_cycle_goes_on(chepy_at_v: Backend, settings: Settings) -> None:
    report, held = cycle_of_v(chepy_at_v, settings, odd_dates=True)
    assert report.batches_failed == 0 and report.errors == {} and report.practitioners_failed == 0
    assert report.rejected == {OUT_OF_RANGE: 2}
    assert sorted(report.rejected_examples[OUT_OF_RANGE]) == [
        f"v:{CHEPY.idnps}-0-000101010000",
        f"v:{CHEPY.idnps}-0-999912312330",
    ]
    assert held and report.stats.inserted == len(held)  # CHEPY's good slots, all of them
    assert all(2000 <= datetime.fromisoformat(doc["start"]).year <= 2100 for doc in held.values())


NOW = datetime.now(UTC).replace(microsecond=0)


def slot_of(idnps: str, k: int) -> Slot:
    start = NOW + timedelta(hours=k + 1)
    return Slot(
        slot_id=f"v:{idnps}-{k}",
        vendor="v",
        resource_id=f"{idnps}-{k}",
        start=start,
        end=start + timedelta(minutes=20),
        utc_offset="+00:00",
        types=[SlotType.PUBLIC],
        modalities=[Modality.AMB],
        appointment_type="ROUTINE",
        idnps=idnps,
        fetched_at=NOW,
    )


def test_reconciling_a_batch_never_writes_a_slot_of_anyone_outside_it(loaded: Backend) -> None:
    mapper = SiteMapper(loaded)
    earlier, _ = reconcile(loaded, "v", [KRISTIAN.idnps], [slot_of(KRISTIAN.idnps, 0)], mapper, NOW)
    assert earlier.inserted == 1
    answer = [slot_of(CHEPY.idnps, 1), slot_of(KRISTIAN.idnps, 2), slot_of(NOBODY, 3)]
    stats, unplaced = reconcile(loaded, "v", [CHEPY.idnps], answer, mapper, NOW)
    assert (stats.inserted, stats.removed) == (1, 0)
    assert unplaced == {NOT_ASKED: 2} and unplaced.examples == {NOT_ASKED: [f"v:{KRISTIAN.idnps}-2", f"v:{NOBODY}-3"]}
    # KRISTIAN's slot from his own batch stays; the one the CHEPY answer carried was never written.
    assert sorted(indexed(loaded, "v")) == sorted([f"v:{CHEPY.idnps}-1", f"v:{KRISTIAN.idnps}-0"])


# -- appointments ----------------------------------------------------------------------------------------------

VENDOR = TOKENS[Role.vendor]  # (token, entry): the vendor's label is its vendor id
VENDOR_ID = "test-vendor"
REGULATOR = "reg-2b7d11e0"
FHIR = {"Authorization": f"Bearer {VENDOR[0]}", "Content-Type": "application/fhir+json"}


@pytest.fixture
def reporter(loaded: Backend, settings: Settings) -> Iterator[TestClient]:
    """The platform's FHIR endpoint, to which vendor `test-vendor` (serving CHEPY, REGULATOR's account pushed to
    it) reports appointments."""
    config = SandboxConfig(vendor_id=VENDOR_ID, seed=1, practitioners=[CHEPY], churn_rate=0)
    with SandboxServer(config) as server:
        vendor = Vendor(vendor_id=VENDOR_ID, name="Test vendor", base_url=server.fhir_base)
        save_vendor(loaded, vendor)
        save_participation(loaded, Participation(idnps=CHEPY.idnps, vendors=[VENDOR_ID]))
        assert asyncio.run(ensure_account(loaded, vendor, REGULATOR))["state"] == "created"
        with TestClient(create_app(api_settings(settings), loaded)) as client:
            yield client


def reported(start: str, end: str, last_updated: str = "2026-01-01T00:00:00.000+01:00") -> dict:
    return {
        "resourceType": "Appointment",
        "meta": {"versionId": "1", "lastUpdated": last_updated},
        "extension": [
            {
                "url": "http://interopsante.org/fhir/StructureDefinition/FrAppointmentOperator",
                "valueReference": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": REGULATOR}},
            }
        ],
        "identifier": [{"system": "urn:test", "value": f"odd-{start[:4]}-{last_updated[:4]}"}],
        "status": "booked",
        "start": start,
        "end": end,
        "participant": [
            {
                "actor": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": CHEPY.idnps}},
                "status": "accepted",
            }
        ],
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (reported("9999-12-31T23:30:00-05:00", "9999-12-31T23:50:00-05:00"), "start"),
        (reported("0001-01-01T00:00:00+01:00", "0001-01-01T00:20:00+01:00"), "start"),
        (reported("2026-11-26T09:00:00+01:00", "9999-12-31T23:50:00-05:00"), "end"),
        (
            reported("2026-11-26T09:00:00+01:00", "2026-11-26T09:20:00+01:00", "9999-12-31T23:50:00-05:00"),
            "meta.lastUpdated",
        ),
    ],
)
def test_an_appointment_dated_9999_or_0001_is_a_422_not_a_500(reporter: TestClient, body: dict, field: str) -> None:
    r = reporter.post("/fhir/Appointment", json=body, headers=FHIR)
    assert r.status_code == 422
    (issue,) = r.json()["issue"]
    assert f"{field} must be an instant within 2000–2100" in issue["diagnostics"]
    # The same report at sane dates is taken: the dates alone were at fault.
    sane = reported("2026-11-26T09:00:00+01:00", "2026-11-26T09:20:00+01:00") | {"identifier": body["identifier"]}
    assert reporter.post("/fhir/Appointment", json=sane, headers=FHIR).status_code == 201
