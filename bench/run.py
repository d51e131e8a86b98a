"""Benchmarks: each scenario measures Dispo and a reference in the same run and prints one table row set.

    dispo bench import    --scale department   # full import vs pandas.read_csv of the same file
    dispo bench search    --scale department   # regulator search over HTTP, 16 clients, vs the raw backend query
    dispo bench aggregate --scale department   # one full aggregation cycle vs fetching alone
    dispo bench embedded  --scale department   # in-process embedded search vs a naive R*Tree + haversine query

Figures are medians and percentiles over many repetitions on the machine at hand: ratios measured in
the same run are what compare across machines (see BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCALES = ("department", "region", "national")


@dataclass
class Row:
    scenario: str
    scale: str
    backend: str
    what: str  # "dispo" or "reference: ..."
    n: int
    samples_ms: list[float] = field(default_factory=list)
    wall_s: float | None = None
    peak_rss_mb: float | None = None
    throughput: float | None = None  # per second
    ratio: float | None = None  # reference median / dispo median (>1: Dispo faster), or as stated

    def pct(self, q: float) -> float | None:
        if not self.samples_ms:
            return None
        data = sorted(self.samples_ms)
        return data[min(len(data) - 1, math.ceil(q / 100 * len(data)) - 1)]


def print_table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Dispo benchmarks")
    for col in (
        "scenario",
        "scale",
        "backend",
        "what",
        "n",
        "median ms",
        "p95 ms",
        "p99 ms",
        "wall s",
        "throughput/s",
        "peak RSS MB",
        "ratio",
    ):
        table.add_column(col)

    def f(v: float | None, fmt: str = "{:.1f}") -> str:
        return "-" if v is None else fmt.format(v)

    for r in rows:
        table.add_row(
            r.scenario,
            r.scale,
            r.backend,
            r.what,
            str(r.n),
            f(r.pct(50)),
            f(r.pct(95)),
            f(r.pct(99)),
            f(r.wall_s, "{:.2f}"),
            f(r.throughput),
            f(r.peak_rss_mb, "{:.0f}"),
            f(r.ratio, "{:.2f}x"),
        )
    Console(width=200).print(table)


def _child_run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def bench_import(scale: str, work: Path, backend: str = "sqlite", es_url: str | None = None) -> list[Row]:
    from bench.generate import generate

    files = generate(work / "gen", scale, seed=1, n_vendors=25 if scale == "national" else 3)
    rpps = Path(files["rpps"])
    env = {
        **os.environ,
        "DISPO_DATA_DIR": str(work / "import"),
        "DISPO_BACKEND": backend,
        "DISPO_INDEX_PREFIX": "bench",
    }
    if es_url:
        env["DISPO_ES_URL"] = es_url
    reference = [
        sys.executable,
        "-c",
        "import pandas, sys; pandas.read_csv(sys.argv[1], sep='|', dtype=str, keep_default_na=False, engine='c')",
        str(rpps),
    ]
    ref_wall, ref_rss = _child_run(reference, env)
    wall, rss = _child_run([sys.executable, "-m", "dispo.cli", "import", "rpps", str(rpps), "--force"], env)
    lines = int(files["lines"])
    return [
        Row(
            "import",
            scale,
            backend,
            "dispo import rpps",
            lines,
            wall_s=wall,
            peak_rss_mb=rss,
            throughput=lines / wall,
            ratio=ref_wall / wall,
        ),
        Row(
            "import",
            scale,
            "-",
            "reference: pandas.read_csv",
            lines,
            wall_s=ref_wall,
            peak_rss_mb=ref_rss,
            throughput=lines / ref_wall,
        ),
    ]


def _world(scale: str, work: Path, backend_kind: str = "sqlite", latency_ms: float = 0.0, es_url: str | None = None):
    """Directory + participations + sandboxes + one aggregation cycle; returns (backend, settings, servers)."""
    from dispo.settings import Settings
    from editor_sandbox.fleet import start_fleet
    from indexer.factory import make_backend
    from indexer.scheduler import Aggregator
    from rpps_import.pipeline import import_rpps

    n_vendors = 25 if scale == "national" else 3
    files = generate_cached(scale, work)
    settings = Settings(
        data_dir=work / f"world-{backend_kind}",
        backend=backend_kind,
        es_url=es_url,
        index_prefix="benchworld",
        tokens="",
    )
    backend = make_backend(settings)
    import_rpps(Path(files["rpps"]), backend, settings, force=True)
    servers = start_fleet(
        backend,
        n_vendors,
        participations=Path(files["participations"]),
        settings=settings,
        churn_rate=0.0,
        latency_ms_min=latency_ms / 3,
        latency_ms_max=latency_ms,
    )
    asyncio.run(Aggregator(backend, settings).run_once(snapshot=False))
    return backend, settings, servers


_GENERATED: dict[str, dict[str, Any]] = {}


def generate_cached(scale: str, work: Path) -> dict[str, Any]:
    from bench.generate import generate

    if scale not in _GENERATED:
        _GENERATED[scale] = generate(work / f"gen-{scale}", scale, seed=1, n_vendors=25 if scale == "national" else 3)
    return _GENERATED[scale]


def _points(backend: Any, n: int, seed: int) -> list[tuple[float, float]]:
    from indexer.audit import _points as weighted_points

    return weighted_points(backend, n, random.Random(seed))


def bench_search(scale: str, work: Path, requests: int = 400, clients: int = 16) -> list[Row]:
    import httpx

    from api.app import create_app
    from api.auth import Role, new_token
    from editor_sandbox.server import ThreadedServer
    from indexer.backend import GeoQuery
    from indexer.search import SearchRequest, run_search

    backend, settings, servers = _world(scale, work)
    token, entry = new_token(Role.regulator, "bench")
    points = _points(backend, requests, 7)
    rows = []
    try:
        with ThreadedServer(create_app(settings.model_copy(update={"tokens": entry}), backend), name="api") as api:
            latencies: list[float] = []
            errors = 0

            async def client(mine: list[tuple[float, float]]) -> None:
                nonlocal errors
                async with httpx.AsyncClient(
                    base_url=api.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
                ) as c:
                    for lat, lon in mine:
                        t0 = time.perf_counter()
                        r = await c.get("/v1/search", params={"lat": lat, "lon": lon, "verify": "false"})
                        latencies.append((time.perf_counter() - t0) * 1000)
                        errors += r.status_code != 200

            t0 = time.perf_counter()

            async def all_clients() -> None:
                await asyncio.gather(*(client(points[i::clients]) for i in range(clients)))

            asyncio.run(all_clients())
            wall = time.perf_counter() - t0
        rows.append(
            Row(
                "search http 16 clients",
                scale,
                backend.name,
                f"GET /v1/search ({errors} errors)",
                len(latencies),
                latencies,
                wall,
                throughput=len(latencies) / wall,
            )
        )
        # Reference: the same candidate query sent raw to the backend, in process (no ranking, no HTTP).
        raw: list[float] = []
        for lat, lon in points:
            t0 = time.perf_counter()
            backend.search(
                "slots",
                GeoQuery(lat=lat, lon=lon, radius_km=20, filters={"practitioner_specialty": ["SM54"]}, limit=2000),
            )
            raw.append((time.perf_counter() - t0) * 1000)
        rows.append(Row("search http 16 clients", scale, backend.name, "reference: raw geo query", len(raw), raw))
        rows[0].ratio = statistics.median(raw) / statistics.median(latencies)
        # Embedded, in process: the whole search pipeline.
        inproc: list[float] = []
        for lat, lon in points:
            t0 = time.perf_counter()
            run_search(backend, SearchRequest(lat=lat, lon=lon, seed=1), staleness_limit_s=1e9)
            inproc.append((time.perf_counter() - t0) * 1000)
        rows.append(
            Row(
                "search in process",
                scale,
                backend.name,
                "run_search",
                len(inproc),
                inproc,
                ratio=statistics.median(raw) / statistics.median(inproc),
            )
        )
    finally:
        for s in servers:
            s.stop()
    return rows


def bench_aggregate(scale: str, work: Path, latency_ms: float = 50.0) -> list[Row]:
    from indexer.aggregator import slot_window
    from indexer.registry import list_vendors, participants
    from indexer.scheduler import Aggregator
    from indexer.vendor_client import make_client, search_slots

    backend, settings, servers = _world(scale, work, latency_ms=latency_ms)
    rows = []
    try:
        for s in servers:  # 10 % of slots change between cycles
            import httpx

            httpx.post(s.url + "/_control", json={"churn_rate": 0.1, "churn_period_s": 1})
        time.sleep(1.1)
        t0 = time.perf_counter()
        reports = asyncio.run(Aggregator(backend, settings).run_once(snapshot=False))
        wall = time.perf_counter() - t0
        written = sum(r.stats.inserted + r.stats.updated + r.stats.removed for r in reports)
        kept = sum(r.stats.unchanged for r in reports)
        n = sum(r.participants for r in reports)
        rows.append(
            Row(
                "aggregation cycle",
                scale,
                backend.name,
                f"cycle ({written} writes, {kept} unchanged)",
                n,
                wall_s=wall,
                throughput=n / wall,
            )
        )

        async def fetch_only() -> None:
            from datetime import UTC, datetime

            window = slot_window(datetime.now(UTC), 2)

            async def vendor_fetch(v: Any) -> None:
                ids = [p.idnps for p in participants(backend, v.vendor_id)]
                sem = asyncio.Semaphore(v.concurrency)
                async with make_client(v) as client:

                    async def one(batch: list[str]) -> None:
                        async with sem:
                            await search_slots(client, v, batch, window[0], window[1], datetime.now(UTC))

                    await asyncio.gather(*(one(ids[i : i + 25]) for i in range(0, len(ids), 25)))

            await asyncio.gather(*(vendor_fetch(v) for v in list_vendors(backend, enabled_only=True)))

        t0 = time.perf_counter()
        asyncio.run(fetch_only())
        ref = time.perf_counter() - t0
        rows.append(Row("aggregation cycle", scale, "-", "reference: fetch alone", n, wall_s=ref, throughput=n / ref))
        rows[0].ratio = ref / wall
    finally:
        for s in servers:
            s.stop()
    return rows


def bench_embedded(scale: str, work: Path, n: int = 300) -> list[Row]:
    """Dense query in process on the embedded index vs a naive R*Tree + Python haversine over the slots."""
    from dispo.geo import gazetteer, haversine_km
    from indexer.search import SearchRequest, run_search

    backend, _settings, servers = _world(scale, work)
    try:
        gaz = gazetteer()
        bourg = gaz.commune("01053")
        lat, lon = bourg.lat, bourg.lon
        ours: list[float] = []
        for i in range(n):
            t0 = time.perf_counter()
            run_search(backend, SearchRequest(lat=lat, lon=lon, radius_km=20, seed=i), staleness_limit_s=1e9)
            ours.append((time.perf_counter() - t0) * 1000)
        live = backend.live_index("slots")
        db = sqlite3.connect(backend.root / f"{live}.db")  # type: ignore[attr-defined]
        naive: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            rows = db.execute(
                "SELECT d.id, d.lat, d.lon FROM geo g JOIN docs d ON d.rowid = g.rowid WHERE "
                "g.min_lat >= ? AND g.max_lat <= ? AND g.min_lon >= ? AND g.max_lon <= ?",
                (lat - 0.2, lat + 0.2, lon - 0.3, lon + 0.3),
            ).fetchall()
            sorted((haversine_km(lat, lon, a, b), i) for i, a, b in rows if haversine_km(lat, lon, a, b) <= 20)
            naive.append((time.perf_counter() - t0) * 1000)
        return [
            Row(
                "embedded dense query",
                scale,
                "sqlite",
                "run_search (whole pipeline)",
                n,
                ours,
                ratio=statistics.median(naive) / statistics.median(ours),
            ),
            Row("embedded dense query", scale, "sqlite", "reference: naive R*Tree + haversine", n, naive),
        ]
    finally:
        for s in servers:
            s.stop()


SCENARIOS: dict[str, Callable[..., list[Row]]] = {
    "import": bench_import,
    "search": bench_search,
    "aggregate": bench_aggregate,
    "embedded": bench_embedded,
}


def run(names: list[str], scale: str, work: Path | None = None) -> list[Row]:
    work = work or Path(tempfile.mkdtemp(prefix="dispo-bench-"))
    rows: list[Row] = []
    for name in names:
        rows += SCENARIOS[name](scale, work)
    return rows
