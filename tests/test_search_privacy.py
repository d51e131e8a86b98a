"""What a search leaves behind, on both backends: nothing stored lets anyone recover the place searched.

Site positions are public: distances to six of them give back the point searched, to the metre. So no stored
document of any kind may hold the point or a distance to it, and a later page's snapshot is sealed with its request.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from support import BACKENDS, REG, api_settings, make_backend

from aggregation.scheduler import Aggregator
from api.app import create_app
from bench.generate import generate
from core.secrets import derive, server_key
from core.settings import Settings
from editor_sandbox.fleet import start_fleet
from indexer.backend import Backend
from indexer.lifecycle import iterate_all
from mappings import KINDS
from rpps_import.pipeline import import_rpps
from search.cursor import SNAPSHOTS
from search.engine import SearchRequest, run_search

# A point between Bourg-en-Bresse's practices, with more decimals than any position in the directory.
POINT = (46.2071937, 5.2311846)


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Backend, Settings, Path]]:
    tmp = tmp_path_factory.mktemp(f"privacy-{request.param}-{uuid.uuid4().hex[:6]}")
    backend = make_backend(request.param, tmp)
    settings = Settings(data_dir=tmp / "dispo", tokens="")
    files = generate(tmp / "gen", "department", seed=2, n_vendors=2)
    import_rpps(files["rpps"], backend, settings)
    servers = start_fleet(backend, 2, participations=files["participations"], settings=settings, churn_rate=0.0)
    asyncio.run(Aggregator(backend, settings).run_once())
    yield backend, settings, tmp
    for s in servers:
        s.stop()
    if request.param == "elasticsearch":
        backend.delete_all()  # type: ignore[attr-defined]
    backend.close()


def stored(backend: Backend) -> dict[str, str]:
    """Every live document of every kind, as JSON text, by kind."""
    out = {}
    for kind in KINDS:
        live = backend.live_index(kind)
        if live is not None:
            backend.refresh(live)
            out[kind] = orjson.dumps(list(iterate_all(backend, kind))).decode()
    return out


def coordinate(value: float) -> set[str]:
    """How a coordinate could be written down: whole, or to the metre (5 decimals), rounded or cut."""
    return {repr(value), f"{value:.6f}", f"{value:.5f}", f"{value:.6f}"[:-1]}


def distance(value: float) -> set[str]:
    """How a distance could be written down: whole, or to ten digits. (Shorter forms would match the directory's
    own coordinates by chance: a distance of 6.2410 km is in a latitude of 46.2410.)"""
    return {repr(value), f"{value:.10g}"}


def test_no_stored_document_holds_the_point_searched_or_a_distance_to_it(world) -> None:
    backend, settings, tmp = world
    lat, lon = POINT
    params = {"lat": lat, "lon": lon, "seed": 3, "limit": 4, "verify": "false"}
    with TestClient(create_app(api_settings(settings), backend)) as c:
        first = c.get("/v1/search", params=params, headers=REG).json()
        assert first["next_cursor"]  # a snapshot was kept for the later pages
        later = c.get("/v1/search", params={**params, "cursor": first["next_cursor"]}, headers=REG).json()
        assert later["cards"]
    # The same search again, for the distances at full precision (the answer shows them rounded).
    key = derive(server_key(settings), "cursor")
    req = SearchRequest(lat=lat, lon=lon, seed=3, limit=200)
    distances = {c.distance_km for c in run_search(backend, req, staleness_limit_s=1e9, cursor_key=key).cards} - {0.0}
    assert len(distances) > 8
    secrets = set().union(coordinate(lat), coordinate(lon), *(distance(d) for d in distances))
    documents = stored(backend)
    assert {SNAPSHOTS, "search_outcomes"} <= set(documents)
    for kind, text in documents.items():
        found = sorted(s for s in secrets if s in text)
        assert not found, f"{kind} holds {found}"
    if backend.name == "sqlite":  # and not in the files either, where deleted rows may linger
        for path in (tmp / "index").iterdir():
            raw = path.read_bytes()
            found = sorted(s for s in secrets if s.encode() in raw)
            assert not found, f"{path.name} holds {found}"


def test_a_snapshot_names_no_site_without_the_request_that_made_it(world) -> None:
    backend, settings, _ = world
    params = {"lat": POINT[0], "lon": POINT[1], "seed": 9, "limit": 3, "verify": "false"}
    with TestClient(create_app(api_settings(settings), backend)) as c:
        first = c.get("/v1/search", params=params, headers=REG).json()
        second = c.get("/v1/search", params={**params, "cursor": first["next_cursor"]}, headers=REG).json()
    shown = [card["site"]["site_id"] for card in first["cards"] + second["cards"]]
    snapshots = stored(backend)[SNAPSHOTS]
    assert shown and not [site for site in shown if site in snapshots]
    assert not [card["practitioner"]["idnps"] for card in second["cards"] if card["practitioner"]["idnps"] in snapshots]
