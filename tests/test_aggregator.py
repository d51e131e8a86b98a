"""The aggregator against real sandbox vendors on loopback, on both backends: cycles, faults, breaker."""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from support import CHEPY, KRISTIAN, api_settings, headers, indexed
from typer.testing import CliRunner

from aggregation.availability import freshness
from aggregation.scheduler import Aggregator
from aggregation.status import vendor_statuses
from api.app import create_app
from api.auth import Role
from core.records import Participation, Vendor
from core.settings import Settings
from dispo.cli import app as cli
from editor_sandbox.agenda import SandboxConfig, SandboxPractitioner, SandboxSite
from editor_sandbox.fleet import start_fleet
from editor_sandbox.server import SandboxServer, free_port
from indexer.backend import Backend
from indexer.registry import save_participation, save_vendor, set_enabled
from search.directory import practitioner_answer

# Further practitioners of the RPPS sample, at their FINESS sites.
DERVIEUX = SandboxPractitioner(idnps="0019600048", family="DERVIEUX", sites=[SandboxSite(idnst="1010000495")])
TROESCH = SandboxPractitioner(idnps="0019602432", family="TROESCH", sites=[SandboxSite(idnst="1010004109")])


@pytest.fixture
def fast(settings: Settings) -> Settings:
    # The breaker probes again at once (reset 0 s): each cycle below tries every vendor.
    return settings.model_copy(
        update={"batch_retries": 1, "retry_base_s": 0.01, "breaker_failures": 2, "breaker_reset_s": 0.0}
    )


def declare(backend: Backend, vendor_id: str, url: str, who: list[SandboxPractitioner], timeout_s: float = 3) -> None:
    save_vendor(backend, Vendor(vendor_id=vendor_id, name=vendor_id, base_url=url, timeout_s=timeout_s))
    for p in who:
        save_participation(backend, Participation(idnps=p.idnps, vendors=[vendor_id]))


def sandbox(vendor_id: str, who: list[SandboxPractitioner], **knobs) -> SandboxServer:
    return SandboxServer(
        SandboxConfig(vendor_id=vendor_id, seed=len(vendor_id), practitioners=who, churn_rate=0, **knobs)
    )


def run(aggregator: Aggregator):
    return {r.vendor_id: r for r in asyncio.run(aggregator.run_once())}


def test_a_failing_vendor_never_blanks_the_others_or_its_own_last_slots(loaded: Backend, fast: Settings) -> None:
    with ExitStack() as stack:
        good = stack.enter_context(sandbox("good", [CHEPY, KRISTIAN]))
        garbage = stack.enter_context(sandbox("garbage", [DERVIEUX], malformed_rate=1.0))
        declare(loaded, "good", good.fhir_base, [CHEPY, KRISTIAN])
        declare(loaded, "down", f"http://127.0.0.1:{free_port()}/fhir", [TROESCH])
        declare(loaded, "garbage", garbage.fhir_base, [DERVIEUX])
        aggregator = Aggregator(loaded, fast)
        reports = run(aggregator)
        assert reports["good"].stats.inserted > 0 and reports["good"].batches_failed == 0
        assert reports["down"].errors == {"connection": 2}  # first try + one retry
        assert reports["garbage"].errors == {"malformed": 1}  # not retried: the same garbage would come back
        held = indexed(loaded)
        assert {d["vendor"] for d in held.values()} == {"good"}

        # The good vendor now fails: its last good slots stay, untouched.
        httpx.post(good.url + "/_control", json={"error_rate": 1.0})
        again = run(aggregator)
        assert again["good"].batches_failed == 1 and again["good"].stats.removed == 0
        assert indexed(loaded) == held
        status = {s["vendor_id"]: s for s in vendor_statuses(loaded)}
        assert status["good"]["last_success_at"] is not None
        assert "simulated server error" in status["good"]["last_error"]
        assert status["good"]["failing_practitioners"] == 2
        assert status["down"]["last_success_at"] is None and status["down"]["slots_held"] == 0

        # Flapping back: the garbage vendor recovers, its slots arrive; good recovers, nothing rewritten.
        httpx.post(garbage.url + "/_control", json={"malformed_rate": 0.0})
        httpx.post(good.url + "/_control", json={"error_rate": 0.0})
        third = run(aggregator)
        assert third["garbage"].stats.inserted > 0
        assert third["good"].stats.inserted == third["good"].stats.updated == 0
        assert third["good"].stats.unchanged == reports["good"].stats.inserted
        assert {s["vendor_id"]: s["failing_practitioners"] for s in vendor_statuses(loaded)}["good"] == 0


def test_a_slow_vendor_times_out_without_delaying_the_others(loaded: Backend, fast: Settings) -> None:
    with sandbox("quick", [CHEPY]) as quick, sandbox("slow", [KRISTIAN], hang_rate=1.0, hang_s=4) as slow:
        declare(loaded, "quick", quick.fhir_base, [CHEPY])
        declare(loaded, "slow", slow.fhir_base, [KRISTIAN], timeout_s=1.5)
        finished: list[str] = []
        aggregator = Aggregator(loaded, fast, on_cycle=lambda r: finished.append(r.vendor_id))
        reports = run(aggregator)
        assert reports["slow"].errors == {"timeout": 2}
        assert reports["quick"].stats.inserted > 0
        assert finished == ["quick", "slow"]  # the quick vendor's cycle ended while the slow one still waited


def test_the_circuit_breaker_opens_after_consecutive_failures(loaded: Backend, fast: Settings) -> None:
    many = [
        SandboxPractitioner(idnps=f"8{10000000000 + i}", family=f"P{i}", sites=[SandboxSite(idnst="1x")])
        for i in range(100)
    ]  # 4 batches of 25
    with sandbox("flaky", many, error_rate=1.0) as flaky:
        declare(loaded, "flaky", flaky.fhir_base, many)
        settings = fast.model_copy(update={"batch_retries": 0, "breaker_reset_s": 60.0})
        vendor = Vendor(vendor_id="flaky", name="flaky", base_url=flaky.fhir_base, concurrency=1)
        save_vendor(loaded, vendor)
        report = run(Aggregator(loaded, settings))["flaky"]
        assert report.batches == 4
        assert report.batches_failed == 2 and report.batches_skipped == 2  # opened after 2 failures
        assert report.requests == 2 and report.breaker == "open"
        assert httpx.get(flaky.url + "/_stats").json()["searches"] == 2


def test_disabled_vendors_are_not_pulled_and_departed_practitioners_lose_their_slots(
    loaded: Backend, fast: Settings
) -> None:
    with sandbox("v", [CHEPY, KRISTIAN]) as server:
        declare(loaded, "v", server.fhir_base, [CHEPY, KRISTIAN])
        aggregator = Aggregator(loaded, fast)
        run(aggregator)
        assert {d["idnps"] for d in indexed(loaded).values()} == {CHEPY.idnps, KRISTIAN.idnps}
        save_participation(loaded, Participation(idnps=KRISTIAN.idnps, vendors=["v"], active=False))
        report = run(aggregator)["v"]
        assert report.stats.removed > 0
        assert {d["idnps"] for d in indexed(loaded).values()} == {CHEPY.idnps}
        set_enabled(loaded, "v", False)
        assert run(aggregator) == {}


def test_fleet_cli_cycle_status_and_metrics(loaded: Backend, settings: Settings, monkeypatch) -> None:
    """Three sandboxes over the sample directory, one CLI cycle, then status and Prometheus metrics."""
    servers = start_fleet(loaded, 3, churn_rate=0.0)
    try:
        assert sorted(s.config.vendor_id for s in servers) == ["sandbox-a", "sandbox-b", "sandbox-c"]
        served = sorted(p.idnps for s in servers for p in s.config.practitioners)
        assert len(served) == len(set(served)) == 13  # every placed practitioner of the sample, once
        aggregator = Aggregator(loaded, settings)
        reports = run(aggregator)
        assert sum(r.stats.inserted for r in reports.values()) == len(indexed(loaded)) > 0
        assert all(sum(r.unplaced.values()) == 0 for r in reports.values())
        if loaded.name == "sqlite":  # the CLI reads the same embedded index through the environment
            monkeypatch.setenv("DISPO_DATA_DIR", str(settings.data_dir.parent))  # where `loaded` keeps its index
            result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["aggregate", "--once"])
            assert result.exit_code == 0, result.output
            assert "sandbox-a" in result.output and "unchanged" in result.output
            status = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["vendors", "status", "--json"])
            assert {row["vendor_id"] for row in json.loads(status.stdout)} == {"sandbox-a", "sandbox-b", "sandbox-c"}
        with TestClient(create_app(api_settings(settings), loaded)) as c:
            assert c.get("/metrics", headers=headers(Role.regulator)).status_code == 403
            text = c.get("/metrics", headers=headers(Role.maintainer)).text
            assert 'dispo_vendor_slots_held{vendor="sandbox-a"}' in text
            assert "dispo_vendor_latency_seconds_bucket" in text and "dispo_vendor_requests_total" in text
    finally:
        for s in servers:
            s.stop()


def test_stale_slots_are_hidden_but_kept(loaded: Backend, fast: Settings) -> None:
    with sandbox("v", [CHEPY, KRISTIAN]) as server:
        declare(loaded, "v", server.fhir_base, [CHEPY, KRISTIAN])
        aggregator = Aggregator(loaded, fast)
        run(aggregator)
        answer = practitioner_answer(loaded, CHEPY.idnps, staleness_limit_s=900)
        assert answer.slots and answer.stale_slots_hidden == 0
        assert [s.start for s in answer.slots] == sorted(s.start for s in answer.slots)
        # The vendor fails from now on: for 15 minutes its last good slots still show, then they hide.
        httpx.post(server.url + "/_control", json={"error_rate": 1.0})
        run(aggregator)
        now = datetime.now(UTC)
        assert freshness(loaded, now, 900).is_fresh({"vendor": "v", "idnps": CHEPY.idnps})
        later = freshness(loaded, now + timedelta(minutes=16), 900)
        assert not later.is_fresh({"vendor": "v", "idnps": CHEPY.idnps})
        hidden = practitioner_answer(loaded, CHEPY.idnps, staleness_limit_s=0)
        assert hidden.slots == [] and hidden.stale_slots_hidden == len(answer.slots)
        assert len([d for d in indexed(loaded).values() if d["idnps"] == CHEPY.idnps]) >= len(answer.slots)


def test_the_scheduler_repeats_each_vendor_at_its_interval(loaded: Backend, fast: Settings) -> None:
    with sandbox("v", [CHEPY]) as server:
        declare(loaded, "v", server.fhir_base, [CHEPY])
        seen: list[str] = []
        aggregator = Aggregator(
            loaded, fast.model_copy(update={"aggregation_interval_s": 0.3}), on_cycle=lambda r: seen.append(r.vendor_id)
        )

        async def go() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(aggregator.run_forever(stop))
            for _ in range(100):
                await asyncio.sleep(0.1)
                if len(seen) >= 3:
                    break
            stop.set()
            await task

        asyncio.run(go())
        assert seen[:3] == ["v", "v", "v"]
        assert httpx.get(server.url + "/_stats").json()["searches"] >= 3
