"""Fetching the national files from a server on loopback serving the real samples: plain and zipped, interrupted then
resumed, too large, corrupted, older than the live file; the command line and the scheduler on top; the SAS alerts
announced to a webhook."""

from __future__ import annotations

import asyncio
import hashlib
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from file_server import FileServer, serving
from support import FINESS_FLAT, FINESS_RAW, RPPS_SAMPLE
from test_cli import env, run  # noqa: F401 - the fixture

from aggregation.scheduler import Aggregator
from core.geo import PARIS
from core.report import ChangeReport, ImportSummary, SasAlert
from core.settings import Settings
from indexer.backend import Backend
from indexer.lease import Leases
from rpps_import import alerts, history, scheduled
from rpps_import.fetch import FetchError, fetch, published_from_name


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def zipped(tmp_path: Path, member: str, source: Path) -> Path:
    archive = tmp_path / f"{Path(member).stem}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(source, member)
        zf.writestr("LISEZMOI.txt", "Extraction en libre accès")
    return archive


def test_a_plain_file_is_fetched_checked_and_dated(settings: Settings) -> None:
    with serving({"/PS_LibreAcces_Personne_activite_sample.txt": RPPS_SAMPLE}) as base:
        done = fetch(f"{base}/PS_LibreAcces_Personne_activite_sample.txt", "rpps", settings, sha256=sha(RPPS_SAMPLE))
    assert done.path.read_bytes() == RPPS_SAMPLE.read_bytes()
    assert done.source.sha256 == sha(RPPS_SAMPLE) and done.source.size == RPPS_SAMPLE.stat().st_size
    # No date in its name: the server's Last-Modified.
    assert done.source.published == datetime(2026, 12, 1, 4, 30, tzinfo=UTC)
    assert done.path.parent == settings.data_dir / "downloads" / "rpps"
    assert FileServer.requests[0]["range"] is None


def test_the_published_zip_is_unpacked_and_dated_by_its_data_file(settings: Settings, tmp_path: Path) -> None:
    member = "PS_LibreAcces_Personne_activite_202612010845.txt"
    archive = zipped(tmp_path, member, RPPS_SAMPLE)
    with serving({"/extraction.zip": archive}) as base:
        done = fetch(f"{base}/extraction.zip", "rpps", settings)
    assert done.path.name.endswith(member) and done.path.read_bytes() == RPPS_SAMPLE.read_bytes()
    assert done.source.sha256 == sha(archive)  # what was downloaded
    assert done.source.published == datetime(2026, 12, 1, 8, 45, tzinfo=UTC)


def test_an_interrupted_download_resumes_where_it_stopped(settings: Settings) -> None:
    with serving({"/f.csv": FINESS_RAW}) as base:
        FileServer.cut_after = 4000
        with pytest.raises(FetchError) as cut:
            fetch(f"{base}/f.csv", "finess", settings)
        assert "resumes" in (cut.value.hint or "")
        part = settings.data_dir / "downloads" / "finess" / "f.csv.part"
        assert part.stat().st_size == 4000
        done = fetch(f"{base}/f.csv", "finess", settings)
    assert [r["range"] for r in FileServer.requests] == [None, "bytes=4000-"]
    assert done.path.read_bytes() == FINESS_RAW.read_bytes() and not part.exists()


def test_a_server_that_cannot_resume_sends_the_whole_file_again(settings: Settings) -> None:
    with serving({"/f.csv": FINESS_RAW}) as base:
        FileServer.cut_after, FileServer.ranges = 3000, False
        with pytest.raises(FetchError):
            fetch(f"{base}/f.csv", "finess", settings)
        done = fetch(f"{base}/f.csv", "finess", settings)
    assert done.path.read_bytes() == FINESS_RAW.read_bytes()


def test_a_file_replaced_since_the_cut_is_fetched_whole(settings: Settings, tmp_path: Path) -> None:
    served = tmp_path / "f.csv"
    served.write_bytes(FINESS_FLAT.read_bytes())
    with serving({"/f.csv": served}) as base:
        FileServer.cut_after = 3000
        with pytest.raises(FetchError):
            fetch(f"{base}/f.csv", "finess", settings)
        # The next day's file at the same address: resuming yesterday's bytes would mix two files.
        served.write_bytes(FINESS_RAW.read_bytes())
        FileServer.last_modified = "Wed, 02 Dec 2026 04:30:00 GMT"
        done = fetch(f"{base}/f.csv", "finess", settings)
    assert [r["range"] for r in FileServer.requests] == [None, "bytes=3000-"]
    assert done.path.read_bytes() == FINESS_RAW.read_bytes()
    assert done.source.published == datetime(2026, 12, 2, 4, 30, tzinfo=UTC)


def test_too_large_corrupted_or_unsafe_downloads_are_refused(settings: Settings, tmp_path: Path) -> None:
    small = settings.model_copy(update={"import_max_bytes": 2000})
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.write(FINESS_RAW, "etalab-cs1100507-stock-20261201-0334.csv")
        zf.write(FINESS_FLAT, "etalab-flat-20261201.csv")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("etalab-cs1100507-stock-20261201-0334.csv", "0" * 50_000)  # a few hundred bytes zipped
    with serving({"/f.csv": FINESS_RAW, "/bomb.zip": bomb, "/two.zip": two}) as base:
        with pytest.raises(FetchError, match="more than the 2,000"):
            fetch(f"{base}/f.csv", "finess", small)
        assert not list((settings.data_dir / "downloads" / "finess").glob("*.part"))  # nothing kept to resume
        with pytest.raises(FetchError, match="unpacks to more than"):
            fetch(f"{base}/bomb.zip", "finess", settings.model_copy(update={"import_max_bytes": 20_000}))
        with pytest.raises(FetchError, match="SHA-256"):
            fetch(f"{base}/f.csv", "finess", settings, sha256="0" * 64)
        with pytest.raises(FetchError, match="2 finess data files"):
            fetch(f"{base}/two.zip", "finess", settings)
        with pytest.raises(FetchError, match="404"):
            fetch(f"{base}/missing.csv", "finess", settings)
    broken = zipped(tmp_path, "etalab-cs1100507-stock-20261201-0334.csv", FINESS_RAW)
    data = bytearray(broken.read_bytes())
    data[200:260] = b"\xff" * 60  # inside the member's compressed bytes: its checksum no longer matches
    broken.write_bytes(bytes(data))
    with serving({"/broken.zip": broken}) as base, pytest.raises(FetchError, match="the zip cannot be read"):
        fetch(f"{base}/broken.zip", "finess", settings)
    assert not [p for p in (settings.data_dir / "downloads" / "finess").iterdir() if "etalab" in p.name]
    with pytest.raises(FetchError, match="not an HTTPS address"):
        fetch("http://files.example.org/f.csv", "finess", settings)


def test_only_the_latest_downloads_are_kept(settings: Settings) -> None:
    keep = settings.model_copy(update={"import_keep_files": 2})
    with serving({"/f.csv": FINESS_RAW}) as base:
        paths = [fetch(f"{base}/f.csv", "finess", keep).path for _ in range(3)]
    kept = sorted(p.name for p in (settings.data_dir / "downloads" / "finess").iterdir())
    assert kept == sorted(p.name for p in paths[1:])


def test_dates_are_read_from_the_registers_file_names() -> None:
    assert published_from_name("PS_LibreAcces_Personne_activite_202612010845.txt") == datetime(
        2026, 12, 1, 8, 45, tzinfo=UTC
    )
    assert published_from_name("etalab-cs1100507-stock-20261201-0334.csv") == datetime(2026, 12, 1, 3, 34, tzinfo=UTC)
    assert published_from_name("etalab_flat_sample_dep01_20201231.csv") == datetime(2020, 12, 31, tzinfo=UTC)
    assert published_from_name("PS_LibreAcces_Personne_activite_sample.txt") is None
    assert published_from_name("export_20261345.csv") is None  # not a date


@pytest.mark.usefixtures("env")
def test_the_command_line_fetches_imports_and_lists_with_the_changes(tmp_path: Path) -> None:
    newer = zipped(tmp_path, "etalab-cs1100507-stock-20261201-0334.csv", FINESS_FLAT)
    older = tmp_path / "etalab-cs1100507-stock-20251101-0334.csv"
    fewer = FINESS_FLAT.read_text(encoding="utf-8").splitlines()
    older.write_text("\n".join([fewer[0], *fewer[2:]]) + "\n", encoding="utf-8")
    with serving({"/finess.zip": newer, f"/{older.name}": older}) as base:
        first = run("import", "finess", "--url", f"{base}/finess.zip")
        assert first.exit_code == 0, first.output
        assert "switched" in first.output and "2026-12-01 03:34" in first.output
        refused = run("import", "finess", "--url", f"{base}/{older.name}")
        assert refused.exit_code == 3 and "before the live file" in refused.output
        forced = run("import", "finess", "--url", f"{base}/{older.name}", "--force")
        assert forced.exit_code == 0, forced.output
        assert "Changes" in forced.output and "No SAS alert" in forced.output
    listed = run("imports", "list", "--json")
    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.output)
    assert [r["outcome"] for r in records] == ["switched", "refused", "switched"]
    shown = run("imports", "show", records[0]["import_id"], "--json")
    report = json.loads(shown.output)
    assert (
        report["changes"]["removed_by_profession"] and report["changes"]["removed_sites"][0]["site_id"] == "010000024"
    )
    assert run("imports", "show", "finess-20000101T000000000000Z").exit_code == 1
    nothing = run("import", "rpps")
    assert nothing.exit_code == 2 and "DISPO_RPPS_URL" in nothing.output


def test_the_scheduler_imports_at_its_times_and_one_at_a_time(backend: Backend, settings: Settings) -> None:
    with serving({"/finess.csv": FINESS_FLAT, "/rpps.txt": RPPS_SAMPLE}) as base:
        configured = settings.model_copy(
            update={
                "rpps_url": f"{base}/rpps.txt",
                "finess_url": f"{base}/finess.csv",
                "rpps_import_at": "05:30",
                "finess_import_day": 5,
                "finess_import_at": "06:45",
            }
        )
        aggregator = Aggregator(backend, configured)

        async def on_schedule() -> list[datetime]:
            scheduler = AsyncIOScheduler(timezone=UTC)
            assert aggregator.add_import_jobs(scheduler) == ["import:rpps", "import:finess"]
            scheduler.start(paused=True)
            try:
                times = [
                    scheduler.get_job(j).trigger.get_next_fire_time(None, datetime.now(UTC))
                    for j in ("import:rpps", "import:finess")
                ]
                # Another process imports RPPS: the scheduled one does not start.
                other = Leases(backend, configured.import_lease_s)
                assert other.claim("import:rpps")
                await aggregator.scheduled_import("rpps")
                assert backend.live_index("practice_sites") is None
                other.release("import:rpps")
                for job in ("import:finess", "import:rpps"):  # FINESS first: practice sites take its positions
                    scheduler.get_job(job).modify(next_run_time=datetime.now(UTC))
                    scheduler.resume()
                    await wait_for(lambda j=job: history.list_imports(backend, j.split(":")[1]))
                    scheduler.pause()
                return times
            finally:
                scheduler.shutdown(wait=False)

        rpps_at, finess_at = asyncio.run(on_schedule())
    assert (rpps_at.astimezone(PARIS).hour, rpps_at.astimezone(PARIS).minute) == (5, 30)
    finess_local = finess_at.astimezone(PARIS)
    assert (finess_local.day, finess_local.hour, finess_local.minute) == (5, 6, 45)
    assert [r.outcome for r in history.list_imports(backend)] == ["switched", "switched"]
    assert backend.live_index("practice_sites") and backend.live_index("structures")
    # The same file the next day (the publisher has not replaced it): downloaded, seen to be the live one, left.
    with serving({"/finess.csv": FINESS_FLAT}) as base:
        same = settings.model_copy(update={"finess_url": f"{base}/finess.csv"})
        assert scheduled.run_import("finess", backend, same) is None
    assert len(history.list_imports(backend)) == 2


async def wait_for(found, timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout_s
    while not await asyncio.to_thread(found):
        assert loop.time() < until, "the scheduled import did not run"
        await asyncio.sleep(0.2)


def test_sas_alerts_are_announced_to_the_webhook_and_retried(settings: Settings) -> None:
    summary = ImportSummary(kind="rpps", source="x", import_id="rpps-20261201T053000000000Z", outcome="switched")
    summary.changes = ChangeReport(
        compared_with="v1",
        sas_alerts=[
            SasAlert(alert="participant_removed", participant="810000000001", department="01"),
            SasAlert(alert="site_moved", participant="810000000002", site_id="810000000002:C1:L", distance_km=7.5),
        ],
    )
    with serving({}) as base:
        hooked = settings.model_copy(update={"import_webhook_url": f"{base}/hook"})
        FileServer.post_status = [503]  # the first try fails, the next is taken
        assert alerts.announce(hooked, summary) is True
        (body,) = [json.loads(b) for b in FileServer.posted]
        assert body["sas_alerts"] == {"participant_removed": 1, "site_moved": 1}
        assert body["alerts"][1]["distance_km"] == 7.5 and body["import_id"] == summary.import_id
        refused = summary.model_copy(update={"outcome": "refused"})
        assert alerts.announce(hooked, refused) is False  # a refused import changed nothing
        FileServer.post_status = [400]
        assert alerts.announce(hooked, summary) is False  # refused by the webhook: logged, the import stands
    assert alerts.announce(settings, summary) is False  # no webhook
