"""Benchmarks: each scenario measures Dispo and a reference in the same run and prints one table row set.

    dispo bench import    --scale department   # full import vs pandas.read_csv of the same file
    dispo bench search    --scale department   # regulator search over HTTP, 16 clients, vs the raw backend query
    dispo bench verify    --scale department   # first page of live-verified cards vs the batch-of-25 method
    dispo bench aggregate --scale department   # one full aggregation cycle vs fetching alone
    dispo bench embedded  --scale department   # in-process embedded search vs a naive R*Tree + haversine query
    dispo bench hostile   --scale department   # vendors' cycles and peak memory beside a hostile vendor vs alone

Figures are medians and percentiles over many repetitions on the machine at hand: ratios measured in
the same run are what compare across machines (see BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from aggregation.client import VendorError, make_client, search_slots
from aggregation.puller import slot_window
from aggregation.scheduler import Aggregator
from api.auth import Role, new_token
from bench.generate import generate, mutate_rpps
from bench.lrm import bench_lrm
from bench.report import Row
from core.geo import gazetteer, haversine_km
from core.records import Participation, Vendor
from core.settings import Settings
from editor_sandbox.agenda import SandboxConfig, SandboxPractitioner, SandboxSite
from indexer.availability import SlotMatch
from indexer.backend import GeoQuery
from indexer.factory import make_backend
from indexer.lifecycle import scan
from indexer.registry import list_vendors, participants, save_participation, save_vendor
from rpps_import import history
from rpps_import.pipeline import import_rpps
from search.audit import sample_points as weighted_points
from search.engine import SearchRequest, run_search
from search.place import nearest_department
from search.radius import rule_for

SCALES = ("department", "region", "national")


def _pss_kb(pid: int) -> int | None:
    """Proportional set size: pages shared with a forked writer count once, not twice."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _tree_rss_mb(pid: int) -> float:
    """Memory of a process and all its descendants (an import has a writer process), in MB: the sum of
    their proportional set sizes where the kernel gives them, else of their resident sizes."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
        rss[int(entry.name)] = pages
    total_kb, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        pss = _pss_kb(current)
        total_kb += pss if pss is not None else rss.get(current, 0) * os.sysconf("SC_PAGE_SIZE") / 1024
        todo += children.get(current, [])
    return total_kb / 1024


def _child_run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and peak resident memory (MB, the process and its children together, sampled)."""
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0.0
    while child.poll() is None:
        peak = max(peak, _tree_rss_mb(child.pid))
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, cmd)
    return wall, peak


_ONLY: list[str | None] = [None]  # the backend a run keeps (`dispo bench --backend`), None for all


def backends() -> list[tuple[str, str | None]]:
    """The embedded index; Elasticsearch too when DISPO_ES_URL names a cluster; only one with --backend."""
    out: list[tuple[str, str | None]] = [("sqlite", None)]
    if os.environ.get("DISPO_ES_URL"):
        out.append(("elasticsearch", os.environ["DISPO_ES_URL"]))
    return [b for b in out if _ONLY[0] in (None, b[0])]


def bench_import(scale: str, work: Path) -> list[Row]:
    files = generate_cached(scale, work)
    rpps, finess = Path(files["rpps"]), Path(files["finess"])
    reference = [
        sys.executable,
        "-c",
        "import pandas, sys; pandas.read_csv(sys.argv[1], sep='|', dtype=str, keep_default_na=False, engine='c')",
        str(rpps),
    ]
    ref_wall, ref_rss = _child_run(reference, dict(os.environ))
    lines = int(files["lines"])
    pandas = Row(
        "import",
        scale,
        "-",
        "reference: pandas.read_csv (rpps)",
        lines,
        "lines",
        wall_s=ref_wall,
        peak_memory_mb=ref_rss,
        throughput_per_s=lines / ref_wall,
    )
    rows = []
    for backend, es_url in backends():
        env = {
            **os.environ,
            "DISPO_DATA_DIR": str(work / f"import-{backend}"),
            "DISPO_BACKEND": backend,
            "DISPO_INDEX_PREFIX": "benchimport",
        }
        if es_url:
            env["DISPO_ES_URL"] = es_url
        cli = [sys.executable, "-m", "dispo.cli", "import"]
        f_wall, f_rss = _child_run([*cli, "finess", str(finess), "--force"], env)
        wall, rss = _child_run([*cli, "rpps", str(rpps), "--force"], env)
        n_finess = sum(1 for _ in finess.open(encoding="utf-8")) - 1
        rows += [
            Row(
                "import",
                scale,
                backend,
                "dispo import rpps",
                lines,
                "lines",
                wall_s=wall,
                peak_memory_mb=rss,
                throughput_per_s=lines / wall,
                reference=pandas,
                ratio_of="wall_s",
            ),
            Row(
                "import",
                scale,
                backend,
                "dispo import finess",
                n_finess,
                "lines",
                wall_s=f_wall,
                peak_memory_mb=f_rss,
                throughput_per_s=n_finess / f_wall,
            ),
        ]
    rows.append(pandas)
    return rows


def bench_changes(scale: str, work: Path, changes: int | None = None) -> list[Row]:
    """What comparing the new version with the live one adds to an import: the generated RPPS file imported, then
    its next extraction (`bench.generate.mutate_rpps`: practitioners added, removed, moved, with another specialty),
    compared before the switch; the first import, with nothing to compare, is the reference."""
    files = generate_cached(scale, work)
    rpps = Path(files["rpps"])
    n = changes or (1_000 if scale == "national" else 50)
    after = rpps.with_name(f"{rpps.stem}_next.txt")
    if not after.exists():
        with Path(files["participations"]).open(encoding="utf-8") as fh:
            among = {line.split(",", 1)[0] for line in fh}
        mutate_rpps(rpps, after, seed=1, added=n, removed=n, moved=n, specialties=n, among=frozenset(among))
    lines = int(files["lines"])
    rows = []
    for backend, es_url in backends():
        settings = Settings(
            data_dir=work / f"changes-{backend}-{time.time_ns()}",
            backend=backend,
            es_url=es_url,
            index_prefix="benchchanges",
            tokens="",
        )
        env = {
            **os.environ,
            "DISPO_DATA_DIR": str(settings.data_dir),
            "DISPO_BACKEND": backend,
            "DISPO_INDEX_PREFIX": settings.index_prefix,
        }
        if es_url:
            env["DISPO_ES_URL"] = es_url
        cli = [sys.executable, "-m", "dispo.cli", "import", "rpps"]
        first_wall, first_rss = _child_run([*cli, str(rpps), "--force"], env)
        wall, rss = _child_run([*cli, str(after)], env)
        store = make_backend(settings)
        try:
            latest = history.list_imports(store, "rpps", 1)[0]
            compared = latest.changes.duration_s if latest.changes else float("nan")
            found = latest.changes
            if es_url:
                store.delete_all()  # type: ignore[attr-defined]
        finally:
            store.close()
        first = Row(
            "changes",
            scale,
            backend,
            "reference: dispo import rpps, nothing live to compare with",
            lines,
            "lines",
            wall_s=first_wall,
            peak_memory_mb=first_rss,
            throughput_per_s=lines / first_wall,
        )
        moved = found.sites_moved if found else 0
        rows += [
            Row(
                "changes",
                scale,
                backend,
                f"dispo import rpps of the next extraction, compared with the live one ({moved} sites moved)",
                lines,
                "lines",
                wall_s=wall,
                peak_memory_mb=rss,
                throughput_per_s=lines / wall,
                reference=first,
                ratio_of="wall_s",
            ),
            Row("changes", scale, backend, "of which the comparison", lines, "lines", wall_s=compared),
            first,
        ]
    return rows


_WORLDS: dict[tuple[str, str], tuple[Any, Any, list[Any]]] = {}
_SANDBOXES: list[subprocess.Popen[bytes]] = []


@dataclass
class _Sandbox:
    url: str  # base URL of one vendor sandbox (its FHIR base is url + "/fhir")


def _world(scale: str, work: Path, backend_kind: str = "sqlite", es_url: str | None = None):
    """Directory + participations + sandbox vendors + one aggregation cycle, built once per scale and backend
    for all the scenarios of a run; returns (backend, settings, sandboxes).

    The vendors run in a process of their own (`dispo sandbox --vendors N`), as real vendors are other
    machines: they do not compete with the aggregator or the API for this process's interpreter."""
    key = (scale, backend_kind)
    if key in _WORLDS:
        return _WORLDS[key]
    import httpx

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
    imported = settings.data_dir / "imported"  # a reused work folder keeps its directory
    if not imported.exists():
        import_rpps(Path(files["rpps"]), backend, settings, force=True)
        imported.write_text("rpps\n")
    env = {
        **os.environ,
        "DISPO_DATA_DIR": str(settings.data_dir),
        "DISPO_BACKEND": backend_kind,
        "DISPO_INDEX_PREFIX": settings.index_prefix,
    }
    if es_url:
        env["DISPO_ES_URL"] = es_url
    # A reused world keeps its vendors' ports: the booking URLs in its slots name them, and new ports would
    # make the first cycle rewrite every slot.
    port_file = settings.data_dir / "sandbox-port"
    if port_file.exists():
        base = int(port_file.read_text())
    else:
        base = _free_ports(n_vendors)
        port_file.write_text(f"{base}\n")
    log = (work / f"sandbox-{backend_kind}.log").open("wb")
    command = [sys.executable, "-m", "dispo.cli", "sandbox", "--vendors", str(n_vendors), "--port", str(base)]
    command += ["--participations", str(files["participations"])]
    _SANDBOXES.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
    sandboxes = [_Sandbox(f"http://127.0.0.1:{base + i}") for i in range(n_vendors)]
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if _SANDBOXES[-1].poll() is not None:
            raise RuntimeError(f"the sandbox process stopped; see {log.name}")
        try:
            for sandbox in sandboxes:
                httpx.get(sandbox.url + "/fhir/metadata", timeout=2)
            if len(list_vendors(backend, enabled_only=True)) >= n_vendors:  # the hostile scenario's is disabled
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    _control(sandboxes, churn_rate=0.0)
    started = time.perf_counter()
    reports = asyncio.run(Aggregator(backend, settings).run_once())
    print(
        f"[bench] world {scale}/{backend_kind}: first cycle {time.perf_counter() - started:.0f} s, "
        f"{sum(r.stats.inserted for r in reports)} slots inserted, "
        f"{sum(r.batches_failed for r in reports)} failed batches",
        file=sys.stderr,
        flush=True,
    )
    _WORLDS[key] = (backend, settings, sandboxes)
    return _WORLDS[key]


def _free_ports(n: int) -> int:
    """The first of `n` consecutive loopback ports free now (each world's vendors have their own)."""
    import socket

    rng = random.Random()
    while True:
        base = rng.randrange(20_000, 40_000, 50)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + n):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return base


def close_worlds() -> None:
    for backend, _settings, _sandboxes in _WORLDS.values():
        backend.close()
    _WORLDS.clear()
    for process in _SANDBOXES:
        process.terminate()
        process.wait(timeout=30)
    _SANDBOXES.clear()


def _control(servers: list[Any], **knobs: float) -> None:
    import httpx

    for s in servers:
        # Generous: the vendors' process may still be answering a burst of slot searches.
        httpx.post(s.url + "/_control", json=knobs, timeout=120).raise_for_status()


_GENERATED: dict[str, dict[str, Any]] = {}


def generate_cached(scale: str, work: Path) -> dict[str, Any]:

    if scale not in _GENERATED:
        out = work / f"gen-{scale}"
        done = out / "generated.json"  # a work folder given again (DISPO_BENCH_WORK) reuses its files
        if done.exists():
            _GENERATED[scale] = orjson.loads(done.read_bytes())
        else:
            written = generate(out, scale, seed=1, n_vendors=25 if scale == "national" else 3, finess=True)
            done.write_bytes(orjson.dumps(written, default=str))
            _GENERATED[scale] = orjson.loads(done.read_bytes())
    return _GENERATED[scale]


def sample_points(backend: Any, n: int, seed: int) -> list[tuple[float, float]]:

    return weighted_points(backend, n, random.Random(seed))


def bench_search(scale: str, work: Path, requests: int = 400, clients: int = 16) -> list[Row]:
    rows: list[Row] = []
    for kind, es_url in backends():
        rows += _search_on(scale, work, kind, es_url, requests, clients)
    return rows


def _search_on(scale: str, work: Path, kind: str, es_url: str | None, requests: int, clients: int) -> list[Row]:
    import httpx

    backend, settings, _servers = _world(scale, work, kind, es_url)
    token, entry = new_token(Role.regulator, "bench")
    points = sample_points(backend, requests, 7)
    workers = os.cpu_count() or 1
    with _served_api(settings, entry, workers) as (url, pids):
        # Warm: a worker's first search loads the reference geography and opens its connections. A few new
        # connections each, one request on each, before any is timed (a deployed API has served long before).
        for lat, lon in points[: 4 * workers]:
            httpx.get(
                url + "/v1/search",
                params={"lat": lat, "lon": lon, "verify": "false"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=120,
            )
        latencies: list[float] = []
        errors = 0

        async def client(mine: list[tuple[float, float]]) -> None:
            nonlocal errors
            async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
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
        worker_mb = tuple(round(_tree_rss_mb(pid)) for pid in pids)
    scenario = f"search http {clients} clients"
    http = Row(
        scenario,
        scale,
        backend.name,
        "GET /v1/search",
        len(latencies),
        "requests",
        latencies,
        wall,
        throughput_per_s=len(latencies) / wall,
        errors=errors,
        workers=workers,
        worker_memory_mb=worker_mb,
    )
    # Reference: the candidate query a search issues, sent raw to the backend in process (no ranking, no HTTP): the
    # sites within 20 km holding a general practitioner's slot in the next two days.
    now = time.time()
    gps = SlotMatch(filters={"practitioner_specialty": ["SM54"]}, start=(now, now + 2 * 86400))
    raw: list[float] = []
    for lat, lon in points:
        t0 = time.perf_counter()
        backend.sites_with_slots(lat, lon, 20, gps)
        raw.append((time.perf_counter() - t0) * 1000)
    reference = Row(scenario, scale, backend.name, "reference: raw availability query", len(raw), "queries", raw)
    http.reference = reference
    inproc: list[float] = []
    for lat, lon in points:
        t0 = time.perf_counter()
        run_search(backend, SearchRequest(lat=lat, lon=lon, seed=1), staleness_limit_s=1e9)
        inproc.append((time.perf_counter() - t0) * 1000)
    in_process = Row(
        "search in process", scale, backend.name, "run_search", len(inproc), "searches", inproc, reference=reference
    )
    return [http, reference, in_process]


@contextlib.contextmanager
def _served_api(settings: Settings, tokens: str, workers: int) -> Iterator[tuple[str, list[int]]]:
    """`dispo serve --workers N` on the world's index, as deployed: its URL and its workers' process ids."""
    import httpx

    port = _free_ports(1)
    env = {
        **os.environ,
        "DISPO_DATA_DIR": str(settings.data_dir),
        "DISPO_BACKEND": settings.backend,
        "DISPO_INDEX_PREFIX": settings.index_prefix,
        "DISPO_TOKENS": tokens,
        "DISPO_STALENESS_LIMIT_S": "1000000000",  # the world's vendors last answered when it was built
    }
    if settings.es_url:
        env["DISPO_ES_URL"] = settings.es_url
    command = [sys.executable, "-m", "dispo.cli", "serve", "--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"dispo serve stopped with exit code {server.returncode}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("dispo serve did not answer within 120 s")
            time.sleep(0.3)
        yield url, _child_pids(server.pid) if workers > 1 else [server.pid]
    finally:
        server.terminate()
        server.wait(timeout=60)


def _child_pids(pid: int) -> list[int]:
    """The worker processes of a server: its children running Python (not the multiprocessing helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"resource_tracker" not in command:
            found.append(int(entry.name))
    return sorted(found)


# Where the live-verification scenario searches: a dense city and a sparse rural department, per scale.
PLACES = {
    "department": {"dense": "01053", "sparse": "01185"},  # Bourg-en-Bresse; Plateau d'Hauteville
    "region": {"dense": "69383", "sparse": "15187"},  # Lyon 3e; Saint-Flour (Cantal)
    "national": {"dense": "75111", "sparse": "48095"},  # Paris 11e; Mende (Lozère)
}


def bench_verify(scale: str, work: Path, n: int = 20, scarce: float = 0.8) -> list[Row]:
    """First page with >= 5 live-verified cards, vendors answering in 100-300 ms, against the national
    platform's method: participants by distance in batches of 25, every vendor of a batch called, batch
    after batch, until 5 cards have slots. Twice: with every participant publishing slots (the generated
    agendas), and with scarce availability (`scarce`: the share of participants whose agenda is full,
    taken into the index by one aggregation cycle first)."""

    kind, es_url = backends()[0]  # on the first backend: the vendors' latency dominates, not the index
    backend, settings, servers = _world(scale, work, kind, es_url)
    rows: list[Row] = []
    try:
        for regime, full in (("open agendas", 0.0), (f"{1 - scarce:.0%} of agendas open", scarce)):
            if full:
                _control(servers, full_rate=full, latency_ms_min=0, latency_ms_max=0)
                asyncio.run(Aggregator(backend, settings).run_once())
            _control(servers, latency_ms_min=100, latency_ms_max=300)
            for kind, insee in PLACES[scale].items():
                rows += _verify_at(backend, settings, scale, f"{kind}, {regime}", insee, n)
    finally:
        # The index keeps the scarce agendas until the next cycle: `run` puts this scenario last.
        _control(servers, latency_ms_min=0, latency_ms_max=0, full_rate=0.0)
    return rows


def _verify_at(backend: Any, settings: Any, scale: str, label: str, insee: str, n: int) -> list[Row]:
    from datetime import UTC, datetime

    commune = gazetteer().commune(insee)
    assert commune is not None, insee
    rng = random.Random(11)
    ours: list[float] = []
    ours_cards: list[int] = []
    theirs: list[float] = []
    theirs_cards: list[int] = []
    theirs_calls: list[int] = []
    for i in range(n):
        lat, lon = commune.lat + rng.uniform(-0.01, 0.01), commune.lon + rng.uniform(-0.01, 0.01)
        t0 = time.perf_counter()
        result = run_search(
            backend,
            SearchRequest(lat=lat, lon=lon, seed=i),
            staleness_limit_s=1e9,
            verify_deadline_s=settings.verify_deadline_s,
        )
        ours.append((time.perf_counter() - t0) * 1000)
        ours_cards.append(sum(1 for c in result.cards if c.slots))
        t0 = time.perf_counter()
        cards, calls = asyncio.run(_platform_method(backend, lat, lon, datetime.now(UTC)))
        theirs.append((time.perf_counter() - t0) * 1000)
        theirs_cards.append(cards)
        theirs_calls.append(calls)
    scenario = f"first verified page, {label}"
    place = commune.name.title()
    reference = Row(
        scenario,
        scale,
        "-",
        "reference: batches of 25",
        n,
        "searches",
        theirs,
        place=place,
        pages_with_5_cards=sum(1 for c in theirs_cards if c >= 5),
        vendor_calls_median=statistics.median(theirs_calls),
    )
    ours_row = Row(
        scenario,
        scale,
        backend.name,
        "Dispo: index + live re-check",
        n,
        "searches",
        ours,
        reference=reference,
        place=place,
        pages_with_5_cards=sum(1 for c in ours_cards if c >= 5),
    )
    return [ours_row, reference]


async def _platform_method(backend: Any, lat: float, lon: float, now: Any) -> tuple[int, int]:
    """The national platform's way: no availability index, vendors asked batch after batch."""

    vendors = {v.vendor_id: v for v in list_vendors(backend, enabled_only=True)}
    window = slot_window(now, 2)
    radius = rule_for(nearest_department(lat, lon)).county_km
    seen: set[str] = set()
    with_slots = calls = 0
    query = GeoQuery(lat=lat, lon=lon, radius_km=radius, filters={"specialty": ["SM54"]})
    sites = scan(backend, "practice_sites", query, 500)
    async with _clients(vendors) as clients:
        while with_slots < 5:
            batch = []
            for hit in sites:
                idnps = hit.doc["practitioner"]["idnps"]
                if idnps in seen:
                    continue
                seen.add(idnps)
                batch.append(idnps)
                if len(batch) == 25:
                    break
            if not batch:
                break
            found = backend.search("participations", GeoQuery(filters={"idnps": batch}, limit=25)).hits
            participation = {h.doc["idnps"]: h.doc["vendors"][0] for h in found if h.doc.get("active")}
            by_vendor: dict[str, list[str]] = {}
            for idnps in batch:
                if idnps in participation and participation[idnps] in clients:
                    by_vendor.setdefault(participation[idnps], []).append(idnps)

            async def ask(vendor_id: str, ids: list[str]) -> set[str]:
                try:
                    result = await search_slots(clients[vendor_id], vendors[vendor_id], ids, *window, now)
                except VendorError:
                    return set()
                return {s.idnps for s in result.slots if s.idnps}

            calls += len(by_vendor)
            answers = await asyncio.gather(*(ask(v, ids) for v, ids in by_vendor.items()))
            with_slots += len(set().union(*answers)) if answers else 0
    return with_slots, calls


class _clients:
    """One HTTP client per vendor for a whole reference search."""

    def __init__(self, vendors: dict[str, Any]) -> None:
        self.vendors = vendors
        self.stack: Any = None

    async def __aenter__(self) -> dict[str, Any]:
        from contextlib import AsyncExitStack

        self.stack = AsyncExitStack()
        return {v: await self.stack.enter_async_context(make_client(vendor)) for v, vendor in self.vendors.items()}

    async def __aexit__(self, *exc: Any) -> None:
        await self.stack.aclose()


def bench_aggregate(scale: str, work: Path, latency_ms: float = 50.0) -> list[Row]:
    rows: list[Row] = []
    for kind, es_url in backends():
        rows += _aggregate_on(scale, work, kind, es_url, latency_ms)
    return rows


def _aggregate_on(scale: str, work: Path, kind: str, es_url: str | None, latency_ms: float) -> list[Row]:

    backend, settings, servers = _world(scale, work, kind, es_url)
    # Vendors answer in about 50 ms and 10 % of slots change between cycles.
    _control(servers, latency_ms_min=latency_ms / 3, latency_ms_max=latency_ms, churn_rate=0.1, churn_period_s=1)
    try:
        time.sleep(1.1)
        t0 = time.perf_counter()
        reports = asyncio.run(Aggregator(backend, settings).run_once())
        wall = time.perf_counter() - t0
        written = sum(r.stats.inserted + r.stats.updated + r.stats.removed for r in reports)
        kept = sum(r.stats.unchanged for r in reports)
        n = sum(r.participants for r in reports)
        failed = sum(r.batches_failed for r in reports)
        cycle = Row(
            "aggregation cycle",
            scale,
            backend.name,
            "cycle",
            n,
            "participants",
            wall_s=wall,
            throughput_per_s=n / wall,
            ratio_of="wall_s",
            vendors=len(reports),
            documents_written=written,
            documents_unchanged=kept,
            failed_batches=failed,
        )

        async def fetch_only() -> None:
            from datetime import UTC, datetime

            window = slot_window(datetime.now(UTC), 2)

            async def vendor_fetch(v: Any) -> None:
                ids = [p.idnps for p in participants(backend, v.vendor_id)]
                sem = asyncio.Semaphore(v.concurrency)
                async with make_client(v) as client:

                    async def one(batch: list[str]) -> None:
                        nonlocal failed
                        async with sem:
                            try:
                                await search_slots(client, v, batch, window[0], window[1], datetime.now(UTC))
                            except VendorError:  # counted, as the cycle counts its failed batches
                                failed += 1

                    await asyncio.gather(*(one(ids[i : i + 25]) for i in range(0, len(ids), 25)))

            await asyncio.gather(*(vendor_fetch(v) for v in list_vendors(backend, enabled_only=True)))

        failed = 0
        t0 = time.perf_counter()
        asyncio.run(fetch_only())
        ref = time.perf_counter() - t0
        cycle.reference = Row(
            "aggregation cycle",
            scale,
            "-",
            "reference: fetch alone",
            n,
            "participants",
            wall_s=ref,
            throughput_per_s=n / ref,
            vendors=len(reports),
            failed_batches=failed,
        )
    finally:
        _control(servers, latency_ms_min=0, latency_ms_max=0, churn_rate=0.0)
    return [cycle, cycle.reference]


HOSTILE = "hostile"  # the vendor id of the hostile scenario's vendor
HOSTILE_PRACTITIONERS = 100  # its participants: 4 batches, as many as its calls in flight


def bench_hostile(
    scale: str,
    work: Path,
    size_mb: float = 115.0,
    cycles: int = 5,
    latency_ms: float = 50.0,
    cap_bytes: int | None = None,
) -> list[Row]:
    """The world's vendors' cycle times and the aggregator's peak memory beside one vendor answering huge Bundles,
    against the same vendors alone (the reference). Each measurement is `cycles` cycles of an aggregator in a
    process of its own (`bench.cycles`), whose peak resident size (VmHWM) is then the aggregator's alone.

    The hostile vendor pads every answer to `size_mb` MB with entries that are not Slots and streams it (no
    length announced: the client has to count); then, as the worst a capped aggregator reads whole, to 90 % of
    the cap (`cap_bytes`, default the settings' `vendor_max_answer_bytes`). Its calls fail, or succeed, in every
    cycle: each cycle has a new aggregator, so no breaker stays open between cycles."""
    kind, es_url = backends()[0]  # the vendors' answers are what is measured, not the index
    backend, settings, servers = _world(scale, work, kind, es_url)
    cap = cap_bytes or settings.vendor_max_answer_bytes
    limited = settings.model_copy(update={"vendor_max_answer_bytes": cap})
    hostile, vendor = _hostile_vendor(work, backend)
    _control(servers, latency_ms_min=latency_ms / 3, latency_ms_max=latency_ms, churn_rate=0.0)
    runs: list[tuple[str, int, dict[str, Any], float]] = []  # (label, answer bytes, child's output, sampled peak)
    try:
        for label, size in (
            ("reference: the vendors alone", 0),
            ("beside a hostile vendor", int(size_mb * 1e6)),
            ("beside a hostile vendor, answers at 90 % of the cap", int(0.9 * cap)),
        ):
            save_vendor(backend, vendor.model_copy(update={"enabled": size > 0}))
            if size:
                _control([hostile], padding_bytes=size)
            output, sampled = _cycles_in_child(limited, cycles, work)
            runs.append((label, size, output, sampled))
    finally:
        save_vendor(backend, vendor.model_copy(update={"enabled": False}))  # the later scenarios do without it
        _control(servers, latency_ms_min=0, latency_ms_max=0)
        hostile.process.terminate()
        hostile.process.wait(timeout=30)
    rows: list[Row] = []
    for label, size, output, sampled in runs:
        late = output["loop_late_ms"]  # None when the cycles gave the watcher no turn at all
        times = _normal_cycles_ms(output)
        calls = Counter[str]()
        for cycle_reports in output["cycles"]:
            for report in cycle_reports:
                if report["vendor_id"] == HOSTILE:
                    calls.update(report["errors"] or {"answered": report["requests"]})
        rows.append(
            Row(
                "aggregation beside a hostile vendor",
                scale,
                backend.name if size else "-",
                label,
                len(times),
                "vendor cycles",
                times,
                peak_memory_mb=output["peak_rss_mb"] or sampled,
                reference=rows[0] if size else None,
                vendors=len(servers),
                cycles=cycles,
                loop_late_p99_ms=late["p99"] if late else None,
                loop_late_max_ms=late["max"] if late else None,
                hostile_answer_mb=size / 1e6 if size else None,
                hostile_calls=dict(calls) if size else None,
            )
        )
    return rows


@dataclass
class _HostileSandbox:
    url: str
    process: subprocess.Popen[bytes]


def _hostile_vendor(work: Path, backend: Any) -> tuple[_HostileSandbox, Vendor]:
    """A sandbox vendor in a process of its own (its huge answers cost the world's vendors nothing), serving
    HOSTILE_PRACTITIONERS practitioners the directory does not know, declared (disabled) with their participations.
    Its answers are streamed (no length announced) in pieces over 0.2 s, as a server writing a large answer does."""
    import httpx

    practitioners = [
        SandboxPractitioner(idnps=f"99{i:09d}", family=f"H{i}", sites=[SandboxSite(idnst="1010000032")])
        for i in range(HOSTILE_PRACTITIONERS)
    ]
    config = SandboxConfig(vendor_id=HOSTILE, name="Hostile vendor", practitioners=practitioners, dribble_s=0.2)
    path = work / "hostile-sandbox.json"
    path.write_text(config.model_dump_json())
    port = _free_ports(1)
    log = (work / "sandbox-hostile.log").open("wb")
    command = [sys.executable, "-m", "dispo.cli", "sandbox", "--config", str(path), "--port", str(port)]
    sandbox = _HostileSandbox(f"http://127.0.0.1:{port}", subprocess.Popen(command, stdout=log, stderr=log))
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(sandbox.url + "/_stats", timeout=2).raise_for_status()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or sandbox.process.poll() is not None:
                raise RuntimeError(f"the hostile sandbox did not start; see {log.name}") from None
            time.sleep(0.2)
    vendor = Vendor(vendor_id=HOSTILE, name=config.name, base_url=sandbox.url + "/fhir", enabled=False)
    save_vendor(backend, vendor)
    for p in practitioners:
        save_participation(backend, Participation(idnps=p.idnps, vendors=[HOSTILE]))
    return sandbox, vendor


def _cycles_in_child(settings: Settings, cycles: int, work: Path) -> tuple[dict[str, Any], float]:
    """`bench.cycles` run in a child process: its output, and its peak memory as sampled from outside (MB)."""
    request = {
        "settings": {
            "data_dir": str(settings.data_dir),
            "backend": settings.backend,
            "es_url": settings.es_url,
            "index_prefix": settings.index_prefix,
            "tokens": "",
            "vendor_max_answer_bytes": settings.vendor_max_answer_bytes,
            "vendor_call_deadline_s": settings.vendor_call_deadline_s,
        },
        "cycles": cycles,
    }
    with tempfile.TemporaryFile() as answer, tempfile.TemporaryFile() as question:
        question.write(orjson.dumps(request))
        question.seek(0)
        child = subprocess.Popen([sys.executable, "-m", "bench.cycles"], stdin=question, stdout=answer)
        peak = 0.0
        while child.poll() is None:
            peak = max(peak, _tree_rss_mb(child.pid))
            time.sleep(0.1)
        if child.returncode:
            raise subprocess.CalledProcessError(child.returncode, "python -m bench.cycles")
        answer.seek(0)
        return orjson.loads(answer.read()), peak


def _normal_cycles_ms(output: dict[str, Any]) -> list[float]:
    """The cycle times of the world's vendors (every vendor but the hostile one), in ms."""
    return [r["duration_s"] * 1000 for reports in output["cycles"] for r in reports if r["vendor_id"] != HOSTILE]


# The dense-city query of the embedded scenario, per scale.
DENSE = {"department": ("01053", 20.0), "region": ("69383", 10.0), "national": ("75111", 5.0)}


def bench_embedded(scale: str, work: Path, n: int = 300) -> list[Row]:
    """Dense query in process on the embedded index vs a naive R*Tree + Python haversine over the slots."""

    if ("sqlite", None) not in backends():
        return []
    backend, _settings, _servers = _world(scale, work)
    insee, radius = DENSE[scale]
    centre = gazetteer().commune(insee)
    assert centre is not None, insee
    lat, lon = centre.lat, centre.lon
    ours: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        run_search(backend, SearchRequest(lat=lat, lon=lon, radius_km=radius, seed=i), staleness_limit_s=1e9)
        ours.append((time.perf_counter() - t0) * 1000)
    live = backend.live_index("slots")
    db = sqlite3.connect(backend.root / f"{live}.db")  # type: ignore[attr-defined]
    dlat, dlon = radius / 110.0, radius / (111.0 * math.cos(math.radians(lat)))
    naive: list[float] = []
    found = 0
    for _ in range(n):
        t0 = time.perf_counter()
        rows = db.execute(
            "SELECT d.id, d.lat, d.lon FROM geo g JOIN docs d ON d.rowid = g.rowid WHERE "
            "g.min_lat >= ? AND g.max_lat <= ? AND g.min_lon >= ? AND g.max_lon <= ?",
            (lat - dlat, lat + dlat, lon - dlon, lon + dlon),
        ).fetchall()
        hits = sorted((haversine_km(lat, lon, a, b), i) for i, a, b in rows if haversine_km(lat, lon, a, b) <= radius)
        found = len(hits)
        naive.append((time.perf_counter() - t0) * 1000)
    sites = backend.search("practice_sites", GeoQuery(lat=lat, lon=lon, radius_km=radius, limit=1)).total
    reference = Row(
        "embedded dense query",
        scale,
        "sqlite",
        "reference: naive R*Tree + haversine over the slots",
        n,
        "queries",
        naive,
    )
    ours_row = Row(
        "embedded dense query",
        scale,
        "sqlite",
        "run_search",
        n,
        "searches",
        ours,
        reference=reference,
        place=centre.name.title(),
        radius_km=radius,
        sites_in_circle=sites,
        slots_in_circle=found,
    )
    return [ours_row, reference]


SCENARIOS: dict[str, Callable[..., list[Row]]] = {  # in the order they run
    "import": bench_import,
    "changes": bench_changes,
    "search": bench_search,
    "embedded": bench_embedded,
    "aggregate": bench_aggregate,
    "hostile": bench_hostile,
    "verify": bench_verify,
    "lrm": bench_lrm,
}


# Repetitions of a quick run (the test suite's smoke test): enough to exercise every path, no more.
QUICK = {
    "changes": {"changes": 5},
    "search": {"requests": 32},
    "verify": {"n": 2},
    "embedded": {"n": 10},
    "hostile": {"size_mb": 2, "cycles": 1, "cap_bytes": 1_000_000},
    "lrm": {"n": 10, "drill": 9},
}


def run(
    names: list[str],
    scale: str,
    work: Path | None = None,
    quick: bool = False,
    on_rows: Callable[[list[Row]], None] | None = None,
    repeat: int | None = None,
    backend: str | None = None,
    answer_mb: float | None = None,
) -> list[Row]:
    """Run scenarios in order; a scenario that fails leaves a row saying why and the others still run.
    `repeat` sets the number of searches of the search and embedded scenarios (a tenth of it, at least 5,
    for the live-verification one, whose searches wait on vendors); `answer_mb` the size of the hostile
    vendor's answers."""
    # DISPO_BENCH_WORK keeps the generated files and imported worlds between runs (a national world takes
    # minutes to build); by default every run starts from nothing.
    work = work or Path(os.environ.get("DISPO_BENCH_WORK") or tempfile.mkdtemp(prefix="dispo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    _ONLY[0] = backend
    rows: list[Row] = []
    try:
        for name in sorted(names, key=list(SCENARIOS).index):
            started = time.perf_counter()
            try:
                knobs = QUICK.get(name, {}) if quick else {}
                if repeat and not quick:
                    knobs = {
                        "search": {"requests": repeat},
                        "verify": {"n": max(5, repeat // 10)},
                        "embedded": {"n": repeat},
                    }.get(name, {})
                if answer_mb and name == "hostile":
                    knobs = {**knobs, "size_mb": answer_mb}
                rows += SCENARIOS[name](scale, work, **knobs)
            except Exception as exc:
                if quick:
                    raise
                rows.append(Row(name, scale, "-", "failed", 0, "samples", error=f"{type(exc).__name__}: {exc}"[:200]))
            print(f"[bench] {name} done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            if on_rows is not None:
                on_rows(rows)
    finally:
        close_worlds()
    return rows
