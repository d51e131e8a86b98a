"""`dispo appointments list`: the appointments vendors reported, with their status history."""

from __future__ import annotations

from typing import Annotated

import typer

from core.geo import PARIS
from core.records import Appointment
from dispo.console import open_backend, print_listing
from indexer.backend import GeoQuery

appointments_app = typer.Typer(help="Appointments reported by vendors.", no_args_is_help=True)

LISTED_AT_MOST = 10_000
COLUMNS = ("start", "practitioner", "vendor", "regulator", "status", "history", "department")


def _row(a: Appointment) -> tuple[str, ...]:
    return (
        a.start.astimezone(PARIS).strftime("%d/%m %H:%M"),
        a.idnps,
        a.vendor,
        a.operator,
        a.status.value,
        " > ".join(h.status.value for h in a.history),
        a.department_code or "",
    )


@appointments_app.command("list")
def appointments_list(
    regulator: Annotated[str | None, typer.Option(help="the regulator (operator) identifier")] = None,
    status: Annotated[str | None, typer.Option(help="booked, fulfilled, noshow, cancelled")] = None,
    department: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Appointments with their statuses (no patient data is ever stored)."""
    # Every regulator's appointments, not one's: `booking.bookings.appointments_of` answers a regulator only.
    filters = {k: [v] for k, v in (("operator", regulator), ("status", status), ("department", department)) if v}
    hits = open_backend().search("appointments", GeoQuery(filters=filters, limit=LISTED_AT_MOST)).hits
    rows = sorted((Appointment.model_validate(h.doc) for h in hits), key=lambda a: a.start)
    data = [a.model_dump(mode="json") for a in rows]
    print_listing(as_json, data, f"{len(rows)} appointment(s)", COLUMNS, map(_row, rows))
