"""`dispo lrm run|status|recipients` and `dispo lrm-sandbox`: appointments sent to the SAMU's regulation software
through the Hub Santé, where each message stands, which SAMU receives each department, and a SAMU to try it on."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from typing import Annotated

import aio_pika
import typer

from booking import hub_outbox
from booking.hub_broker import Transmitter
from core.settings import Settings
from dispo.console import FAILED, INVALID, err, fail, open_backend, out, print_table, write_json
from editor_sandbox.lrm import MODES, LrmSandbox

lrm_app = typer.Typer(help="Appointments sent to the SAMU's regulation software (Hub Santé).", no_args_is_help=True)
recipients_app = typer.Typer(help="Which SAMU receives each department's appointments.", no_args_is_help=True)
lrm_app.add_typer(recipients_app, name="recipients")
MESSAGE_COLUMNS = ("appointment", "#", "method", "state", "queued", "sent", "acknowledged", "error")


async def _until_stopped(run: object) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)  # type: ignore[operator]


@lrm_app.command("run")
def lrm_run() -> None:
    """Send the queued messages and read the answers, until Ctrl-C (or SIGTERM)."""
    settings = Settings()
    if not settings.amqp_url:
        raise fail(
            "no broker: set DISPO_AMQP_URL",
            INVALID,
            "amqps://... for the Hub Santé; scripts/rabbitmq.sh starts a local one",
        )
    transmitter = Transmitter(open_backend(settings), settings)
    err.print(f"sending appointments as {settings.lrm_sender_id} through {settings.amqp_url.split('@')[-1]}")
    try:
        asyncio.run(_until_stopped(transmitter.run))
    except (OSError, aio_pika.exceptions.AMQPConnectionError) as exc:
        raise fail(f"the broker could not be reached: {exc}", FAILED, hint="check DISPO_AMQP_URL and retry") from exc


@lrm_app.command("status")
def lrm_status(
    state: Annotated[str | None, typer.Option(help="only the messages in this state")] = None,
    limit: Annotated[int, typer.Option()] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Messages by state, the oldest one not yet acknowledged, and the latest messages."""
    if state is not None and state not in hub_outbox.State.__members__:
        raise fail(f"unknown state {state!r}", INVALID, hint=f"one of {', '.join(hub_outbox.State.__members__)}")
    backend = open_backend()
    summary = hub_outbox.summary(backend, datetime.now(UTC))
    rows = hub_outbox.rows(backend, state, limit)
    if as_json:
        write_json(
            {
                "by_state": summary.by_state,
                "oldest_unacknowledged_s": summary.oldest_unacknowledged_s,
                "messages": [r.__dict__ for r in rows],
            }
        )
        return
    age = summary.oldest_unacknowledged_s
    out.print(
        ", ".join(f"{k} {v}" for k, v in summary.by_state.items())
        + (f"; oldest unacknowledged {age:.0f} s" if age is not None else "")
    )
    print_table(
        "Messages",
        MESSAGE_COLUMNS,
        [
            (
                r.appointment_id,
                str(r.seq),
                r.method,
                r.state,
                r.queued_at[:19],
                (r.sent_at or "")[:19],
                (r.acknowledged_at or "")[:19],
                " ".join(str(v) for v in (r.error or {}).values() if v)[:80],
            )
            for r in rows
        ],
    )


@recipients_app.command("set")
def recipients_set(department: str, recipient: str) -> None:
    """The SAMU (its Hub client id, e.g. fr.health.samu330) that receives a department's appointments."""
    try:
        hub_outbox.set_recipient(open_backend(), department, recipient, datetime.now(UTC))
    except ValueError as exc:
        raise fail(str(exc), INVALID) from exc
    out.print(f"department {department}: {recipient}")


@recipients_app.command("list")
def recipients_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The departments whose SAMU was set (the others follow the guide's naming: fr.health.samu<department>0)."""
    table = hub_outbox.recipients(open_backend())
    if as_json:
        write_json(table)
        return
    print_table("SAMU by department", ("department", "recipient"), sorted(table.items()))


def lrm_sandbox(
    samu: Annotated[str, typer.Option(help="the SAMU's Hub client id, e.g. fr.health.samu010")],
    mode: Annotated[str, typer.Option(help=f"how it answers: {', '.join(MODES)}")] = "ack",
    delay_s: Annotated[float, typer.Option(help="seconds before it answers")] = 0.0,
) -> None:
    """A SAMU's regulation software on the broker: reads its queue, answers final acknowledgements (or errors)."""
    settings = Settings()
    if not settings.amqp_url:
        raise fail("no broker: set DISPO_AMQP_URL", INVALID)
    try:
        sandbox = LrmSandbox(settings.amqp_url, samu, settings.lrm_exchange, mode)
    except ValueError as exc:
        raise fail(str(exc), INVALID) from exc
    sandbox.set(delay_s=delay_s)
    err.print(f"LRM sandbox {samu}: reading {samu}.message, answering '{mode}'")
    try:
        asyncio.run(_until_stopped(sandbox.run))
    except (OSError, aio_pika.exceptions.AMQPConnectionError) as exc:
        raise fail(f"the broker could not be reached: {exc}", FAILED) from exc
