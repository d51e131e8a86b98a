"""Coverage for analysts on both backends, on a generated Ain directory aggregated from three real sandbox
vendors: snapshots against a recomputation from the raw index, privacy of search outcomes, tables,
exports, retention, the map and the chart, the API and the CLI."""

from __future__ import annotations

import asyncio
import copy
import struct
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from support import BACKENDS, es_url
from typer.testing import CliRunner

from aggregation.scheduler import Aggregator
from analytics import tables
from analytics.areas import departments
from analytics.exports import dictionary_markdown, export_all, read_back
from analytics.snapshots import HORIZONS, OUTCOMES, take_snapshot
from analytics.snapshots import KIND as COVERAGE
from api.app import create_app
from api.auth import Role, new_token
from bench.generate import generate
from booking.appointments import record
from core.geo import gazetteer
from core.records import (
    Appointment,
    AppointmentStatus,
    Orientation,
    OrientationKind,
    OrientationOutcome,
    SearchOutcome,
    StatusChange,
)
from core.settings import Settings
from dispo.cli import app
from editor_sandbox.fleet import start_fleet
from indexer.backend import Backend
from indexer.factory import make_backend
from indexer.lifecycle import ensure_live, iterate_all
from mappings import definition
from rpps_import.pipeline import import_rpps
from search.engine import rule_for

BOURG = (46.2052, 5.2255)
STREET = "12 rue de la République 01000 Bourg-en-Bresse"


@dataclass
class World:
    backend: Backend
    settings: Settings
    tokens: dict[str, str]  # role -> token
    env: dict[str, str]  # what the CLI needs to open the same index


@pytest.fixture(scope="module", params=BACKENDS)
def aggregated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The directory and the slots of three vendors after one cycle, built once per backend; what a test writes
    on top of it is forgotten before the next one (see `world`)."""
    tmp = tmp_path_factory.mktemp(f"coverage-{request.param}")
    tokens, entries = {}, []
    for role in (Role.regulator, Role.analyst, Role.maintainer):
        tokens[role.value], entry = new_token(role, f"{role.value}-cov")
        entries.append(entry)
    env = {"DISPO_DATA_DIR": str(tmp / "dispo"), "DISPO_BACKEND": request.param}
    if request.param == "elasticsearch":
        env |= {"DISPO_ES_URL": es_url() or "", "DISPO_INDEX_PREFIX": f"dispotest-{uuid.uuid4().hex[:10]}"}
    settings = Settings(
        data_dir=tmp / "dispo",
        backend=request.param,
        es_url=env.get("DISPO_ES_URL"),
        index_prefix=env.get("DISPO_INDEX_PREFIX", "dispo"),
        tokens=",".join(entries),
    )
    backend = make_backend(settings)
    files = generate(tmp / "gen", "department", seed=3, n_vendors=3)
    import_rpps(files["rpps"], backend, settings)
    servers = start_fleet(backend, 3, participations=files["participations"], settings=settings, churn_rate=0.0)
    asyncio.run(Aggregator(backend, settings).run_once())
    yield World(backend, settings, tokens, env)
    for server in servers:
        server.stop()
    if request.param == "elasticsearch":
        backend.delete_all()  # type: ignore[attr-defined]
    backend.close()


# What the tests write: snapshots, search outcomes, appointments and orientations. Each test starts without any.
WRITTEN = (COVERAGE, OUTCOMES, "appointments", "orientations")


def _forget(backend: Backend, kind: str) -> None:
    live = backend.live_index(kind)
    if live is None:
        return
    id_field = definition(kind).id_field
    backend.delete(live, [doc[id_field] for doc in iterate_all(backend, kind)])
    backend.refresh(live)
    assert backend.count(kind) == 0


@pytest.fixture
def world(aggregated: World) -> World:
    """The shared directory and slots, with no snapshot, search outcome or appointment left by another test."""
    for kind in WRITTEN:
        _forget(aggregated.backend, kind)
    return aggregated


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _recompute(backend: Backend, now: datetime) -> dict[tuple[str, str], dict[str, Any]]:
    """Coverage counted again from the raw index, the plain way: every site, every participation, every slot."""
    sites = {d["site_id"]: d for d in iterate_all(backend, "practice_sites")}
    participations = [p for p in iterate_all(backend, "participations") if p["active"]]
    active = {p["idnps"]: p["vendors"] for p in participations}
    via = {p["idnps"]: p["via"] for p in participations}

    def empty() -> dict[str, Any]:
        empty_horizon = {"who": set(), "slots": 0, "types": defaultdict(int), "via": defaultdict(int)}
        return {"participants": set(), **{h: copy.deepcopy(empty_horizon) for h in HORIZONS}}

    expected: dict[tuple[str, str], dict[str, Any]] = defaultdict(empty)

    def areas_of(site: dict[str, Any]) -> list[tuple[str, str]]:
        dep = site["department_code"]
        return [("commune", site["address"]["insee_code"]), ("department", dep), ("territory", f"SAS-{dep}")]

    for idnps in active:
        expected[("national", "FR")]["participants"].add(idnps)
    for site in sites.values():
        if site["practitioner"]["idnps"] in active:
            for key in areas_of(site):
                expected[key]["participants"].add(site["practitioner"]["idnps"])
    for slot in iterate_all(backend, "slots"):
        ahead = (datetime.fromisoformat(slot["start"]) - now).total_seconds() / 3600
        for h in HORIZONS:
            if 0 <= ahead < h:
                for key in [("national", "FR"), *areas_of(sites[slot["site_id"]])]:
                    expected[key][h]["who"].add(slot["idnps"])
                    expected[key][h]["slots"] += 1
                    for t in slot["types"]:
                        expected[key][h]["types"][t] += 1
                    expected[key][h]["via"][via[slot["idnps"]]] += 1
    return expected


def test_snapshot_equals_a_recomputation_from_the_raw_index(world: World) -> None:
    backend = world.backend
    now = _now()
    summary = take_snapshot(backend, now, staleness_limit_s=3600)
    stored = {(d["level"], d["code"]): d for d in iterate_all(backend, "coverage", {"snapshot": [summary.snapshot]})}
    expected = _recompute(backend, now)
    assert {k for k in stored if k[0] != "vendor"} == set(expected)
    assert len([k for k in expected if k[0] == "commune"]) > 20  # a real spread over the Ain's communes
    for key, want in expected.items():
        row = stored[key]
        assert row["participants"] == len(want["participants"]), key
        for h in HORIZONS:
            assert row[f"slots_{h}h"] == want[h]["slots"], (key, h)
            assert row[f"practitioners_{h}h"] == len(want[h]["who"]), (key, h)
            assert row["by_type"][str(h)] == dict(want[h]["types"]), (key, h)
            assert row["by_via"][str(h)] == dict(want[h]["via"]), (key, h)
    national = stored[("national", "FR")]
    assert national["slots_72h"] > national["slots_24h"] > 0 and summary.slots_72h == national["slots_72h"]
    assert {"practice", "cpts", "msp"} <= set(national["by_via"]["72"])  # the participations' ways, counted apart


def test_vendor_rows_count_what_each_vendor_holds(world: World) -> None:
    backend = world.backend
    now = _now()
    take_snapshot(backend, now, staleness_limit_s=3600)
    held: dict[str, int] = defaultdict(int)
    for slot in iterate_all(backend, "slots"):
        if 0 <= (datetime.fromisoformat(slot["start"]) - now).total_seconds() < 72 * 3600:
            held[slot["vendor"]] += 1
    serving: dict[str, int] = defaultdict(int)
    for p in iterate_all(backend, "participations"):
        for v in p["vendors"]:
            serving[v] += p["active"]
    rows = {r.vendor_id: r for r in tables.vendors(backend, tables.Period.last(1, now + timedelta(seconds=1)))}
    assert set(rows) == {"sandbox-a", "sandbox-b", "sandbox-c"}
    for vendor_id, row in rows.items():
        assert row.slots_72h == held[vendor_id] and row.participants == serving[vendor_id]
        assert row.requests > 0 and row.errors == 0 and row.error_rate == 0.0 and row.breaker == "closed"
    assert sum(r.share_of_slots or 0 for r in rows.values()) == pytest.approx(1.0, abs=1e-3)
    # Vendor sizes are unequal (Zipf), as on the national platform.
    assert rows["sandbox-a"].participants > rows["sandbox-c"].participants


def test_stale_vendors_leave_area_counts_but_stay_in_vendor_rows(world: World) -> None:
    now = _now() + timedelta(seconds=2)
    summary = take_snapshot(world.backend, now, staleness_limit_s=0.5)  # every vendor last answered > 0.5 s ago
    rows = {
        (d["level"], d["code"]): d for d in iterate_all(world.backend, "coverage", {"snapshot": [summary.snapshot]})
    }
    assert rows[("department", "01")]["slots_72h"] == 0 and rows[("department", "01")]["participants"] > 0
    assert sum(d["slots_72h"] for (level, _), d in rows.items() if level == "vendor") > 0


def test_rates_per_10000_inhabitants_use_the_agency_tables(world: World) -> None:
    take_snapshot(world.backend, _now(), staleness_limit_s=3600)
    ain = next(r for r in tables.coverage(world.backend, "department", 48) if r.code == "01")
    assert ain.population == round(113.22 * 5785) and ain.name == "Ain"
    assert ain.slots_per_10k == round(ain.slots * 10_000 / ain.population, 3)
    territory = tables.coverage(world.backend, "territory", 48)
    assert [(r.code, r.population) for r in territory] == [("SAS-01", ain.population)]
    # Corsica is written 20A/20B in the radius table: its departments still get their population and radii.
    assert departments()["2A"].population and rule_for("2A").source == "sas-2025"
    assert departments()["976"].population is None  # Mayotte: no ANCT density, no rate rather than a guess


def test_retention_prunes_old_rows_communes_first(world: World) -> None:
    backend = world.backend
    now = _now()
    old = take_snapshot(backend, now - timedelta(days=10), staleness_limit_s=3600).snapshot
    assert backend.count("coverage", {"snapshot": [old], "level": ["commune"]}) > 0
    take_snapshot(backend, now, staleness_limit_s=3600, retention_days=90, commune_retention_days=7)
    assert backend.count("coverage", {"snapshot": [old], "level": ["commune"]}) == 0
    assert backend.count("coverage", {"snapshot": [old], "level": ["department"]}) == 1
    take_snapshot(backend, now + timedelta(seconds=1), staleness_limit_s=3600, retention_days=5)
    assert backend.count("coverage", {"snapshot": [old]}) == 0


def _client(world: World) -> TestClient:
    return TestClient(create_app(world.settings, world.backend))


def _auth(world: World, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.tokens[role]}"}


def test_search_outcomes_keep_no_place_operator_or_patient_detail(world: World, tmp_path: Path) -> None:
    backend = world.backend
    client = _client(world)
    reg = _auth(world, "regulator")
    answers = {}
    for name, params in {
        "address": {"address": STREET},
        "point": {"lat": BOURG[0], "lon": BOURG[1]},
        "postcode": {"postcode": "01300"},
        "department": {"department": "01"},
    }.items():
        r = client.get("/v1/search", params={**params, "verify": "false"}, headers=reg)
        assert r.status_code == 200, r.text
        answers[name] = r.json()
    cursor = answers["point"]["next_cursor"]
    later = client.get("/v1/search", params={"lat": BOURG[0], "lon": BOURG[1], "cursor": cursor}, headers=reg)
    assert later.status_code == 200, later.text  # a later page is the same search: no second outcome
    backend.refresh(backend.live_index(OUTCOMES) or "")
    docs = list(iterate_all(backend, OUTCOMES))
    assert len(docs) == 4
    allowed = set(SearchOutcome.model_fields)
    assert allowed <= definition(OUTCOMES).field_paths()
    raw = orjson.dumps(docs).decode()
    for doc in docs:
        assert set(doc) <= allowed
    for secret in ("République", "rue de la", "01000", "01300", str(BOURG[0]), str(BOURG[1]), "regulator-cov"):
        assert secret not in raw, secret
    # Offline, the address is placed by its postcode: no point of it exists anywhere to be kept.
    assert sorted(d["place_kind"] for d in docs) == ["department", "point", "postcode", "postcode"]
    by_kind = {d["place_kind"]: d for d in docs}
    point = by_kind["point"]
    assert point["commune"] == gazetteer().nearest_commune(*BOURG).insee
    assert (point["department"], point["territory"]) == ("01", "SAS-01")
    assert by_kind["department"]["commune"] is None
    for doc, answer in ((point, answers["point"]), (by_kind["department"], answers["department"])):
        with_slots = sum(1 for c in answer["cards"] if c["slot_count"] > 0)
        assert doc["cards_with_slots"] == with_slots and doc["under_served"] == (with_slots < 5)
        assert doc["radius_km"] == answer["radius_km"] and doc["verified"] is False
    if world.settings.backend == "sqlite":  # nothing else in the stored bytes either (terms, text tables)
        stored = b"".join(p.read_bytes() for p in (world.settings.data_dir / "index").glob("search_outcomes*"))
        assert stored and b"Bourg" not in stored and str(BOURG[0]).encode() not in stored
    rows = tables.under_served(backend, tables.Period.last(1))
    assert sum(r.searches for r in rows) == 4 and {r.territory for r in rows} == {"SAS-01"}


def _report_appointments(world: World, now: datetime, statuses: list[str], first_start: datetime) -> None:
    """Appointments at a site of the Ain, as a vendor reports them, an hour apart from `first_start`."""
    backend = world.backend
    site = next(iterate_all(backend, "practice_sites", {"department": ["01"]}))
    for i, status in enumerate(statuses):
        record(
            backend,
            Appointment(
                appointment_id=f"sandbox-a:cov-{i}",
                vendor="sandbox-a",
                identifier_system="urn:sandbox",
                identifier_value=f"cov-{i}",
                status=AppointmentStatus(status),
                start=first_start + timedelta(hours=i),
                end=first_start + timedelta(hours=i, minutes=15),
                idnps=site["practitioner"]["idnps"],
                operator="regulator-cov",
                department_code="01",
                last_updated=now,
                history=[StatusChange(status=AppointmentStatus(status), at=now, received_at=now)],
            ),
            now,
        )
    backend.refresh(backend.live_index("appointments") or "")


def _record_orientation(world: World, at: datetime) -> None:
    """A patient sent without a slot to a practitioner of the Ain, as a regulator records it."""
    site = next(iterate_all(world.backend, "practice_sites", {"department": ["01"]}))
    orientation = Orientation(
        orientation_id="cov-orientation",
        kind=OrientationKind.extra_patients,
        idnps=site["practitioner"]["idnps"],
        site_id=site["site_id"],
        department_code="01",
        operator="regulator-cov",
        outcome=OrientationOutcome.accepted,
        at=at,
    )
    index = ensure_live(world.backend, "orientations")
    world.backend.write(index, [orientation.model_dump(mode="json", exclude_none=True)])
    world.backend.refresh(index)


def test_appointments_by_territory_and_status(world: World) -> None:
    now = _now()
    _report_appointments(world, now, ["booked", "booked", "cancelled"], now + timedelta(hours=3))
    rows = tables.appointments(world.backend, tables.Period(now, now + timedelta(days=1)))
    got = {(r.territory, r.status): r.appointments for r in rows}
    assert got == {("SAS-01", "booked"): 2, ("SAS-01", "cancelled"): 1}


def test_exports_round_trip_with_their_dictionary(world: World, tmp_path: Path) -> None:
    backend = world.backend
    # Content for every table: a regulator's search, appointments reported, a snapshot.
    search = _client(world).get(
        "/v1/search", params={"postcode": "01300", "verify": "false"}, headers=_auth(world, "regulator")
    )
    assert search.status_code == 200, search.text
    backend.refresh(backend.live_index(OUTCOMES) or "")
    now = _now()
    _report_appointments(world, now, ["booked", "cancelled"], now - timedelta(hours=3))
    _record_orientation(world, now - timedelta(hours=1))
    take_snapshot(backend, now, staleness_limit_s=3600)
    period = tables.Period.last(1, now + timedelta(seconds=1))
    written = export_all(backend, tmp_path, period)
    dictionary = (tmp_path / "data_dictionary.md").read_text(encoding="utf-8")
    assert dictionary == dictionary_markdown()
    for name, spec in tables.TABLES.items():
        rows = spec.build(backend, period)
        columns = list(spec.model.model_fields)
        assert f"## {name}" in dictionary and all(f"| {c} |" in dictionary for c in columns)
        parquet, csv = (tmp_path / f"{name}.parquet"), (tmp_path / f"{name}.csv")
        assert written[name] == [csv, parquet]
        assert pq.read_table(parquet).column_names == columns
        assert [spec.model.model_validate(r) for r in pq.read_table(parquet).to_pylist()] == rows, name
        frame = read_back(csv)
        assert list(frame.columns) == columns
        back = [
            spec.model.model_validate({k: (None if v == "" else v) for k, v in rec.items()})
            for rec in frame.to_dict("records")
        ]
        assert back == rows, name
        assert rows, name  # every table has content here: the round trip is not of empty files


def _png_size(body: bytes) -> tuple[int, int]:
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", body[16:24])


def test_map_and_chart_over_the_api_in_the_sizes_asked(world: World) -> None:
    take_snapshot(world.backend, _now(), staleness_limit_s=3600)
    client = _client(world)
    analyst = _auth(world, "analyst")
    r = client.get("/v1/coverage/map.png", params={"width": 640, "height": 480}, headers=analyst)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert _png_size(r.content) == (640, 480)
    r = client.get("/v1/coverage/map.svg", params={"width": 800, "height": 800}, headers=analyst)
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert 'width="576pt" height="576pt"' in r.text and r.text.count("<path") > 100  # departments, outlines, bar
    r = client.get("/v1/coverage/chart.png", params={"width": 900, "height": 400}, headers=analyst)
    assert _png_size(r.content) == (900, 400)
    r = client.get("/v1/coverage/chart.svg", headers=analyst)
    assert r.status_code == 200 and "<svg" in r.text
    bad = client.get("/v1/coverage/map.png", params={"width": 10}, headers=analyst)
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


def test_coverage_routes_need_the_analyst_or_maintainer_role(world: World) -> None:
    take_snapshot(world.backend, _now() - timedelta(hours=1), staleness_limit_s=3600)  # the one before
    client = _client(world)
    assert client.get("/v1/coverage").status_code == 401
    assert client.get("/v1/coverage", headers=_auth(world, "regulator")).status_code == 403
    answer = client.get("/v1/coverage", params={"level": "territory"}, headers=_auth(world, "analyst")).json()
    assert answer["level"] == "territory" and answer["rows"][0]["code"] == "SAS-01"
    assert client.post("/v1/coverage/snapshots", headers=_auth(world, "analyst")).status_code == 403
    taken = client.post("/v1/coverage/snapshots", headers=_auth(world, "maintainer"))
    assert taken.status_code == 201 and taken.json()["participants"] > 0
    evolution = client.get(
        "/v1/coverage/evolution", params={"level": "department", "code": "01"}, headers=_auth(world, "analyst")
    )
    assert evolution.status_code == 200 and len(evolution.json()) == 2  # the one before, and the one just taken
    r = client.get("/v1/coverage/export/vendors.parquet", headers=_auth(world, "analyst"))
    assert r.status_code == 200 and r.content[:4] == b"PAR1"
    assert client.get("/v1/coverage/export/nothing.csv", headers=_auth(world, "analyst")).status_code == 404
    r = client.get("/v1/coverage", params={"horizon": 12}, headers=_auth(world, "analyst"))
    assert r.status_code == 422 and "24, 48 or 72" in r.json()["detail"]


def test_the_cli_prints_tables_and_writes_pictures(world: World, tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "250", **world.env})
    r = runner.invoke(app, ["coverage", "snapshot"])
    assert r.exit_code == 0 and "participants" in r.output, r.output
    r = runner.invoke(app, ["coverage", "show", "--level", "department", "--json"])
    rows = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert [row["code"] for row in rows] == ["01"] and rows[0]["slots"] > 0
    r = runner.invoke(app, ["coverage", "vendors"])
    assert r.exit_code == 0 and "sandbox-a" in r.output
    r = runner.invoke(app, ["coverage", "map", "--out", str(tmp_path / "map.png"), "--width", "700", "--height", "500"])
    assert r.exit_code == 0, r.output
    assert _png_size((tmp_path / "map.png").read_bytes()) == (700, 500)
    r = runner.invoke(app, ["coverage", "chart", "--out", str(tmp_path / "chart.svg")])
    assert r.exit_code == 0 and (tmp_path / "chart.svg").read_text().startswith("<?xml")
    r = runner.invoke(app, ["coverage", "map", "--out", str(tmp_path / "map.gif")])
    assert r.exit_code == 2 and ".png or .svg" in r.output
    r = runner.invoke(app, ["coverage", "export", "--out", str(tmp_path / "exports"), "--format", "csv"])
    assert r.exit_code == 0 and (tmp_path / "exports" / "coverage.csv").stat().st_size > 0
    assert not (tmp_path / "exports" / "coverage.parquet").exists()
