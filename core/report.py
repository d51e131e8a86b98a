"""The import report: every line of an input file is accounted for, and problems are listed by line.

Counters stay in memory; the row-level list is streamed to a CSV file beside the summary so that a
national file with many problems never grows memory.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, Field

Severity = Literal["rejected", "warning"]
Outcome = Literal["switched", "refused", "failed", "running"]


class FileRejected(Exception):
    """The file as a whole cannot be read (empty, wrong header, wrong separator, wrong encoding...)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}. {self.hint[:1].upper()}{self.hint[1:]}" if self.hint else self.message


SasAlertKind = Literal["participant_removed", "site_removed", "site_moved", "structure_closed"]


class SasAlert(BaseModel):
    """A change of the registers that concerns the SAS: a participant gone from the register, a participant's practice
    site gone or moved more than the alert distance, a participating CPTS's establishment closed."""

    alert: SasAlertKind
    participant: str  # the practitioner's IDNPS, or the CPTS's IDNST
    site_id: str | None = None
    finess: str | None = None
    department: str | None = None
    distance_km: float | None = None


class PractitionerRef(BaseModel):
    idnps: str
    profession: str  # the register's label, else its code
    departments: list[str] = Field(default_factory=list)


class SiteRef(BaseModel):
    site_id: str
    idnps: str | None = None  # the practitioner's (a structure has none)
    department: str | None = None
    commune: str | None = None


class SiteMove(SiteRef):
    distance_km: float
    from_commune: str | None = None


class SpecialtyChange(BaseModel):
    idnps: str
    before: list[str]  # savoir-faire codes
    after: list[str]


class DepartmentChanges(BaseModel):
    department: str
    added: int = 0  # practitioners (or structures) appearing there
    removed: int = 0
    sites_added: int = 0
    sites_removed: int = 0
    sites_moved: int = 0
    sas_alerts: int = 0


class ChangeReport(BaseModel):
    """What an import changes in the directory, compared with the version live before it: practitioners (or FINESS
    establishments) added and removed, practice sites added, removed and moved, specialty changes — and first what
    concerns the SAS. Lists hold at most `listed` items each (the counts are whole)."""

    compared_with: str  # the live version compared with
    duration_s: float = 0.0
    sas_alerts: list[SasAlert] = Field(default_factory=list)
    added_by_profession: dict[str, int] = Field(default_factory=dict)  # practitioners, or establishments by category
    removed_by_profession: dict[str, int] = Field(default_factory=dict)
    sites_added: int = 0
    sites_removed: int = 0
    sites_moved: int = 0
    specialty_changes: int = 0
    by_department: list[DepartmentChanges] = Field(default_factory=list)
    added: list[PractitionerRef] = Field(default_factory=list)
    removed: list[PractitionerRef] = Field(default_factory=list)
    added_sites: list[SiteRef] = Field(default_factory=list)
    removed_sites: list[SiteRef] = Field(default_factory=list)
    moves: list[SiteMove] = Field(default_factory=list)  # farthest first
    specialties: list[SpecialtyChange] = Field(default_factory=list)
    listed: int = 500

    @property
    def added_total(self) -> int:
        return sum(self.added_by_profession.values())

    @property
    def removed_total(self) -> int:
        return sum(self.removed_by_profession.values())


class SourceFile(BaseModel):
    """The national file an import read: what it was, and where it came from."""

    name: str
    size: int
    sha256: str
    url: str | None = None  # when it was downloaded
    published: datetime | None = None  # the extraction's date (the file's name, else the server's Last-Modified)


class ImportSummary(BaseModel):
    kind: str  # rpps | finess
    source: str
    import_id: str = ""
    file: SourceFile | None = None
    format: str | None = None
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    duration_s: float = 0.0
    lines_read: int = 0
    lines_accepted: int = 0
    lines_rejected: int = 0
    records_written: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    warnings_by_reason: dict[str, int] = Field(default_factory=dict)
    positions_by_precision: dict[str, int] = Field(default_factory=dict)
    live_records_before: int | None = None
    index: str | None = None
    outcome: Outcome = "running"
    message: str | None = None
    report_file: str | None = None
    changes: ChangeReport | None = None  # None for a first import, or one that failed before comparing

    @property
    def rows_per_second(self) -> float:
        return self.lines_read / self.duration_s if self.duration_s > 0 else 0.0


class ImportReport:
    """Collects counters and streams row-level problems to `<stem>.problems.csv`."""

    def __init__(self, kind: str, source: str, report_dir: Path | None) -> None:
        self.summary = ImportSummary(kind=kind, source=source)
        # The import's id, the stem of its files: its kind and start, to the microsecond.
        stem = f"{kind}-{self.summary.started_at.strftime('%Y%m%dT%H%M%S%fZ')}"
        self.summary.import_id = stem
        self._rejected: Counter[str] = Counter()
        self._warnings: Counter[str] = Counter()
        self._positions: Counter[str] = Counter()
        self._t0 = time.perf_counter()
        self._fh = None
        self._writer = None
        self.problems_path: Path | None = None
        self.summary_path: Path | None = None
        if report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
            self.problems_path = report_dir / f"{stem}.problems.csv"
            self.summary_path = report_dir / f"{stem}.summary.json"
            self._fh = self.problems_path.open("w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._fh)
            self._writer.writerow(["line", "severity", "reason", "detail"])
            self.summary.report_file = str(self.problems_path)

    def line_read(self, n: int = 1) -> None:
        self.summary.lines_read += n

    def accept(self, n: int = 1) -> None:
        self.summary.lines_accepted += n

    def reject(self, line: int, reason: str, detail: str = "") -> None:
        self._rejected[reason] += 1
        self.summary.lines_rejected += 1
        self._write(line, "rejected", reason, detail)

    def warn(self, line: int, reason: str, detail: str = "") -> None:
        self._warnings[reason] += 1
        self._write(line, "warning", reason, detail)

    def position(self, precision: str | None) -> None:
        self._positions[precision or "none"] += 1

    def _write(self, line: int, severity: Severity, reason: str, detail: str) -> None:
        if self._writer is not None:
            self._writer.writerow([line, severity, reason, detail[:300]])

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        return dict(self._rejected)

    def finish(self, outcome: Outcome, message: str | None = None) -> ImportSummary:
        s = self.summary
        s.duration_s = time.perf_counter() - self._t0
        s.rejected_by_reason = dict(self._rejected.most_common())
        s.warnings_by_reason = dict(self._warnings.most_common())
        s.positions_by_precision = dict(self._positions.most_common())
        s.outcome = outcome
        s.message = message
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.summary_path is not None:
            self.summary_path.write_bytes(orjson.dumps(s.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
        return s
