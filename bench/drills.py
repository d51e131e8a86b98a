"""Drills on a local Elasticsearch cluster of three nodes (`dispo drill`), the figures of docs/operations.md.

The generated department (its directory, its sandbox vendors in a process of their own, a first cycle) on the
cluster; `dispo serve` under search load from 16 clients; two `dispo aggregate`, one pulling, one standing by. Then:

1. **node loss**: the node holding the slots' primary is killed, brought back after `down_s`; counted: failed
   requests and the span over which they failed, latency while the node is away, slots lost (a slot held before,
   still offered by its vendor, missing once the cluster is green again: must be 0), time until green again;
2. **scheduler takeover**: the leading scheduler is killed; measured: time until the standby pulls every vendor;
3. **paused leader**: the new leader is paused (as a long stall or a partition would) until the other takes its
   leases, then resumed; counted: the cycles it writes after resuming (must be 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from api.auth import Role, new_token
from bench.run import _served_api, _world, close_worlds, sample_points
from core.settings import Settings
from indexer.backend import GeoQuery
from indexer.es_backend import ElasticsearchBackend
from indexer.lifecycle import scan
from indexer.registry import list_vendors

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "elasticsearch.sh"
CYCLE = re.compile(r"vendor (\S+) cycle (\{.*\})$")
STOPPED = re.compile(r"vendor (\S+): cycle stopped")


def say(message: str) -> None:
    print(f"[drill] {message}", file=sys.stderr, flush=True)


@dataclass
class Cluster:
    """The cluster of `scripts/elasticsearch.sh` whose state file is `state`."""

    state: Path
    env: dict[str, str] = field(default_factory=dict)

    def script(self, *args: str) -> str:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args], env={**os.environ, **self.env}, capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/elasticsearch.sh {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout.strip()

    @property
    def url(self) -> str:
        found = re.search(r"^ES_URL=(\S+)$", self.state.read_text(), re.M)
        if found is None:
            raise RuntimeError(f"no ES_URL in {self.state}")
        return shlex.split(found.group(1))[0]  # written shell-quoted


@contextlib.contextmanager
def cluster(work: Path, heap: str) -> Iterator[Cluster]:
    """A cluster of three nodes started for the drill, or the one DISPO_ES_STATE records (left running)."""
    given = os.environ.get("DISPO_ES_STATE")
    if given:
        yield Cluster(Path(given), {"DISPO_ES_STATE": given})
        return
    state = work / "es-cluster.env"
    c = Cluster(state, {"DISPO_ES_STATE": str(state), "DISPO_ES_NODES": "3", "DISPO_ES_HEAP": heap})
    say(f"starting a cluster of 3 nodes ({heap} heap each)")
    c.script("start")
    try:
        yield c
    finally:
        c.script("stop")


@dataclass
class Load:
    """Clients searching over HTTP one request after another; each request's instant, duration and outcome."""

    url: str
    token: str
    points: list[tuple[float, float]]
    clients: int = 16
    done: list[tuple[float, float, bool]] = field(default_factory=list)  # (monotonic start, ms, ok)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        import httpx

        async def client(mine: list[tuple[float, float]]) -> None:
            headers = {"Authorization": f"Bearer {self.token}"}
            async with httpx.AsyncClient(base_url=self.url, timeout=30, headers=headers) as c:
                i = 0
                while not self.stop.is_set():
                    lat, lon = mine[i % len(mine)]
                    i += 1
                    t0 = time.monotonic()
                    try:
                        ok = (await c.get("/v1/search", params={"lat": lat, "lon": lon, "verify": "false"})).is_success
                    except httpx.HTTPError:
                        ok = False
                    self.done.append((t0, (time.monotonic() - t0) * 1000, ok))

        async def everyone() -> None:
            await asyncio.gather(*(client(self.points[i :: self.clients]) for i in range(self.clients)))

        asyncio.run(everyone())

    def between(self, start: float, end: float) -> list[tuple[float, float, bool]]:
        return [d for d in self.done if start <= d[0] < end]


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1)


def _slot_ids(backend: ElasticsearchBackend) -> dict[str, float]:
    """Every slot held, by id, with its start (epoch seconds)."""
    backend.refresh(backend.live_index("slots") or "")
    held: dict[str, float] = {}
    for hit in scan(backend, "slots", GeoQuery(fields=("slot_id", "start"))):
        held[hit.doc["slot_id"]] = _epoch(hit.doc["start"])
    return held


def _epoch(value: Any) -> float:
    from datetime import datetime

    return value if isinstance(value, int | float) else datetime.fromisoformat(str(value)).timestamp()


def _cycles(log: Path) -> list[tuple[str, float]]:
    """(vendor, start epoch) of each cycle a `dispo aggregate` wrote to its log."""
    from datetime import datetime

    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = CYCLE.search(line)
        if match:
            report = orjson.loads(match.group(2))
            found.append((match.group(1), datetime.fromisoformat(report["started_at"]).timestamp()))
    return found


def _wait(what: str, done: Callable[[], bool], timeout_s: float) -> float:
    t0 = time.monotonic()
    while not done():
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - t0


def run_drills(work: Path, down_s: float = 20.0, lease_s: float = 10.0, heap: str = "512m") -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    with cluster(work, heap) as c:
        url = c.url
        say(f"cluster at {url}; building the department's world on it")
        backend, settings, _vendors = _world("department", work, "elasticsearch", url)
        assert isinstance(backend, ElasticsearchBackend)
        try:
            return _drills(c, backend, settings, work, down_s, lease_s)
        finally:
            close_worlds()


def _drills(
    c: Cluster, backend: ElasticsearchBackend, settings: Settings, work: Path, down_s: float, lease_s: float
) -> dict[str, Any]:
    env = {
        **os.environ,
        "DISPO_DATA_DIR": str(settings.data_dir),
        "DISPO_BACKEND": "elasticsearch",
        "DISPO_ES_URL": c.url,
        "DISPO_INDEX_PREFIX": settings.index_prefix,
        "DISPO_AGGREGATION_INTERVAL_S": "5",
        "DISPO_AGGREGATION_LEASE_S": str(lease_s),
        "DISPO_COVERAGE_INTERVAL_S": "3600",
    }
    schedulers = Schedulers(env, work)
    vendors = {v.vendor_id for v in list_vendors(backend, enabled_only=True)}
    results: dict[str, Any] = {"vendors": len(vendors)}
    token, entry = new_token(Role.regulator, "drill")
    try:
        schedulers.start("a")
        _wait("scheduler a pulling every vendor", lambda: schedulers.pulled("a") >= vendors, 120)
        schedulers.start("b")
        with _served_api(settings, entry, 2) as (api_url, _pids):
            load = Load(api_url, token, sample_points(backend, 200, 11))
            loader = threading.Thread(target=load.run)
            loader.start()
            try:
                results["node_loss"] = _node_loss(c, backend, load, down_s)
                results["takeover"] = _takeover(schedulers, vendors, lease_s)
                results["paused_leader"] = _paused_leader(schedulers, vendors, lease_s)
            finally:
                load.stop.set()
                loader.join(60)
            results["requests"] = len(load.done)
    finally:
        schedulers.stop()
    say(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return results


def _node_loss(c: Cluster, backend: ElasticsearchBackend, load: Load, down_s: float) -> dict[str, Any]:
    time.sleep(10)  # the load settles
    slots = backend.live_index("slots") or ""
    backend.es.cluster.health(wait_for_status="green", timeout="120s")
    shards = backend.es.cat.shards(index=slots, format="json", h="prirep,node")
    primary = next(s["node"] for s in shards if s["prirep"] == "p")
    before = _slot_ids(backend)
    calm = (time.monotonic() - 10, time.monotonic())
    say(f"killing {primary} (primary of the slots; {len(before)} slots held)")
    killed = time.monotonic()
    c.script("kill-node", primary.removeprefix("node-"))
    time.sleep(down_s)
    say(f"starting {primary} again")
    back = time.monotonic()
    c.script("start-node", primary.removeprefix("node-"))
    to_green = _wait(
        "green again",
        lambda: backend.es.cluster.health(timeout="5s")["status"] == "green",
        600,
    )
    green = time.monotonic()
    time.sleep(5)
    after = _slot_ids(backend)
    now = time.time()
    # Lost: held before, still ahead (not expired since), and gone. The vendors' agendas do not churn in the drill.
    lost = sorted(i for i, start in before.items() if start > now and i not in after)
    failed = [d for d in load.between(killed - 1, time.monotonic()) if not d[2]]
    while_down = load.between(killed, green)
    return {
        "node": primary,
        "down_s": round(back - killed, 1),
        "requests_while_away": len(while_down),
        "failed_requests": len(failed),
        "failed_span_s": round(max(d[0] for d in failed) - min(d[0] for d in failed), 1) if failed else 0.0,
        "p95_ms_before": _p95([d[1] for d in load.between(*calm) if d[2]]),
        "p95_ms_while_away": _p95([d[1] for d in while_down if d[2]]),
        "slots_before": len(before),
        "slots_after": len(after),
        "slots_lost": len(lost),
        "green_after_restart_s": round(green - back, 1),
        "green_after_kill_s": round(green - killed, 1),
        "wait_for_green_s": round(to_green, 1),
    }


def _takeover(schedulers: Schedulers, vendors: set[str], lease_s: float) -> dict[str, Any]:
    say("killing the leading scheduler")
    killed = time.time()
    schedulers.signal("a", signal.SIGKILL)
    _wait("the standby pulling every vendor", lambda: schedulers.pulled("b", killed) >= vendors, 10 * lease_s)
    firsts = {v: min(s for w, s in schedulers.cycles("b") if w == v and s >= killed) for v in vendors}
    return {
        "lease_s": lease_s,
        "standby_cycles_before_the_kill": len([s for _, s in schedulers.cycles("b") if s < killed]),
        "takeover_s_max": round(max(firsts.values()) - killed, 1),
        "takeover_s_min": round(min(firsts.values()) - killed, 1),
    }


def _paused_leader(schedulers: Schedulers, vendors: set[str], lease_s: float) -> dict[str, Any]:
    """b leads now: a new standby starts, b is paused until the standby has taken its leases, then resumed: b must
    write nothing more."""
    say("starting a new standby, then pausing the leader")
    schedulers.start("c")
    time.sleep(2)
    paused = time.time()
    schedulers.signal("b", signal.SIGSTOP)
    _wait("the new standby pulling every vendor", lambda: schedulers.pulled("c", paused) >= vendors, 10 * lease_s)
    resumed = time.time()
    schedulers.signal("b", signal.SIGCONT)
    time.sleep(3 * lease_s)
    return {
        "paused_s": round(resumed - paused, 1),
        "cycles_written_by_the_old_leader_after_its_pause": len([s for _, s in schedulers.cycles("b") if s >= paused]),
        "cycles_it_stopped_when_resumed": len(STOPPED.findall(schedulers.logs["b"].read_text(errors="replace"))),
    }


@dataclass
class Schedulers:
    """`dispo aggregate` processes by name, each logging to its own file."""

    env: dict[str, str]
    work: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str) -> None:
        self.logs[name] = self.work / f"scheduler-{name}.log"
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "dispo.cli", "aggregate"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.logs[name].open("wb"),
            start_new_session=True,
        )

    def signal(self, name: str, sig: signal.Signals) -> None:
        os.killpg(self.processes[name].pid, sig)
        if sig == signal.SIGKILL:
            self.processes[name].wait(10)

    def cycles(self, name: str) -> list[tuple[str, float]]:
        return _cycles(self.logs[name])

    def pulled(self, name: str, since: float = 0.0) -> set[str]:
        code = self.processes[name].poll()
        if code is not None and code != -signal.SIGKILL:
            tail = self.logs[name].read_text(errors="replace")[-2000:]
            raise RuntimeError(f"scheduler {name} stopped with exit code {code}:\n{tail}")
        return {vendor for vendor, start in self.cycles(name) if start >= since}

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)
                process.terminate()
                process.wait(30)
