"""Practitioners' unavailability periods (holidays, training): for their length, a practitioner's slots and cards
leave the searches, whatever their vendor says. Kept per practitioner (kind `unavailability`), apart from the
participation (which a bulk CSV load replaces whole); declaring a period removes the indexed slots it covers at once,
and reconciliation keeps vendors' slots out of it (`aggregation.availability.reconcile`)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live, scan

KIND = "unavailability"
SLOTS = "slots"
MAX_PERIODS = 50  # a practitioner's periods to come: enough for years of holidays
MAX_LENGTH = timedelta(days=366)


class InvalidPeriod(ValueError):
    """A period that cannot be kept, and why."""


@dataclass(frozen=True)
class Period:
    period_id: str
    start: datetime
    end: datetime
    reason: str | None = None

    def covers(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


def periods_of(doc: dict[str, Any] | None) -> list[Period]:
    return [
        Period(p["period_id"], datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"]), p.get("reason"))
        for p in (doc or {}).get("periods", ())
    ]


def periods(backend: Backend, idnps: str) -> list[Period]:
    if backend.live_index(KIND) is None:
        return []
    return periods_of(backend.get(KIND, idnps))


def periods_by_practitioner(backend: Backend, idnps: Iterable[str]) -> dict[str, list[Period]]:
    """The periods of those of these practitioners who declared some (one read by key)."""
    if backend.live_index(KIND) is None:
        return {}
    return {key: found for key, doc in backend.get_many(KIND, idnps).items() if (found := periods_of(doc))}


def away_at(found: list[Period], instant: datetime) -> bool:
    return any(p.covers(instant) for p in found)


def add_period(
    backend: Backend,
    idnps: str,
    start: datetime,
    end: datetime,
    reason: str | None,
    by: str,
    now: datetime | None = None,
) -> Period:
    """Declare a period and take the practitioner's indexed slots it covers out of the index now."""
    at = now or datetime.now(UTC)
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidPeriod("give the period's start and end with their offset (2026-12-24T00:00:00+01:00)")
    if end <= start:
        raise InvalidPeriod("the period must end after it starts")
    if end - start > MAX_LENGTH:
        raise InvalidPeriod("a period lasts a year at most: declare several")
    if end <= at:
        raise InvalidPeriod("the period is already over")
    period = Period(secrets.token_hex(6), start.astimezone(UTC), end.astimezone(UTC), (reason or "")[:200] or None)
    index = ensure_live(backend, KIND)

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        kept = [p for p in periods_of(doc) if p.end > at]  # those over are forgotten
        if len(kept) >= MAX_PERIODS:
            raise InvalidPeriod(f"at most {MAX_PERIODS} periods to come: remove some first")
        return _document(idnps, [*kept, period], by, at)

    backend.update(KIND, idnps, change)
    backend.refresh(index)
    remove_covered_slots(backend, idnps, [period])
    return period


def remove_period(backend: Backend, idnps: str, period_id: str, by: str, now: datetime | None = None) -> bool:
    """Withdraw a period; the vendor's slots in it come back at its next cycle (a SAS calendar's at once)."""
    at = now or datetime.now(UTC)
    if backend.live_index(KIND) is None:
        return False
    removed = False

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal removed
        found = periods_of(doc)
        kept = [p for p in found if p.period_id != period_id]
        removed = len(kept) < len(found)
        return _document(idnps, kept, by, at) if removed else None

    backend.update(KIND, idnps, change)
    backend.refresh(ensure_live(backend, KIND))
    return removed


def remove_covered_slots(backend: Backend, idnps: str, found: list[Period]) -> int:
    """Delete the practitioner's indexed slots (every vendor's) that start within these periods."""
    if backend.live_index(SLOTS) is None or not found:
        return 0
    covered = [
        hit.doc["slot_id"]
        for hit in scan(backend, SLOTS, GeoQuery(filters={"idnps": [idnps]}, fields=("slot_id", "start")))
        if away_at(found, datetime.fromisoformat(hit.doc["start"]))
    ]
    if not covered:
        return 0
    index = ensure_live(backend, SLOTS)
    gone = backend.delete(index, covered)
    backend.refresh(index)
    return gone


def _document(idnps: str, kept: list[Period], by: str, at: datetime) -> dict[str, Any]:
    ordered = sorted(kept, key=lambda p: p.start)
    return {
        "idnps": idnps,
        "periods": [
            {"period_id": p.period_id, "start": p.start.isoformat(), "end": p.end.isoformat()}
            | ({"reason": p.reason} if p.reason else {})
            for p in ordered
        ],
        "updated_by": by,
        "updated_at": at.isoformat(),
    }
