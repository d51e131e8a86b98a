"""`dispo calendar show|set|publish`: the SAS calendars of practitioners without an interfaced vendor, from the
command line (practitioners keep theirs in their space, `/espace`)."""

from __future__ import annotations

import getpass
from datetime import time
from typing import Annotated

import typer

from aggregation import sas_calendar
from aggregation.availability import SiteMapper
from aggregation.sas_calendar import SasCalendar, WeeklyOpening
from core.records import Modality, SlotType
from dispo.console import FAILED, INVALID, fail, open_backend, out, write_json

calendar_app = typer.Typer(help="SAS calendars: slots practitioners offer in Dispo itself.", no_args_is_help=True)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _hours(text: str) -> tuple[time, time]:
    try:
        start, end = (time.fromisoformat(part) for part in text.split("-"))
    except ValueError as exc:
        raise fail(f"{text!r} is not a range of hours", INVALID, hint="08:00-12:00") from exc
    return start, end


@calendar_app.command("set")
def calendar_set(
    idnps: str,
    hours: Annotated[list[str], typer.Option("--hours", help="08:00-12:00, repeatable")],
    day: Annotated[list[str] | None, typer.Option("--day", help="mon … sun, repeatable; default every day")] = None,
    site: Annotated[str | None, typer.Option(help="the practice site; default the practitioner's first")] = None,
    minutes: Annotated[int, typer.Option()] = 15,
    slot_type: Annotated[str, typer.Option(help="SNP, PUBLIC or PRO")] = "SNP",
    modality: Annotated[str, typer.Option(help="AMB, HH or VR")] = "AMB",
) -> None:
    """Replace a practitioner's weekly openings; their slots are indexed at once."""
    backend = open_backend()
    sites = [s["site_id"] for s in SiteMapper(backend).sites(idnps) if s.get("location")]
    if not sites:
        raise fail(f"practitioner {idnps} has no located practice site in the directory", FAILED)
    days = day or list(DAYS)
    unknown = [d for d in days if d not in DAYS]
    if unknown:
        raise fail(f"unknown day {', '.join(unknown)}", INVALID, hint=" ".join(DAYS))
    try:
        weekly = [
            WeeklyOpening(
                site_id=site or sites[0],
                weekday=DAYS.index(d),
                start=start,
                end=end,
                slot_minutes=minutes,
                slot_type=SlotType(slot_type),
                modality=Modality(modality),
            )
            for d in days
            for start, end in map(_hours, hours)
        ]
        kept = sas_calendar.get_calendar(backend, idnps) or SasCalendar()
        stats = sas_calendar.save_calendar(
            backend, idnps, kept.model_copy(update={"weekly": weekly}), f"cli:{getpass.getuser()}"
        )
    except ValueError as exc:
        raise fail(str(exc), INVALID) from exc
    out.print(f"{idnps}: {len(weekly)} weekly opening(s); {stats.inserted} slot(s) added, {stats.removed} removed")


@calendar_app.command("show")
def calendar_show(idnps: str) -> None:
    """A practitioner's SAS calendar as JSON."""
    found = sas_calendar.calendar_document(open_backend(), idnps)
    if found is None:
        raise fail(f"practitioner {idnps} has no SAS calendar", FAILED)
    write_json(found)


@calendar_app.command("publish")
def calendar_publish() -> None:
    """Index every calendar's slots over the coming days now (the scheduler does it at each cycle)."""
    stats = sas_calendar.publish_all(open_backend())
    out.print(f"SAS calendars: {stats.inserted} slot(s) added, {stats.removed} removed, {stats.unchanged} unchanged")
