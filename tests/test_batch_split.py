"""One slow or failing practitioner no longer costs the others of its batch: against real sandbox vendors on loopback,
on both backends.

The vendor's timeout is 1 s and the slow agenda takes 2 s: the contract's 7 s against an 8 s agenda, scaled down.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
from support import indexed

from aggregation.availability import ensure_slots_index, freshness
from aggregation.puller import CycleReport
from aggregation.scheduler import Aggregator
from aggregation.status import STATUS
from core.records import Participation, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxConfig, SandboxPractitioner, SandboxSite
from editor_sandbox.app import create_sandbox_app
from editor_sandbox.server import ThreadedServer
from indexer.backend import Backend
from indexer.lifecycle import ensure_live
from indexer.registry import save_participation, save_vendor

# A full batch of 25 practitioners at CHEPY's site; in IDNPS order, so TEAM[0] is the first of its batch.
TEAM = [
    SandboxPractitioner(idnps=f"8{10000000000 + i}", family=f"P{i:02d}", sites=[SandboxSite(idnst="1010000032")])
    for i in range(25)
]
FIRST, NEIGHBOURS = TEAM[0], TEAM[1:]
CHEPY_SITE = "0019402726:F010000032:S"


@pytest.fixture
def quick(settings: Settings) -> Settings:
    # One retry, short backoff, and a breaker that opens after only two consecutive failures.
    return settings.model_copy(
        update={"batch_retries": 1, "retry_base_s": 0.01, "breaker_failures": 2, "breaker_reset_s": 60.0}
    )


def place(backend: Backend, team: list[SandboxPractitioner]) -> None:
    """Directory sites for `team`: CHEPY's practice site, under each practitioner's own IDNPS."""
    site = backend.get("practice_sites", CHEPY_SITE)
    assert site is not None
    docs = []
    for p in team:
        doc = copy.deepcopy(site)
        doc["site_id"] = f"{p.idnps}:F010000032:S"
        doc["practitioner"]["idnps"] = p.idnps
        docs.append(doc)
    index = ensure_live(backend, "practice_sites")
    backend.write(index, docs)
    backend.refresh(index)


def join(backend: Backend, team: list[SandboxPractitioner]) -> None:
    for p in team:
        save_participation(backend, Participation(idnps=p.idnps, vendors=["v"]))


def broken_for(app: Any, idnps: str) -> Any:
    """The vendor `app`, answering 500 to every search that asks for `idnps` (after doing the work, so its
    `/_stats` still counts the search)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or idnps not in unquote(scope.get("query_string", b"").decode()):
            await app(scope, receive, send)
            return

        async def discard(message: dict[str, Any]) -> None:
            pass

        await app(scope, receive, discard)
        body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
        await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": orjson.dumps(body)})

    return wrapped


@contextmanager
def vendor(backend: Backend, broken: str | None = None, **knobs: Any) -> Iterator[ThreadedServer]:
    """A sandbox vendor "v" serving TEAM, declared with a 1 s timeout; answering 500 for `broken` if given."""
    app = create_sandbox_app(SandboxConfig(vendor_id="v", seed=5, practitioners=TEAM, churn_rate=0, **knobs))
    with ThreadedServer(broken_for(app, broken) if broken else app, name="sandbox-v") as server:
        base = server.url + "/fhir"
        save_vendor(backend, Vendor(vendor_id="v", name="v", base_url=base, timeout_s=1.0, requests_per_second=1000))
        yield server


def searches(server: ThreadedServer) -> int:
    return httpx.get(server.url + "/_stats").json()["searches"]


def cycle(aggregator: Aggregator) -> CycleReport:
    (report,) = asyncio.run(aggregator.run_once())
    return report


def slots_of(backend: Backend, idnps: str) -> dict[str, dict[str, Any]]:
    return {k: d for k, d in indexed(backend, "v").items() if d["idnps"] == idnps}


def test_one_slow_practitioner_is_isolated_and_its_24_neighbours_get_their_slots_in_the_same_cycle(
    loaded: Backend, quick: Settings
) -> None:
    place(loaded, TEAM)
    with vendor(loaded) as server:
        join(loaded, [FIRST])
        aggregator = Aggregator(loaded, quick)
        cycle(aggregator)  # FIRST alone, still quick: its slots are indexed
        kept = slots_of(loaded, FIRST.idnps)
        assert kept

        # The 24 others join; FIRST's agenda now takes 2 s, and the vendor answers a search naming it after 2 s.
        join(loaded, NEIGHBOURS)
        httpx.post(server.url + "/_control", json={"slow_practitioners": {FIRST.idnps: 2.0}})
        before = searches(server)
        report = cycle(aggregator)

        held = indexed(loaded, "v")
        assert {d["idnps"] for d in held.values()} == {p.idnps for p in TEAM}
        assert report.stats.inserted == len(held) - len(kept) > 0  # every neighbour's slots, in this cycle
        assert slots_of(loaded, FIRST.idnps) == kept  # a failed call removes nothing
        assert report.batches == 1 and report.batches_failed == 0 and report.practitioners_failed == 1
        assert report.breaker == "closed"  # its neighbours answered: the vendor is up

        # Halving 25 -> 12 -> 6 -> 3 -> 1 isolates the first practitioner in 4 splits: one try of the whole batch
        # (not retried: split instead), then each pair of halves. FIRST alone is not asked again: it has timed out
        # at every batch size down to its own.
        assert report.batches_split == 4
        assert report.errors == {"timeout": 5}
        assert report.requests == searches(server) - before == 1 + 2 + 2 + 2 + 2
        assert report.pages == report.requests - 5  # each answer one page
        assert report.as_dict()["batches_split"] == 4 and report.as_dict()["pages"] == report.pages

        failing = aggregator.pullers["v"].failing
        assert list(failing) == [FIRST.idnps]
        assert "no answer within 1.0 s" in failing[FIRST.idnps]["reason"]
        status = loaded.get(STATUS, "v")
        assert status is not None
        assert status["failing"] == {failing[FIRST.idnps]["since"]: [FIRST.idnps]}  # by instant of failure
        assert status["last_cycle"]["failing_reasons"] == {FIRST.idnps: failing[FIRST.idnps]["reason"]}

        # Its last good slots follow the staleness rules: shown while recent, hidden past the limit.
        since = datetime.fromisoformat(failing[FIRST.idnps]["since"])
        assert freshness(loaded, since, 900).failing("v") == {FIRST.idnps}
        assert freshness(loaded, since, 900).is_fresh({"vendor": "v", "idnps": FIRST.idnps})
        assert freshness(loaded, since + timedelta(minutes=16), 900).stale_practitioners == {"v": {FIRST.idnps}}

        # Its agenda answers quickly again: it is no longer failing.
        httpx.post(server.url + "/_control", json={"slow_practitioners": {}})
        again = cycle(aggregator)
        assert again.batches_split == 0 and again.requests == 1
        assert aggregator.pullers["v"].failing == {}


def test_a_vendor_failing_for_one_practitioner_only_isolates_it(loaded: Backend, quick: Settings) -> None:
    place(loaded, TEAM)
    join(loaded, TEAM)
    with vendor(loaded, broken=FIRST.idnps) as server:
        aggregator = Aggregator(loaded, quick)
        report = cycle(aggregator)
        assert {d["idnps"] for d in indexed(loaded, "v").values()} == {p.idnps for p in NEIGHBOURS}
        assert report.batches_failed == 0 and report.breaker == "closed"
        assert report.batches_split == 4
        assert report.errors == {"http": 6}  # a 500 for FIRST alone is retried once, as any 5xx may pass
        assert report.requests == searches(server) == 10
        failing = aggregator.pullers["v"].failing
        assert list(failing) == [FIRST.idnps] and "HTTP 500" in failing[FIRST.idnps]["reason"]


def test_a_vendor_failing_every_call_opens_the_breaker_and_stops_splitting(loaded: Backend, quick: Settings) -> None:
    place(loaded, TEAM)
    join(loaded, TEAM)
    with vendor(loaded, error_rate=1.0) as server:
        aggregator = Aggregator(loaded, quick.model_copy(update={"breaker_failures": 3}))
        report = cycle(aggregator)
        # The batch fails (1), then both its halves (2), then both halves of each half (3, 4): open, no more.
        assert report.breaker == "open" and report.batches_failed == 1
        assert report.requests == searches(server) == 1 + 2 + 4
        ensure_slots_index(loaded)
        assert indexed(loaded, "v") == {}
        failing = aggregator.pullers["v"].failing
        assert set(failing) == {p.idnps for p in TEAM}
        assert all("not split: circuit open" in f["reason"] for f in failing.values())


def test_past_the_split_budget_a_failed_batch_fails_whole_after_one_try(loaded: Backend, quick: Settings) -> None:
    place(loaded, TEAM)
    join(loaded, TEAM)
    with vendor(loaded, slow_practitioners={FIRST.idnps: 2.0}) as server:
        aggregator = Aggregator(loaded, quick.model_copy(update={"split_budget_s": 0.0}))
        report = cycle(aggregator)
        assert report.batches_failed == 1 and report.batches_split == 0
        assert report.requests == searches(server) == 1  # a timed-out batch is not asked again whole
        failing = aggregator.pullers["v"].failing
        assert set(failing) == {p.idnps for p in TEAM}
        assert "split budget" in failing[NEIGHBOURS[0].idnps]["reason"]
