"""Live re-check of the cards about to be shown, with the same contract request as the scheduled pull.

Every practitioner of the page is asked: one call per vendor and group of at most 25 practitioners (the
contract's limit), in page order, all groups at once (within the vendor's connection limit) under one
deadline. A slot leaves the card and the index only when a complete answer for its practitioner came back
without it. A group that fails, answers incompletely or late confirms nothing and removes nothing: its
cards keep their indexed slots, unverified. The answer never waits beyond the deadline.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aggregation.availability import KIND as SLOTS
from aggregation.availability import is_association
from aggregation.client import VendorError, make_client, search_participants
from aggregation.contract import MAX_ASSOCIATIONS, MAX_IDENTIFIERS
from core.records import Vendor
from indexer.backend import Backend

Asked = tuple[str, str]  # (vendor, IDNPS): a practitioner as one vendor serves them


@dataclass
class VerifyReport:
    vendors_asked: int = 0
    vendors_answered: int = 0  # every group of the vendor answered completely in time
    practitioners_asked: int = 0  # practitioners named in the calls, counted once per vendor serving them
    practitioners_answered: int = 0  # of those, in a group whose complete answer came back in time
    slots_confirmed: int = 0
    slots_gone: int = 0
    cards_emptied: int = 0
    timed_out: list[str] = field(default_factory=list)  # vendors with a group still unanswered at the deadline
    failed: list[str] = field(default_factory=list)  # "<vendor>: <error>" of groups that failed or were incomplete

    def add(self, other: VerifyReport) -> None:
        """Fold another round's report into this one (a page may take several rounds)."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _practitioner(card: Any, doc: dict[str, Any]) -> Asked:
    return doc["vendor"], doc.get("idnps") or card.idnps


def _groups(cards: list[Any], vendors: dict[str, Vendor]) -> list[tuple[str, list[str]]]:
    """(vendor, up to 25 IDNPS) per call: every practitioner of the page once per vendor, in page order; an SOS
    Médecins association's places are asked for apart, by the association (up to 10 a call)."""
    by_vendor: dict[str, dict[str, None]] = {}  # vendor -> its practitioners, in order of first appearance
    for card in cards:
        for doc in card.slots:
            vendor_id, idnps = _practitioner(card, doc)
            if vendor_id in vendors:
                by_vendor.setdefault(vendor_id, {})[idnps] = None
    groups = []
    for vendor_id, participants in by_vendor.items():
        ids = [i for i in participants if not is_association(i)]
        groups += [(vendor_id, ids[i : i + MAX_IDENTIFIERS]) for i in range(0, len(ids), MAX_IDENTIFIERS)]
        ids = [i for i in participants if is_association(i)]
        groups += [(vendor_id, ids[i : i + MAX_ASSOCIATIONS]) for i in range(0, len(ids), MAX_ASSOCIATIONS)]
    return groups


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
    groups = _groups(cards, vendors)
    report.vendors_asked = len({vendor_id for vendor_id, _ in groups})
    report.practitioners_asked = sum(len(ids) for _, ids in groups)
    if not groups or deadline_s <= 0:
        return report
    async with AsyncExitStack() as stack:
        # One client per vendor, shared by its groups: the vendor's connection limit holds for the page as a whole.
        quick = {
            v: vendors[v].model_copy(update={"timeout_s": min(vendors[v].timeout_s, deadline_s)})
            for v in {vendor_id for vendor_id, _ in groups}
        }
        clients = {v: await stack.enter_async_context(make_client(vendor)) for v, vendor in quick.items()}
        tasks = [
            asyncio.create_task(search_participants(clients[v], quick[v], ids, window[0], window[1], now))
            for v, ids in groups
        ]
        done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        # The late calls are abandoned: wait for them to stop before their clients close, their answers are not read.
        await asyncio.gather(*pending, return_exceptions=True)
    held: dict[Asked, set[str]] = {}  # practitioners with a complete answer -> the slot ids it holds for them
    unanswered: set[str] = set()
    for (vendor_id, ids), task in zip(groups, tasks, strict=True):
        if task not in done:
            unanswered.add(vendor_id)
            if vendor_id not in report.timed_out:
                report.timed_out.append(vendor_id)
            continue
        failure = task.exception()
        if failure is not None:
            unanswered.add(vendor_id)
            entry = f"{vendor_id}: {_reason(vendor_id, failure)}"
            if entry not in report.failed:
                report.failed.append(entry)
            continue
        answer: dict[Asked, set[str]] = {(vendor_id, idnps): set() for idnps in ids}
        for slot in task.result().slots:
            # Only what was asked is judged: a slot of a practitioner outside the group confirms nothing.
            if (vendor_id, slot.idnps) in answer:
                answer[(vendor_id, slot.idnps)].add(slot.slot_id)
        held.update(answer)
        report.practitioners_answered += len(ids)
    report.vendors_answered = report.vendors_asked - len(unanswered)
    gone: list[str] = []
    for card in cards:
        kept = []
        for doc in card.slots:
            slot_ids = held.get(_practitioner(card, doc))
            if slot_ids is None or not _within(doc, window):
                kept.append(doc)  # nothing known about it: shown as indexed, unverified
            elif doc["slot_id"] in slot_ids:
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


def _reason(vendor_id: str, failure: BaseException) -> str:
    """Why a call confirmed nothing: the kind of the vendor error and its message, or the exception's type."""
    if isinstance(failure, VendorError):
        return f"{failure.kind}: {str(failure).removeprefix(f'{vendor_id}: ')}"
    return type(failure).__name__


def _within(doc: dict[str, Any], window: tuple[datetime, datetime]) -> bool:
    """The slot starts in the window asked: an answer says nothing of slots outside it."""
    return window[0] <= datetime.fromisoformat(doc["start"]) <= window[1]


def _forget(backend: Backend, slot_ids: list[str]) -> None:
    """Slots their vendor no longer offers leave the index at once."""
    live = backend.live_index(SLOTS)
    if live is not None:
        backend.delete(live, slot_ids)
        backend.refresh(live)
