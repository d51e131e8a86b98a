"""Smoke test of the benchmarks at the smallest scale: they run and print their figures (no timing asserted)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.generate import generate
from bench.run import SCENARIOS, Row, print_table, run
from core.settings import Settings
from dispo.cli import app as cli
from indexer.sqlite_backend import SqliteBackend
from rpps_import.pipeline import import_finess, import_rpps


def test_every_benchmark_runs_and_reports_a_ratio(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ends: list[int] = []  # how many rows there are after each scenario: run() reports after every one
    rows = run(list(SCENARIOS), "department", tmp_path, quick=True, on_rows=lambda so_far: ends.append(len(so_far)))
    assert len(ends) == len(SCENARIOS)
    # run() goes through the scenarios in the order of SCENARIOS: each one's rows follow the previous one's.
    starts = [0, *ends[:-1]]
    produced: dict[str, list[Row]] = {name: rows[a:b] for name, a, b in zip(SCENARIOS, starts, ends, strict=True)}
    for name, mine in produced.items():
        referenced = {r.scenario for r in mine if r.what.startswith("reference")}
        assert referenced, f"{name} measured no reference"
        # Each measurement with a reference measured in the same run gives its ratio to it.
        for measured in referenced:
            assert any(r.scenario == measured and r.ratio is not None and r.ratio > 0 for r in mine), (name, measured)
    print_table(rows)
    assert "Dispo benchmarks" in capsys.readouterr().out


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
