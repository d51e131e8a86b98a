"""An aggregator in a process of its own, for the benchmarks: it runs cycles of every enabled vendor and prints,
as JSON, each vendor's cycle time and errors and the process's peak memory, which is then its own.

    python -m bench.cycles < request.json

The request names the settings (index, backend and the limits on vendors' answers) and the number of cycles.
How late the event loop every vendor shares answers is measured too.
Each cycle has a new `Aggregator`, so a vendor whose calls fail meets a closed breaker every cycle: the
aggregator faces it every time rather than once.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from aggregation.puller import CycleReport
from aggregation.scheduler import Aggregator
from core.settings import Settings
from indexer.factory import make_backend


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (VmHWM: peak resident size), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


TICK_S = 0.01  # how often the watcher asks the event loop for a turn


async def _watched(aggregator: Aggregator, lags: list[float]) -> list[CycleReport]:
    """One cycle, while a watcher records how late the event loop gives it each turn it asked for (s): every
    vendor's calls, timeouts and deadlines wait as long on a loop kept busy."""

    async def watch() -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append(time.perf_counter() - asked - TICK_S)

    watcher = asyncio.create_task(watch())
    try:
        return await aggregator.run_once()
    finally:
        watcher.cancel()


def run(request: dict[str, Any]) -> dict[str, Any]:
    settings = Settings(**request["settings"])
    backend = make_backend(settings)
    started_rss = _status_mb("VmRSS")
    cycles: list[list[dict[str, Any]]] = []
    lags: list[float] = []
    try:
        for _ in range(int(request["cycles"])):
            t0 = time.perf_counter()
            reports = asyncio.run(_watched(Aggregator(backend, settings), lags))
            wall = time.perf_counter() - t0
            cycles.append(
                [
                    {
                        "vendor_id": r.vendor_id,
                        "duration_s": r.duration_s,
                        "wall_s": wall,
                        "participants": r.participants,
                        "slots_received": r.slots_received,
                        "requests": r.requests,
                        "batches_failed": r.batches_failed,
                        "errors": dict(r.errors),
                    }
                    for r in reports
                ]
            )
    finally:
        backend.close()
    lags.sort()
    return {
        "cycles": cycles,
        "rss_start_mb": started_rss,
        "peak_rss_mb": _status_mb("VmHWM"),
        "loop_late_ms": {"p99": lags[int(0.99 * (len(lags) - 1))] * 1000, "max": lags[-1] * 1000} if lags else None,
    }


def main() -> None:
    sys.stdout.buffer.write(orjson.dumps(run(orjson.loads(sys.stdin.buffer.read()))))


if __name__ == "__main__":
    main()
