"""The slot aggregator: pull every participating practitioner's free slots from each vendor, on a schedule.

One `VendorPuller` per vendor runs cycles: the vendor's active participants in batches of 25, with
bounded concurrency and a request rate; timeouts, lost connections, 429 and 5xx retried with jittered
backoff (`core.retry`); a circuit breaker that opens after consecutive failures and probes again later.
A successful batch is reconciled into the index (see `availability.reconcile`); a failed batch changes
nothing, so a vendor's last good slots stay until the staleness limit hides them. Vendors never wait on
one another.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aggregation import metrics
from aggregation.availability import ReconcileStats, SiteMapper, reconcile
from aggregation.client import VendorError, make_client, search_slots
from aggregation.contract import MAX_IDENTIFIERS, ParseResult
from aggregation.status import STATUS
from core.geo import PARIS
from core.records import Vendor
from core.retry import Retry
from core.settings import Settings
from indexer.backend import Backend
from indexer.lifecycle import ensure_live
from indexer.registry import participants


def slot_window(now: datetime, horizon_days: int) -> tuple[datetime, datetime]:
    """From now to the end of the day `horizon_days` after today, Paris time (the contract's window)."""
    local = now.astimezone(PARIS)
    end = (local + timedelta(days=horizon_days)).replace(hour=23, minute=59, second=59, microsecond=999000)
    return local, end


class CircuitBreaker:
    """closed -> open after `threshold` consecutive failures -> half-open after `reset_s` (one probe)."""

    def __init__(self, threshold: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.reset_s, self.clock = threshold, reset_s, clock
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True  # one probe at a time
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at, self._probing = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        self._probing = False
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = self.clock()


class RateLimiter:
    """At most `rate` call starts per second, spaced evenly."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if self.interval == 0:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class CycleReport:
    vendor_id: str
    started_at: datetime
    duration_s: float = 0.0
    participants: int = 0
    batches: int = 0
    batches_failed: int = 0
    batches_skipped: int = 0  # circuit open
    requests: int = 0
    slots_received: int = 0
    stats: ReconcileStats = field(default_factory=ReconcileStats)
    rejected: Counter[str] = field(default_factory=Counter)
    unplaced: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    breaker: str = "closed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "participants": self.participants,
            "batches": self.batches,
            "batches_failed": self.batches_failed,
            "batches_skipped": self.batches_skipped,
            "requests": self.requests,
            "slots_received": self.slots_received,
            "inserted": self.stats.inserted,
            "updated": self.stats.updated,
            "removed": self.stats.removed,
            "unchanged": self.stats.unchanged,
            "expired": self.stats.expired,
            "rejected": dict(self.rejected),
            "unplaced": dict(self.unplaced),
            "errors": dict(self.errors),
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class VendorPuller:
    """Runs aggregation cycles for one vendor and keeps its breaker and failure memory between cycles."""

    def __init__(
        self,
        backend: Backend,
        vendor: Vendor,
        settings: Settings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.backend, self.vendor, self.settings, self.clock = backend, vendor, settings, clock
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
        self.failing: dict[str, str] = {}  # IDNPS -> when its batch first failed (ISO)
        self.known: set[str] = set()  # participants of the previous cycle
        self.last_success_at: datetime | None = None
        self.last_error: str | None = None

    async def cycle(self) -> CycleReport:
        now = self.clock()
        report = CycleReport(self.vendor.vendor_id, now)
        t0 = time.perf_counter()
        current = [p.idnps for p in await asyncio.to_thread(participants, self.backend, self.vendor.vendor_id)]
        report.participants = len(current)
        gone = sorted(self.known - set(current))
        self.known = set(current)
        batches = [current[i : i + MAX_IDENTIFIERS] for i in range(0, len(current), MAX_IDENTIFIERS)]
        report.batches = len(batches)
        mapper = SiteMapper(self.backend)
        window = slot_window(now, self.settings.horizon_days)
        semaphore = asyncio.Semaphore(max(1, self.vendor.concurrency))
        limiter = RateLimiter(self.vendor.requests_per_second)
        async with make_client(self.vendor) as client:

            async def run(ids: list[str]) -> None:
                async with semaphore:
                    await self._batch(client, limiter, ids, window, mapper, report)

            await asyncio.gather(*(run(ids) for ids in batches))
        if gone:  # practitioners who left the vendor: their slots go
            stats, _ = await asyncio.to_thread(reconcile, self.backend, self.vendor.vendor_id, gone, [], mapper, now)
            report.stats.add(stats)
        if report.stats.inserted or report.stats.updated or report.stats.removed:
            # Searches see this cycle's changes now rather than at the next periodic refresh.
            await asyncio.to_thread(self.backend.refresh, ensure_live(self.backend, "slots"))
        report.duration_s = time.perf_counter() - t0
        report.breaker = self.breaker.state
        await asyncio.to_thread(self._save_status, report)
        return report

    async def _batch(
        self,
        client: Any,
        limiter: RateLimiter,
        ids: list[str],
        window: tuple[datetime, datetime],
        mapper: SiteMapper,
        report: CycleReport,
    ) -> None:
        vendor_id = self.vendor.vendor_id
        if not self.breaker.allow():
            report.batches_skipped += 1
            self._mark_failing(ids)
            return
        try:
            result: ParseResult | None = await Retry.for_vendors(self.settings).acall(
                self._ask, client, limiter, ids, window, report
            )
        except VendorError:
            result = None
        if result is None:
            self.breaker.failure()
            report.batches_failed += 1
            self._mark_failing(ids)
            return
        self.breaker.success()
        report.slots_received += len(result.slots)
        report.rejected.update(result.rejected)
        stats, unplaced = await asyncio.to_thread(
            reconcile, self.backend, vendor_id, ids, result.slots, mapper, self.clock()
        )
        report.stats.add(stats)
        report.unplaced.update(unplaced)
        for idnps in ids:
            self.failing.pop(idnps, None)
        self.last_success_at = self.clock()

    async def _ask(
        self, client: Any, limiter: RateLimiter, ids: list[str], window: tuple[datetime, datetime], report: CycleReport
    ) -> ParseResult:
        """One try of a batch, counted and timed whether it succeeds or fails; raises VendorError."""
        vendor_id = self.vendor.vendor_id
        await limiter.wait()
        started = time.perf_counter()
        report.requests += 1
        metrics.REQUESTS.labels(vendor_id).inc()
        try:
            return await search_slots(client, self.vendor, ids, window[0], window[1], self.clock())
        except VendorError as exc:
            metrics.ERRORS.labels(vendor_id, exc.kind).inc()
            report.errors[exc.kind] += 1
            self.last_error = str(exc)
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.LATENCY.labels(vendor_id).observe(elapsed)
            report.latencies_ms.append(elapsed * 1000)

    def _mark_failing(self, ids: list[str]) -> None:
        since = self.clock().isoformat()
        for idnps in ids:
            self.failing.setdefault(idnps, since)

    def _save_status(self, report: CycleReport) -> None:
        index = ensure_live(self.backend, STATUS)
        previous = self.backend.get(STATUS, self.vendor.vendor_id) or {}
        failed = report.batches_failed + report.batches_skipped
        doc: dict[str, Any] = {
            "vendor_id": self.vendor.vendor_id,
            "last_attempt_at": report.started_at.isoformat(),
            "consecutive_failures": self.breaker.failures,
            "breaker": report.breaker,
            "requests": int(previous.get("requests", 0)) + report.requests,
            "errors_by_kind": dict(Counter(previous.get("errors_by_kind", {})) + report.errors),
            "failing": dict(self.failing),
            "last_cycle": report.as_dict(),
        }
        success = self.last_success_at.isoformat() if self.last_success_at else previous.get("last_success_at")
        if success:
            doc["last_success_at"] = success
        if failed or report.errors:
            doc["last_error_at"] = report.started_at.isoformat()
            doc["last_error"] = self.last_error or "circuit open"
        elif previous.get("last_error_at"):
            doc["last_error_at"], doc["last_error"] = previous["last_error_at"], previous.get("last_error")
        p50, p95 = percentile(report.latencies_ms, 50), percentile(report.latencies_ms, 95)
        if p50 is not None:
            doc["latency_p50_ms"], doc["latency_p95_ms"] = round(p50, 1), round(p95 or p50, 1)
        self.backend.write(index, [doc])
        self.backend.refresh(index)
        metrics.BREAKER_OPEN.labels(self.vendor.vendor_id).set(1 if report.breaker == "open" else 0)
