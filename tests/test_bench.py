"""Smoke test of the benchmarks at the smallest scale: they run and print their figures, as a table and, with
--json, as one JSON object per row of that table (no timing asserted)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from bench.generate import generate
from bench.report import COLUMNS, Row, print_table
from bench.run import SCENARIOS, run
from core.settings import Settings
from dispo import benchmarks
from dispo.cli import app as cli
from indexer.sqlite_backend import SqliteBackend
from rpps_import.pipeline import import_finess, import_rpps

# The keys of every object of `dispo bench --json`, as bench/report.py documents them.
JSON_KEYS = {
    "scenario",
    "scale",
    "backend",
    "what",
    "is_reference",
    "n",
    "n_unit",
    "median_ms",
    "p95_ms",
    "p99_ms",
    "wall_s",
    "throughput_per_s",
    "peak_memory_mb",
    "ratio",
    "ratio_of",
    "reference",
    "reference_median_ms",
    "reference_wall_s",
    "peak_memory_ratio_to_reference",
    "place",
    "radius_km",
    "sites_in_circle",
    "slots_in_circle",
    "errors",
    "workers",
    "worker_memory_mb",
    "vendors",
    "cycles",
    "documents_written",
    "documents_unchanged",
    "failed_batches",
    "pages_with_5_cards",
    "vendor_calls_median",
    "loop_late_p99_ms",
    "loop_late_max_ms",
    "hostile_answer_mb",
    "hostile_calls",
    "acknowledged",
    "lost",
    "duplicated",
    "error",
}
TEXTS = {"scenario", "scale", "backend", "what", "n_unit", "ratio_of", "reference", "place", "error"}
# A figure of each scenario that one of its measured rows (not its references) at least gives as a number.
MEASURED = {
    "import": "throughput_per_s",
    "changes": "wall_s",
    "search": "errors",
    "embedded": "slots_in_circle",
    "aggregate": "documents_written",
    "hostile": "loop_late_p99_ms",
    "verify": "pages_with_5_cards",
    "lrm": "acknowledged",
}


@dataclass
class QuickRun:
    rows: list[Row]  # what the run returned
    ends: list[int]  # how many rows there were after each scenario: the run reports after every one
    stdout: str
    stderr: str

    def by_scenario(self) -> dict[str, slice]:
        """Each scenario's rows: the run goes through them in the order of SCENARIOS, one after the other."""
        starts = [0, *self.ends[:-1]]
        return {name: slice(a, b) for name, a, b in zip(SCENARIOS, starts, self.ends, strict=True)}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """`dispo bench <every scenario> --json`, each scenario at its quick size, once for the whole module."""
    work = tmp_path_factory.mktemp("bench")
    rows: list[Row] = []
    ends: list[int] = []

    def quick(names: list[str], scale: str, on_rows: Callable[[list[Row]], None] | None, **options: Any) -> list[Row]:
        def reported(so_far: list[Row]) -> None:
            ends.append(len(so_far))
            if on_rows is not None:
                on_rows(so_far)

        rows[:] = run(names, scale, work, quick=True, on_rows=reported, **options)
        return rows

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(benchmarks, "run_benchmarks", quick)
        result = CliRunner().invoke(cli, ["bench", *SCENARIOS, "--scale", "department", "--json"])
    assert result.exit_code == 0, (result.stderr, result.exception)
    return QuickRun(rows, ends, result.stdout, result.stderr)


def _last_table(text: str) -> list[dict[str, str]]:
    """The rows of the last benchmarks table in `text`, by column; a cell wrapped over lines is joined again."""
    headers = [header for header, _cell in COLUMNS]
    rows: list[dict[str, str]] = []
    for line in text.rsplit("Dispo benchmarks", 1)[1].splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells[headers.index("n")]:  # the first line of a row: n never wraps
            rows.append(dict(zip(headers, cells, strict=True)))
            continue
        for header, cell in zip(headers, cells, strict=True):
            if cell:
                rows[-1][header] += " " + cell
    return rows


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_every_benchmark_runs_and_reports_a_ratio(quick_run: QuickRun, capsys: pytest.CaptureFixture) -> None:
    assert len(quick_run.ends) == len(SCENARIOS)
    for name, mine in quick_run.by_scenario().items():
        rows = quick_run.rows[mine]
        referenced = {r.scenario for r in rows if r.is_reference}
        assert referenced, f"{name} measured no reference"
        # Each measurement with a reference measured in the same run gives its ratio to it.
        for measured in referenced:
            assert any(r.scenario == measured and r.ratio and r.ratio > 0 for r in rows), (name, measured)
    print_table(quick_run.rows)
    assert "Dispo benchmarks" in capsys.readouterr().out


def test_json_is_one_object_per_row_with_the_documented_keys(quick_run: QuickRun) -> None:
    objects = orjson.loads(quick_run.stdout)  # stdout holds the JSON alone: progress and tables went to stderr
    assert isinstance(objects, list) and len(objects) == len(quick_run.rows)
    for row in objects:
        assert set(row) == JSON_KEYS, row
    for name, mine in quick_run.by_scenario().items():
        assert [(o["scenario"], o["backend"], o["what"]) for o in objects[mine]] == [
            (r.scenario, r.backend, r.what) for r in quick_run.rows[mine]
        ], name


def test_json_gives_numbers_where_figures_are_numbers(quick_run: QuickRun) -> None:
    objects = orjson.loads(quick_run.stdout)
    for row in objects:
        for key in JSON_KEYS - TEXTS - {"is_reference", "hostile_calls", "worker_memory_mb"}:
            assert row[key] is None or _is_number(row[key]), (key, row)
        workers = row["worker_memory_mb"]  # one figure per API worker
        assert workers is None or (len(workers) == row["workers"] and all(_is_number(m) for m in workers)), row
        for key in TEXTS - {"scenario", "scale", "backend", "what", "n_unit"}:
            assert row[key] is None or isinstance(row[key], str), (key, row)
        assert isinstance(row["n"], int) and row["n"] > 0, row
        assert _is_number(row["median_ms"]) or _is_number(row["wall_s"]), row  # every row measured a time
        assert (row["median_ms"] is None) == (row["p95_ms"] is None) == (row["p99_ms"] is None), row
        if row["ratio"] is not None:  # the ratio is the reference's figure over this row's
            figure = row["ratio_of"]
            assert row["ratio"] == pytest.approx(row[f"reference_{figure}"] / row[figure]), row
    for name, mine in quick_run.by_scenario().items():
        measured = [o for o in objects[mine] if not o["is_reference"]]
        assert any(_is_number(o[MEASURED[name]]) for o in measured), name
    hostile = [o for o in objects[quick_run.by_scenario()["hostile"]] if o["hostile_calls"] is not None]
    assert hostile and all(_is_number(n) for o in hostile for n in o["hostile_calls"].values())


def test_json_agrees_with_the_table_of_the_same_run(quick_run: QuickRun) -> None:
    objects = orjson.loads(quick_run.stdout)
    table = _last_table(quick_run.stderr)  # with --json the tables so far go to stderr, the last one whole
    assert len(table) == len(objects)
    for shown, row in zip(table, objects, strict=True):
        assert (shown["scenario"], shown["scale"], shown["backend"]) == (row["scenario"], row["scale"], row["backend"])
        assert shown["what"].startswith(row["what"])
        assert shown["n"] == f"{row['n']} {row['n_unit']}"
        for header, key, places in (
            ("median ms", "median_ms", 1),
            ("p95 ms", "p95_ms", 1),
            ("p99 ms", "p99_ms", 1),
            ("wall s", "wall_s", 2),
            ("throughput/s", "throughput_per_s", 1),
            ("peak memory MB", "peak_memory_mb", 0),
            ("ratio", "ratio", 2),
        ):
            if row[key] is None:
                assert shown[header] == "-", (header, shown)
            else:
                assert float(shown[header].removesuffix("x")) == pytest.approx(row[key], abs=0.51 / 10**places)


def test_a_ratio_is_the_reference_figure_over_the_row_one_in_json_and_in_the_table(
    capsys: pytest.CaptureFixture,
) -> None:
    fetch = Row("cycle", "department", "-", "reference: fetch alone", 10, "participants", wall_s=2.0, failed_batches=1)
    cycle = Row(
        "cycle", "department", "sqlite", "cycle", 10, "participants", wall_s=4.0, reference=fetch, ratio_of="wall_s"
    )
    row = cycle.as_json()
    assert (row["ratio"], row["ratio_of"], row["reference"], row["reference_wall_s"]) == (
        0.5,
        "wall_s",
        "reference: fetch alone",
        2.0,
    )
    assert fetch.as_json()["failed_batches"] == 1 and cycle.as_json()["failed_batches"] is None
    print_table([cycle, fetch])
    table = _last_table(capsys.readouterr().out)
    assert [r["ratio"] for r in table] == ["0.50x", "-"]
    assert table[1]["what"] == "reference: fetch alone (1 failed batches)"


def test_the_command_line_help_names_every_scenario() -> None:
    """The scenarios `dispo bench --help` lists are written by hand: each one of SCENARIOS, and no other."""
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    listed = re.search(r"(\w+(?:, \w+)+) \(default: all\)", result.output)
    assert listed is not None, result.output
    assert sorted(listed.group(1).split(", ")) == sorted(SCENARIOS)


def test_generated_files_are_accepted_with_the_expected_report(tmp_path: Path) -> None:
    files = generate(tmp_path / "gen", "department", seed=2, n_vendors=3, finess=True)
    backend, settings = SqliteBackend(tmp_path / "index"), Settings(data_dir=tmp_path / "dispo", tokens="")
    finess = import_finess(files["finess"], backend, settings)
    counts = files["finess_counts"]
    assert finess.outcome == "switched" and finess.records_written == counts["establishments"]
    assert finess.lines_accepted == counts["establishments"] + counts["geolocalisations"]
    assert finess.rejected_by_reason == {"geolocalisation without establishment": 1}
    assert finess.warnings_by_reason == {"establishment without geolocalisation": counts["without geolocalisation"]}
    assert finess.positions_by_precision["establishment"] == counts["geolocalisations"]
    rpps = import_rpps(files["rpps"], backend, settings)
    assert rpps.outcome == "switched"
    assert rpps.rejected_by_reason == files["dirty"] and sum(files["dirty"].values()) > 0
    assert rpps.lines_read == files["lines"] and rpps.lines_accepted == files["lines"] - sum(files["dirty"].values())
    # Realistic shares: nurses outnumber doctors, GPs are a fraction of doctors, some lines have no site.
    professions = Counter(
        line.split("|")[9]
        for line in files["rpps"].read_text(encoding="utf-8").splitlines()[1:]  # type: ignore[union-attr]
    )
    assert professions["60"] > professions["10"] > files["gps"] > 0  # type: ignore[operator]
    participants = files["participants"]
    assert 0.4 * files["gps"] < participants < 2 * files["gps"]  # type: ignore[operator]
