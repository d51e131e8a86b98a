"""The transmission of appointments to the SAMU's regulation software, on a broker of the benchmark's own.

    dispo bench lrm   # booking -> the SAMU's final acknowledgement, vs a bare AMQP round trip; and an outage drill

A private RabbitMQ is started by `scripts/rabbitmq.sh` (the distribution's rabbitmq-server), with an LRM sandbox
answering for the SAMU of the Ain. Bookings are recorded at a steady pace as vendors report them, the transmitter
sends them, and the delay of each is read from its own outbox entry: queued (the report recorded) to acknowledged
(the LRM's final acknowledgement recorded). The reference is the broker alone: a message published to the same
queue and the LRM sandbox's acknowledgement read back, with no index and no outbox. The drill stops the broker
during bookings and starts it again, then counts what the LRM received: lost, duplicated (the same message twice)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import orjson

from bench.report import Row
from booking import hub_messages, hub_outbox
from booking.appointments import record
from booking.hub_broker import Transmitter, declare_hub, publish
from core.records import Appointment, AppointmentStatus
from core.settings import Settings
from editor_sandbox.lrm import LrmSandbox
from indexer.factory import make_backend
from indexer.lifecycle import iterate_all
from rpps_import.pipeline import import_finess, import_rpps

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "rabbitmq.sh"
SAMPLES = ROOT / "data" / "samples"
PRACTITIONER = "810106476764"  # an RPPS practitioner of the sample practising in the Ain


@contextmanager
def _broker(work: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = {**os.environ, "DISPO_RABBITMQ_STATE": str(work / "rabbitmq.env")}
    env.pop("DISPO_AMQP_URL", None)
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)  # one left over
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        raise RuntimeError(f"the broker did not start: {started.stderr[-500:]}")
    try:
        yield started.stdout.strip().splitlines()[-1], env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


@contextmanager
def _transmitting(backend: object, settings: Settings) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(Transmitter(backend, settings).run(stop)))
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def _appointment(number: int, start: datetime) -> Appointment:
    return Appointment(
        appointment_id=f"bench:{number}",
        vendor="bench",
        identifier_value=str(number),
        status=AppointmentStatus.booked,
        start=start,
        end=start + timedelta(minutes=20),
        idnps=PRACTITIONER,
        operator="bench-regulator",
        department_code="01",
        version="1",
        last_updated=datetime.now(UTC),
    )


def _wait_acknowledged(backend: object, expected: int, within_s: float) -> int:
    deadline = time.monotonic() + within_s
    done = 0
    while time.monotonic() < deadline:
        done = hub_outbox.summary(backend, datetime.now(UTC)).by_state["acknowledged"]  # type: ignore[arg-type]
        if done >= expected:
            break
        time.sleep(0.2)
    return done


async def _round_trips(url: str, samu: str, n: int) -> list[float]:
    """The broker alone: publish to the SAMU's queue, read the LRM sandbox's acknowledgement back."""
    sender = f"fr.health.r{uuid.uuid4().hex[:8]}.ptfsas"
    samples: list[float] = []
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_hub(channel, "hubsante", [sender, samu])
        acks = await channel.get_queue(f"{sender}.ack")
        start = datetime.now(UTC) + timedelta(hours=3)
        for i in range(n):
            content = hub_messages.content_of(
                f"ref:{i}", hub_messages.CREATE, start, start, start, "booked", None, None, None
            )
            now = datetime.now(UTC)
            message = hub_messages.envelope(
                content, f"{sender}_{uuid.uuid4()}", sender, samu, now, now + timedelta(hours=1)
            )
            t0 = time.perf_counter()
            await publish(exchange, message, now + timedelta(hours=1), now)
            while True:
                got = await acks.get(fail=False, no_ack=True)
                if (
                    got is not None
                    and orjson.loads(got.body)["content"][0]["jsonContent"]["embeddedJsonContent"]["message"][
                        "reference"
                    ]["distributionID"]
                    == message["distributionID"]
                ):
                    break
                await asyncio.sleep(0.001)
            samples.append((time.perf_counter() - t0) * 1000)
    return samples


def _bookings(
    url: str, env: dict[str, str], work: Path, count: int, rate_per_s: float, outage: bool
) -> tuple[list[float], int, int, int, list[float]]:
    """`count` bookings recorded at a steady pace on a fresh index, sent and acknowledged; with `outage`, the broker
    stopped a third of the way and started again at two thirds. Returns the delays (ms), how many were
    acknowledged, lost and duplicated, and the broker-alone round trips (none with an outage)."""
    settings = Settings(
        data_dir=work,
        backend="sqlite",
        amqp_url=url,
        lrm_declare_hub=True,
        lrm_sender_id=f"fr.health.b{uuid.uuid4().hex[:8]}.ptfsas",
    )
    backend = make_backend(settings)
    import_finess(SAMPLES / "etalab_flat_sample_dep01_20201231.csv", backend, settings)
    import_rpps(SAMPLES / "PS_LibreAcces_Personne_activite_sample.txt", backend, settings)
    samu = f"fr.health.samu{uuid.uuid4().hex[:8]}"
    hub_outbox.set_recipient(backend, "01", samu, datetime.now(UTC))
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    reference: list[float] = []
    with LrmSandbox(url, samu) as lrm:
        with _transmitting(backend, settings):
            t0 = time.perf_counter()
            for i in range(count):
                if outage and i == count // 3:
                    subprocess.run(["bash", str(SCRIPT), "stop-node"], env=env, capture_output=True, timeout=120)
                if outage and i == 2 * count // 3:
                    subprocess.run(["bash", str(SCRIPT), "start-node"], env=env, capture_output=True, timeout=180)
                record(backend, _appointment(i, start))
                time.sleep(max(0.0, (i + 1) / rate_per_s - (time.perf_counter() - t0)))
            acknowledged = _wait_acknowledged(backend, count, 120)
        if not outage:
            reference = asyncio.run(_round_trips(url, samu, count))
        seen = lrm.snapshot()
    entries = [e for doc in iterate_all(backend, "appointments") for e in doc.get("lrm") or []]
    backend.close()
    delays = [
        (datetime.fromisoformat(e["acknowledged_at"]) - datetime.fromisoformat(e["queued_at"])).total_seconds() * 1000
        for e in entries
        if e.get("acknowledged_at")
    ]
    sent = {hub_messages.distribution_id(settings.lrm_sender_id, e["key"]) for e in entries}
    lost = len(sent - set(seen.deliveries))
    duplicated = sum(k - 1 for k in seen.deliveries.values() if k > 1)
    return delays, acknowledged, lost, duplicated, reference


def bench_lrm(scale: str, work: Path, n: int = 200, rate_per_s: float = 10.0, drill: int = 100) -> list[Row]:
    """Booking to final acknowledgement over `n` bookings, against the broker alone; then the outage drill."""
    work = work / "lrm"
    work.mkdir(parents=True, exist_ok=True)
    with _broker(work) as (url, env):
        delays, acked, lost, duplicated, round_trips = _bookings(url, env, work / "latency", n, rate_per_s, False)
        reference = Row(
            "lrm",
            scale,
            "rabbitmq",
            "reference: publish + the LRM's acknowledgement, broker alone",
            n,
            "messages",
            round_trips,
        )
        ours = Row(
            "lrm",
            scale,
            "sqlite",
            "booking → the SAMU's final acknowledgement",
            n,
            "bookings",
            delays,
            reference=reference,
            acknowledged=acked,
            lost=lost,
            duplicated=duplicated,
        )
        delays, acked, lost, duplicated, _ = _bookings(url, env, work / "drill", drill, rate_per_s, True)
        outage = Row(
            "lrm",
            scale,
            "sqlite",
            "the same, broker stopped a third of the way and started at two thirds",
            drill,
            "bookings",
            delays,
            acknowledged=acked,
            lost=lost,
            duplicated=duplicated,
        )
    return [ours, reference, outage]
