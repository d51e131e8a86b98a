"""A vendor's answer over several pages, against real sandbox vendors on loopback: all of it or an error.

The client follows `next` links to the end, on the vendor's own origin only; a Slot repeated across pages
counts once; an answer that overruns the page cap or disagrees with its own `total` fails the batch, so the
slots indexed before stay as they were.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from support import CHEPY, KRISTIAN, indexed

from aggregation import puller
from aggregation.availability import SiteMapper, reconcile
from aggregation.client import VendorError, make_client, search_participants, search_slots
from aggregation.contract import ParseResult
from aggregation.puller import CycleReport, VendorPuller
from aggregation.status import vendor_statuses
from core.records import Participation, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxConfig, SandboxPractitioner, SandboxSite
from editor_sandbox.server import SandboxServer, ThreadedServer
from indexer.backend import Backend
from indexer.lifecycle import ensure_live
from indexer.registry import save_participation, save_vendor

# The vendors' clock and the puller's stand at one instant: no slot starts between two reads of a test.
NOW = datetime(2026, 11, 24, 9, 10, tzinfo=UTC)  # a Tuesday, 10:10 in Paris
TOKEN = "vendor-secret-token"
# 25 practitioners (one full batch) at CHEPY's establishment, which the directory sample holds.
TWENTY_FIVE = [SandboxPractitioner(idnps=f"8100000000{i:02d}", family=f"P{i}", sites=CHEPY.sites) for i in range(25)]


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Today only (the window from NOW to midnight), no waiting between tries."""
    return settings.model_copy(update={"horizon_days": 0, "batch_retries": 1, "retry_base_s": 0.01})


def sandbox(who: list[SandboxPractitioner], **knobs: Any) -> SandboxServer:
    config = SandboxConfig(vendor_id="v", seed=7, practitioners=who, churn_rate=0.0, **knobs)
    return SandboxServer(config, clock=lambda: NOW)


def vendor(base_url: str) -> Vendor:
    return Vendor(vendor_id="v", name="v", base_url=base_url, bearer_token=TOKEN, timeout_s=5)


def fetch(base_url: str, who: list[SandboxPractitioner]) -> ParseResult:
    """The vendor's free slots from NOW to midnight in Paris (the puller's window today), through Dispo's client."""
    v = vendor(base_url)
    end = NOW.replace(hour=22, minute=59, second=59)

    async def go() -> ParseResult:
        async with make_client(v) as client:
            return await search_slots(client, v, [p.idnps for p in who], NOW, end, NOW)

    return asyncio.run(go())


def control(server: SandboxServer, **knobs: Any) -> None:
    assert httpx.post(server.url + "/_control", json=knobs).status_code == 200


def searches(server: SandboxServer) -> int:
    return httpx.get(server.url + "/_stats").json()["searches"]


def in_directory(backend: Backend, who: list[SandboxPractitioner]) -> None:
    """Each practitioner at CHEPY's practice site of the directory, so that their slots can be placed."""
    index = ensure_live(backend, "practice_sites")
    site = backend.get("practice_sites", "0019402726:F010000032:S")
    assert site is not None
    backend.write(
        index,
        [
            {**site, "site_id": f"{p.idnps}:F010000032:S", "practitioner": {**site["practitioner"], "idnps": p.idnps}}
            for p in who
        ],
    )
    backend.refresh(index)


def declare(backend: Backend, server: SandboxServer, who: list[SandboxPractitioner]) -> VendorPuller:
    v = vendor(server.fhir_base)
    save_vendor(backend, v)
    for p in who:
        save_participation(backend, Participation(idnps=p.idnps, vendors=["v"]))
    return v


def cycle(backend: Backend, v: Vendor, settings: Settings) -> CycleReport:
    return asyncio.run(VendorPuller(backend, v, settings, clock=lambda: NOW).cycle())


def test_a_vendor_paging_by_five_is_indexed_completely(loaded: Backend, fast: Settings) -> None:
    in_directory(loaded, TWENTY_FIVE)
    with sandbox(TWENTY_FIVE) as server:
        whole = fetch(server.fhir_base, TWENTY_FIVE)
        pages = -(-len(whole.slots) // 5)
        assert pages > 20  # beyond the former cap of 20 pages
        control(server, page_size=5)
        asked = searches(server)
        report = cycle(loaded, declare(loaded, server, TWENTY_FIVE), fast)
        assert searches(server) - asked == pages
    assert report.batches_failed == 0 and report.errors == {}
    assert report.stats.inserted == report.slots_received == len(whole.slots)
    assert set(indexed(loaded, "v")) == {s.slot_id for s in whole.slots}


def test_the_client_reads_every_page_and_counts_them() -> None:
    with sandbox([CHEPY, KRISTIAN]) as server:
        whole = fetch(server.fhir_base, [CHEPY, KRISTIAN])
        control(server, page_size=5)
        paged = fetch(server.fhir_base, [CHEPY, KRISTIAN])
    assert [s.slot_id for s in paged.slots] == [s.slot_id for s in whole.slots]
    assert whole.pages == 1 and paged.pages == -(-len(whole.slots) // 5) > 3
    assert paged.total == paged.slot_entries == len(whole.slots)


@pytest.mark.parametrize(
    ("knobs", "cap"),
    [
        pytest.param({"page_size": 5}, 1, id="more pages than the cap"),
        pytest.param({"total_offset": 1}, None, id="total above the slots sent"),
        pytest.param({"total_offset": -1}, None, id="total below the slots sent"),
        pytest.param({"page_size": 5, "total_offset": 1}, None, id="total above, over several pages"),
    ],
)
def test_an_incomplete_answer_fails_the_batch_and_removes_nothing(
    loaded: Backend, fast: Settings, monkeypatch: pytest.MonkeyPatch, knobs: dict[str, Any], cap: int | None
) -> None:
    who = [CHEPY, KRISTIAN]
    with sandbox(who) as server:
        v = declare(loaded, server, who)
        first = cycle(loaded, v, fast)
        before = indexed(loaded, "v")
        assert first.stats.inserted == len(before)
        assert min(Counter(doc["idnps"] for doc in before.values()).values()) > 5  # each one's agenda: 2 pages of 5

        control(server, **knobs)
        if cap is not None:  # the puller's calls with a small safety cap
            monkeypatch.setattr(puller, "search_participants", functools.partial(search_participants, max_pages=cap))
        asked = searches(server)
        report = cycle(loaded, v, fast)
        # However the puller narrows a failed batch down, no call answers: nothing is written, nothing removed.
        assert report.batches_failed == 1 and set(report.errors) == {"incomplete"}
        assert report.stats.removed == report.stats.inserted == report.stats.updated == 0
        assert indexed(loaded, "v") == before
        if cap is not None:  # the cap is a number of requests per call
            assert searches(server) - asked == cap * report.errors["incomplete"]
        status = next(s for s in vendor_statuses(loaded) if s["vendor_id"] == "v")
        assert set(status["errors_by_kind"]) == set(status["last_cycle"]["errors"]) == {"incomplete"}
        assert status["failing_practitioners"] == 2 and status["slots_held"] == len(before)


def test_a_stated_total_must_match_the_slots_sent() -> None:
    with sandbox([CHEPY], total_offset=2) as server, pytest.raises(VendorError) as failure:
        fetch(server.fhir_base, [CHEPY])
    assert failure.value.kind == "incomplete" and not failure.value.retryable
    assert "states" in str(failure.value)


class Listener:
    """Another server on loopback that records every request that reaches it."""

    def __init__(self) -> None:
        self.requests: list[httpx.Headers] = []
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT"])
        async def anything(request: Request, path: str) -> Response:
            self.requests.append(httpx.Headers(request.headers.raw))
            return Response(b'{"resourceType": "Bundle", "type": "searchset", "total": 0}', media_type="text/json")

        self.server = ThreadedServer(app, name="listener")


@pytest.fixture
def listener() -> Iterator[Listener]:
    recorder = Listener()
    with recorder.server:
        yield recorder


def test_a_next_link_to_another_origin_is_never_followed(listener: Listener) -> None:
    with sandbox([CHEPY, KRISTIAN], page_size=5, foreign_next=listener.server.url) as server:
        with pytest.raises(VendorError) as failure:
            fetch(server.fhir_base, [CHEPY, KRISTIAN])
        assert searches(server) == 1
    assert failure.value.kind == "malformed" and listener.server.url in str(failure.value)
    assert listener.requests == []  # no request, so neither the query nor the vendor's token left
    # The listener does record what reaches it: the token would have been seen there.
    assert httpx.get(listener.server.url + "/fhir/Slot", headers={"Authorization": f"Bearer {TOKEN}"}).is_success
    assert [h["authorization"] for h in listener.requests] == [f"Bearer {TOKEN}"]


def relay(target: str, overlap: int = 0) -> FastAPI:
    """A vendor in front of the sandbox `target` that writes its next links relative to its FHIR base; with
    `overlap`, each page after the first starts that many Slots early, repeating the end of the previous page."""
    app = FastAPI()

    @app.get("/fhir/Slot")
    async def slots(request: Request) -> Response:
        params = [
            (k, str(max(0, int(v) - overlap)) if k == "_offset" else v) for k, v in request.query_params.multi_items()
        ]
        async with httpx.AsyncClient() as client:
            bundle = (await client.get(target + "/fhir/Slot", params=params)).json()
        for link in bundle["link"]:
            if link["relation"] == "next":
                link["url"] = "Slot?" + httpx.URL(link["url"]).query.decode()
        return Response(orjson.dumps(bundle), media_type="application/fhir+json")

    return app


def test_relative_next_links_resolve_against_the_vendor_base() -> None:
    with sandbox([CHEPY, KRISTIAN]) as server, ThreadedServer(relay(server.url)) as front:
        whole = fetch(server.fhir_base, [CHEPY, KRISTIAN])
        control(server, page_size=5)
        paged = fetch(front.url + "/fhir", [CHEPY, KRISTIAN])
    assert paged.pages > 3
    assert [s.slot_id for s in paged.slots] == [s.slot_id for s in whole.slots]


def test_a_slot_repeated_across_pages_counts_once(loaded: Backend) -> None:
    with sandbox([CHEPY, KRISTIAN]) as server, ThreadedServer(relay(server.url, overlap=1)) as front:
        whole = fetch(server.fhir_base, [CHEPY, KRISTIAN])
        control(server, page_size=5)
        overlapping = fetch(front.url + "/fhir", [CHEPY, KRISTIAN])
    # Pages of 5 advancing by 4: the Bundle's total still matches, as each repeated Slot is read once.
    assert overlapping.pages == -(-(len(whole.slots) - 1) // 4) > 3
    assert overlapping.slot_entries == overlapping.total == len(whole.slots)
    assert [s.slot_id for s in overlapping.slots] == [s.slot_id for s in whole.slots]

    # Reconciliation given the same slot twice also writes and counts it once.
    twice = [*whole.slots, *whole.slots[:3]]
    ids = [CHEPY.idnps, KRISTIAN.idnps]
    stats, _ = reconcile(loaded, "v", ids, twice, SiteMapper(loaded), NOW)
    assert stats.inserted == len(whole.slots) == len(indexed(loaded, "v"))
    again, _ = reconcile(loaded, "v", ids, twice, SiteMapper(loaded), NOW)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, len(whole.slots))


# -- paging never changes the answer ---------------------------------------------------------------------

# Practitioners with one or two sites, one whose agenda is full, and one the vendor does not know.
POOL = [
    SandboxPractitioner(
        idnps=f"81000000100{i}", family=f"Q{i}", sites=[SandboxSite(idnst=f"10100000{i}")] * (1 + i % 2)
    )
    for i in range(5)
]
UNKNOWN = SandboxPractitioner(idnps="810000009999", family="AILLEURS", sites=[SandboxSite(idnst="1010000099")])


@pytest.fixture(scope="module")
def pool_vendor() -> Iterator[SandboxServer]:
    with sandbox(POOL, full_rate=0.2) as server:
        yield server


@examples(max_examples=20, deadline=None)
@given(
    page_size=st.integers(min_value=1, max_value=50),
    who=st.lists(st.sampled_from([*POOL, UNKNOWN]), min_size=1, max_size=6, unique_by=lambda p: p.idnps),
)
def test_any_page_size_gives_the_unpaged_answer(
    pool_vendor: SandboxServer, page_size: int, who: list[SandboxPractitioner]
) -> None:
    control(pool_vendor, page_size=0)
    whole = fetch(pool_vendor.fhir_base, who)
    control(pool_vendor, page_size=page_size)
    paged = fetch(pool_vendor.fhir_base, who)
    assert [s.slot_id for s in paged.slots] == [s.slot_id for s in whole.slots]
    assert paged.pages == max(1, -(-len(whole.slots) // page_size))
