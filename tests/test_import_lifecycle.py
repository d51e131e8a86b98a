"""Imports on both backends: new version then atomic switch; bad input never touches the live index."""

from __future__ import annotations

import multiprocessing
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import FINESS_FLAT, FINESS_RAW, RPPS_SAMPLE

from core.report import FileRejected, ImportReport
from core.settings import Settings
from indexer.backend import Backend, GeoQuery
from indexer.es_backend import ElasticsearchBackend
from indexer.lifecycle import ImportRefused, publish
from indexer.sqlite_backend import SqliteBackend
from indexer.writer import WriterFailed
from rpps_import.pipeline import import_finess, import_rpps

RPPS_LINES = RPPS_SAMPLE.read_text(encoding="utf-8").splitlines()
HEADER, ROWS = RPPS_LINES[0], RPPS_LINES[1:]


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def live_state(backend: Backend) -> tuple[str | None, int]:
    return backend.live_index("practice_sites"), backend.count("practice_sites")


def test_sample_import_places_sites_and_reports_everything(loaded: Backend, settings: Settings) -> None:
    assert loaded.count("practice_sites") == 22
    assert loaded.count("structures") == 100
    # A site that is a FINESS establishment takes the establishment's coordinates.
    site = loaded.get("practice_sites", "0019402726:F010000032:S")
    structure = loaded.get("structures", "010000032")
    assert site is not None and structure is not None
    assert site["position"]["precision"] == "establishment"
    assert site["location"] == structure["location"]
    # A site with only an INSEE code sits on its commune's centroid.
    nancy = loaded.get("practice_sites", "0019200575:C01920057500:L")  # Mionnay, 01390, no INSEE code
    assert nancy is not None and nancy["position"]["precision"] in ("municipality", "postcode")
    # Sites without structure have no position.
    assert loaded.count("practice_sites", {"precision": ["establishment"]}) == 4
    reports = list((settings.data_dir / "reports").glob("rpps-*.summary.json"))
    assert len(reports) == 1


def test_reimport_switches_to_a_new_version_and_keeps_one_previous(loaded: Backend, settings: Settings) -> None:
    first = loaded.live_index("practice_sites")
    summary = import_rpps(RPPS_SAMPLE, loaded, settings)
    assert summary.outcome == "switched"
    second = loaded.live_index("practice_sites")
    assert second != first
    import_rpps(RPPS_SAMPLE, loaded, settings)
    versions = loaded.versions("practice_sites")
    assert first not in versions and second in versions and len(versions) == 2
    assert loaded.count("practice_sites") == 22


BAD_RPPS = {
    "empty file": (b"", "the file is empty"),
    "missing header column": (
        HEADER.replace("Code profession|", "") + "\n" + "\n".join(ROWS) + "\n",
        "header is missing 1 column(s): Code profession",
    ),
    "wrong header": ("a|b|c|\n1|2|3|\n", "header is missing"),
    "wrong separator": (
        HEADER.replace("|", ";") + "\n" + "\n".join(r.replace("|", ";") for r in ROWS) + "\n",
        "wrong separator",
    ),
    "latin-1 file": (
        (HEADER + "\n" + "\n".join(ROWS) + "\n").encode("latin-1", errors="replace"),
        "the header is not UTF-8",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RPPS))
def test_bad_rpps_files_leave_the_live_index_untouched(
    loaded: Backend, settings: Settings, tmp_path: Path, case: str
) -> None:
    content, message = BAD_RPPS[case]
    before = live_state(loaded)
    path = write(tmp_path, "bad.txt", content)
    with pytest.raises(FileRejected, match=re.escape(message)):
        import_rpps(path, loaded, settings)
    assert live_state(loaded) == before
    assert loaded.versions("practice_sites") == [before[0]]


def test_a_truncated_last_line_rejects_that_line_only(loaded: Backend, settings: Settings, tmp_path: Path) -> None:
    path = write(tmp_path, "truncated.txt", (HEADER + "\n" + "\n".join(ROWS))[:-40])
    summary = import_rpps(path, loaded, settings)
    assert summary.rejected_by_reason == {"truncated line": 1}
    assert summary.outcome == "switched" and summary.lines_accepted == 21
    assert loaded.count("practice_sites") == 21


def test_non_utf8_bytes_in_a_line_reject_that_line(loaded: Backend, settings: Settings, tmp_path: Path) -> None:
    rows = [r.encode("utf-8") for r in ROWS]
    rows[2] = rows[2].replace(b"PETITGUYOT", b"PETITGUY\xd4T")
    path = write(tmp_path, "bytes.txt", HEADER.encode() + b"\n" + b"\n".join(rows) + b"\n")
    summary = import_rpps(path, loaded, settings)
    assert summary.rejected_by_reason == {"not UTF-8": 1}
    problems = Path(summary.report_file or "").read_text(encoding="utf-8")
    assert "4,rejected,not UTF-8,byte d4 at column" in problems
    assert summary.outcome == "switched" and summary.records_written == 21


def test_duplicate_lines_are_rejected_with_the_first_line_number(
    loaded: Backend, settings: Settings, tmp_path: Path
) -> None:
    path = write(tmp_path, "dups.txt", "\n".join([HEADER, *ROWS, ROWS[4], ROWS[4]]) + "\n")
    summary = import_rpps(path, loaded, settings)
    assert summary.rejected_by_reason == {"duplicate line": 2}
    assert "24,rejected,duplicate line,same as line 6" in Path(summary.report_file or "").read_text(encoding="utf-8")
    assert summary.records_written == 22


def test_a_much_smaller_file_is_refused_unless_forced(loaded: Backend, settings: Settings, tmp_path: Path) -> None:
    before = live_state(loaded)
    smaller = write(tmp_path, "smaller.txt", "\n".join([HEADER, *ROWS[: int(len(ROWS) * 0.7)]]) + "\n")
    with pytest.raises(ImportRefused, match="fewer") as refused:
        import_rpps(smaller, loaded, settings)
    assert refused.value.summary.outcome == "refused"
    assert live_state(loaded) == before
    assert loaded.versions("practice_sites") == [before[0]]
    summary = import_rpps(smaller, loaded, settings, force=True)
    assert summary.outcome == "switched"
    assert loaded.count("practice_sites") == 15


def test_a_file_with_no_good_line_is_refused(loaded: Backend, settings: Settings, tmp_path: Path) -> None:
    before = live_state(loaded)
    path = write(tmp_path, "nothing.txt", HEADER + "\n" + "x|y|z\n")
    with pytest.raises(ImportRefused, match="no record was accepted"):
        import_rpps(path, loaded, settings, force=True)
    assert live_state(loaded) == before


def test_unknown_coordinate_system_and_coordinates_outside_france(
    backend: Backend, settings: Settings, tmp_path: Path
) -> None:
    import_finess(FINESS_RAW, backend, settings)
    before = backend.live_index("structures")
    text = FINESS_RAW.read_text(encoding="utf-8")
    text = text.replace("EPSG:2154 RGF93 / Lambert-93 (Métropole)", "LAMBERT_II_ETENDU")
    text = text.replace("657242.9;1795384.4", "100.0;100.0")  # UTM 20N but in the ocean off Africa
    text = text.replace("geolocalisation;970100012", "geolocalisation;970100400")  # attach to a known one
    path = write(tmp_path, "coords.csv", text)
    summary = import_finess(path, backend, settings)
    assert summary.warnings_by_reason["unknown coordinate system"] == 1
    assert summary.warnings_by_reason["coordinates outside France"] == 1
    problems = Path(summary.report_file or "").read_text(encoding="utf-8")
    assert '16,warning,unknown coordinate system,"010000024: unknown coordinate system' in problems
    assert '17,warning,coordinates outside France,"970100400: coordinates outside France' in problems
    # The establishments stay, placed on their commune instead.
    fleyriat = backend.get("structures", "010000024")
    assert fleyriat is not None and fleyriat["position"]["precision"] == "municipality"
    assert backend.live_index("structures") != before


def test_bad_finess_files_are_rejected_whole(backend: Backend, settings: Settings, tmp_path: Path) -> None:
    import_finess(FINESS_FLAT, backend, settings)
    before = (backend.live_index("structures"), backend.count("structures"))
    for name, content, message in [
        ("empty.csv", b"", "the file is empty"),
        ("comma.csv", FINESS_RAW.read_text(encoding="utf-8").replace(";", ","), "wrong separator"),
        ("other.csv", "hello;world\n1;2\n", "not a FINESS etalab file"),
        ("flatbad.csv", "nofinesset;rs\n010000024;X\n", "missing column"),
    ]:
        with pytest.raises(FileRejected, match=re.escape(message)):
            import_finess(write(tmp_path, name, content), backend, settings)
        assert (backend.live_index("structures"), backend.count("structures")) == before


NEAR_BOURG = GeoQuery(lat=46.2, lon=5.22, radius_km=50, limit=50)


def search_until_stopped(where: tuple[str, str, str], stop: Any, searches: Any, results: Any) -> None:
    """Searches the live sites again and again from a process of its own, as the API does while the command
    line imports, until told to stop; sends back how often each total was seen and the first error."""
    kind, location, prefix = where
    backend = SqliteBackend(Path(location)) if kind == "sqlite" else ElasticsearchBackend(location, prefix=prefix)
    totals: Counter[int] = Counter()
    error = None
    while not stop.is_set():
        try:
            totals[backend.search("practice_sites", NEAR_BOURG).total] += 1
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        with searches.get_lock():
            searches.value += 1
    results.put((dict(totals), error))


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_searches_during_an_import_never_fail(loaded: Backend, settings: Settings, tmp_path: Path) -> None:
    big = write(tmp_path, "bigger.txt", "\n".join([HEADER, *ROWS]) + "\n")
    if isinstance(loaded, SqliteBackend):
        where = ("sqlite", str(loaded.root), "")
    else:
        assert isinstance(loaded, ElasticsearchBackend)
        where = ("elasticsearch", loaded.url, loaded.prefix)
    # Another process, as the API is, and spawned: it shares nothing with this one but the index, and no thread
    # of this process is inside SQLite when an import forks its writer (a fork then can deadlock the child).
    ctx = multiprocessing.get_context("spawn")
    stop, searches, results = ctx.Event(), ctx.Value("i", 0), ctx.Queue()
    searcher = ctx.Process(target=search_until_stopped, args=(where, stop, searches, results), daemon=True)
    searcher.start()
    try:
        # The imports start once searches run, and searches go on until the imports are over.
        assert wait_for(lambda: searches.value > 0 or not searcher.is_alive(), 60), "the searcher never searched"
        for _ in range(3):
            import_rpps(big, loaded, settings)
        after_imports = searches.value
        wait_for(lambda: searches.value > after_imports or not searcher.is_alive(), 30)
    finally:
        stop.set()
        totals, error = results.get(timeout=60)
        searcher.join(timeout=60)
    assert error is None
    assert searches.value > after_imports > 0
    assert set(totals) == {8}  # every search saw a whole version: never an empty or a half-written one


def test_a_write_failing_midway_drops_the_new_version_and_keeps_the_live_one(loaded: Backend) -> None:
    live = loaded.live_index("practice_sites")
    before = loaded.count("practice_sites")
    versions = loaded.versions("practice_sites")
    good = [{"site_id": f"s{i}", "practitioner": {"idnps": f"8{i:011d}"}} for i in range(5)]
    broken = [{"practitioner": {"idnps": "800000000099"}}]  # no id field: the backend cannot store it

    def batches():
        yield good
        yield broken
        yield good

    with pytest.raises((WriterFailed, KeyError, ValueError)):
        publish(loaded, "practice_sites", batches(), ImportReport("rpps", "test", None), force=True)
    assert loaded.live_index("practice_sites") == live and loaded.count("practice_sites") == before
    assert loaded.versions("practice_sites") == versions  # the failed version is gone
