"""Live re-check of the cards about to be shown, with the same contract request as the scheduled pull.

One call per vendor for the practitioners of the page it serves (at most 25), all under one deadline.
A slot the vendor no longer returns leaves the card and the index; a vendor that does not answer in
time leaves its cards as indexed, unverified. The answer never waits beyond the deadline.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aggregation.availability import KIND as SLOTS
from aggregation.client import VendorError, make_client, search_slots
from aggregation.contract import MAX_IDENTIFIERS
from core.records import Vendor
from indexer.backend import Backend


@dataclass
class VerifyReport:
    vendors_asked: int = 0
    vendors_answered: int = 0
    slots_confirmed: int = 0
    slots_gone: int = 0
    cards_emptied: int = 0
    timed_out: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def add(self, other: VerifyReport) -> None:
        """Fold another round's report into this one (a page may take several rounds)."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


async def _ask(
    vendor: Vendor, idnps: list[str], window: tuple[datetime, datetime], now: datetime, timeout_s: float
) -> set[str]:
    quick = vendor.model_copy(update={"timeout_s": min(vendor.timeout_s, timeout_s)})
    async with make_client(quick) as client:
        result = await search_slots(client, quick, idnps[:MAX_IDENTIFIERS], window[0], window[1], now)
    return {s.slot_id for s in result.slots}


async def recheck_cards(
    backend: Backend,
    cards: list[Any],
    vendors: dict[str, Vendor],
    window: tuple[datetime, datetime],
    now: datetime,
    deadline_s: float,
) -> VerifyReport:
    """Re-check `cards` (candidates with `.slots` docs and `.idnps`) in place; returns what happened."""
    report = VerifyReport()
    asked: dict[str, list[str]] = {}
    for card in cards:
        for doc in card.slots:
            ids = asked.setdefault(doc["vendor"], [])
            if card.idnps not in ids:
                ids.append(card.idnps)
    asked = {v: ids for v, ids in asked.items() if v in vendors}
    report.vendors_asked = len(asked)
    if not asked or deadline_s <= 0:
        return report
    tasks = {v: asyncio.create_task(_ask(vendors[v], ids, window, now, deadline_s)) for v, ids in asked.items()}
    done, pending = await asyncio.wait(tasks.values(), timeout=deadline_s)
    for task in pending:
        task.cancel()
    # The late calls are abandoned: wait for their connections to close, their answers are not read.
    await asyncio.gather(*pending, return_exceptions=True)
    gone: list[str] = []
    for vendor_id, task in tasks.items():
        if task not in done:
            report.timed_out.append(vendor_id)
            continue
        failure = task.exception()
        if failure is not None:
            report.failed.append(
                f"{vendor_id}: {failure if isinstance(failure, VendorError) else type(failure).__name__}"
            )
            continue
        answer = task.result()
        report.vendors_answered += 1
        for card in cards:
            kept = []
            for doc in card.slots:
                if doc["vendor"] != vendor_id:
                    kept.append(doc)
                elif doc["slot_id"] in answer:
                    doc["verified"] = True
                    report.slots_confirmed += 1
                    kept.append(doc)
                else:
                    gone.append(doc["slot_id"])
            card.slots = kept
    if gone:
        report.slots_gone = len(gone)
        await asyncio.to_thread(_forget, backend, gone)
    report.cards_emptied = sum(1 for c in cards if not c.slots)
    return report


def verify_cards(
    backend: Backend,
    cards: list[Any],
    vendors: dict[str, Vendor],
    window: tuple[datetime, datetime],
    now: datetime,
    deadline_s: float,
) -> VerifyReport:
    """`recheck_cards` for a synchronous caller outside any event loop (a search answered in a worker thread)."""
    return asyncio.run(recheck_cards(backend, cards, vendors, window, now, deadline_s))


def _forget(backend: Backend, slot_ids: list[str]) -> None:
    """Slots their vendor no longer offers leave the index at once."""
    live = backend.live_index(SLOTS)
    if live is not None:
        backend.delete(live, slot_ids)
        backend.refresh(live)
