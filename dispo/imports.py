"""`dispo import finess|rpps`, `dispo imports list|show` and `dispo participations load`: a file (given, or fetched
from its URL) into a new index version, compared with the live one, then the switch.

Each run shows progress bars (download, then lines) and ends with the import report and what the import changes in
the directory, the SAS alerts first; the live index changes only when the import succeeds. Exit codes: 1 another
import of the kind is running, 2 the file is missing, unreadable or could not be fetched, 3 the import refused to
switch (an older file, or far fewer records), 4 no backend.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from core.report import ChangeReport, FileRejected, ImportSummary, SourceFile
from core.settings import Settings
from dispo.console import (
    BACKEND_HINT,
    FAILED,
    INVALID,
    REFUSED,
    UNAVAILABLE,
    err,
    fail,
    open_backend,
    out,
    print_listing,
    print_table,
    write_json,
)
from indexer.backend import Backend, BackendUnavailable
from indexer.lifecycle import ImportRefused
from rpps_import import history
from rpps_import.fetch import FetchError, fetch
from rpps_import.pipeline import ImportBusy, import_finess, import_lease, import_rpps, load_participations

import_app = typer.Typer(
    help="Import a national file into a new index version, then switch to it.", no_args_is_help=True
)
participations_app = typer.Typer(help="SAS participation: who takes part, through which vendor.", no_args_is_help=True)
imports_app = typer.Typer(help="The imports done: their reports and what they changed.", no_args_is_help=True)

Loader = Callable[..., ImportSummary]
LOADERS: dict[str, Loader] = {"rpps": import_rpps, "finess": import_finess, "participations": load_participations}


def _count_lines(path: Path) -> int:
    """Data lines (the header aside), counted by blocks: the progress bar's total."""
    n = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
    return max(n - 1, 0)


def _load(
    kind: str,
    path: Path,
    backend: Backend,
    settings: Settings,
    force: bool,
    source: SourceFile | None = None,
    guard: Callable[[], None] | None = None,
) -> ImportSummary:
    """Runs the loader under a progress bar, telling each way the import can stop."""
    columns = (BarColumn(), MofNCompleteColumn(), TextColumn("lines"), TimeElapsedColumn())
    extra = {"source": source, "guard": guard} if kind != "participations" else {}
    with Progress(TextColumn(f"[bold]{kind}[/] {path.name}"), *columns, console=err, transient=False) as progress:
        task = progress.add_task("import", total=_count_lines(path))

        def advance(lines: int) -> None:
            progress.update(task, completed=lines)

        try:
            summary = LOADERS[kind](path, backend, settings, force=force, progress=advance, **extra)
        except ImportRefused as exc:
            _print_summary(exc.summary)
            raise fail(str(exc.summary.message), REFUSED, "import refused") from exc
        except ImportBusy as exc:
            raise fail(str(exc), FAILED, "import not started") from exc
        except FileRejected as exc:
            raise fail(str(exc), INVALID, "file rejected", "the live index is unchanged") from exc
        except BackendUnavailable as exc:
            hint = f"the live index is unchanged; {BACKEND_HINT}"
            raise fail(str(exc), UNAVAILABLE, "backend unavailable", hint) from exc
        advance(summary.lines_read)
    return summary


def _download(kind: str, url: str, settings: Settings, sha256: str | None) -> tuple[Path, SourceFile]:
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn())
    with Progress(TextColumn(f"[bold]{kind}[/] download"), *columns, console=err, transient=False) as progress:
        task = progress.add_task("download", total=None)

        def advance(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        try:
            fetched = fetch(url, kind, settings, sha256=sha256, progress=advance)
        except FetchError as exc:
            raise fail(exc.message, INVALID, "download failed", exc.hint or "the live index is unchanged") from exc
    return fetched.path, fetched.source


def _run_import(kind: str, path: Path | None, force: bool, url: str | None = None, sha256: str | None = None) -> None:
    settings = Settings()
    backend = open_backend(settings)
    if path is None:
        url = url or {"rpps": settings.rpps_url, "finess": settings.finess_url}.get(kind)
        if not url:
            hint = f"give the file, or --url, or set DISPO_{kind.upper()}_URL"
            raise fail(f"no {kind} file to import", INVALID, hint=hint)
        try:
            # The lease from the download on: no other import of the kind fetches into the same file meanwhile.
            with import_lease(backend, settings, kind) as guard:
                path, source = _download(kind, url, settings, sha256)
                summary = _load(kind, path, backend, settings, force, source, guard)
        except ImportBusy as exc:
            raise fail(str(exc), FAILED, "import not started") from exc
    else:
        if url:
            raise fail("give a file or --url, not both", INVALID)
        if not path.exists():
            raise fail(f"{path}: no such file", INVALID)
        if not path.is_file():
            raise fail(f"{path}: not a file", INVALID, hint="give the path of the file itself")
        summary = _load(kind, path, backend, settings, force)
    _print_summary(summary)
    if summary.changes is not None:
        print_changes(summary.changes)


def _print_summary(summary: ImportSummary) -> None:
    table = Table(title=f"Import report: {summary.kind} ({summary.format or 'unknown format'})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("source", summary.source)
    table.add_row("lines read", f"{summary.lines_read:,}")
    table.add_row("accepted", f"{summary.lines_accepted:,}")
    table.add_row("rejected", f"{summary.lines_rejected:,}")
    for reason, n in summary.rejected_by_reason.items():
        table.add_row("  rejected: " + reason, f"{n:,}")
    for reason, n in summary.warnings_by_reason.items():
        table.add_row("  warning: " + reason, f"{n:,}")
    table.add_row("records written", f"{summary.records_written:,}")
    for precision, n in summary.positions_by_precision.items():
        table.add_row("  position: " + precision, f"{n:,}")
    if summary.live_records_before is not None:
        table.add_row("live records before", f"{summary.live_records_before:,}")
    table.add_row("duration", f"{summary.duration_s:.2f} s ({summary.rows_per_second:,.0f} lines/s)")
    table.add_row("outcome", f"{summary.outcome}: {summary.message or ''}")
    if summary.report_file:
        table.add_row("line-level report", summary.report_file)
    if summary.file is not None:
        published = f", extracted {summary.file.published:%Y-%m-%d %H:%M}" if summary.file.published else ""
        table.add_row("file", f"{summary.file.name} ({summary.file.size:,} bytes{published})")
        table.add_row("sha-256", summary.file.sha256)
    table.add_row("import id", summary.import_id)
    out.print(table)


ALERT_LABELS = {
    "participant_removed": "no longer in the register",
    "site_removed": "practice site gone",
    "site_moved": "practice site moved",
    "structure_closed": "establishment closed",
}


def print_changes(changes: ChangeReport, limit: int = 20) -> None:
    """The change report: the SAS alerts first, then the counts, by department, and the first items of each list."""
    alerts = changes.sas_alerts
    if alerts:
        print_table(
            f"SAS alerts: {len(alerts)}",
            ["alert", "participant", "department", "site", "distance (km)"],
            [
                [
                    ALERT_LABELS[a.alert],
                    a.participant,
                    a.department or "",
                    a.site_id or a.finess or "",
                    "" if a.distance_km is None else f"{a.distance_km:.1f}",
                ]
                for a in alerts[:limit]
            ],
            right=["distance (km)"],
        )
        if len(alerts) > limit:
            out.print(f"... and {len(alerts) - limit} more: dispo imports show <id> --json")
    else:
        out.print("[green]No SAS alert[/]: every participant is still in the register, at the same places.")
    rows = [
        ["added", f"{changes.added_total:,}"],
        ["removed", f"{changes.removed_total:,}"],
        ["sites added", f"{changes.sites_added:,}"],
        ["sites removed", f"{changes.sites_removed:,}"],
        ["sites moved", f"{changes.sites_moved:,}"],
        ["specialty changes", f"{changes.specialty_changes:,}"],
        ["compared in", f"{changes.duration_s:.2f} s (with {changes.compared_with})"],
    ]
    rows += [[f"  added: {k}", f"{n:,}"] for k, n in changes.added_by_profession.items()]
    rows += [[f"  removed: {k}", f"{n:,}"] for k, n in changes.removed_by_profession.items()]
    print_table("Changes", ["", "count"], rows, right=["count"])
    if changes.by_department:
        print_table(
            "Changes by department",
            ["department", "added", "removed", "sites +", "sites -", "moved", "SAS alerts"],
            [
                [
                    d.department,
                    *(
                        f"{n:,}"
                        for n in (d.added, d.removed, d.sites_added, d.sites_removed, d.sites_moved, d.sas_alerts)
                    ),
                ]
                for d in changes.by_department
            ],
            right=["added", "removed", "sites +", "sites -", "moved", "SAS alerts"],
        )
    if changes.moves:
        print_table(
            "Moves (farthest first)",
            ["site", "from", "to", "km"],
            [[m.site_id, m.from_commune or "", m.commune or "", f"{m.distance_km:.1f}"] for m in changes.moves[:limit]],
            right=["km"],
        )


FORCE = "switch even with far fewer records than the live index, or a file older than the live one"
URL = "download the file from this address (https; a zip or the file) instead of reading a local one"
SHA256 = "the SHA-256 the file must have, when its publisher gives one"


@import_app.command("rpps")
def import_rpps_cmd(
    file: Annotated[Path | None, typer.Argument(help="PS_LibreAcces_Personne_activite_*.txt")] = None,
    url: Annotated[str | None, typer.Option(help=URL)] = None,
    sha256: Annotated[str | None, typer.Option(help=SHA256)] = None,
    force: Annotated[bool, typer.Option(help=FORCE)] = False,
) -> None:
    """Import the RPPS/ADELI Personne_activite file, local or downloaded (without either: DISPO_RPPS_URL); import
    FINESS first for establishment positions."""
    _run_import("rpps", file, force, url, sha256)


@import_app.command("finess")
def import_finess_cmd(
    file: Annotated[Path | None, typer.Argument(help="etalab-cs1100507-stock-*.csv (raw or flat)")] = None,
    url: Annotated[str | None, typer.Option(help=URL)] = None,
    sha256: Annotated[str | None, typer.Option(help=SHA256)] = None,
    force: Annotated[bool, typer.Option(help=FORCE)] = False,
) -> None:
    """Import the FINESS establishments file, local or downloaded (without either: DISPO_FINESS_URL)."""
    _run_import("finess", file, force, url, sha256)


@imports_app.command("list")
def imports_list(
    kind: Annotated[str | None, typer.Option(help="rpps or finess")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
) -> None:
    """The latest imports: outcome, lines, changes and SAS alerts."""
    records = history.list_imports(open_backend(), kind, limit)
    print_listing(
        as_json,
        [r.summary.model_dump(mode="json", exclude={"changes"}) for r in records],
        "Imports",
        ["id", "outcome", "file", "accepted", "rejected", "added", "removed", "moved", "SAS alerts"],
        (
            [
                r.import_id,
                r.outcome,
                r.summary.file.name if r.summary.file else r.summary.source,
                f"{r.summary.lines_accepted:,}",
                f"{r.summary.lines_rejected:,}",
                *(
                    [f"{c.added_total:,}", f"{c.removed_total:,}", f"{c.sites_moved:,}", f"{len(c.sas_alerts):,}"]
                    if (c := r.changes)
                    else ["", "", "", ""]
                ),
            ]
            for r in records
        ),
    )


@imports_app.command("show")
def imports_show(
    import_id: Annotated[str, typer.Argument(help="an import's id (dispo imports list)")],
    as_json: Annotated[bool, typer.Option("--json", help="the whole report as one JSON document")] = False,
) -> None:
    """One import: its report and what it changed, the SAS alerts first."""
    record = history.get_import(open_backend(), import_id)
    if record is None:
        raise fail(f"no import {import_id}", FAILED, hint="dispo imports list")
    if as_json:
        write_json(record.summary)
        return
    _print_summary(record.summary)
    if record.changes is not None:
        print_changes(record.changes)


@participations_app.command("load")
def participations_load(
    file: Annotated[Path, typer.Argument(help="CSV: idnps,vendors,via,extra_patients,active")],
    force: Annotated[bool, typer.Option(help="switch even if far fewer participants than now")] = False,
) -> None:
    """Replace the participation registry with a CSV list (row-level report)."""
    _run_import("participations", file, force)
