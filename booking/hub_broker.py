"""Transmission of appointments to the SAMU's regulation software over AMQP 0-9-1 (the Hub Santé), and the answers.

The transmitter drains the outbox (`booking.hub_outbox`): for each appointment, its queued messages in order, each
checked against the guide's schema, addressed to the SAMU of the appointment's department, published persistent with
publisher confirms (sent once the broker has it), with the broker's expiry set to the message's own
`dateTimeExpires`; a message whose time passed before it could be sent is marked expired, never sent late. It reads
the platform's `ack` queue (final acknowledgements) and `info` queue (the Hub's and the LRM's errors) and records each
answer against its message. A broker that is away leaves the messages queued; they go when it is back.

Clients publish to the Hub's exchange with their own id as routing key, as the Hub requires; the Hub routes on the
envelope's recipient. A broker of the project's own (tests, demo) has no Hub dispatcher: `declare_hub` declares the
Hub's queues (`<client>.message|ack|info`) on a headers exchange that routes on the `recipient` and `kind` headers
every message carries, which the real Hub ignores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from booking import hub_messages, hub_outbox
from booking.hub_outbox import State
from core.settings import Settings
from indexer.backend import Backend

log = logging.getLogger("dispo.lrm")
KINDS = {"message": "Report", "ack": "Ack", "info": "Error"}  # a client's queue -> the messages it receives
# What a publish raises while the broker is away, or its channel is being brought back.
BROKER_AWAY = (
    TimeoutError,
    ConnectionError,
    aio_pika.exceptions.AMQPException,
    aio_pika.exceptions.ChannelInvalidStateError,
)


def _ssl(settings: Settings) -> ssl.SSLContext | None:
    """TLS to the broker (the Hub requires it, with the platform's certificate): for an amqps URL."""
    if not (settings.amqp_url or "").startswith("amqps://"):
        return None
    context = ssl.create_default_context(cafile=settings.amqp_ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.amqp_cert:
        context.load_cert_chain(settings.amqp_cert, settings.amqp_key)
    return context


async def connect(settings: Settings) -> AbstractRobustConnection:
    """A connection that comes back by itself when the broker does."""
    if not settings.amqp_url:
        raise RuntimeError("no broker: set DISPO_AMQP_URL (amqps://... for the Hub Santé)")
    context = _ssl(settings)
    extra: dict[str, Any] = {"ssl_context": context} if context is not None else {}
    return await aio_pika.connect_robust(settings.amqp_url, timeout=10, **extra)


async def declare_hub(channel: AbstractChannel, exchange_name: str, clients: Iterable[str]) -> AbstractExchange:
    """The Hub's exchange and each client's three durable queues, bound by recipient and kind."""
    exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.HEADERS, durable=True)
    for client in dict.fromkeys(clients):
        for suffix, kind in KINDS.items():
            queue = await channel.declare_queue(f"{client}.{suffix}", durable=True)
            await queue.bind(exchange, arguments={"x-match": "all", "recipient": client, "kind": kind})
    return exchange


async def publish(exchange: AbstractExchange, message: dict[str, Any], expires: datetime, now: datetime) -> None:
    """One message, persistent, confirmed by the broker (raises when it is not), gone from queues when it expires."""
    ttl = max(1.0, (expires - now).total_seconds())
    await exchange.publish(
        aio_pika.Message(
            orjson.dumps(message),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message["distributionID"],
            expiration=timedelta(seconds=ttl),
            headers={
                "recipient": message["descriptor"]["explicitAddress"]["explicitAddressValue"],
                "kind": message["distributionKind"],
            },
        ),
        routing_key=message["senderID"],
        timeout=10,
    )


class Transmitter:
    """Drains the outbox and records the answers, for as long as it runs."""

    def __init__(self, backend: Backend, settings: Settings) -> None:
        self.backend, self.settings = backend, settings
        self.sender = settings.lrm_sender_id
        self.ttl = timedelta(seconds=settings.lrm_ttl_s)
        self.declared: set[str] = set()
        self.exchange: AbstractExchange | None = None
        self.channel: AbstractChannel | None = None
        self.counts = {"sent": 0, "acknowledged": 0, "failed": 0, "expired": 0, "held": 0}

    async def run(self, stop: asyncio.Event, poll_s: float | None = None) -> None:
        poll_s = poll_s or self.settings.lrm_poll_s
        connection = await connect(self.settings)
        async with connection:
            self.channel = await connection.channel(publisher_confirms=True)
            await self.channel.set_qos(prefetch_count=50)
            self.exchange = await self._exchange([self.sender])
            for suffix in ("ack", "info"):
                queue = await self.channel.declare_queue(f"{self.sender}.{suffix}", durable=True, passive=True)
                await queue.consume(self._on_answer)
            pause = poll_s
            while not stop.is_set():
                try:
                    await self.drain()
                    pause = poll_s
                except BROKER_AWAY as exc:
                    # The broker is away: the messages stay queued, and go once it is back.
                    log.warning("lrm: broker unavailable (%s); retrying", type(exc).__name__)
                    pause = min(5.0, pause * 2)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    async def _exchange(self, clients: list[str]) -> AbstractExchange:
        assert self.channel is not None
        if self.settings.lrm_declare_hub:
            new = [c for c in clients if c not in self.declared]
            exchange = await declare_hub(self.channel, self.settings.lrm_exchange, new)
            self.declared.update(new)
            return exchange
        return await self.channel.get_exchange(self.settings.lrm_exchange)

    async def drain(self) -> int:
        """Every queued message, in order per appointment; returns how many were sent."""
        sent = 0
        docs = await asyncio.to_thread(lambda: list(hub_outbox.pending(self.backend)))
        for doc in docs:
            while (entry := hub_outbox.next_to_send(doc)) is not None:
                doc = await self._send(doc, entry)
                if doc is None:
                    break
                sent += 1
        return sent

    async def _send(self, doc: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any] | None:
        """Send one entry (or settle it as expired or held); the appointment's document as it is then, or None when
        the entry stays queued."""
        now = datetime.now(UTC)
        appointment_id, key = doc["appointment_id"], entry["key"]
        if hub_outbox.expired(entry, self.ttl, now):
            return await self._settle(appointment_id, key, State.expired, now)
        recipient = await asyncio.to_thread(hub_outbox.recipient_for, self.backend, doc.get("department_code"))
        if recipient is None:
            reason = f"no SAMU known for department {doc.get('department_code')!r}: `dispo lrm recipients set`"
            return await self._settle(appointment_id, key, State.held, now, {"cause": reason})
        message_id = hub_messages.distribution_id(self.sender, key)
        expires = datetime.fromisoformat(entry["queued_at"]) + self.ttl
        message = hub_messages.envelope(entry["content"], message_id, self.sender, recipient, now, expires)
        problems = hub_messages.problems(message)
        if problems:
            return await self._settle(appointment_id, key, State.held, now, {"cause": "; ".join(problems)[:500]})
        exchange = await self._exchange([recipient]) if recipient not in self.declared else self.exchange
        assert exchange is not None
        await publish(exchange, message, expires, now)
        self.counts["sent"] += 1

        sent = hub_outbox.mark_sent(now)
        await asyncio.to_thread(hub_outbox.change_entry, self.backend, appointment_id, key, sent)
        return await asyncio.to_thread(self.backend.get, hub_outbox.KIND, appointment_id)

    async def _settle(
        self, appointment_id: str, key: str, state: State, now: datetime, error: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        def settle(e: dict[str, Any]) -> dict[str, Any] | None:
            if e["state"] != State.queued:
                return None
            return e | {"state": state.value, "settled_at": now.isoformat()} | ({"error": error} if error else {})

        await asyncio.to_thread(hub_outbox.change_entry, self.backend, appointment_id, key, settle)
        self.counts[state.value] += 1
        log.info("lrm: message %s of %s %s", key, appointment_id, state.value)
        return await asyncio.to_thread(self.backend.get, hub_outbox.KIND, appointment_id)

    async def _on_answer(self, incoming: AbstractIncomingMessage) -> None:
        async with incoming.process(requeue=True):
            answer = hub_messages.read_answer(incoming.body)
            if answer is None or "_" not in answer.message_id:
                log.warning("lrm: an answer that names no message of ours was dropped")
                return
            key = answer.message_id.rsplit("_", 1)[1]
            doc = await asyncio.to_thread(hub_outbox.by_key, self.backend, key)
            if doc is None:
                log.warning("lrm: an answer about an unknown message was dropped")
                return
            error = None
            if answer.code is not None:
                error = {"code": answer.code, "text": answer.text, "cause": answer.cause, "by": answer.sender}
            state = State.acknowledged if answer.acknowledged else State.failed
            record = hub_outbox.mark_answered(state, datetime.now(UTC), error)
            written = await asyncio.to_thread(hub_outbox.change_entry, self.backend, doc["appointment_id"], key, record)
            if written is not None:
                self.counts[state.value] += 1
