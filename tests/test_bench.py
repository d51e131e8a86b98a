"""Smoke test of the benchmarks at the smallest scale: they run and print their figures (no timing asserted)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.run import SCENARIOS, print_table, run


def test_every_benchmark_runs_and_reports_a_ratio(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = run(list(SCENARIOS), "department", tmp_path, quick=True)
    for scenario in (
        "import",
        "search http 16 clients",
        "first verified page, dense, open agendas",
        "first verified page, sparse, 20% of agendas open",
        "aggregation cycle",
        "embedded dense query",
    ):
        mine = [r for r in rows if r.scenario == scenario]
        assert any(r.what.startswith("reference") for r in mine), scenario
        assert any(r.ratio is not None and r.ratio > 0 for r in mine), scenario
    print_table(rows)
    assert "Dispo benchmarks" in capsys.readouterr().out


def test_every_scenario_is_listed() -> None:
    assert set(SCENARIOS) == {"import", "search", "verify", "aggregate", "embedded"}


def test_generated_files_are_accepted_with_the_expected_report(tmp_path: Path) -> None:
    from bench.generate import generate
    from core.settings import Settings
    from indexer.sqlite_backend import SqliteBackend
    from rpps_import.pipeline import import_finess, import_rpps

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
