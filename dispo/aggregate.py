"""`dispo aggregate`: pull every participating practitioner's free slots from the vendors, once or on a schedule.

The scheduler also takes the coverage snapshots (`analytics.snapshots.snapshot_now`, handed in from here:
analytics sits above aggregation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Annotated

import typer
from prometheus_client import start_http_server

from aggregation.metrics import REGISTRY
from aggregation.puller import CycleReport
from aggregation.scheduler import Aggregator
from analytics.snapshots import snapshot_now
from core.settings import Settings
from dispo.console import FAILED, err, fail, open_backend, print_table

CYCLE_COLUMNS = (
    "vendor",
    "participants",
    "batches",
    "failed",
    "slots",
    "inserted",
    "updated",
    "removed",
    "unchanged",
    "rejected",
    "unplaced",
    "errors",
    "seconds",
)


def _cycle_row(r: CycleReport) -> tuple[str, ...]:
    return (
        r.vendor_id,
        str(r.participants),
        str(r.batches),
        str(r.batches_failed + r.batches_skipped),
        str(r.slots_received),
        str(r.stats.inserted),
        str(r.stats.updated),
        str(r.stats.removed),
        str(r.stats.unchanged),
        str(sum(r.rejected.values())),
        str(sum(r.unplaced.values())),
        ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "-",
        f"{r.duration_s:.2f}",
    )


def aggregate(
    once: Annotated[bool, typer.Option("--once", help="run one cycle of every vendor and exit")] = False,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus metrics on this port")] = None,
) -> None:
    """Pull every participating practitioner's free slots from the vendors, on a schedule."""
    settings = Settings()
    aggregator = Aggregator(open_backend(settings), settings, snapshot=snapshot_now)
    if metrics_port:
        start_http_server(metrics_port, addr=settings.host, registry=REGISTRY)
    if once:
        reports = asyncio.run(aggregator.run_once())
        if not reports and not aggregator.pullers:
            raise fail("no enabled vendor: declare one with `dispo vendors add`", FAILED, title=None)
        if not reports:
            raise fail(
                "every vendor is being pulled by another scheduler (see `dispo vendors status`): nothing to do",
                FAILED,
                title=None,
            )
        print_table("Aggregation cycle", CYCLE_COLUMNS, map(_cycle_row, reports))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # each job's every run is not news; the cycles are
    err.print(
        f"aggregating every {settings.aggregation_interval_s:g} s as {aggregator.leases.holder} (vendors held by "
        "another scheduler are pulled by it; this one stands by for them); Ctrl-C stops"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_forever(aggregator))


async def _forever(aggregator: Aggregator) -> None:
    """Until SIGINT or SIGTERM, after which the leases held are given back for a standby to take at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await aggregator.run_forever(stop)
