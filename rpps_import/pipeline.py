"""Import jobs: a national file in, a new live index out (or a refusal), with a full report.

    FINESS file  -> Structure records (WGS84) -> structures index
    RPPS file    -> PracticeSite records -> positions (FINESS coordinates, geocoder, commune) -> practice_sites index

Import FINESS first: practice sites that are FINESS establishments take the establishment's position.

One import of a kind runs at a time (a lease, `import:<kind>`, whichever process runs it: by hand or scheduled). A file
older than the live one is refused. Before the switch, the new version is compared with the live one
(`rpps_import.changes`); the report, whatever the outcome, is kept (`rpps_import.history`) and its SAS alerts
announced (`rpps_import.alerts`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from core.records import Participation, Position, PositionPrecision, PracticeSite, Structure
from core.report import ChangeReport, ImportReport, ImportSummary, SourceFile
from core.settings import Settings
from indexer.backend import Backend
from indexer.documents import site_document, structure_document
from indexer.lease import Leases
from indexer.lifecycle import ImportRefused, iterate_all, publish
from indexer.registry import list_vendors
from rpps_import import alerts, history
from rpps_import.changes import compare_sites, compare_structures
from rpps_import.cpts import record_members
from rpps_import.fetch import describe
from rpps_import.finess import FinessReader
from rpps_import.geocode import CommuneGeocoder, Geocoder, Positioner, make_geocoder
from rpps_import.participations import ParticipationReader
from rpps_import.rpps import RppsReader

T = TypeVar("T")
log = logging.getLogger("dispo.imports")


def _report_dir(settings: Settings) -> Path:
    return settings.data_dir / "reports"


def establishment_positions(backend: Backend) -> dict[str, Position]:
    """FINESS number -> the establishment's own coordinates, from the live structures index."""
    out: dict[str, Position] = {}
    for doc in iterate_all(backend, "structures", filters={"precision": [PositionPrecision.establishment.value]}):
        out[doc["finess"]] = Position.model_validate(doc["position"])
    return out


class ImportBusy(Exception):
    """Another import of the same kind is running: this one did not start."""


def _publish(
    kind: str,
    chunks: Iterator[list[T]],
    to_docs: Callable[[list[T]], list[dict[str, Any]]],
    report: ImportReport,
    backend: Backend,
    settings: Settings,
    force: bool,
    progress: Callable[[int], None] | None,
    compare: Callable[[Backend, str, str], ChangeReport] | None = None,
    guard: Callable[[], None] | None = None,
) -> ImportSummary:
    """Records chunk by chunk into documents, then through the index lifecycle, reporting progress."""

    def batches() -> Iterator[list[dict[str, Any]]]:
        for chunk in chunks:
            docs = to_docs(chunk)
            if progress is not None:
                progress(report.summary.lines_read)
            yield docs

    def changes(live: str, new: str) -> ChangeReport:
        assert compare is not None
        return compare(backend, live, new)

    return publish(
        backend,
        kind,
        batches(),
        report,
        settings.max_drop_ratio,
        force,
        compare=changes if compare else None,
        guard=guard,
    )


@contextlib.contextmanager
def import_lease(backend: Backend, settings: Settings, kind: str) -> Iterator[Callable[[], None]]:
    """Hold the import lease of a kind while the block runs (renewed); raises ImportBusy when another holds it.
    Gives the guard that raises once the lease is lost (`indexer.lease.LeaseLost`)."""
    leases = Leases(backend, settings.import_lease_s)
    key = f"import:{kind}"
    if not leases.claim(key):
        raise ImportBusy(f"an import of {kind} is already running: wait for it to end (`dispo imports list`)")
    try:
        with leases.kept_sync(key):
            yield partial(leases.check, key)
    finally:
        try:
            leases.release(key)
        except Exception:  # it runs out by itself; the import's outcome stands
            log.exception("giving back the lease of the %s import failed", kind)


def _kept(
    kind: str,
    path: Path,
    source: SourceFile | None,
    backend: Backend,
    settings: Settings,
    force: bool,
    run: Callable[[ImportReport, Callable[[], None]], ImportSummary],
    guard: Callable[[], None] | None,
) -> ImportSummary:
    """An import of a national file as maintainers rely on it: alone of its kind (the caller's lease, `guard`, or one
    taken here), never older than the live file, its report kept whatever happens, its SAS alerts announced."""
    if guard is None:
        with import_lease(backend, settings, kind) as held:
            return _kept(kind, path, source, backend, settings, force, run, held)
    report: ImportReport | None = None
    try:
        report = ImportReport(kind, str(path), _report_dir(settings))
        report.summary.file = source or describe(path)
        live = history.live_file(backend, kind)
        published, live_published = report.summary.file.published, live.published if live else None
        if published and live_published and published < live_published and not force:
            message = (
                f"{report.summary.file.name} was extracted on {published:%Y-%m-%d %H:%M}, before the live file "
                f"({live_published:%Y-%m-%d %H:%M}): the live index is kept; re-run with --force to go back to it"
            )
            raise ImportRefused(report.finish("refused", message))
        summary = run(report, guard)
    except BaseException as exc:
        if report is not None:
            if report.summary.outcome == "running":
                report.finish("failed", f"{type(exc).__name__}: {exc}"[:500])
            _keep(backend, settings, report.summary)
        raise
    _keep(backend, settings, summary)
    return summary


def _keep(backend: Backend, settings: Settings, summary: ImportSummary) -> None:
    """The import's report kept and its alerts announced; a failure here is logged, never raised over the outcome."""
    try:
        history.record_import(backend, summary)
    except Exception:
        log.exception("import %s: its report could not be kept (%s)", summary.import_id, summary.outcome)
    try:
        alerts.announce(settings, summary)
    except Exception:
        log.exception("import %s: its SAS alerts could not be announced", summary.import_id)


def import_rpps(
    path: Path,
    backend: Backend,
    settings: Settings,
    force: bool = False,
    geocoder: Geocoder | None = None,
    progress: Callable[[int], None] | None = None,
    source: SourceFile | None = None,
    guard: Callable[[], None] | None = None,
) -> ImportSummary:
    """Import an RPPS extraction (`guard`: the import lease, when the caller holds it already)."""

    def run(report: ImportReport, held: Callable[[], None]) -> ImportSummary:
        reader = RppsReader(path, report, chunk_size=settings.import_chunk_lines)
        positioner = Positioner(
            establishments=establishment_positions(backend),
            geocoder=geocoder if geocoder is not None else make_geocoder(settings),
        )

        def to_docs(sites: list[PracticeSite]) -> list[dict[str, Any]]:
            positioner.place(sites)
            for site in sites:
                report.position(site.position.precision.value if site.position else None)
            return [site_document(site) for site in sites]

        chunks = reader.chunks()
        return _publish(
            "practice_sites", chunks, to_docs, report, backend, settings, force, progress, compare_sites, held
        )

    return _kept("rpps", path, source, backend, settings, force, run, guard)


def import_finess(
    path: Path,
    backend: Backend,
    settings: Settings,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    source: SourceFile | None = None,
    guard: Callable[[], None] | None = None,
) -> ImportSummary:
    """Import a FINESS file (`guard`: the import lease, when the caller holds it already)."""

    def run(report: ImportReport, held: Callable[[], None]) -> ImportSummary:
        reader = FinessReader(path, report, chunk_size=settings.import_chunk_lines)
        communes = CommuneGeocoder()

        def to_docs(structures: list[Structure]) -> list[dict[str, Any]]:
            for structure in structures:
                if structure.position is None:
                    structure.position = communes.locate(structure.address.insee_code, structure.address.postcode)
                report.position(structure.position.precision.value if structure.position else None)
            return [structure_document(structure) for structure in structures]

        chunks = reader.chunks()
        return _publish(
            "structures", chunks, to_docs, report, backend, settings, force, progress, compare_structures, held
        )

    return _kept("finess", path, source, backend, settings, force, run, guard)


def load_participations(
    path: Path,
    backend: Backend,
    settings: Settings,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Replace the participation registry with a CSV list (new version, validated, then switched)."""
    report = ImportReport("participations", str(path), _report_dir(settings))
    reader = ParticipationReader(path, report, {v.vendor_id for v in list_vendors(backend)})

    members: dict[str, set[str]] = {}

    def to_docs(chunk: list[Participation]) -> list[dict[str, Any]]:
        for p in chunk:
            if p.cpts is not None:
                members.setdefault(p.cpts, set()).add(p.idnps)
        return [p.model_dump(mode="json") for p in chunk]

    summary = _publish("participations", reader.chunks(), to_docs, report, backend, settings, force, progress)
    record_members(backend, members)  # the list now live: the CPTS's members are those it names
    return summary
