"""A SAMU's regulation software (LRM) on the Hub Santé, faithful enough to test and demo the transmission against.

It consumes its client's `message` queue and, for each appointment message, keeps the appointment (an update of an
unknown appointment is a creation, as the guide asks) and answers on the sender's queues through the Hub's exchange:
a final acknowledgement naming the message's `distributionID`, or the error it is told to give (`conflict`: 409 as
for a creation it already has; `invalid`: an error the platform cannot count as delivered). It can be slow
(`delay_s`), silent (reads without answering) or stopped (down). Every delivery is remembered, so that tests and
drills can count messages received, lost and duplicated.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from booking.hub_broker import declare_hub
from booking.hub_messages import reply

MODES = ("ack", "conflict", "invalid", "silent")


@dataclass
class LrmState:
    mode: str = "ack"
    delay_s: float = 0.0
    deliveries: Counter[str] = field(default_factory=Counter)  # distributionID -> times delivered
    appointments: dict[str, dict[str, Any]] = field(default_factory=dict)  # appointmentId -> latest content
    received_at: dict[str, datetime] = field(default_factory=dict)  # distributionID -> first delivery


class LrmSandbox:
    """One SAMU's LRM consuming from a broker, in a thread of its own (`start`/`stop`) or as a coroutine (`run`)."""

    def __init__(self, amqp_url: str, client_id: str, exchange: str = "hubsante", mode: str = "ack") -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        self.amqp_url, self.client_id, self.exchange_name = amqp_url, client_id, exchange
        self.state = LrmState(mode=mode)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    async def run(self, stop: asyncio.Event, ready: threading.Event | None = None) -> None:
        connection = await aio_pika.connect_robust(self.amqp_url, timeout=10)
        async with connection:
            channel = await connection.channel()
            exchange = await declare_hub(channel, self.exchange_name, [self.client_id])
            queue = await channel.get_queue(f"{self.client_id}.message")

            async def on_message(incoming: AbstractIncomingMessage) -> None:
                async with incoming.process(requeue=True):
                    await self._handle(incoming, exchange)

            await queue.consume(on_message)
            if ready is not None:
                ready.set()
            await stop.wait()

    async def _handle(self, incoming: AbstractIncomingMessage, exchange: AbstractExchange) -> None:
        message = orjson.loads(incoming.body)
        distribution_id = message["distributionID"]
        now = datetime.now(UTC)
        content = message["content"][0]["jsonContent"]["embeddedJsonContent"]["message"].get("appointment") or {}
        with self._lock:
            self.state.deliveries[distribution_id] += 1
            self.state.received_at.setdefault(distribution_id, now)
            known = content.get("appointmentId") in self.state.appointments
            mode, delay = self.state.mode, self.state.delay_s
            if mode != "invalid":
                self.state.appointments[content.get("appointmentId", "")] = content
        if delay > 0:
            await asyncio.sleep(delay)
        if mode == "silent":
            return
        error = None
        if mode == "conflict" or (known and content.get("method") == "CreateAppointment"):
            # A creation of an appointment it has (a resend, or told to say so): 409, as the guide has it.
            cause = f"L'identifiant du RDV à créer '{content.get('appointmentId')}' existe déjà dans la solution"
            error = (409, "CONFLICT", cause)
        elif mode == "invalid":
            error = (422, "UNPROCESSABLE", "Message impossible à intégrer au dossier de régulation")
        kind = "Ack" if error is None else "Error"
        answer = reply(kind, self.client_id, message["senderID"], message, now, error)
        await exchange.publish(
            aio_pika.Message(
                orjson.dumps(answer),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={"recipient": message["senderID"], "kind": kind},
            ),
            routing_key=self.client_id,
        )

    def set(self, mode: str | None = None, delay_s: float | None = None) -> None:
        with self._lock:
            if mode is not None:
                if mode not in MODES:
                    raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
                self.state.mode = mode
            if delay_s is not None:
                self.state.delay_s = delay_s

    def snapshot(self) -> LrmState:
        with self._lock:
            return LrmState(
                self.state.mode,
                self.state.delay_s,
                Counter(self.state.deliveries),
                dict(self.state.appointments),
                dict(self.state.received_at),
            )

    # -- in a thread of its own -------------------------------------------------------------------------
    def start(self) -> LrmSandbox:
        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._stop = asyncio.Event()
            try:
                self._loop.run_until_complete(self.run(self._stop, self._ready))
            except BaseException as exc:  # reported to the starting thread
                self._failed = exc
                self._ready.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=main, name=f"lrm-{self.client_id}", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._failed is not None:
            raise RuntimeError(f"the LRM sandbox did not start: {self._failed!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(15)
        self._thread = None
        self._ready.clear()

    def __enter__(self) -> LrmSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
