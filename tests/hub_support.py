"""What the tests of the transmission to the regulation software share: the broker they use (the one `make test`
starts, named by DISPO_AMQP_URL), their own Hub client ids, appointments to record and a transmitter running in a
thread of its own."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from booking.hub_broker import Transmitter
from core.records import Appointment, AppointmentStatus
from core.settings import Settings
from indexer.backend import Backend

PRACTITIONER = "810106476764"  # an RPPS practitioner of the sample, practising in the Ain (01)
START = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)  # one instant: the same report is the same


def amqp_url() -> str:
    url = os.environ.get("DISPO_AMQP_URL")
    if not url:
        if os.environ.get("DISPO_REQUIRE_AMQP") == "1":
            pytest.fail("DISPO_REQUIRE_AMQP=1 but DISPO_AMQP_URL is not set: the broker's tests must run")
        pytest.skip("no broker: set DISPO_AMQP_URL (make test starts one)")
    return url


def client_ids() -> tuple[str, str]:
    """A platform id and a SAMU id of this test's own: their queues are no other test's."""
    tag = uuid.uuid4().hex[:10]
    return f"fr.health.t{tag}.ptfsas", f"fr.health.samu{tag}"


def hub_settings(settings: Settings, url: str, sender: str, **changes: object) -> Settings:
    return settings.model_copy(update={"amqp_url": url, "lrm_sender_id": sender, "lrm_declare_hub": True, **changes})


def appointment(
    number: str = "A1", status: AppointmentStatus = AppointmentStatus.booked, version: int = 1, **changes: object
) -> Appointment:
    start = START
    fields: dict[str, object] = {
        "appointment_id": f"v:{number}",
        "vendor": "v",
        "identifier_value": number,
        "status": status,
        "start": start,
        "end": start + timedelta(minutes=20),
        "idnps": PRACTITIONER,
        "operator": "regulator-1",
        "department_code": "01",
        "version": str(version),
        "last_updated": START - timedelta(hours=1) + timedelta(seconds=version),
    }
    return Appointment.model_validate(fields | changes)


@contextmanager
def transmitting(backend: Backend, settings: Settings) -> Iterator[Transmitter]:
    """A transmitter draining the outbox and reading the answers, in a thread, until the block ends."""
    transmitter = Transmitter(backend, settings)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            loop.run_until_complete(transmitter.run(stop, poll_s=0.05))
        except BaseException as exc:  # shown to the test
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        yield transmitter
    except AssertionError as exc:  # what the test waited for did not come: say whether the transmitter had died
        if failure:
            raise AssertionError(f"{exc}; the transmitter stopped on {failure[0]!r}") from failure[0]
        raise
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(20)
    if failure:
        raise failure[0]


def eventually(check: Callable[[], bool], within_s: float = 20.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {within_s} s")
