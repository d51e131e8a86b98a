"""Reports of one appointment arriving at once: the decision and the write are one compare-and-set on every backend
(`Backend.update`), so the newest report wins whatever the order the writes land in, and no status is lost."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from booking.appointments import record
from core.records import Appointment, AppointmentStatus
from indexer.backend import Backend
from indexer.lifecycle import ensure_live

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
STATUSES = [AppointmentStatus.booked, AppointmentStatus.cancelled, AppointmentStatus.booked, AppointmentStatus.noshow]


def report(version: int) -> Appointment:
    return Appointment(
        appointment_id="sandbox-a:rdv-1",
        vendor="sandbox-a",
        identifier_value="rdv-1",
        status=STATUSES[version % len(STATUSES)],
        start=T0 + timedelta(days=1),
        end=T0 + timedelta(days=1, minutes=20),
        idnps="810000000001",
        operator="810000000002",
        version=str(version),
        last_updated=T0 + timedelta(minutes=version),
    )


def test_the_newest_of_concurrent_reports_is_the_one_kept(backend: Backend) -> None:
    versions = list(range(1, 41))
    random.Random(2).shuffle(versions)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda v: record(backend, report(v), now=T0 + timedelta(hours=1)), versions))
    stored = backend.get("appointments", "sandbox-a:rdv-1")
    assert stored is not None and stored["version"] == "40"
    assert stored["status"] == STATUSES[40 % len(STATUSES)]


def test_no_increment_is_lost_among_concurrent_compare_and_sets(backend: Backend) -> None:
    """The primitive itself: 8 threads add 1 to one document 60 times; a read-then-write would lose some."""
    ensure_live(backend, "appointments")
    first = report(0).model_dump(mode="json", exclude_none=True)

    def bump(doc: dict[str, Any] | None) -> dict[str, Any]:
        current = doc or first
        return {**current, "version": str(int(current["version"]) + 1)}

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: backend.update("appointments", "sandbox-a:rdv-1", bump), range(60)))
    stored = backend.get("appointments", "sandbox-a:rdv-1")
    assert stored is not None and stored["version"] == "60"
    before, written = backend.update("appointments", "sandbox-a:rdv-1", lambda doc: None)
    assert written is None and before == stored
