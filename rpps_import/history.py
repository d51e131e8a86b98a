"""The imports kept (kind `imports`): each one's report, the file it read and its change report, whatever its outcome.

What maintainers list and read (`dispo imports`, `GET /v1/imports`), what tells the live file's date (an older file
is refused), and what the SAS alerts' counter adds up whichever process imported.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from core.report import ChangeReport, ImportSummary, SourceFile
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live, scan

KIND = "imports"


class ImportRecord(BaseModel):
    """One import as kept: its report (lines, rejections, outcome), its file, and what it changed."""

    import_id: str
    kind: str
    outcome: str
    started_at: datetime
    summary: ImportSummary

    @property
    def changes(self) -> ChangeReport | None:
        return self.summary.changes


def record_import(backend: Backend, summary: ImportSummary) -> ImportRecord:
    """Keep an import's report (called once it has an outcome)."""
    index = ensure_live(backend, KIND)
    body = summary.model_dump(mode="json", exclude={"changes", "file"})
    doc: dict[str, Any] = {
        "import_id": summary.import_id,
        "kind": summary.kind,
        "outcome": summary.outcome,
        "started_at": summary.started_at.isoformat(),
        "summary": body,
        "file": summary.file.model_dump(mode="json") if summary.file else None,
        "changes": summary.changes.model_dump(mode="json") if summary.changes else None,
        # What the alerts' counter reads, without the changes' lists.
        "alerts": dict(Counter(a.alert for a in summary.changes.sas_alerts)) if summary.changes else {},
    }
    backend.write(index, [doc])
    backend.refresh(index)
    return _record(doc)


def _record(doc: dict[str, Any]) -> ImportRecord:
    summary = ImportSummary.model_validate(doc["summary"] | {"file": doc.get("file"), "changes": doc.get("changes")})
    return ImportRecord(
        import_id=doc["import_id"],
        kind=doc["kind"],
        outcome=doc["outcome"],
        started_at=datetime.fromisoformat(doc["started_at"]),
        summary=summary,
    )


def get_import(backend: Backend, import_id: str) -> ImportRecord | None:
    if backend.live_index(KIND) is None:
        return None
    doc = backend.get(KIND, import_id)
    return _record(doc) if doc else None


def list_imports(backend: Backend, kind: str | None = None, limit: int = 50) -> list[ImportRecord]:
    """The latest imports first (of one kind, or all)."""
    if backend.live_index(KIND) is None:
        return []
    filters = {"kind": [kind]} if kind else {}
    docs = [hit.doc for hit in scan(backend, KIND, GeoQuery(filters=filters))]
    docs.sort(key=lambda d: d["started_at"], reverse=True)
    return [_record(d) for d in docs[:limit]]


def live_file(backend: Backend, kind: str) -> SourceFile | None:
    """The file of the latest import of this kind that switched: the live version's."""
    if backend.live_index(KIND) is None:
        return None
    switched = [hit.doc for hit in scan(backend, KIND, GeoQuery(filters={"kind": [kind], "outcome": ["switched"]}))]
    if not switched:
        return None
    latest = max(switched, key=lambda d: d["started_at"])
    return SourceFile.model_validate(latest["file"]) if latest.get("file") else None


def sas_alert_totals(backend: Backend) -> Counter[tuple[str, str]]:
    """SAS alerts raised by the imports that switched, by import kind and alert: a counter kept in the index."""
    totals: Counter[tuple[str, str]] = Counter()
    if backend.live_index(KIND) is None:
        return totals
    query = GeoQuery(filters={"outcome": ["switched"]}, fields=("kind", "alerts"))
    for hit in scan(backend, KIND, query):
        for alert, n in (hit.doc.get("alerts") or {}).items():
            totals[(hit.doc["kind"], alert)] += n
    return totals
