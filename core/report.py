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


class ImportSummary(BaseModel):
    kind: str  # rpps | finess
    source: str
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

    @property
    def rows_per_second(self) -> float:
        return self.lines_read / self.duration_s if self.duration_s > 0 else 0.0


class ImportReport:
    """Collects counters and streams row-level problems to `<stem>.problems.csv`."""

    def __init__(self, kind: str, source: str, report_dir: Path | None) -> None:
        self.summary = ImportSummary(kind=kind, source=source)
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
            stem = f"{kind}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
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
