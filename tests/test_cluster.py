"""On a local Elasticsearch cluster of three nodes (`DISPO_ES_NODES=3 scripts/elasticsearch.sh start`, small heaps):
every index gets a replica on another node; the node holding the primaries dies during a search loop and an
aggregation cycle, searches keep answering, and once it is back no document is missing, even from its own copy.

The cluster is started here when Elasticsearch tests run (`DISPO_ES_URL` set, or required by CI). A running one can
be named instead: by `DISPO_ES_CLUSTER_STATE`, the state file of a `scripts/elasticsearch.sh start` (its nodes are
stopped and started by the tests), or by `DISPO_ES_CLUSTER_URL` (nodes comma-separated; the tests that stop nodes
skip).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import CHEPY, FINESS_FLAT, KRISTIAN, ROOT, RPPS_SAMPLE, indexed
from test_leases import check_takeover

from aggregation.scheduler import Aggregator
from core.records import Participation, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxConfig
from editor_sandbox.server import SandboxServer
from indexer.es_backend import ElasticsearchBackend
from indexer.lifecycle import ensure_live
from indexer.registry import save_participation, save_vendor
from rpps_import.pipeline import import_finess, import_rpps
from search.engine import SearchRequest, run_search

pytestmark = pytest.mark.elasticsearch
NODES = 3
SCRIPT = ROOT / "scripts" / "elasticsearch.sh"


@dataclass
class Cluster:
    url: str
    env: dict[str, str] | None = None  # None: a cluster named by DISPO_ES_CLUSTER_URL, whose nodes stay up
    down: set[int] = field(default_factory=set)

    def script(self, *args: str) -> None:
        if self.env is None:
            pytest.skip("DISPO_ES_CLUSTER_URL names a cluster these tests do not manage: no node is stopped")
        done = subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]

    def kill(self, node: int) -> None:
        self.script("kill-node", str(node))
        self.down.add(node)

    def restart(self, node: int) -> None:
        self.script("start-node", str(node))
        self.down.discard(node)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    named, managed = os.environ.get("DISPO_ES_CLUSTER_URL"), os.environ.get("DISPO_ES_CLUSTER_STATE")
    if managed:  # one `scripts/elasticsearch.sh start` left running, its state file named: reused, left running
        env = {**os.environ, "DISPO_ES_STATE": managed}
        yield Cluster(_state_url(Path(managed)), env)
        return
    if named:
        yield Cluster(named)
        return
    required = os.environ.get("DISPO_REQUIRE_ES") == "1"
    if not (required or os.environ.get("DISPO_ES_URL")):
        pytest.skip("no Elasticsearch tests: set DISPO_ES_URL (make test starts a node, and a cluster here)")
    state = tmp_path_factory.mktemp("es-cluster") / "cluster.env"
    env = {**os.environ, "DISPO_ES_NODES": str(NODES), "DISPO_ES_HEAP": "256m", "DISPO_ES_STATE": str(state)}
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=280)
    if started.returncode != 0:
        message = f"could not start a cluster of {NODES} nodes:\n{started.stderr[-3000:]}"
        pytest.fail(message) if required else pytest.skip(message)
    try:
        yield Cluster(started.stdout.strip().splitlines()[-1], env)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


def _state_url(state: Path) -> str:
    """The nodes' URLs in a state file of the script (shell-quoted)."""
    found = (line.split("=", 1)[1] for line in state.read_text().splitlines() if line.startswith("ES_URL="))
    return shlex.split(next(found))[0]


@pytest.fixture
def backend(cluster: Cluster) -> Iterator[ElasticsearchBackend]:
    b = ElasticsearchBackend(cluster.url, prefix=f"dispotest-{uuid.uuid4().hex[:10]}", timeout_s=10)
    yield b
    for node in sorted(cluster.down):  # a failed test leaves no node down for the next one
        cluster.restart(node)
    b.delete_all()
    b.close()


def _shards(backend: ElasticsearchBackend, index: str) -> list[dict[str, str]]:
    return list(backend.es.cat.shards(index=index, format="json", h="prirep,state,node"))


@pytest.mark.timeout(400)  # the first test also starts the cluster
def test_every_index_gets_a_replica_on_another_node(backend: ElasticsearchBackend) -> None:
    assert "3 node(s)" in (backend.health().detail or "")
    live = ensure_live(backend, "slots")
    backend.es.cluster.health(index=live, wait_for_status="green", timeout="60s")
    shards = _shards(backend, live)
    assert sorted(s["prirep"] for s in shards) == ["p", "r"]
    assert all(s["state"] == "STARTED" for s in shards)
    assert len({s["node"] for s in shards}) == 2, "a primary and its replica on one node protect nothing"


@dataclass
class SearchLoop:
    """Searches one after another from a thread, noting when each failed."""

    backend: ElasticsearchBackend
    answered: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        req = SearchRequest(lat=46.2052, lon=5.2255, radius_km=80, limit=5)
        while not self.stop.is_set():
            try:
                run_search(self.backend, req, staleness_limit_s=900)
                self.answered += 1
            except Exception as exc:  # every failure is what is counted
                self.failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}"[:300]))
                time.sleep(0.05)


def _node_number(name: str) -> int:
    return int(name.removeprefix("node-"))


@pytest.mark.timeout(400)
def test_a_node_lost_during_searches_and_writes_loses_nothing(
    cluster: Cluster, backend: ElasticsearchBackend, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "dispo", tokens="")
    import_finess(FINESS_FLAT, backend, settings)
    import_rpps(RPPS_SAMPLE, backend, settings)
    practitioners = [CHEPY, KRISTIAN]
    with SandboxServer(SandboxConfig(vendor_id="v", seed=3, practitioners=practitioners, churn_rate=0)) as server:
        save_vendor(backend, Vendor(vendor_id="v", name="v", base_url=server.fhir_base))
        for p in practitioners:
            save_participation(backend, Participation(idnps=p.idnps, vendors=["v"]))
        asyncio.run(Aggregator(backend, settings).run_once())
        slots = ensure_live(backend, "slots")
        backend.es.cluster.health(wait_for_status="green", timeout="60s")
        before = set(indexed(backend))
        assert before
        primary = next(s["node"] for s in _shards(backend, slots) if s["prirep"] == "p")

        loop = SearchLoop(backend)
        searching = threading.Thread(target=loop.run)
        searching.start()
        try:
            time.sleep(1)
            killed_at = time.monotonic()
            cluster.kill(_node_number(primary))
            # Written while the node is away: the vendor's agenda moved (another seed), so the cycle rewrites it.
            server.config.seed = 4
            (report,) = asyncio.run(Aggregator(backend, settings).run_once())
            assert report.batches_failed == 0 and report.stats.inserted > 0
            during = set(indexed(backend))
            answered_while_down = loop.answered
            cluster.restart(_node_number(primary))
            backend.es.cluster.health(wait_for_status="green", timeout="120s")
            time.sleep(1)
        finally:
            loop.stop.set()
            searching.join(30)
        assert loop.answered > answered_while_down > 0, "searches answered while the node was away and after"
        assert all(at - killed_at < 10 for at, _ in loop.failures), loop.failures
        assert len(loop.failures) <= 3, loop.failures  # at most a request caught as the node died

        # The copy on the node that came back must hold what was written while it was away: stop the other copy.
        assert set(indexed(backend)) == during
        other = next(s["node"] for s in _shards(backend, slots) if s["node"] != primary)
        cluster.kill(_node_number(other))
        backend.es.cluster.health(index=slots, wait_for_status="yellow", timeout="60s")
        assert set(indexed(backend)) == during, "the rejoined copy lost writes made while it was away"
        assert during != before


@pytest.mark.timeout(300)
def test_a_standby_scheduler_takes_over_on_the_cluster(backend: ElasticsearchBackend, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "dispo", tokens="")
    import_finess(FINESS_FLAT, backend, settings)
    import_rpps(RPPS_SAMPLE, backend, settings)
    check_takeover(backend, tmp_path)
