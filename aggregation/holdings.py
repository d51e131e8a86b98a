"""What the index holds for one vendor, as maintainers read it: its slots earliest first, each with its freshness.

The backend pages in id order only, while maintainers read a vendor's slots by time. So a page is chosen from
the (start, slot id) keys of the vendor's slots (read without their bodies, from the cursor's start onwards),
and only that page's slots are read whole. The cursor is the (start, slot id) of the page's last slot.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from aggregation.availability import KIND, freshness
from aggregation.status import STATUS
from core.errors import InvalidRequest, NotFound
from core.records import Slot
from core.settings import Settings
from indexer.backend import Backend, GeoQuery, InvalidCursor, decode_cursor, encode_cursor
from indexer.lifecycle import scan
from indexer.registry import get_vendor


class HeldSlot(BaseModel):
    slot: Slot
    fresh: bool  # shown to regulators: its vendor, and its practitioner there, heard from within the limit
    age_s: float  # since the vendor last confirmed this practitioner's agenda


class VendorHoldings(BaseModel):
    """One page of a vendor's indexed slots (of one practitioner if asked), earliest first."""

    vendor_id: str
    idnps: str | None
    total: int  # every slot held for the vendor (and practitioner), past ones included until reconciled away
    vendor_fresh: bool  # a successful call within the staleness limit
    last_success_at: datetime | None
    staleness_limit_s: float
    results: list[HeldSlot]
    next_cursor: str | None


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    after = decode_cursor(cursor)
    if after is None:
        return None
    if len(after) != 2 or not all(isinstance(v, str) for v in after):
        raise InvalidCursor("the cursor is not one this API returned")
    try:
        start = datetime.fromisoformat(after[0])
    except ValueError as exc:
        raise InvalidCursor("the cursor is not one this API returned") from exc
    if start.tzinfo is None:  # every slot start is in UTC: a naive one could not be compared with them
        raise InvalidCursor("the cursor is not one this API returned")
    return start, after[1]


def vendor_holdings(
    backend: Backend,
    settings: Settings,
    vendor_id: str,
    *,
    idnps: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    now: datetime | None = None,
) -> VendorHoldings:
    """A page of the slots the index holds for `vendor_id`; `NotFound` for a vendor not in the registry."""
    if get_vendor(backend, vendor_id) is None:
        raise NotFound("Not found", f"No vendor {vendor_id!r}; see the vendor registry.", "not-found")
    if not 1 <= limit <= settings.max_page_size:
        raise InvalidRequest(
            "Invalid page size", f"limit must be between 1 and {settings.max_page_size}.", "invalid-request"
        )
    after = _after(cursor)
    now = now or datetime.now(UTC)
    filters = {"vendor": [vendor_id]} | ({"idnps": [idnps]} if idnps else {})
    total = backend.count(KIND, filters) if backend.live_index(KIND) else 0
    # Slots starting before the cursor's are on earlier pages: only keys from its start on are read.
    ranges = {"start": (after[0].timestamp(), None)} if after else {}
    query = GeoQuery(filters=filters, ranges=ranges, fields=("slot_id", "start"))
    held = scan(backend, KIND, query) if total else ()
    keys = sorted((datetime.fromisoformat(h.doc["start"]), h.doc["slot_id"]) for h in held)
    if after is not None:
        keys = [k for k in keys if k > after]
    page = keys[:limit]
    fresh = freshness(backend, now, settings.staleness_limit_s)
    results = []
    for _, slot_id in page:
        doc = backend.get(KIND, slot_id)
        if doc is None:  # reconciled away between the two reads
            continue
        results.append(HeldSlot(slot=Slot.model_validate(doc), fresh=fresh.is_fresh(doc), age_s=fresh.age_s(doc, now)))
    status = backend.get(STATUS, vendor_id) or {}
    success = status.get("last_success_at")
    return VendorHoldings(
        vendor_id=vendor_id,
        idnps=idnps,
        total=total,
        vendor_fresh=vendor_id in fresh.fresh_vendors,
        last_success_at=datetime.fromisoformat(success) if success else None,
        staleness_limit_s=settings.staleness_limit_s,
        results=results,
        next_cursor=encode_cursor((page[-1][0].isoformat(), page[-1][1])) if len(keys) > limit else None,
    )
