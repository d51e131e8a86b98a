"""What a search leaves behind, on both backends: nothing stored lets anyone recover the place searched.

Site positions are public: distances to six of them give back the point searched, to the metre. So no stored
document of any kind may hold the point or a distance to it. The search itself writes nothing (its later pages
follow their cursor); only the API keeps, for analysts, an outcome of the first page reduced to its commune.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from support import BACKENDS, REG, api_settings, generated_world

from api.app import create_app
from core.secrets import derive, server_key
from core.settings import Settings
from indexer.backend import Backend
from indexer.es_backend import ElasticsearchBackend
from indexer.lifecycle import iterate_all
from indexer.sqlite_backend import SqliteBackend
from mappings import KINDS
from search.engine import SearchRequest, run_search

# A point between Bourg-en-Bresse's practices, with more decimals than any position in the directory.
POINT = (46.2071937, 5.2311846)


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Backend, Settings, Path]]:
    tmp = tmp_path_factory.mktemp(f"privacy-{request.param}-{uuid.uuid4().hex[:6]}")
    with generated_world(request.param, tmp, seed=2, n_vendors=2) as (backend, settings, _):
        yield backend, settings, tmp


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
        assert first["next_cursor"]
        later = c.get("/v1/search", params={**params, "cursor": first["next_cursor"]}, headers=REG).json()
        assert later["cards"]
    # The same search again, for the distances at full precision (the answer shows them rounded).
    key = derive(server_key(settings), "cursor")
    req = SearchRequest(lat=lat, lon=lon, seed=3, limit=200)
    distances = {c.distance_km for c in run_search(backend, req, staleness_limit_s=1e9, cursor_key=key).cards} - {0.0}
    assert len(distances) > 8
    secrets = set().union(coordinate(lat), coordinate(lon), *(distance(d) for d in distances))
    documents = stored(backend)
    assert "search_outcomes" in documents
    for kind, text in documents.items():
        found = sorted(s for s in secrets if s in text)
        assert not found, f"{kind} holds {found}"
    if backend.name == "sqlite":  # and not in the files either, where deleted rows may linger
        for path in (tmp / "index").iterdir():
            raw = path.read_bytes()
            found = sorted(s for s in secrets if s.encode() in raw)
            assert not found, f"{path.name} holds {found}"


def indices(backend: Backend) -> list[str]:
    """Every index the backend holds, of any kind, known to this version or not."""
    if isinstance(backend, SqliteBackend):
        return sorted(path.name for path in backend.root.glob("*.db"))
    assert isinstance(backend, ElasticsearchBackend)
    backend.es.indices.refresh(index=f"{backend.prefix}-*")
    return sorted(backend.es.indices.get(index=f"{backend.prefix}-*").body)


def counts(backend: Backend) -> dict[str, int]:
    """How many live documents each kind holds (none for a kind without a live index)."""
    for kind in KINDS:
        live = backend.live_index(kind)
        if live is not None:
            backend.refresh(live)
    return {kind: backend.count(kind) for kind in KINDS}


@pytest.mark.parametrize(
    "place",
    [{"lat": POINT[0], "lon": POINT[1]}, {"department": "01"}, {"postcode": "01000", "include_without_slots": True}],
    ids=["point", "department", "postcode-without-slots"],
)
def test_a_search_leaves_the_backend_holding_exactly_what_it_held(world, place: dict) -> None:
    backend, settings, _ = world
    before = (indices(backend), counts(backend), stored(backend))
    key = derive(server_key(settings), "cursor")
    req = SearchRequest(**place, seed=9, limit=3)
    first = run_search(backend, req, staleness_limit_s=1e9, cursor_key=key)
    cursor, pages = first.next_cursor, 1
    while cursor and pages < 4:
        later = SearchRequest(**place, seed=9, limit=3, cursor=cursor)
        cursor, pages = run_search(backend, later, staleness_limit_s=1e9, cursor_key=key).next_cursor, pages + 1
    assert pages == 4
    assert indices(backend) == before[0]
    assert counts(backend) == before[1]
    assert stored(backend) == before[2]


def test_through_the_api_later_pages_write_nothing_and_a_first_page_only_its_outcome(world) -> None:
    backend, settings, _ = world
    params = {"lat": POINT[0], "lon": POINT[1], "seed": 9, "limit": 3, "verify": "false"}
    before = counts(backend)
    with TestClient(create_app(api_settings(settings), backend)) as c:
        first = c.get("/v1/search", params=params, headers=REG).json()
        assert counts(backend) == {**before, "search_outcomes": before["search_outcomes"] + 1}
        after_first = (indices(backend), stored(backend))
        second = c.get("/v1/search", params={**params, "cursor": first["next_cursor"]}, headers=REG).json()
        c.get("/v1/search", params={**params, "cursor": second["next_cursor"]}, headers=REG).raise_for_status()
    assert (indices(backend), stored(backend)) == after_first
