"""What an import changes, compared with the live version before the switch: two generated extractions of the Ain
differing by known additions, removals, moves and specialty changes give exactly that report, on both backends; what
concerns the SAS comes first; the report is kept with the import, whatever its outcome."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from addok_like import AddokLike
from fastapi.testclient import TestClient
from support import FINESS_FLAT, FINESS_RAW, RPPS_SAMPLE, api_settings, headers
from test_cli import env, run  # noqa: F401 - `env`, the command line's fixture

from api.app import create_app
from api.auth import Role
from bench.generate import generate, mutate_rpps
from core.records import Vendor
from core.settings import Settings
from indexer.backend import Backend, GeoQuery
from indexer.lease import LeaseLost, Leases
from indexer.lifecycle import ImportRefused, scan
from indexer.registry import participants, save_vendor
from rpps_import import history, pipeline
from rpps_import.changes import compare_sites
from rpps_import.pipeline import ImportBusy, import_finess, import_rpps, load_participations


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, object]:
    """Two extractions of the Ain and what differs between them: written once for the module (read only)."""
    tmp = tmp_path_factory.mktemp("versions")
    files = generate(tmp / "gen", "department", seed=3, n_vendors=2)
    after = tmp / "PS_LibreAcces_Personne_activite_next.txt"
    with files["participations"].open(encoding="utf-8") as fh:
        taking_part = {row["idnps"] for row in csv.DictReader(fh)}
    mutation = mutate_rpps(files["rpps"], after, seed=3, added=4, removed=6, moved=5, specialties=3, among=taking_part)
    return files, after, mutation


def test_two_extractions_give_exactly_their_differences(
    backend: Backend, settings: Settings, two_versions: tuple
) -> None:
    files, after, mutation = two_versions
    first = import_rpps(files["rpps"], backend, settings)
    assert first.outcome == "switched" and first.changes is None  # nothing live to compare with
    for vendor in files["vendors"]:
        save_vendor(backend, Vendor(vendor_id=vendor, name=vendor, base_url="https://fhir.example.invalid"))
    load_participations(files["participations"], backend, settings)
    taking_part = {p.idnps for p in participants(backend)}
    # The draw touches participants too, or the SAS alerts would go untested.
    assert mutation.removed & taking_part and {s.split(":")[0] for s in mutation.moved} & taking_part

    summary = import_rpps(after, backend, settings)
    assert summary.outcome == "switched"
    changes = summary.changes
    assert changes is not None and changes.compared_with == first.index
    assert {p.idnps for p in changes.added} == mutation.added
    assert {p.idnps for p in changes.removed} == mutation.removed
    assert changes.added_total == len(mutation.added) and changes.removed_total == len(mutation.removed)
    assert {m.site_id for m in changes.moves} == set(mutation.moved)
    for move in changes.moves:  # sites placed at their commune: the distance between the two communes
        assert move.distance_km == pytest.approx(mutation.moved[move.site_id], abs=0.05)
        assert move.commune != move.from_commune
    assert [m.distance_km for m in changes.moves] == sorted((m.distance_km for m in changes.moves), reverse=True)
    assert {(s.idnps, s.before[0], s.after[0]) for s in changes.specialties} == {
        (idnps, before, after) for idnps, (before, after) in mutation.specialties.items()
    }
    assert changes.specialty_changes == len(mutation.specialties)
    # Sites follow their practitioners: a new one's sites are added, a removed one's removed.
    assert {s.idnps for s in changes.added_sites} == mutation.added
    assert {s.idnps for s in changes.removed_sites} == mutation.removed
    assert changes.sites_added == len(changes.added_sites) and changes.sites_removed == len(changes.removed_sites)

    alerts = {(a.alert, a.participant) for a in changes.sas_alerts}
    expected = {("participant_removed", p) for p in mutation.removed & taking_part} | {
        ("site_moved", s.split(":")[0]) for s in mutation.moved if s.split(":")[0] in taking_part
    }
    assert alerts == expected
    moved_alert = next(a for a in changes.sas_alerts if a.alert == "site_moved")
    assert moved_alert.site_id in mutation.moved and moved_alert.distance_km > 5
    ain = {d.department: d for d in changes.by_department}["01"]
    counted = (ain.added, ain.removed, ain.sites_moved)
    assert counted == (len(mutation.added), len(mutation.removed), len(mutation.moved))
    assert ain.sas_alerts == len(expected)

    # Kept with the import, read back whole.
    kept = history.get_import(backend, summary.import_id)
    assert kept is not None and kept.outcome == "switched" and kept.changes == changes
    assert [r.import_id for r in history.list_imports(backend, "rpps")] == [summary.import_id, first.import_id]
    assert history.sas_alert_totals(backend)[("rpps", "participant_removed")] == len(mutation.removed & taking_part)


def test_the_same_file_again_changes_nothing(backend: Backend, settings: Settings) -> None:
    import_finess(FINESS_FLAT, backend, settings)
    import_rpps(RPPS_SAMPLE, backend, settings)
    again = import_rpps(RPPS_SAMPLE, backend, settings).changes
    assert again is not None
    assert (again.added_total, again.removed_total, again.sites_added, again.sites_removed, again.sites_moved) == (
        0,
        0,
        0,
        0,
        0,
    )
    assert again.specialty_changes == 0 and not again.sas_alerts


def test_a_refused_import_keeps_its_report_and_what_it_would_have_changed(
    backend: Backend, settings: Settings, tmp_path: Path
) -> None:
    import_rpps(RPPS_SAMPLE, backend, settings)
    halved = tmp_path / "PS_LibreAcces_Personne_activite_half.txt"
    lines = RPPS_SAMPLE.read_text(encoding="utf-8").splitlines()
    halved.write_text("\n".join(lines[: len(lines) // 2]) + "\n", encoding="utf-8")
    with pytest.raises(ImportRefused) as refused:
        import_rpps(halved, backend, settings)
    kept = history.get_import(backend, refused.value.summary.import_id)
    assert kept is not None and kept.outcome == "refused" and "fewer" in (kept.summary.message or "")
    assert kept.changes is not None and kept.changes.removed_total > 0  # what it would have removed
    assert history.sas_alert_totals(backend)[("rpps", "participant_removed")] == 0  # a refused import alerts nobody


def test_a_file_older_than_the_live_one_is_refused(backend: Backend, settings: Settings, tmp_path: Path) -> None:
    newer = tmp_path / "etalab-cs1100507-stock-20260512-0334.csv"
    older = tmp_path / "etalab-cs1100507-stock-20251201-0334.csv"
    shutil.copy(FINESS_RAW, newer)
    shutil.copy(FINESS_FLAT, older)
    assert import_finess(newer, backend, settings).file.published.isoformat().startswith("2026-05-12T03:34")
    live = backend.live_index("structures")
    with pytest.raises(ImportRefused, match="before the live file"):
        import_finess(older, backend, settings)
    assert backend.live_index("structures") == live
    (refused, _) = history.list_imports(backend, "finess")
    assert refused.outcome == "refused" and refused.summary.file.name == older.name
    assert import_finess(older, backend, settings, force=True).outcome == "switched"  # going back, knowingly


def test_finess_imports_report_establishments_opened_and_closed(
    backend: Backend, settings: Settings, tmp_path: Path
) -> None:
    import_finess(FINESS_FLAT, backend, settings)
    lines = FINESS_FLAT.read_text(encoding="utf-8").splitlines()
    fewer = tmp_path / "etalab_flat_fewer_20261201.csv"
    fewer.write_text("\n".join([lines[0], *lines[2:]]) + "\n", encoding="utf-8")
    changes = import_finess(fewer, backend, settings).changes
    assert changes is not None and changes.removed_total == 1 and changes.added_total == 0
    (closed,) = changes.removed_sites
    assert closed.site_id == lines[1].split(";")[0] == "010000024"


def test_one_import_of_a_kind_at_a_time(backend: Backend, settings: Settings) -> None:
    running = Leases(backend, settings.import_lease_s)
    assert running.claim("import:rpps")
    with pytest.raises(ImportBusy, match="already running"):
        import_rpps(RPPS_SAMPLE, backend, settings)
    assert backend.live_index("practice_sites") is None
    assert import_finess(FINESS_FLAT, backend, settings).outcome == "switched"  # another kind goes ahead
    running.release("import:rpps")
    assert import_rpps(RPPS_SAMPLE, backend, settings).outcome == "switched"


def test_maintainers_read_the_imports_their_changes_and_rejected_lines(
    backend: Backend, settings: Settings, two_versions: tuple
) -> None:
    files, after, mutation = two_versions
    import_rpps(files["rpps"], backend, settings)
    for vendor in files["vendors"]:
        save_vendor(backend, Vendor(vendor_id=vendor, name=vendor, base_url="https://fhir.example.invalid"))
    load_participations(files["participations"], backend, settings)
    second = import_rpps(after, backend, settings)
    with TestClient(create_app(api_settings(settings), backend)) as client:
        listed = client.get("/v1/imports", params={"kind": "rpps"}, headers=headers(Role.maintainer))
        assert listed.status_code == 200, listed.text
        latest, first = listed.json()
        assert latest["summary"]["import_id"] == second.import_id and latest["summary"]["changes"] is None
        assert (latest["added"], latest["removed"]) == (len(mutation.added), len(mutation.removed))
        assert latest["sas_alerts"] == len(second.changes.sas_alerts) > 0 and first["sas_alerts"] is None
        one = client.get(f"/v1/imports/{second.import_id}", headers=headers(Role.maintainer)).json()
        assert one["changes"]["sas_alerts"][0]["alert"] in ("participant_removed", "site_moved")
        assert {p["idnps"] for p in one["changes"]["removed"]} == mutation.removed
        lines = client.get(f"/v1/imports/{second.import_id}/rejected.csv", headers=headers(Role.maintainer))
        assert lines.status_code == 200 and lines.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(lines.text.splitlines()))
        assert len([r for r in rows if r["severity"] == "rejected"]) == second.lines_rejected > 0
        missing = client.get("/v1/imports/rpps-20000101T000000000000Z", headers=headers(Role.maintainer))
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        metrics = client.get("/metrics", headers=headers(Role.maintainer)).text
        removed = len([a for a in second.changes.sas_alerts if a.alert == "participant_removed"])
        assert f'dispo_import_sas_alerts_total{{alert="participant_removed",kind="rpps"}} {removed:.1f}' in metrics


@pytest.mark.usefixtures("env")
def test_the_command_line_writes_the_next_extraction_and_prints_its_changes(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    assert run("generate", "--out", str(out), "--seed", "2", "--vendors", "1", "--no-finess").exit_code == 0
    first = out / "PS_LibreAcces_Personne_activite_department_2.txt"
    assert run("import", "rpps", str(first)).exit_code == 0
    made = run("generate", "--next-of", str(first), "--out", str(out), "--seed", "2", "--changes", "3")
    assert made.exit_code == 0, made.output
    assert "3 added, 3 removed (0 taking part), 3 sites moved, 3 specialties changed" in made.output
    imported = run("import", "rpps", str(out / "PS_LibreAcces_Personne_activite_department_2_next.txt"))
    assert imported.exit_code == 0, imported.output
    assert "No SAS alert" in imported.output and "Moves (farthest first)" in imported.output
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in imported.output.splitlines()
        if line.count("│") == 3
    }
    assert rows["added"] == "3" and rows["removed"] == "3" and rows["sites moved"] == "3"


def test_sites_placed_otherwise_at_the_same_address_have_not_moved(
    backend: Backend, settings: Settings, addok: str
) -> None:
    """The geocoder away for one import: its sites fall back to their communes, at the same addresses. Neither that
    import nor the next, with the geocoder back, reports a move (nor, for participants, an alert)."""
    geocoded = settings.model_copy(update={"geocoder_url": addok})
    AddokLike.north_deg = 0.03  # house numbers 3 km from their commune's centre: farther than a move
    import_finess(FINESS_FLAT, backend, settings)
    first = import_rpps(RPPS_SAMPLE, backend, geocoded)
    placed = {
        h.doc["position"]["precision"] for h in scan(backend, "practice_sites", GeoQuery()) if h.doc.get("position")
    }
    assert "housenumber" in placed
    away = import_rpps(RPPS_SAMPLE, backend, settings).changes
    back = import_rpps(RPPS_SAMPLE, backend, geocoded).changes
    assert first.changes is None and away is not None and back is not None
    assert (away.sites_moved, back.sites_moved) == (0, 0) and not away.sas_alerts


def test_the_farthest_moves_are_listed_whatever_the_cap(
    backend: Backend, settings: Settings, two_versions: tuple
) -> None:
    files, after, mutation = two_versions
    first = import_rpps(files["rpps"], backend, settings)
    second = import_rpps(after, backend, settings)
    capped = compare_sites(backend, first.index, second.index, listed=2)
    farthest = sorted(mutation.moved, key=lambda site: -mutation.moved[site])[:2]
    assert [m.site_id for m in capped.moves] == farthest and capped.sites_moved == len(mutation.moved)


def test_a_comparison_that_fails_leaves_the_import_standing(
    backend: Backend, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_rpps(RPPS_SAMPLE, backend, settings)

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("disk read error")

    monkeypatch.setattr(pipeline, "compare_sites", broken)
    summary = import_rpps(RPPS_SAMPLE, backend, settings)
    assert summary.outcome == "switched" and summary.changes is None
    assert summary.warnings_by_reason["change report failed"] == 1


def test_an_import_that_lost_its_lease_does_not_switch(backend: Backend, settings: Settings) -> None:
    import_rpps(RPPS_SAMPLE, backend, settings)
    live = backend.live_index("practice_sites")

    def lost() -> None:
        raise LeaseLost("lease import:rpps is no longer held")

    with pytest.raises(LeaseLost):
        import_rpps(RPPS_SAMPLE, backend, settings, guard=lost)
    assert backend.live_index("practice_sites") == live
    (failed, _) = history.list_imports(backend, "rpps")
    assert failed.outcome == "failed" and "LeaseLost" in (failed.summary.message or "")
