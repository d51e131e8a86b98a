"""Leases on both backends: one scheduler at a time holds a vendor, a holder that lost it stops writing, and a second
`dispo aggregate` stands by, then takes over within the lease time and a third when the first is killed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import pytest
from support import CHEPY, KRISTIAN, indexed

from aggregation.scheduler import Aggregator
from aggregation.status import vendor_statuses
from core.records import Participation, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxConfig
from editor_sandbox.server import SandboxServer
from indexer.backend import Backend
from indexer.es_backend import ElasticsearchBackend
from indexer.lease import LeaseLost, Leases, leases, vendor_key
from indexer.registry import save_participation, save_vendor


class Clock:
    """Wall and monotonic time moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_one_holder_at_a_time_and_a_lost_lease_stops_its_holder(backend: Backend) -> None:
    clock = Clock()
    a = Leases(backend, 30, holder="a", clock=clock, monotonic=clock)
    b = Leases(backend, 30, holder="b", clock=clock, monotonic=clock)
    key = vendor_key("v")
    assert a.claim(key) and a.holds(key)
    assert not b.claim(key) and not b.holds(key)
    clock.now += 20
    assert a.claim(key), "the holder renews its own lease"
    clock.now += 29
    assert not b.claim(key), "renewed 29 s ago: still held"
    # a believes itself the holder for less time than b sees the lease held: it has stopped writing already.
    assert not a.holds(key)
    with pytest.raises(LeaseLost):
        a.check(key)
    clock.now += 2
    assert b.claim(key) and b.holds(key)
    stored = leases(backend)[key]
    assert (stored.holder, stored.term) == ("b", 2)
    assert not a.claim(key), "the old holder cannot take it back while b renews it"
    b.release(key)
    assert not b.holds(key)
    assert a.claim(key), "given back: taken at once"
    assert leases(backend)[key].term == 3


def test_racing_holders_never_hold_one_lease_together(backend: Backend) -> None:
    """Eight schedulers claim one lease at once, again and again: each claim that succeeds is the only one of its
    term, and the lease changes hands only when it has run out."""
    clock = Clock()
    holders = [Leases(backend, 30, holder=f"h{i}", clock=clock, monotonic=clock) for i in range(8)]
    key = vendor_key("raced")
    won: list[tuple[int, str]] = []
    lock = threading.Lock()

    def race(leases_: Leases, rounds: threading.Barrier) -> None:
        for _ in range(5):
            rounds.wait()
            if leases_.claim(key):
                with lock:
                    won.append((leases(backend)[key].term, leases_.holder))
            rounds.wait()

    barrier = threading.Barrier(len(holders), action=lambda: setattr(clock, "now", clock.now + 16))
    threads = [threading.Thread(target=race, args=(h, barrier)) for h in holders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    # Every 32 s (two barrier steps of 16) the lease runs out before the next round: each round one claim succeeds
    # (a new holder's, a term more, or the last holder's renewal), and a term never has two holders.
    assert len(won) == 5, won
    by_term = {term: sorted({h for t, h in won if t == term}) for term, _ in won}
    assert all(len(names) == 1 for names in by_term.values()), by_term
    assert sorted(by_term) == list(range(1, len(by_term) + 1))


def test_a_scheduler_without_the_lease_stands_by_and_writes_nothing(loaded: Backend, settings: Settings) -> None:
    practitioners = [CHEPY, KRISTIAN]
    with SandboxServer(SandboxConfig(vendor_id="v", seed=1, practitioners=practitioners, churn_rate=0)) as server:
        save_vendor(loaded, Vendor(vendor_id="v", name="v", base_url=server.fhir_base))
        for p in practitioners:
            save_participation(loaded, Participation(idnps=p.idnps, vendors=["v"]))
        leader = Leases(loaded, 60, holder="leader")
        assert leader.claim(vendor_key("v"))
        standby = Aggregator(loaded, settings, leases=Leases(loaded, 60, holder="standby"))
        assert asyncio.run(standby.run_once()) == []
        assert loaded.live_index("slots") is None or not indexed(loaded)
        (row,) = vendor_statuses(loaded)
        assert row["pulled_by"] == "leader" and row["lease_until"]
        leader.release(vendor_key("v"))
        (report,) = asyncio.run(standby.run_once())
        assert report.stats.inserted > 0 and indexed(loaded)
        assert vendor_statuses(loaded)[0]["pulled_by"] is None, "run_once gives its leases back"


def test_a_holder_that_loses_its_lease_mid_cycle_stops_writing(loaded: Backend, settings: Settings) -> None:
    """While the cycle waits on a slow vendor, another scheduler takes the lease (its clock says it ran out): the
    holder's next renewal fails, and the answer that comes back afterwards is not written."""
    practitioners = [CHEPY, KRISTIAN]
    config = SandboxConfig(
        vendor_id="v", seed=1, practitioners=practitioners, churn_rate=0, latency_ms_min=2500, latency_ms_max=2500
    )
    with SandboxServer(config) as server:
        save_vendor(loaded, Vendor(vendor_id="v", name="v", base_url=server.fhir_base))
        for p in practitioners:
            save_participation(loaded, Participation(idnps=p.idnps, vendors=["v"]))
        holder = Leases(loaded, 3, holder="slow")  # renewed every second
        other = Leases(loaded, 60, holder="other", clock=lambda: time.time() + 100)
        taken = threading.Timer(0.5, lambda: other.claim(vendor_key("v")))
        taken.start()
        try:
            assert asyncio.run(Aggregator(loaded, settings, leases=holder).run_once()) == []
        finally:
            taken.join()
        assert leases(loaded)[vendor_key("v")].holder == "other"
        assert loaded.live_index("slots") is None or not indexed(loaded)


CYCLE = re.compile(r"vendor (\S+) cycle (\{.*\})$")


def _cycles(log: str) -> list[tuple[str, float, float]]:
    """(vendor, start, end) of each cycle a `dispo aggregate` logged, in epoch seconds."""
    found = []
    for line in log.splitlines():
        match = CYCLE.search(line)
        if match:
            report = json.loads(match.group(2))
            start = datetime.fromisoformat(report["started_at"]).timestamp()
            found.append((match.group(1), start, start + report["duration_s"]))
    return found


def _pulled(log: Path) -> set[str]:
    return {vendor for vendor, *_ in _cycles(log.read_text())}


def _scheduler(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dispo.cli", "aggregate"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )


def _wait_for(what: str, found: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not found():
        assert time.monotonic() < deadline, f"not within {timeout_s:g} s: {what}"
        time.sleep(0.1)


@pytest.mark.timeout(180)
def test_a_standby_scheduler_takes_over_when_the_leader_is_killed(loaded: Backend, tmp_path: Path) -> None:
    check_takeover(loaded, tmp_path)


def check_takeover(loaded: Backend, tmp_path: Path) -> None:
    """Two `dispo aggregate` processes on one backend: the first pulls both vendors, the second stands by (none of
    its cycles overlaps one of the first's for the same vendor); killed, the first is replaced within twice the lease
    time, and the standby then pulls every vendor."""
    ttl = 3.0
    vendors = {"v1": [CHEPY], "v2": [KRISTIAN]}
    with ExitStack() as stack:
        for vendor_id, who in vendors.items():
            config = SandboxConfig(vendor_id=vendor_id, seed=1, practitioners=who, churn_rate=0)
            server = stack.enter_context(SandboxServer(config))
            save_vendor(loaded, Vendor(vendor_id=vendor_id, name=vendor_id, base_url=server.fhir_base))
            for p in who:
                save_participation(loaded, Participation(idnps=p.idnps, vendors=[vendor_id]))
        env = {
            **os.environ,
            "DISPO_DATA_DIR": str(tmp_path),  # the embedded index's folder, and the secret key both share
            "DISPO_BACKEND": loaded.name,
            "DISPO_AGGREGATION_INTERVAL_S": "1",
            "DISPO_AGGREGATION_LEASE_S": str(ttl),
            "DISPO_COVERAGE_INTERVAL_S": "3600",
        }
        if isinstance(loaded, ElasticsearchBackend):
            env |= {"DISPO_ES_URL": loaded.url, "DISPO_INDEX_PREFIX": loaded.prefix}
        logs = {name: tmp_path / f"{name}.log" for name in ("leader", "standby")}
        leader = _scheduler(env, logs["leader"])
        stack.callback(lambda: leader.poll() is None and leader.kill())
        _wait_for("the leader's first cycles", lambda: _pulled(logs["leader"]) == set(vendors), 60)
        standby = _scheduler(env, logs["standby"])
        stack.callback(lambda: standby.poll() is None and standby.kill())
        time.sleep(3 * ttl)  # both running: the standby tries the leases every second and never gets one
        assert _cycles(logs["standby"].read_text()) == []
        killed_at = time.time()
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(10)
        _wait_for(
            "the standby's cycles of every vendor",
            lambda: _pulled(logs["standby"]) == set(vendors),
            30,
        )
        standby.send_signal(signal.SIGTERM)
        assert standby.wait(20) == 0
    led, stood = _cycles(logs["leader"].read_text()), _cycles(logs["standby"].read_text())
    for vendor in vendors:
        taken_over = min(start for v, start, _ in stood if v == vendor)
        assert taken_over - killed_at <= 2 * ttl, f"{vendor}: the standby took {taken_over - killed_at:.1f} s"
        for _, start, end in (c for c in led if c[0] == vendor):
            assert all(end <= s or e <= start for v, s, e in stood if v == vendor), "two schedulers pulled at once"
    assert "standing by" in logs["standby"].read_text()
    # Stopped by SIGTERM, the standby gave its leases back: nobody pulls now.
    assert all(row["pulled_by"] is None for row in vendor_statuses(loaded))
