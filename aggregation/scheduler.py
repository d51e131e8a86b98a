"""Runs the aggregation: one job per enabled vendor, repeated at an interval (APScheduler), or once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from aggregation import metrics, sas_calendar
from aggregation.puller import CycleReport, VendorPuller
from core.records import Vendor
from core.settings import Settings
from indexer.backend import Backend
from indexer.lease import LeaseLost, Leases, vendor_key
from indexer.registry import list_vendors
from rpps_import import scheduled

log = logging.getLogger("dispo.aggregate")


class Aggregator:
    """Pulls every enabled vendor whose lease it holds (`indexer.lease`): several schedulers may run against one
    backend, each vendor is pulled by one of them at a time, and the others stand by. Two hooks: `on_cycle` after
    each vendor's cycle, and `snapshot`, a periodic job over the whole index (the coverage snapshot, given by the
    command line: analytics sits above aggregation)."""

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        on_cycle: Callable[[CycleReport], None] | None = None,
        snapshot: Callable[[Backend, Settings], Any] | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.backend, self.settings, self.on_cycle, self.take_snapshot = backend, settings, on_cycle, snapshot
        self.pullers: dict[str, VendorPuller] = {}
        self.leases = leases or Leases(backend, settings.aggregation_lease_s)

    def refresh_vendors(self) -> list[Vendor]:
        """Pullers for the enabled vendors; a changed vendor gets a new puller, a disabled one none."""
        enabled = list_vendors(self.backend, enabled_only=True)
        wanted = {v.vendor_id: v for v in enabled}
        for vendor_id in list(self.pullers):
            if vendor_id not in wanted:
                del self.pullers[vendor_id]
        for vendor_id, vendor in wanted.items():
            puller = self.pullers.get(vendor_id)
            if puller is None or puller.vendor != vendor:
                self.pullers[vendor_id] = VendorPuller(self.backend, vendor, self.settings)
        return enabled

    async def cycle(self, vendor_id: str) -> CycleReport | None:
        """One cycle of a vendor if this scheduler holds (or can take) its lease; None when another does."""
        puller = self.pullers.get(vendor_id)
        if puller is None:
            return None
        key = vendor_key(vendor_id)
        try:
            if not await asyncio.to_thread(self.leases.claim, key):
                log.info("vendor %s: pulled by another scheduler, standing by", vendor_id)
                return None
            puller.guard = partial(self.leases.check, key)
            async with self.leases.kept(key):
                report = await puller.cycle()
        except LeaseLost as exc:
            log.warning("vendor %s: cycle stopped, %s", vendor_id, exc)
            return None
        except Exception:  # a broken cycle must not stop the scheduler or the other vendors
            log.exception("aggregation cycle of %s failed", vendor_id)
            return None
        log.info("vendor %s cycle %s", vendor_id, orjson.dumps(report.as_dict()).decode())
        if self.on_cycle is not None:
            self.on_cycle(report)
        return report

    async def run_once(self) -> list[CycleReport]:
        """One cycle of every enabled vendor, all at once, then the snapshot hook; returns the reports in
        vendor order."""
        await asyncio.to_thread(self.refresh_vendors)
        try:
            reports = await asyncio.gather(*(self.cycle(v) for v in sorted(self.pullers)))
        finally:
            await asyncio.to_thread(self.release)
        await self.publish_calendars()
        await self.snapshot()
        return [r for r in reports if r is not None]

    async def publish_calendars(self) -> None:
        """The SAS calendars' slots as days pass (each calendar's are written when it changes too); a failure is
        logged and waits for the next turn."""
        try:
            stats = await asyncio.to_thread(sas_calendar.publish_all, self.backend)
        except Exception:
            log.exception("publishing the SAS calendars failed")
            return
        if stats.inserted or stats.removed:
            log.info("SAS calendars: %d slots added, %d removed", stats.inserted, stats.removed)

    def release(self) -> None:
        """Give back every lease held, so that a standby scheduler pulls at once rather than when they run out."""
        for vendor_id in self.pullers:
            if self.leases.holds(vendor_key(vendor_id)):
                try:
                    self.leases.release(vendor_key(vendor_id))
                except Exception:  # it runs out by itself
                    log.exception("releasing the lease of %s failed", vendor_id)

    async def keep_leases(self, scheduler: AsyncIOScheduler) -> None:
        """Renew the leases held and try the others: one taken over from a scheduler that died is pulled now."""
        for vendor_id in list(self.pullers):
            key = vendor_key(vendor_id)
            held = self.leases.holds(key)
            try:
                taken = await asyncio.to_thread(self.leases.claim, key)
            except Exception:
                log.exception("lease of %s: backend unreachable, trying again", vendor_id)
                continue
            metrics.LEASE_HELD.labels(vendor_id).set(1 if taken else 0)
            job = scheduler.get_job(f"vendor:{vendor_id}")
            if taken and not held and job is not None:
                job.modify(next_run_time=datetime.now(UTC))

    async def snapshot(self) -> None:
        """The snapshot hook, if any; a failure is logged and waits for the next one."""
        if self.take_snapshot is None:
            return
        try:
            summary = await asyncio.to_thread(self.take_snapshot, self.backend, self.settings)
        except Exception:
            log.exception("coverage snapshot failed")
            return
        log.info("coverage snapshot: %s", summary)

    def add_import_jobs(self, scheduler: AsyncIOScheduler) -> list[str]:
        """The national files' scheduled imports, for each kind with a URL; one run at a time per kind here, and the
        import's lease keeps any other process's import of the kind from overlapping it."""
        added = []
        for kind in scheduled.KINDS:
            if scheduled.url_of(kind, self.settings):
                scheduler.add_job(
                    self.scheduled_import,
                    scheduled.trigger(kind, self.settings),
                    args=[kind],
                    id=f"import:{kind}",
                    max_instances=1,
                    coalesce=True,
                    misfire_grace_time=3600,
                )
                added.append(f"import:{kind}")
        return added

    async def scheduled_import(self, kind: str) -> None:
        try:
            await asyncio.to_thread(scheduled.run_import, kind, self.backend, self.settings)
        except Exception:  # a broken import must not stop the scheduler
            log.exception("scheduled %s import failed", kind)

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        """Cycles every `aggregation_interval_s` per vendor; picks up vendor changes at the same pace."""
        scheduler = AsyncIOScheduler(timezone=UTC)
        interval = self.settings.aggregation_interval_s

        async def sync_jobs() -> None:
            await asyncio.to_thread(self.refresh_vendors)
            jobs = {job.id for job in scheduler.get_jobs() if job.id.startswith("vendor:")}
            for vendor_id in self.pullers:
                if f"vendor:{vendor_id}" not in jobs:
                    scheduler.add_job(
                        self.cycle,
                        "interval",
                        args=[vendor_id],
                        seconds=interval,
                        id=f"vendor:{vendor_id}",
                        max_instances=1,
                        coalesce=True,
                        next_run_time=datetime.now(UTC),
                    )
            for job_id in jobs:
                if job_id.removeprefix("vendor:") not in self.pullers:
                    scheduler.remove_job(job_id)

        scheduler.add_job(
            sync_jobs,
            "interval",
            seconds=interval,
            id="sync",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        scheduler.add_job(
            self.publish_calendars,
            "interval",
            seconds=interval,
            id="sas-calendars",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        if self.take_snapshot is not None:
            scheduler.add_job(
                self.snapshot,
                "interval",
                seconds=self.settings.coverage_interval_s,
                id="coverage",
                max_instances=1,
                coalesce=True,
                # The first one once every vendor had a chance to answer.
                next_run_time=datetime.now(UTC) + timedelta(seconds=min(60.0, self.settings.coverage_interval_s)),
            )
        self.add_import_jobs(scheduler)
        scheduler.add_job(
            self.keep_leases,
            "interval",
            args=[scheduler],
            seconds=self.leases.ttl_s / 3,
            id="leases",
            max_instances=1,
            coalesce=True,
        )
        scheduler.start()
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            scheduler.shutdown(wait=False)
            await asyncio.to_thread(self.release)
