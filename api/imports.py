"""The imports of the national files, for maintainers: each one's report, what it changed in the directory (the SAS
alerts first) and its rejected lines."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel

from api.deps import ADMINS, get_backend, get_settings, require
from api.problems import Problem, problems
from core.report import ImportSummary
from core.settings import Settings
from indexer.backend import Backend
from rpps_import import history

router = APIRouter(prefix="/v1/imports", tags=["imports"], responses=problems(401, 403, 422, 503))
ImportId = Annotated[
    str, Path(pattern=r"^[a-z_]{3,20}-\d{8}T\d{12}Z$", description="an import's id, e.g. rpps-20261201T053000123456Z")
]


class ImportListed(BaseModel):
    """An import as listed: its report without the change lists, and the counts of what it changed."""

    summary: ImportSummary
    added: int | None
    removed: int | None
    sites_moved: int | None
    sas_alerts: int | None


@router.get("", response_model=list[ImportListed], summary="The latest imports, newest first")
def list_imports(
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, Depends(require(*ADMINS))],
    kind: Annotated[str | None, Query(pattern=r"^(rpps|finess|participations)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[ImportListed]:
    out = []
    for record in history.list_imports(backend, kind, limit):
        c = record.changes
        out.append(
            ImportListed(
                summary=record.summary.model_copy(update={"changes": None}),
                added=c.added_total if c else None,
                removed=c.removed_total if c else None,
                sites_moved=c.sites_moved if c else None,
                sas_alerts=len(c.sas_alerts) if c else None,
            )
        )
    return out


@router.get(
    "/{import_id}",
    response_model=ImportSummary,
    summary="An import's report and change report",
    responses=problems(404),
)
def get_import(
    import_id: ImportId,
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, Depends(require(*ADMINS))],
) -> ImportSummary:
    record = history.get_import(backend, import_id)
    if record is None:
        raise Problem(404, "Not found", f"No import {import_id}: GET /v1/imports lists them.", "not-found")
    return record.summary


@router.get(
    "/{import_id}/rejected.csv",
    response_class=FileResponse,
    summary="An import's rejected and warned lines (CSV: line, severity, reason, detail)",
    responses=problems(404) | {200: {"content": {"text/csv": {}}}},
)
def rejected_lines(
    import_id: ImportId,
    backend: Annotated[Backend, Depends(get_backend)],
    settings: Annotated[Settings, Depends(get_settings)],
    _: Annotated[Any, Depends(require(*ADMINS))],
) -> FileResponse:
    record = history.get_import(backend, import_id)
    if record is None:
        raise Problem(404, "Not found", f"No import {import_id}: GET /v1/imports lists them.", "not-found")
    reports = (settings.data_dir / "reports").resolve()
    kept = FilePath(record.summary.report_file or "").resolve()
    # Only the reports folder's own files: the stored path is read, never followed elsewhere.
    if not record.summary.report_file or kept.parent != reports or not kept.is_file():
        why = f"The line-level report of {import_id} is not on this server (imports write it where they run)."
        raise Problem(404, "Not found", why, "not-found")
    return FileResponse(kept, media_type="text/csv; charset=utf-8", filename=f"{import_id}-lines.csv")
