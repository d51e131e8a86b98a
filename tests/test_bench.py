"""Smoke test of the benchmarks at the smallest scale: they run and print their figures (no timing asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.run import SCENARIOS, print_table, run


@pytest.mark.parametrize("scenario", ["import", "embedded"])
def test_benchmarks_run_and_report_a_ratio(scenario: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = run([scenario], "department", tmp_path)
    assert rows and rows[0].ratio is not None and rows[0].ratio > 0
    assert any(r.what.startswith("reference") for r in rows)
    print_table(rows)
    assert "Dispo benchmarks" in capsys.readouterr().out


def test_every_scenario_is_listed() -> None:
    assert set(SCENARIOS) == {"import", "search", "aggregate", "embedded"}
