"""Live verification of a page against a sandbox vendor, on both backends: every practitioner of the page is asked,
25 at most per call, and a slot leaves the card and the index only when a complete answer no longer holds it.

The vendor is reached through a loopback relay in front of the sandbox, which records the practitioners each
search names and can make the searches naming chosen practitioners hang, fail, overstate their total or carry
another practitioner's slots.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request, Response
from support import BACKENDS, make_backend

from aggregation.availability import KIND as SLOTS
from aggregation.contract import IDNPS_SYSTEM, MAX_IDENTIFIERS
from aggregation.scheduler import Aggregator
from aggregation.verify import VerifyReport, recheck_cards
from bench.generate import generate
from core.records import Vendor
from core.settings import Settings
from editor_sandbox.fleet import start_fleet
from editor_sandbox.server import SandboxServer, ThreadedServer
from indexer.backend import Backend
from indexer.lifecycle import iterate_all
from indexer.registry import list_vendors, save_vendor
from rpps_import.pipeline import import_rpps
from search.candidates import Candidate
from search.engine import SearchRequest, run_search
from search.request import search_window

BOURG = "12 rue de la République 01000 Bourg-en-Bresse"
IDENTIFIER_PARAM = "schedule.actor:Practitioner.identifier"
PAGE = 60  # practitioners on the page: three calls of 25, 25 and 10
DEADLINE_S = 5.0
SHORT_DEADLINE_S = 1.0
HANG_S = 3.0  # longer than the short deadline


@dataclass
class Relay:
    """What the relay does to the searches naming given practitioners, and the practitioners each search named."""

    upstream: str  # the sandbox's FHIR base
    calls: list[list[str]] = field(default_factory=list)
    hang: set[str] = field(default_factory=set)
    fail: set[str] = field(default_factory=set)
    overstate: set[str] = field(default_factory=set)  # Bundle.total one above the Slots sent: an incomplete answer
    smuggle: dict[str, str] = field(default_factory=dict)  # named -> a practitioner whose slots are added, unasked

    def reset(self) -> None:
        self.calls.clear()
        self.hang.clear()
        self.fail.clear()
        self.overstate.clear()
        self.smuggle.clear()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/fhir/Slot")
        async def slot_search(request: Request) -> Response:
            params = list(request.query_params.multi_items())
            named = [token.rpartition("|")[2] for k, v in params if k == IDENTIFIER_PARAM for token in v.split(",")]
            self.calls.append(named)
            if self.hang & set(named):
                await asyncio.sleep(HANG_S)
            if self.fail & set(named):
                issue = {"severity": "error", "code": "exception", "diagnostics": "relay: simulated failure"}
                body = orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]})
                return Response(body, status_code=500, media_type="application/fhir+json")
            extra = [self.smuggle[i] for i in named if i in self.smuggle]
            if extra:
                ids = ",".join(f"{IDNPS_SYSTEM}|{i}" for i in named + extra)
                params = [(k, ids if k == IDENTIFIER_PARAM else v) for k, v in params]
            accept = {"Accept": request.headers["accept"]}
            async with httpx.AsyncClient() as client:
                answer = await client.get(self.upstream + "/Slot", params=params, headers=accept)
            body = answer.content
            if answer.status_code == 200 and self.overstate & set(named):
                bundle = orjson.loads(body)
                bundle["total"] += 1
                body = orjson.dumps(bundle)
            return Response(body, status_code=answer.status_code, media_type=answer.headers["content-type"])

        return app


@dataclass
class World:
    backend: Backend
    sandbox: SandboxServer
    relay: Relay
    vendor: Vendor


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A generated Ain directory whose participants are all served by one sandbox vendor, pulled once, then reached
    through the relay."""
    tmp = tmp_path_factory.mktemp(f"verify-{request.param}-{uuid.uuid4().hex[:6]}")
    backend = make_backend(request.param, tmp)
    settings = Settings(data_dir=tmp / "dispo", tokens="")
    files = generate(tmp / "gen", "department", seed=1, n_vendors=1)
    import_rpps(files["rpps"], backend, settings)
    [sandbox] = start_fleet(backend, 1, participations=files["participations"], settings=settings, churn_rate=0.0)
    asyncio.run(Aggregator(backend, settings).run_once())
    relay = Relay(sandbox.fhir_base)
    server = ThreadedServer(relay.app(), name="relay").start()
    [vendor] = list_vendors(backend)
    vendor = save_vendor(backend, vendor.model_copy(update={"base_url": server.url + "/fhir"}))
    yield World(backend, sandbox, relay, vendor)
    server.stop()
    sandbox.stop()
    if request.param == "elasticsearch":
        backend.delete_all()  # type: ignore[attr-defined]
    backend.close()


@pytest.fixture
def w(world: World) -> Iterator[World]:
    world.relay.reset()
    yield world
    world.relay.reset()


def index_now(backend: Backend) -> dict[str, dict[str, Any]]:
    """Every slot in the index, by slot id."""
    live = backend.live_index(SLOTS)
    assert live is not None
    backend.refresh(live)
    return {doc["slot_id"]: doc for doc in iterate_all(backend, SLOTS)}


def page_from_index(w: World, now: datetime) -> tuple[list[Candidate], list[str], tuple[datetime, datetime]]:
    """The cards of the first 60 practitioners (by IDNPS) with slots in the search window, one per site, in that
    order; returns the cards, the practitioners and the window."""
    window = search_window(SearchRequest(), now)
    by_card: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for doc in index_now(w.backend).values():
        if doc.get("site_id") and window[0] <= datetime.fromisoformat(doc["start"]) <= window[1]:
            by_card.setdefault((doc["idnps"], doc["site_id"]), []).append(doc)
    practitioners = sorted({idnps for idnps, _ in by_card})[:PAGE]
    assert len(practitioners) == PAGE
    chosen = set(practitioners)
    cards = [Candidate(site, idnps, 0.0, docs) for (idnps, site), docs in sorted(by_card.items()) if idnps in chosen]
    return cards, practitioners, window


def recheck(w: World, cards: list[Candidate], window: tuple[datetime, datetime], deadline_s: float) -> VerifyReport:
    vendors = {w.vendor.vendor_id: w.vendor}
    return asyncio.run(recheck_cards(w.backend, cards, vendors, window, datetime.now(UTC), deadline_s))


def take(w: World, doc: dict[str, Any]) -> None:
    """Another patient books the slot at the vendor."""
    resource_id = doc["slot_id"].split(":", 1)[1]  # "<vendor>:<Slot.id>"
    assert httpx.post(f"{w.sandbox.url}/booking/{resource_id}").status_code == 201


def slots_of(cards: list[Candidate], practitioners: list[str]) -> list[dict[str, Any]]:
    wanted = set(practitioners)
    return [doc for card in cards if card.idnps in wanted for doc in card.slots]


def groups(practitioners: list[str]) -> list[list[str]]:
    """The practitioners of the page, 25 per call, in page order."""
    return [practitioners[i : i + MAX_IDENTIFIERS] for i in range(0, len(practitioners), MAX_IDENTIFIERS)]


def test_every_practitioner_of_the_page_is_asked_25_at_a_time_and_verified(w: World) -> None:
    cards, practitioners, window = page_from_index(w, datetime.now(UTC))
    before = index_now(w.backend)
    shown = sum(len(c.slots) for c in cards)
    report = recheck(w, cards, window, DEADLINE_S)
    assert sorted(w.relay.calls) == sorted(groups(practitioners))  # three searches of 25, 25 and 10
    assert [len(g) for g in groups(practitioners)] == [25, 25, 10]
    assert (report.vendors_asked, report.vendors_answered) == (1, 1)
    assert report.practitioners_asked == report.practitioners_answered == PAGE
    assert report.timed_out == [] and report.failed == []
    assert report.slots_confirmed == shown and report.slots_gone == 0 and report.cards_emptied == 0
    assert all(doc.get("verified") for card in cards for doc in card.slots)
    assert index_now(w.backend).keys() == before.keys()


def test_a_search_page_of_60_cards_is_verified_whole(w: World) -> None:
    before = index_now(w.backend)
    result = run_search(w.backend, SearchRequest(address=BOURG, seed=8, limit=PAGE), verify_deadline_s=DEADLINE_S)
    on_page = list(dict.fromkeys(doc["idnps"] for card in result.cards for doc in card.slots))
    v = result.verification
    assert v is not None and len(result.cards) == PAGE
    assert sorted(i for call in w.relay.calls for i in call) == sorted(on_page)
    assert all(len(call) <= MAX_IDENTIFIERS for call in w.relay.calls)
    assert len(w.relay.calls) == math.ceil(len(on_page) / MAX_IDENTIFIERS)
    assert v.practitioners_asked == v.practitioners_answered == len(on_page)
    assert v.slots_gone == 0 and v.cards_emptied == 0
    assert all(doc.get("verified") for card in result.cards for doc in card.slots)
    assert index_now(w.backend).keys() == before.keys()


def test_only_the_slots_the_vendor_no_longer_offers_leave_the_cards_and_the_index(w: World) -> None:
    cards, practitioners, window = page_from_index(w, datetime.now(UTC))
    taken = [slots_of(cards, [g[-1]])[0] for g in groups(practitioners)]  # one in each call's group
    for doc in taken:
        take(w, doc)
    before = index_now(w.backend)
    report = recheck(w, cards, window, DEADLINE_S)
    gone = {doc["slot_id"] for doc in taken}
    assert report.slots_gone == len(gone) and report.practitioners_answered == PAGE
    assert before.keys() - index_now(w.backend).keys() == gone
    assert all(doc["slot_id"] not in gone and doc.get("verified") for card in cards for doc in card.slots)


def test_an_incomplete_answer_confirms_and_removes_nothing_of_its_group(w: World) -> None:
    cards, practitioners, window = page_from_index(w, datetime.now(UTC))
    incomplete, *answered = groups(practitioners)
    w.relay.overstate.add(incomplete[0])
    taken = slots_of(cards, [incomplete[-1]])[0]
    take(w, taken)  # gone at the vendor, but the incomplete answer cannot say so
    before = index_now(w.backend)
    report = recheck(w, cards, window, DEADLINE_S)
    assert report.vendors_answered == 0 and len(report.failed) == 1
    assert report.failed[0].startswith(f"{w.vendor.vendor_id}: incomplete: ")
    assert report.practitioners_answered == PAGE - len(incomplete)
    assert report.slots_gone == 0 and index_now(w.backend).keys() == before.keys()
    assert not any(doc.get("verified") for doc in slots_of(cards, incomplete))
    assert taken["slot_id"] in {doc["slot_id"] for doc in slots_of(cards, incomplete)}
    assert all(doc.get("verified") for g in answered for doc in slots_of(cards, g))


def test_groups_that_hang_or_fail_keep_their_slots_unverified_while_the_others_are_verified(w: World) -> None:
    cards, practitioners, window = page_from_index(w, datetime.now(UTC))
    hung, failing, answered = groups(practitioners)
    w.relay.hang.add(hung[0])
    w.relay.fail.add(failing[0])
    w.relay.smuggle[answered[0]] = hung[0]  # the answered call also carries slots of a practitioner it did not ask
    taken = [slots_of(cards, [g[1]])[0] for g in (hung, failing, answered)]
    for doc in taken:
        take(w, doc)
    before = index_now(w.backend)
    started = time.monotonic()
    report = recheck(w, cards, window, SHORT_DEADLINE_S)
    assert time.monotonic() - started < SHORT_DEADLINE_S + 1.0  # the answer does not wait for the hung call
    assert report.timed_out == [w.vendor.vendor_id]
    assert report.failed == [f"{w.vendor.vendor_id}: http: HTTP 500: relay: simulated failure"]
    assert report.vendors_answered == 0
    assert (report.practitioners_asked, report.practitioners_answered) == (PAGE, len(answered))
    # Only the answered group's taken slot leaves; the others stay as indexed, on their cards, unverified.
    assert before.keys() - index_now(w.backend).keys() == {taken[2]["slot_id"]} and report.slots_gone == 1
    kept = {doc["slot_id"] for doc in slots_of(cards, hung + failing)}
    assert {taken[0]["slot_id"], taken[1]["slot_id"]} <= kept
    assert not any(doc.get("verified") for doc in slots_of(cards, hung + failing))
    assert all(doc.get("verified") for doc in slots_of(cards, answered))
