"""`dispo import finess|rpps` and `dispo participations load`: a file into a new index version, then the switch.

Each run shows a progress bar and ends with the import report; the live index changes only when the import
succeeds. Exit codes: 2 the file is missing or unreadable, 3 the import refused to switch, 4 no backend.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.report import FileRejected, ImportSummary
from core.settings import Settings
from dispo.console import BACKEND_HINT, INVALID, REFUSED, UNAVAILABLE, err, fail, open_backend, out
from indexer.backend import Backend, BackendUnavailable
from indexer.lifecycle import ImportRefused
from rpps_import.pipeline import import_finess, import_rpps, load_participations

import_app = typer.Typer(
    help="Import a national file into a new index version, then switch to it.", no_args_is_help=True
)
participations_app = typer.Typer(help="SAS participation: who takes part, through which vendor.", no_args_is_help=True)

Loader = Callable[..., ImportSummary]
LOADERS: dict[str, Loader] = {"rpps": import_rpps, "finess": import_finess, "participations": load_participations}


def _count_lines(path: Path) -> int:
    """Data lines (the header aside), counted by blocks: the progress bar's total."""
    n = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
    return max(n - 1, 0)


def _load(kind: str, path: Path, backend: Backend, settings: Settings, force: bool) -> ImportSummary:
    """Runs the loader under a progress bar, telling each way the import can stop."""
    columns = (BarColumn(), MofNCompleteColumn(), TextColumn("lines"), TimeElapsedColumn())
    with Progress(TextColumn(f"[bold]{kind}[/] {path.name}"), *columns, console=err, transient=False) as progress:
        task = progress.add_task("import", total=_count_lines(path))

        def advance(lines: int) -> None:
            progress.update(task, completed=lines)

        try:
            summary = LOADERS[kind](path, backend, settings, force=force, progress=advance)
        except ImportRefused as exc:
            _print_summary(exc.summary)
            raise fail(str(exc.summary.message), REFUSED, "import refused") from exc
        except FileRejected as exc:
            raise fail(str(exc), INVALID, "file rejected", "the live index is unchanged") from exc
        except BackendUnavailable as exc:
            hint = f"the live index is unchanged; {BACKEND_HINT}"
            raise fail(str(exc), UNAVAILABLE, "backend unavailable", hint) from exc
        advance(summary.lines_read)
    return summary


def _run_import(kind: str, path: Path, force: bool) -> None:
    settings = Settings()
    backend = open_backend(settings)
    if not path.exists():
        raise fail(f"{path}: no such file", INVALID)
    if not path.is_file():
        raise fail(f"{path}: not a file", INVALID, hint="give the path of the file itself")
    _print_summary(_load(kind, path, backend, settings, force))


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
    out.print(table)


@import_app.command("rpps")
def import_rpps_cmd(
    file: Annotated[Path, typer.Argument(help="PS_LibreAcces_Personne_activite_*.txt")],
    force: Annotated[bool, typer.Option(help="switch even if far fewer records than the live index")] = False,
) -> None:
    """Import the RPPS/ADELI Personne_activite file (import FINESS first for establishment positions)."""
    _run_import("rpps", file, force)


@import_app.command("finess")
def import_finess_cmd(
    file: Annotated[Path, typer.Argument(help="etalab-cs1100507-stock-*.csv (raw or flat)")],
    force: Annotated[bool, typer.Option(help="switch even if far fewer records than the live index")] = False,
) -> None:
    """Import the FINESS establishments file."""
    _run_import("finess", file, force)


@participations_app.command("load")
def participations_load(
    file: Annotated[Path, typer.Argument(help="CSV: idnps,vendors,via,extra_patients,active")],
    force: Annotated[bool, typer.Option(help="switch even if far fewer participants than now")] = False,
) -> None:
    """Replace the participation registry with a CSV list (row-level report)."""
    _run_import("participations", file, force)
