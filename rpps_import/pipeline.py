"""Import jobs: a national file in, a new live index out (or a refusal), with a full report.

    FINESS file  -> Structure records (WGS84) -> structures index
    RPPS file    -> PracticeSite records -> positions (FINESS coordinates, geocoder, commune) -> practice_sites index

Import FINESS first: practice sites that are FINESS establishments take the establishment's position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dispo.records import Position, PositionPrecision
from dispo.settings import Settings
from indexer.backend import Backend
from indexer.documents import site_document, structure_document
from indexer.lifecycle import iterate_all, publish
from indexer.registry import list_vendors
from indexer.report import ImportReport, ImportSummary
from rpps_import.finess import FinessReader
from rpps_import.geocode import AddokGeocoder, Geocoder, Positioner
from rpps_import.participations import ParticipationReader
from rpps_import.rpps import RppsReader


def _report_dir(settings: Settings) -> Path:
    return settings.data_dir / "reports"


def establishment_positions(backend: Backend) -> dict[str, Position]:
    """FINESS number -> the establishment's own coordinates, from the live structures index."""
    out: dict[str, Position] = {}
    for doc in iterate_all(backend, "structures", filters={"precision": [PositionPrecision.establishment.value]}):
        out[doc["finess"]] = Position.model_validate(doc["position"])
    return out


def make_geocoder(settings: Settings) -> Geocoder | None:
    if not settings.geocoder_url:
        return None
    return AddokGeocoder(
        settings.geocoder_url,
        cache_path=settings.data_dir / "cache" / "geocoder.db",
        min_score=settings.geocoder_min_score,
        requests_per_second=settings.geocoder_rps,
        batch_rows=settings.geocoder_batch_rows,
        retries=settings.geocoder_retries,
    )


def import_rpps(
    path: Path,
    backend: Backend,
    settings: Settings,
    force: bool = False,
    geocoder: Geocoder | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    report = ImportReport("rpps", str(path), _report_dir(settings))
    reader = RppsReader(path, report, chunk_size=settings.import_chunk_lines)
    positioner = Positioner(
        establishments=establishment_positions(backend),
        geocoder=geocoder if geocoder is not None else make_geocoder(settings),
    )

    def batches() -> Iterator[list[dict[str, Any]]]:
        for sites in reader.chunks():
            positioner.place(sites)
            docs = []
            for site in sites:
                report.position(site.position.precision.value if site.position else None)
                docs.append(site_document(site))
            if progress is not None:
                progress(report.summary.lines_read)
            yield docs

    return publish(backend, "practice_sites", batches(), report, settings.max_drop_ratio, force)


def import_finess(
    path: Path,
    backend: Backend,
    settings: Settings,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    report = ImportReport("finess", str(path), _report_dir(settings))
    reader = FinessReader(path, report, chunk_size=settings.import_chunk_lines)
    positioner = Positioner()

    def batches() -> Iterator[list[dict[str, Any]]]:
        for structures in reader.chunks():
            docs = []
            for structure in structures:
                if structure.position is None:
                    structure.position = positioner.communes.locate(
                        structure.address.insee_code, structure.address.postcode
                    )
                report.position(structure.position.precision.value if structure.position else None)
                docs.append(structure_document(structure))
            if progress is not None:
                progress(report.summary.lines_read)
            yield docs

    return publish(backend, "structures", batches(), report, settings.max_drop_ratio, force)


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

    def batches() -> Iterator[list[dict[str, Any]]]:
        for chunk in reader.chunks():
            if progress is not None:
                progress(report.summary.lines_read)
            yield [p.model_dump(mode="json") for p in chunk]

    return publish(backend, "participations", batches(), report, settings.max_drop_ratio, force)
