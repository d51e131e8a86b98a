"""A vendor's answer is bounded in size and in time, against real sandbox vendors on loopback.

A page larger than the cap fails the call as soon as it passes the cap, and one whose announced length is above it
fails before any of its body is read; a page must come whole within the vendor's timeout, however regularly its
bytes arrive, and a call, all its pages, within the call deadline. A failed call removes nothing, and a vendor
sending oversized answers costs the other vendors of the same aggregator nothing but its own failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from support import CHEPY, KRISTIAN, indexed

from aggregation.client import VendorError, search_slots
from aggregation.contract import ParseResult
from aggregation.puller import CycleReport, VendorPuller
from aggregation.scheduler import Aggregator
from aggregation.status import vendor_statuses
from core.records import Participation, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxConfig, SandboxPractitioner
from editor_sandbox.server import SandboxServer
from indexer.backend import Backend
from indexer.registry import save_participation, save_vendor

# The vendors' clock and the puller's stand at one instant: no slot starts between two reads of a test.
NOW = datetime(2026, 11, 24, 9, 10, tzinfo=UTC)  # a Tuesday, 10:10 in Paris
END = NOW.replace(hour=22, minute=59, second=59)  # midnight in Paris: the puller's window with horizon_days=0
CAP = 100_000  # bytes of a page: a day of two practitioners' slots is ~20 KB
PADDED = 2_000_000  # bytes of a hostile vendor's answers: 20 times the cap


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Today only, no waiting between tries, pages capped at CAP."""
    return settings.model_copy(
        update={"horizon_days": 0, "batch_retries": 1, "retry_base_s": 0.01, "vendor_max_answer_bytes": CAP}
    )


def sandbox(vendor_id: str, who: list[SandboxPractitioner], fixed: bool = True, **knobs: Any) -> SandboxServer:
    """A sandbox vendor; `fixed`: its clock stands at NOW (else it is the real one, as the scheduler's is)."""
    config = SandboxConfig(vendor_id=vendor_id, seed=7, practitioners=who, churn_rate=0.0, **knobs)
    return SandboxServer(config, clock=(lambda: NOW) if fixed else None)


def declare(backend: Backend, server: SandboxServer, who: list[SandboxPractitioner], timeout_s: float = 5) -> Vendor:
    vendor_id = server.config.vendor_id
    v = Vendor(vendor_id=vendor_id, name=vendor_id, base_url=server.fhir_base, timeout_s=timeout_s)
    save_vendor(backend, v)
    for p in who:
        save_participation(backend, Participation(idnps=p.idnps, vendors=[vendor_id]))
    return v


def control(server: SandboxServer, **knobs: Any) -> None:
    assert httpx.post(server.url + "/_control", json=knobs).status_code == 200


def searches(server: SandboxServer) -> int:
    return httpx.get(server.url + "/_stats").json()["searches"]


def cycle(backend: Backend, v: Vendor, settings: Settings) -> CycleReport:
    return asyncio.run(VendorPuller(backend, v, settings, clock=lambda: NOW).cycle())


class Counted(httpx.AsyncBaseTransport):
    """A loopback transport that counts the body bytes the client takes from the network."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.read = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CountedStream(response.stream, self),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _CountedStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, counter: Counted) -> None:
        self.stream, self.counter = stream, counter

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            self.counter.read += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


def fetch(server: SandboxServer, who: list[SandboxPractitioner], timeout_s: float = 5, **limits: Any) -> ParseResult:
    """The vendor's slots of today through Dispo's client; `limits`: search_slots's keyword arguments."""
    v = Vendor(vendor_id="v", name="v", base_url=server.fhir_base, timeout_s=timeout_s)

    async def go() -> ParseResult:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            return await search_slots(client, v, [p.idnps for p in who], NOW, END, NOW, **limits)

    return asyncio.run(go())


def fetch_counted(server: SandboxServer, who: list[SandboxPractitioner], max_answer_bytes: int) -> Counted:
    """A call that must fail as too large; returns how much of the body the client read."""
    v = Vendor(vendor_id="v", name="v", base_url=server.fhir_base, timeout_s=5)
    transport = Counted()

    async def go() -> None:
        async with httpx.AsyncClient(transport=transport, timeout=5) as client:
            await search_slots(client, v, [p.idnps for p in who], NOW, END, NOW, max_answer_bytes=max_answer_bytes)

    with pytest.raises(VendorError) as failure:
        asyncio.run(go())
    assert failure.value.kind == "too-large" and not failure.value.retryable
    return transport


# -- size ------------------------------------------------------------------------------------------------


def test_a_streamed_answer_above_the_cap_fails_once_the_cap_is_passed_without_reading_the_rest() -> None:
    # Dribbled, the answer is chunked: no length announced, the client counts what comes.
    with sandbox("v", [CHEPY], padding_bytes=PADDED, dribble_s=0.5) as server:
        read = fetch_counted(server, [CHEPY], CAP).read
    assert CAP < read < PADDED / 2


def test_an_answer_announcing_a_length_above_the_cap_fails_before_its_body_is_read() -> None:
    with sandbox("v", [CHEPY], padding_bytes=PADDED) as server:
        assert fetch_counted(server, [CHEPY], CAP).read == 0


def test_an_answer_within_the_cap_is_read_whole_padding_and_all() -> None:
    with sandbox("v", [CHEPY, KRISTIAN]) as server:
        plain = fetch(server, [CHEPY, KRISTIAN])
        control(server, padding_bytes=CAP // 2)
        padded = fetch(server, [CHEPY, KRISTIAN], max_answer_bytes=CAP)
    # The padding is entries that are not Slots: the same slots, the stated total still right.
    assert [s.slot_id for s in padded.slots] == [s.slot_id for s in plain.slots]
    assert padded.total == padded.slot_entries == len(plain.slots) > 0


def test_an_oversized_answer_fails_the_batch_its_halves_are_asked_never_again_and_the_slots_stay(
    loaded: Backend, fast: Settings
) -> None:
    who = [CHEPY, KRISTIAN]
    with sandbox("v", who) as server:
        v = declare(loaded, server, who)
        first = cycle(loaded, v, fast)
        before = indexed(loaded, "v")
        assert first.stats.inserted == len(before) > 0

        control(server, padding_bytes=PADDED)
        asked = searches(server)
        report = cycle(loaded, v, fast)
        # A smaller batch may fit: the batch is split; a single practitioner's answer comes back the same: no retry.
        assert searches(server) - asked == report.requests == 1 + 2
        assert report.errors == {"too-large": 3} and report.batches_failed == 1
        assert report.stats.removed == report.stats.inserted == report.stats.updated == 0
        assert indexed(loaded, "v") == before
        status = next(s for s in vendor_statuses(loaded) if s["vendor_id"] == "v")
        assert status["errors_by_kind"] == {"too-large": 3}
        assert status["failing_practitioners"] == 2 and status["slots_held"] == len(before)


# -- time ------------------------------------------------------------------------------------------------


def test_an_answer_dribbled_past_the_timeout_fails_although_each_chunk_comes_in_time() -> None:
    # 20 chunks over 2 s: one every 0.1 s, well within the 0.5 s timeout; the whole page comes after 2 s.
    with sandbox("v", [CHEPY], dribble_s=2.0) as server:
        assert fetch(server, [CHEPY], timeout_s=5).slots  # the same answer, given time
        with pytest.raises(VendorError) as failure:
            fetch(server, [CHEPY], timeout_s=0.5)
    assert failure.value.kind == "timeout" and failure.value.retryable
    assert "no answer within 0.5 s, the page was still coming in" in str(failure.value)


def test_a_paged_answer_past_the_call_deadline_fails_and_the_slots_stay(loaded: Backend, fast: Settings) -> None:
    who = [CHEPY, KRISTIAN]
    with sandbox("v", who) as server:
        v = declare(loaded, server, who)
        cycle(loaded, v, fast)
        before = indexed(loaded, "v")
        assert before

        # Pages of 5 Slots, each answered in 0.2 s: every page within the 5 s timeout, the call (3 pages or more
        # for each practitioner alone) past a 0.3 s deadline.
        control(server, page_size=5, latency_ms_min=200, latency_ms_max=200)
        report = cycle(loaded, v, fast.model_copy(update={"vendor_call_deadline_s": 0.3}))
    assert set(report.errors) == {"timeout"} and report.batches_failed == 1
    assert report.stats.removed == report.stats.inserted == report.stats.updated == 0
    assert indexed(loaded, "v") == before
    status = next(s for s in vendor_statuses(loaded) if s["vendor_id"] == "v")
    assert "all its pages, took more than 0.3 s" in status["last_cycle"]["failing_reasons"][CHEPY.idnps]


def test_the_call_deadline_counts_every_page() -> None:
    with sandbox("v", [CHEPY, KRISTIAN], page_size=5, latency_ms_min=100, latency_ms_max=100) as server:
        paged = fetch(server, [CHEPY, KRISTIAN], call_deadline_s=30)
        assert paged.pages > 3
        with pytest.raises(VendorError) as failure:
            fetch(server, [CHEPY, KRISTIAN], call_deadline_s=0.1 * paged.pages / 2)
    assert failure.value.kind == "timeout" and "all its pages" in str(failure.value)


# -- neighbours ------------------------------------------------------------------------------------------


def test_a_vendor_sending_oversized_answers_leaves_another_vendors_cycle_whole(
    loaded: Backend, settings: Settings
) -> None:
    # The scheduler's clock is the real one, and so are these vendors'; the default horizon of days holds slots.
    limited = settings.model_copy(update={"vendor_max_answer_bytes": CAP})
    with (
        sandbox("v", [CHEPY], fixed=False) as normal,
        sandbox("h", [KRISTIAN], fixed=False, padding_bytes=PADDED, dribble_s=0.2) as hostile,
    ):
        declare(loaded, normal, [CHEPY])
        declare(loaded, hostile, [KRISTIAN])
        reports = {r.vendor_id: r for r in asyncio.run(Aggregator(loaded, limited).run_once())}
    assert reports["h"].errors == {"too-large": 1} and reports["h"].batches_failed == 1
    assert reports["v"].errors == {} and reports["v"].batches_failed == 0
    assert len(indexed(loaded, "v")) == reports["v"].stats.inserted == reports["v"].slots_received > 0
    assert {d["idnps"] for d in indexed(loaded).values()} == {CHEPY.idnps}
