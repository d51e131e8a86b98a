"""The benchmarks' rows: one record per measured line, read by the table and by the JSON output alike.

A row says what it measured and in what unit its `n` counts, holds its samples and figures (units in their
names), and points at the row it is compared to, measured in the same run: its ratio is computed from the two
rows' figures, so the table, the JSON and the ratio cannot disagree.

`dispo bench --json` writes a JSON array, one object per row, every key present (null where it does not apply):

- `scenario`, `scale`, `backend` (`-` where a row measures no one backend), `what`, `is_reference`
- `n` and `n_unit` (what `n` counts: requests, searches, lines, participants, vendor cycles)
- `median_ms`, `p95_ms`, `p99_ms` over the samples (percentiles by nearest rank); `wall_s`; `throughput_per_s`;
  `peak_memory_mb`
- `ratio`: the reference's figure over this row's (above 1, this row is faster); `ratio_of`, the figure compared
  (`median_ms` or `wall_s`); `reference`, the reference's `what`, with its `reference_median_ms` and
  `reference_wall_s`; `peak_memory_ratio_to_reference`, this row's peak memory over the reference's
- the figures of one scenario or another (`SCENARIO_FIGURES`), which the table shows after `what`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from rich.console import Console
from rich.table import Table


def _figure(shown: str) -> Any:
    """A figure of one scenario or another: null elsewhere; in the table, `shown` formatted with the value
    (and `row`, the row) after the row's `what`."""
    return field(default=None, metadata={"shown": shown})


@dataclass
class Row:
    scenario: str
    scale: str
    backend: str
    what: str  # a reference's starts with "reference:"
    n: int
    n_unit: str
    samples_ms: list[float] = field(default_factory=list)
    wall_s: float | None = None
    throughput_per_s: float | None = None
    peak_memory_mb: float | None = None
    reference: Row | None = None  # what `ratio` compares this row to, measured in the same run
    ratio_of: Literal["median_ms", "wall_s"] = "median_ms"
    # Figures of one scenario or another, in the order the table shows them.
    place: str | None = _figure("{}")
    radius_km: float | None = _figure("{:g} km")
    sites_in_circle: int | None = _figure("{} sites")
    slots_in_circle: int | None = _figure("{} slots in the circle")
    errors: int | None = _figure("{} errors")
    workers: int | None = _figure("{} API workers")
    worker_memory_mb: tuple[float, ...] | None = _figure("workers' memory {} MB")
    vendors: int | None = _figure("{} vendors")
    cycles: int | None = _figure("{} cycles")
    documents_written: int | None = _figure("{} documents written")
    documents_unchanged: int | None = _figure("{} unchanged")
    failed_batches: int | None = _figure("{} failed batches")
    pages_with_5_cards: int | None = _figure("{}/{row.n} pages with >= 5 cards")
    vendor_calls_median: float | None = _figure("{:.0f} vendor calls median")
    loop_late_p99_ms: float | None = _figure("event loop late by {:.0f} ms p99")
    loop_late_max_ms: float | None = _figure("{:.0f} ms at most")
    hostile_answer_mb: float | None = _figure("the hostile vendor's answers {:g} MB")
    hostile_calls: Mapping[str, int] | None = _figure("its calls: {}")
    acknowledged: int | None = _figure("{}/{row.n} acknowledged")
    lost: int | None = _figure("{} lost")
    duplicated: int | None = _figure("{} delivered twice")
    error: str | None = _figure("{}")

    @property
    def is_reference(self) -> bool:
        return self.what.startswith("reference")

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.samples_ms) if self.samples_ms else None

    @property
    def p95_ms(self) -> float | None:
        return self.pct(95)

    @property
    def p99_ms(self) -> float | None:
        return self.pct(99)

    def pct(self, q: float) -> float | None:
        """The nearest-rank percentile of the samples, in ms."""
        if not self.samples_ms:
            return None
        data = sorted(self.samples_ms)
        return data[min(len(data) - 1, math.ceil(q / 100 * len(data)) - 1)]

    @property
    def ratio(self) -> float | None:
        """The reference's figure over this row's: above 1, this row took less time than its reference."""
        if self.reference is None:
            return None
        ours, theirs = getattr(self, self.ratio_of), getattr(self.reference, self.ratio_of)
        return theirs / ours if ours and theirs is not None else None

    @property
    def peak_memory_ratio_to_reference(self) -> float | None:
        if self.reference is None or not self.reference.peak_memory_mb or self.peak_memory_mb is None:
            return None
        return self.peak_memory_mb / self.reference.peak_memory_mb

    @property
    def described(self) -> str:
        """`what`, then the scenario's figures this row has: the table's `what` column."""
        values = ((f.metadata["shown"], getattr(self, f.name)) for f in SCENARIO_FIGURES)
        shown = [template.format(value, row=self) for template, value in values if value is not None]
        if self.peak_memory_ratio_to_reference is not None:
            shown.append(f"peak memory {self.peak_memory_ratio_to_reference:.2f}x the reference's")
        return f"{self.what} ({', '.join(shown)})" if shown else self.what

    def as_json(self) -> dict[str, Any]:
        """The row as one object of `dispo bench --json`: every key, null where it does not apply."""
        reference = self.reference
        return {
            "scenario": self.scenario,
            "scale": self.scale,
            "backend": self.backend,
            "what": self.what,
            "is_reference": self.is_reference,
            "n": self.n,
            "n_unit": self.n_unit,
            "median_ms": self.median_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "wall_s": self.wall_s,
            "throughput_per_s": self.throughput_per_s,
            "peak_memory_mb": self.peak_memory_mb,
            "ratio": self.ratio,
            "ratio_of": self.ratio_of if reference else None,
            "reference": reference.what if reference else None,
            "reference_median_ms": reference.median_ms if reference else None,
            "reference_wall_s": reference.wall_s if reference else None,
            "peak_memory_ratio_to_reference": self.peak_memory_ratio_to_reference,
            **{f.name: getattr(self, f.name) for f in SCENARIO_FIGURES},
        }


SCENARIO_FIGURES = tuple(f for f in fields(Row) if "shown" in f.metadata)


def _number(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


# The table's columns: each a header and what the cell shows of a row.
COLUMNS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("scenario", lambda r: r.scenario),
    ("scale", lambda r: r.scale),
    ("backend", lambda r: r.backend),
    ("what", lambda r: r.described),
    ("n", lambda r: f"{r.n} {r.n_unit}"),
    ("median ms", lambda r: _number(r.median_ms)),
    ("p95 ms", lambda r: _number(r.p95_ms)),
    ("p99 ms", lambda r: _number(r.p99_ms)),
    ("wall s", lambda r: _number(r.wall_s, "{:.2f}")),
    ("throughput/s", lambda r: _number(r.throughput_per_s)),
    ("peak memory MB", lambda r: _number(r.peak_memory_mb, "{:.0f}")),
    ("ratio", lambda r: _number(r.ratio, "{:.2f}x")),
)


def print_table(rows: list[Row], stderr: bool = False) -> None:
    """The rows as one table, on stdout, or on stderr when stdout carries the JSON."""
    table = Table(title="Dispo benchmarks")
    for header, _cell in COLUMNS:
        table.add_column(header)
    for row in rows:
        table.add_row(*(cell(row) for _header, cell in COLUMNS))
    Console(width=200, stderr=stderr).print(table)
