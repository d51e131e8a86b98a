"""Leases: one aggregation scheduler at a time pulls a vendor (a standby takes over when it dies), one import of a kind
runs at a time.

A lease is a document of the `leases` kind, taken and renewed by compare-and-set (`Backend.update`: a sequence number
on Elasticsearch, a write transaction embedded), so two schedulers can never both hold one. Its holder renews it
every third of its time while it lives; when the holder dies, the lease runs out and the first standby to try takes
it, within `ttl_s` and a third of it.

A holder that may have lost its lease stops writing: it counts its lease from the instant *before* it asked for it,
less a margin for clocks, so it believes itself the holder for less time than any other scheduler sees it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from indexer.backend import Backend
from indexer.lifecycle import ensure_live, iterate_all

KIND = "leases"
log = logging.getLogger("dispo.lease")


class LeaseLost(RuntimeError):
    """This scheduler no longer holds the lease of what it was writing: another may be pulling it now."""


def holder_name() -> str:
    """Who holds a lease: the machine and process, and a random part (a restarted process is another holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def vendor_key(vendor_id: str) -> str:
    return f"vendor:{vendor_id}"


@dataclass(frozen=True)
class LeaseState:
    """A lease as stored: epoch seconds; `term` counts the holders it has had."""

    lease_id: str
    holder: str
    term: int
    acquired_at: float
    renewed_at: float
    expires_at: float

    def held(self, now: float) -> bool:
        return self.expires_at > now


class Leases:
    """The leases one scheduler takes, renews and gives back."""

    def __init__(
        self,
        backend: Backend,
        ttl_s: float,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("a lease lasts more than 0 s")
        self.backend, self.ttl_s, self.holder = backend, ttl_s, holder or holder_name()
        self.clock, self.monotonic = clock, monotonic
        # Trusted for less than the lease lasts: a write takes time, and another machine's clock may be ahead.
        self.margin_s = ttl_s / 4
        self._until: dict[str, float] = {}  # key -> monotonic instant past which this holder stops writing
        ensure_live(backend, KIND)

    def claim(self, key: str) -> bool:
        """Take the lease if it is free or has run out, renew it if it is ours; False while another holds it."""
        asked = self.monotonic()
        now = self.clock()

        def change(stored: dict[str, Any] | None) -> dict[str, Any] | None:
            ours = stored is not None and stored["holder"] == self.holder
            if stored is not None and not ours and stored["expires_at"] > now:
                return None
            term = int(stored["term"]) if stored is not None else 0
            return {
                "lease_id": key,
                "holder": self.holder,
                "term": term if ours else term + 1,
                "acquired_at": stored["acquired_at"] if ours and stored is not None else now,
                "renewed_at": now,
                "expires_at": now + self.ttl_s,
            }

        before, after = self.backend.update(KIND, key, change)
        if after is None:
            if self._until.pop(key, None) is not None:
                log.warning("lease %s lost to %s", key, before["holder"] if before else "?")
            return False
        if before is None or before["holder"] != self.holder:
            log.info("lease %s taken (term %d)", key, after["term"])
        self._until[key] = asked + self.ttl_s - self.margin_s
        return True

    def holds(self, key: str) -> bool:
        """Whether this scheduler may still write what the lease covers."""
        return self.monotonic() < self._until.get(key, float("-inf"))

    def check(self, key: str) -> None:
        if not self.holds(key):
            raise LeaseLost(f"lease {key} is no longer held by {self.holder}: stopping before the next write")

    def release(self, key: str) -> None:
        """Give the lease back (a scheduler stopping), so that a standby takes it at once."""
        self._until.pop(key, None)
        now = self.clock()

        def change(stored: dict[str, Any] | None) -> dict[str, Any] | None:
            if stored is None or stored["holder"] != self.holder:
                return None
            return {**stored, "renewed_at": now, "expires_at": now}

        self.backend.update(KIND, key, change)

    @contextlib.asynccontextmanager
    async def kept(self, key: str) -> AsyncIterator[None]:
        """Renew `key` every third of the lease while the block runs (a cycle can outlast the lease)."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.ttl_s / 3)
                try:
                    if not await asyncio.to_thread(self.claim, key):
                        return
                except Exception:  # the backend unreachable: the lease runs out unless a later renewal succeeds
                    log.exception("renewing lease %s failed", key)

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.contextmanager
    def kept_sync(self, key: str) -> Iterator[None]:
        """`kept` for a block of blocking code (an import): a thread renews the lease while it runs."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.ttl_s / 3):
                try:
                    if not self.claim(key):
                        return
                except Exception:
                    log.exception("renewing lease %s failed", key)

        thread = threading.Thread(target=renew, name=f"lease {key}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def leases(backend: Backend) -> dict[str, LeaseState]:
    """Every lease as stored, by key (held or run out)."""
    if backend.live_index(KIND) is None:
        return {}
    return {doc["lease_id"]: LeaseState(**doc) for doc in iterate_all(backend, KIND)}
