"""The slot aggregator: pull every participating practitioner's free slots from each vendor, on a schedule.

One `VendorPuller` per vendor runs cycles: the vendor's active participants in batches of 25, with
bounded concurrency and a request rate; a circuit breaker that opens after consecutive failures and probes
again later. A batch that fails in a way one practitioner may cause (a timeout, a 5xx, an unreadable or
too large answer) is split in halves, down to single practitioners, within the cycle's split budget: the
practitioner at fault fails alone and the others of its batch get their slots in the same cycle. Single
practitioners, and failures every batch shares (lost connections, 429), are retried with jittered backoff
(`core.retry`; see `_try`).
An answered call is reconciled into the index (see `availability.reconcile`); a failed one changes
nothing, so a practitioner's last good slots stay until the staleness limit hides them. Vendors never wait
on one another.
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
from aggregation.availability import EXAMPLES, ReconcileStats, SiteMapper, is_association, reconcile
from aggregation.client import VendorError, make_client, search_participants
from aggregation.contract import MAX_ASSOCIATIONS, MAX_IDENTIFIERS, ParseResult
from aggregation.status import STATUS, group_failing
from core.geo import PARIS
from core.records import Cpts, Flow, Vendor
from core.retry import Retry
from core.settings import Settings
from indexer.backend import Backend
from indexer.lease import LeaseLost
from indexer.lifecycle import ensure_live
from indexer.registry import participants
from rpps_import.cpts import learn
from rpps_import.geocode import make_geocoder

# Failures that a smaller batch may not share, since one practitioner's agenda can cause them: a timeout, a 5xx, an
# answer unreadable, incomplete or too large (fewer practitioners, fewer slots: a half may fit under the cap), a 4xx
# about the request. Not a lost connection (the vendor is unreachable for every batch alike), a 429 (splitting would
# only ask more often) or a 401/403 (the platform's credentials).
_NOT_SPLIT_STATUSES = {401, 403, 429}


def splittable(exc: VendorError) -> bool:
    """Whether asking for a part of the batch may succeed where the whole batch failed with `exc`."""
    if exc.kind in ("timeout", "malformed", "incomplete", "too-large"):
        return True
    return exc.kind == "http" and exc.status not in _NOT_SPLIT_STATUSES


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
    batches_split: int = 0  # failed batches (whole or halves) asked again as two halves
    practitioners_failed: int = 0  # practitioners left without an answer this cycle (failed, skipped, isolated)
    requests: int = 0  # HTTP calls: every page of an answer, and one per failed call
    pages: int = 0  # pages of answers read
    slots_received: int = 0
    stats: ReconcileStats = field(default_factory=ReconcileStats)
    rejected: Counter[str] = field(default_factory=Counter)
    unplaced: Counter[str] = field(default_factory=Counter)
    # Up to EXAMPLES slot ids per reason a slot was rejected or left unplaced, to look them up at the vendor.
    rejected_examples: dict[str, list[str]] = field(default_factory=dict)
    unplaced_examples: dict[str, list[str]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    breaker: str = "closed"
    # Slots received by the agency's flow they came through (individual, cpts: offered through a CPTS, sos), and
    # the CPTS the vendor offered slots through.
    slots_by_flow: Counter[str] = field(default_factory=Counter)
    cpts_seen: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "participants": self.participants,
            "batches": self.batches,
            "batches_failed": self.batches_failed,
            "batches_skipped": self.batches_skipped,
            "batches_split": self.batches_split,
            "practitioners_failed": self.practitioners_failed,
            "requests": self.requests,
            "pages": self.pages,
            "slots_received": self.slots_received,
            "inserted": self.stats.inserted,
            "updated": self.stats.updated,
            "removed": self.stats.removed,
            "unchanged": self.stats.unchanged,
            "expired": self.stats.expired,
            "unavailable": self.stats.unavailable,
            "rejected": dict(self.rejected),
            "unplaced": dict(self.unplaced),
            "examples": {"rejected": self.rejected_examples, "unplaced": self.unplaced_examples},
            "vendor_declared_sites": self.stats.vendor_declared,
            "errors": dict(self.errors),
            "slots_by_flow": dict(self.slots_by_flow),
            "cpts_seen": self.cpts_seen,
        }

    def keep_examples(self, kind: str, examples: dict[str, list[str]]) -> None:
        """Add slot ids to the examples of `kind` ("rejected" or "unplaced"), up to EXAMPLES per reason."""
        kept = self.rejected_examples if kind == "rejected" else self.unplaced_examples
        for reason, ids in examples.items():
            bucket = kept.setdefault(reason, [])
            bucket.extend(ids[: max(0, EXAMPLES - len(bucket))])


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class _Cycle:
    """What every call of one vendor cycle shares."""

    client: Any
    limiter: RateLimiter
    semaphore: asyncio.Semaphore
    window: tuple[datetime, datetime]
    mapper: SiteMapper
    report: CycleReport
    split_until: float  # perf_counter instant past which failed batches are no longer split
    # CPTS IDNST -> the CPTS as the vendor gave it, and the practitioners whose slots it offered through it
    cpts: dict[str, tuple[Cpts, set[str]]] = field(default_factory=dict)


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
        # Places the sites a vendor declares (SOS Médecins places, addresses the directory lacks) as imports do.
        self.geocoder = make_geocoder(settings)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
        # IDNPS -> {"since": when its calls started failing (ISO), "reason": why its last call failed}
        self.failing: dict[str, dict[str, str]] = {}
        self.known: set[str] = set()  # participants of the previous cycle
        self.last_success_at: datetime | None = None
        self.last_error: str | None = None
        # Called before each write; raises LeaseLost once another scheduler may be pulling this vendor
        # (`indexer.lease`). Nothing to check when one scheduler runs alone.
        self.guard: Callable[[], None] = lambda: None

    async def cycle(self) -> CycleReport:
        now = self.clock()
        report = CycleReport(self.vendor.vendor_id, now)
        t0 = time.perf_counter()
        current = [p.idnps for p in await asyncio.to_thread(participants, self.backend, self.vendor.vendor_id)]
        report.participants = len(current)
        gone = sorted(self.known - set(current))
        self.known = set(current)
        for idnps in gone:  # no longer asked for, so no longer failing
            self.failing.pop(idnps, None)
        # Practitioners by their Slot search, 25 a call; SOS Médecins associations (taking part by SIRET) by their
        # Schedule search, 10 a call, from a vendor serving that flow (another cannot be asked for them).
        practitioners = [i for i in current if not is_association(i)]
        associations = [i for i in current if is_association(i)] if Flow.sos in self.vendor.flows else []
        batches = [practitioners[i : i + MAX_IDENTIFIERS] for i in range(0, len(practitioners), MAX_IDENTIFIERS)]
        batches += [associations[i : i + MAX_ASSOCIATIONS] for i in range(0, len(associations), MAX_ASSOCIATIONS)]
        report.batches = len(batches)
        mapper = SiteMapper(self.backend, self.geocoder)
        window = slot_window(now, self.settings.horizon_days)
        semaphore = asyncio.Semaphore(max(1, self.vendor.concurrency))
        limiter = RateLimiter(self.vendor.requests_per_second)
        async with make_client(self.vendor) as client:
            state = _Cycle(client, limiter, semaphore, window, mapper, report, t0 + self.settings.split_budget_s)
            tasks = [asyncio.ensure_future(self._batch(ids, state)) for ids in batches]
            try:
                await asyncio.gather(*tasks)
            except LeaseLost:  # the batches still running stop too: nothing more of this cycle is written
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        if state.cpts:  # the directory learns the CPTS the vendor offers slots through, and their members
            self.guard()
            await asyncio.to_thread(learn, self.backend, self.vendor.vendor_id, state.cpts, now)
            report.cpts_seen = len(state.cpts)
        if gone:  # practitioners who left the vendor: their slots go
            self.guard()
            stats, _ = await asyncio.to_thread(reconcile, self.backend, self.vendor.vendor_id, gone, [], mapper, now)
            report.stats.add(stats)
        if report.stats.inserted or report.stats.updated or report.stats.removed:
            # Searches see this cycle's changes now rather than at the next periodic refresh.
            await asyncio.to_thread(self.backend.refresh, ensure_live(self.backend, "slots"))
        report.duration_s = time.perf_counter() - t0
        report.breaker = self.breaker.state
        self.guard()
        await asyncio.to_thread(self._save_status, report)
        return report

    async def _batch(self, ids: list[str], cycle: _Cycle) -> None:
        """One batch of the cycle, asked as a whole and narrowed down when it fails (`_narrow`)."""
        report = cycle.report
        async with cycle.semaphore:
            self.guard()
            if not self.breaker.allow():
                report.batches_skipped += 1
                self._mark_failing(ids, "circuit open", report)
                return
            outcome = await self._try(ids, cycle)
        if isinstance(outcome, VendorError):
            self.breaker.failure()
            if not await self._narrow(ids, outcome, cycle):
                report.batches_failed += 1
            return
        self.breaker.success()
        await self._accept(ids, outcome, cycle)

    async def _narrow(self, ids: list[str], failure: VendorError, cycle: _Cycle) -> bool:
        """`ids` failed together with `failure`: ask each half on its own, and each failing half's halves, down to
        single practitioners, so the practitioner at fault fails alone. Returns whether any of `ids` answered.

        Splits stop when the cycle's split budget is spent or the breaker is not closed. For the breaker, the
        batch's own failure counts once; a half's failure counts only when its sibling failed too (no sign of
        the vendor answering), and an answering half resets it: one slow practitioner whose neighbours answer
        never opens it, while a vendor failing everything still opens it within a few calls."""
        report, reason = cycle.report, str(failure)
        if len(ids) == 1 or not splittable(failure):
            self._mark_failing(ids, reason, report)
            return False
        if time.perf_counter() >= cycle.split_until:
            self._mark_failing(ids, f"{reason} (not split: the cycle's split budget is spent)", report)
            return False
        if self.breaker.state != "closed":
            self._mark_failing(ids, f"{reason} (not split: circuit {self.breaker.state})", report)
            return False
        halves = [ids[: len(ids) // 2], ids[len(ids) // 2 :]]
        outcomes = await asyncio.gather(*(self._ask_half(half, cycle) for half in halves))
        if any(outcome is not None for outcome in outcomes):
            report.batches_split += 1
        if all(isinstance(outcome, VendorError) for outcome in outcomes):
            self.breaker.failure()
        answered, follow_ups = False, []
        for half, outcome in zip(halves, outcomes, strict=True):
            if outcome is None:
                self._mark_failing(half, f"{reason} (not split: circuit {self.breaker.state})", report)
            elif isinstance(outcome, VendorError):
                follow_ups.append(self._narrow(half, outcome, cycle))
            else:
                answered = True
                await self._accept(half, outcome, cycle)
        return any(await asyncio.gather(*follow_ups)) or answered

    async def _ask_half(self, ids: list[str], cycle: _Cycle) -> ParseResult | VendorError | None:
        """A half of a failed batch, asked on its own; None when the breaker no longer lets it be asked."""
        async with cycle.semaphore:
            if self.breaker.state != "closed":
                return None
            outcome = await self._try(ids, cycle, narrowed=True)
        if not isinstance(outcome, VendorError):
            self.breaker.success()
        return outcome

    async def _try(self, ids: list[str], cycle: _Cycle, narrowed: bool = False) -> ParseResult | VendorError:
        """The answer for `ids` (`narrowed`: a part of a failed batch), or the failure of the last try.

        The order of remedies: a batch of several practitioners that fails in a way a smaller batch may not share
        (`splittable`) is tried once and then split by the caller, never tried again whole. One slow agenda holds
        up any batch it is in: three tries of 7 s would cost 21 s plus backoff and fail all the same, while halving
        isolates it in about five rounds and answers the others. Retries (`core.retry`) stay for single
        practitioners, and for failures every batch shares alike (a lost connection, a 429), where a split would
        only multiply the calls; but not for a practitioner narrowed down by timeouts, which has just timed out at
        every batch size down to its own."""

        async def once() -> ParseResult | VendorError:
            try:
                return await self._ask(ids, cycle)
            except VendorError as exc:
                if (len(ids) > 1 and splittable(exc)) or (narrowed and exc.kind == "timeout"):
                    return exc  # returned rather than raised: not retried
                raise

        try:
            return await Retry.for_vendors(self.settings).acall(once)
        except VendorError as exc:
            return exc

    async def _ask(self, ids: list[str], cycle: _Cycle) -> ParseResult:
        """One call for a batch, counted and timed whether it succeeds or fails; raises VendorError."""
        vendor_id, report = self.vendor.vendor_id, cycle.report
        await cycle.limiter.wait()
        started = time.perf_counter()
        try:
            result = await search_participants(
                cycle.client,
                self.vendor,
                ids,
                cycle.window[0],
                cycle.window[1],
                self.clock(),
                max_answer_bytes=self.settings.vendor_max_answer_bytes,
                call_deadline_s=self.settings.vendor_call_deadline_s,
            )
        except VendorError as exc:
            report.requests += 1
            metrics.REQUESTS.labels(vendor_id).inc()
            metrics.ERRORS.labels(vendor_id, exc.kind).inc()
            report.errors[exc.kind] += 1
            self.last_error = str(exc)
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.LATENCY.labels(vendor_id).observe(elapsed)
            report.latencies_ms.append(elapsed * 1000)
        pages = max(1, getattr(result, "pages", 1))  # an answer is at least the one request
        report.requests += pages
        report.pages += pages
        metrics.REQUESTS.labels(vendor_id).inc(pages)
        return result

    async def _accept(self, ids: list[str], result: ParseResult, cycle: _Cycle) -> None:
        """Reconcile an answered call: the index holds exactly these practitioners' slots from this answer."""
        report = cycle.report
        report.slots_received += len(result.slots)
        for slot in result.slots:  # every kept slot names the participant it was asked for
            idnps = slot.idnps or ""
            flow = Flow.sos if is_association(idnps) else Flow.cpts if slot.cpts else Flow.individual
            report.slots_by_flow[flow.value] += 1
            for cpts in slot.cpts:
                cycle.cpts.setdefault(cpts.idnst, (cpts, set()))[1].add(idnps)
        report.rejected.update(result.rejected)
        report.keep_examples("rejected", result.rejected_examples)
        self.guard()
        stats, unplaced = await asyncio.to_thread(
            reconcile, self.backend, self.vendor.vendor_id, ids, result.slots, cycle.mapper, self.clock()
        )
        report.stats.add(stats)
        report.unplaced.update(unplaced)
        report.keep_examples("unplaced", unplaced.examples)
        for idnps in ids:
            self.failing.pop(idnps, None)
        self.last_success_at = self.clock()

    def _mark_failing(self, ids: list[str], reason: str, report: CycleReport) -> None:
        since = self.clock().isoformat()
        report.practitioners_failed += len(ids)
        for idnps in ids:
            self.failing.setdefault(idnps, {"since": since})["reason"] = reason

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
            # since -> IDNPS (`aggregation.status.failing_groups`): what freshness and the status listing read. The
            # reasons go with the last cycle (which tried or skipped every failing practitioner): the status mapping
            # is strict, and holds free-form objects only under `failing` and `last_cycle`.
            "failing": group_failing({idnps: entry["since"] for idnps, entry in self.failing.items()}),
            "last_cycle": {
                **report.as_dict(),
                "failing_reasons": {idnps: entry["reason"] for idnps, entry in self.failing.items()},
            },
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
