"""`dispo coverage ...`: coverage for analysts, as tables, exports, a map and a chart.

The exports and pictures need the optional `analytics` extra (pandas, pyarrow, matplotlib): their commands import
them, and say how to install the extra when it is missing; the rest of the command line runs without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel

from analytics.snapshots import snapshot_now
from analytics.tables import Period, appointments, coverage, evolution, search_activity, under_served, vendors
from core.settings import Settings
from dispo.console import FAILED, INVALID, err, fail, needing_extra, open_backend, out, print_table, write_json_lines

coverage_app = typer.Typer(help="Coverage for analysts: tables, exports, map and chart.", no_args_is_help=True)

Days = Annotated[float, typer.Option(help="period: the last N days")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")]
Horizon = Annotated[int, typer.Option()]
TEXT_COLUMNS = {"code", "name", "territory", "vendor_id", "status"}  # left-aligned; figures are right-aligned
NO_SNAPSHOT = "no coverage snapshot yet: run `dispo coverage snapshot`"


def _cell(value: object) -> str:
    return "" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def _print_rows(rows: Sequence[BaseModel], columns: list[str], title: str, as_json: bool) -> None:
    """Table rows as JSON lines, or as a table of the `columns`."""
    if as_json:
        write_json_lines(row.model_dump(mode="json") for row in rows)
        return
    cells = ([_cell(values[c]) for c in columns] for values in (row.model_dump() for row in rows))
    print_table(title, columns, cells, right=set(columns) - TEXT_COLUMNS)


def _picture_format(out_file: Path) -> str:
    fmt = out_file.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise fail(f"{out_file.name}: the file must end in .png or .svg", INVALID)
    return fmt


def _write_picture(out_file: Path, body: bytes, width: int, height: int) -> None:
    out_file.write_bytes(body)
    out.print(f"{out_file} ({len(body):,} bytes, {width}x{height})")


@coverage_app.command("snapshot")
def coverage_snapshot() -> None:
    """Take a coverage snapshot now (the scheduler takes them on its own)."""
    settings = Settings()
    with out.status("counting participants and free slots per area..."):
        s = snapshot_now(open_backend(settings), settings)
    out.print(
        f"snapshot {s.snapshot}: {s.rows} rows, {s.participants} participants, {s.slots_72h} free slots within 72 h "
        f"({s.pruned} old rows pruned) in {s.duration_s:.1f} s"
    )


@coverage_app.command("show")
def coverage_show(
    level: Annotated[str, typer.Option(help="national, territory, department or commune")] = "department",
    horizon: Annotated[int, typer.Option(help="24, 48 or 72 hours")] = 48,
    as_json: AsJson = False,
) -> None:
    """Coverage of every area of a level at the last snapshot (absolute and per 10,000 inhabitants)."""
    try:
        rows = coverage(open_backend(), level, horizon)
    except ValueError as exc:
        raise fail(str(exc), INVALID) from exc
    if not rows and not as_json:
        raise fail(f"{NO_SNAPSHOT} (or `dispo aggregate --once`)", FAILED, title=None)
    columns = ["code", "name", "population", "participants", "practitioners_with_slots", "slots", "slots_per_10k"]
    title = f"Coverage by {level} at {horizon} h, snapshot {rows[0].snapshot if rows else '-'}"
    _print_rows(rows, columns, title, as_json)


@coverage_app.command("evolution")
def coverage_evolution(
    level: Annotated[str, typer.Option()] = "national",
    code: Annotated[str | None, typer.Option(help="area code (all areas of the level if absent)")] = None,
    horizon: Horizon = 48,
    days: Days = 7,
    as_json: AsJson = False,
) -> None:
    """An area's coverage over a period, snapshot by snapshot."""
    try:
        rows = evolution(open_backend(), level, code, horizon, Period.last(days))
    except ValueError as exc:
        raise fail(str(exc), INVALID) from exc
    columns = ["snapshot", "code", "participants", "practitioners_with_slots", "slots", "slots_per_10k"]
    _print_rows(rows, columns, f"Evolution ({level} {code or ''}, {horizon} h, last {days:g} days)", as_json)


@coverage_app.command("under-served")
def coverage_under_served(days: Days = 7, as_json: AsJson = False) -> None:
    """Regulator searches with fewer than 5 cards with slots, by territory and hour of day."""
    rows = under_served(open_backend(), Period.last(days))
    columns = ["territory", "hour", "searches", "under_served", "under_served_share", "median_radius_km"]
    _print_rows(rows, columns, f"Under-served searches, last {days:g} days", as_json)


@coverage_app.command("vendors")
def coverage_vendors(days: Days = 7, as_json: AsJson = False) -> None:
    """Participants, slots held, share, error rate, p95 latency and staleness per vendor over a period."""
    rows = vendors(open_backend(), Period.last(days))
    columns = [
        "vendor_id",
        "participants",
        "slots_72h",
        "share_of_slots",
        "requests",
        "error_rate",
        "latency_p95_ms",
        "staleness_max_s",
    ]
    _print_rows(rows, columns, f"Vendors, last {days:g} days", as_json)


@coverage_app.command("appointments")
def coverage_appointments(days: Days = 7, as_json: AsJson = False) -> None:
    """Appointments starting in the period, by territory and status."""
    rows = appointments(open_backend(), Period.last(days))
    columns = ["territory", "department", "status", "appointments"]
    _print_rows(rows, columns, f"Appointments, last {days:g} days", as_json)


@coverage_app.command("export")
def coverage_export(
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write the tables into")],
    fmt: Annotated[list[str] | None, typer.Option("--format", help="csv and/or parquet (both by default)")] = None,
    days: Days = 7,
) -> None:
    """Every table as CSV and Parquet, with data_dictionary.md."""
    with needing_extra("analytics"):
        from analytics.exports import FORMATS, export_all  # here: pandas and pyarrow are an optional extra

    formats = tuple(fmt or FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise fail(f"unknown format {', '.join(unknown)}: use csv or parquet", INVALID)
    with out.status("building the tables..."):
        written = export_all(open_backend(), out_dir, Period.last(days), formats)  # type: ignore[arg-type]
    for table, paths in written.items():
        out.print(f"{table}: " + ", ".join(f"{p.name} ({p.stat().st_size:,} bytes)" for p in paths))
    out.print(f"data dictionary: {out_dir / 'data_dictionary.md'}")


@coverage_app.command("map")
def coverage_map(
    out_file: Annotated[Path, typer.Option("--out", help="file to write: .png or .svg")],
    horizon: Horizon = 48,
    width: Annotated[int, typer.Option(help="pixels")] = 1000,
    height: Annotated[int, typer.Option(help="pixels")] = 1000,
) -> None:
    """Map of France by department coloured by free slots per 10,000 inhabitants, at the last snapshot."""
    with needing_extra("analytics"):
        from analytics.pictures import render_map  # here: numpy and matplotlib are an optional extra

    fmt = _picture_format(out_file)
    rows = coverage(open_backend(), "department", horizon)
    if not rows:
        err.print(f"{NO_SNAPSHOT} first; the map shows every department grey")
    title = f"Créneaux libres à {horizon} h pour 10 000 habitants"
    try:
        body = render_map(rows, fmt, width, height, title)  # type: ignore[arg-type]
    except ValueError as exc:
        raise fail(str(exc), INVALID) from exc
    _write_picture(out_file, body, width, height)


@coverage_app.command("chart")
def coverage_chart(
    out_file: Annotated[Path, typer.Option("--out", help="file to write: .png or .svg")],
    days: Days = 7,
    horizon: Horizon = 48,
    width: Annotated[int, typer.Option(help="pixels")] = 1200,
    height: Annotated[int, typer.Option(help="pixels")] = 500,
) -> None:
    """National free slots over the period and under-served searches per hour."""
    with needing_extra("analytics"):
        from analytics.pictures import render_chart  # here: numpy and matplotlib are an optional extra

    fmt = _picture_format(out_file)
    backend = open_backend()
    period = Period.last(days)
    try:
        slots = evolution(backend, "national", None, horizon, period)
        span = (period.start, period.end)
        body = render_chart(slots, search_activity(backend, period), fmt, width, height, span)  # type: ignore[arg-type]
    except ValueError as exc:
        raise fail(str(exc), INVALID) from exc
    _write_picture(out_file, body, width, height)
