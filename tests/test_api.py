"""The HTTP API on both backends: roles, problem+json, directory search and lookups, health."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from support import REG, TOKENS, api_settings, assert_problem, headers

from api.app import create_app
from api.auth import Role
from core.settings import Settings
from indexer.backend import Backend
from indexer.es_backend import ElasticsearchBackend


@pytest.fixture
def client(loaded: Backend, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(settings), loaded)) as c:
        yield c


def test_health_checks_need_no_credential(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["live"]["practice_sites"]


def test_v1_routes_need_a_token(client: TestClient) -> None:
    for path in (
        "/v1/practice-sites/search?lat=46.2&lon=5.2",
        "/v1/practitioners/810106476764",
        "/v1/structures/010000024",
    ):
        body = assert_problem(client.get(path), 401)
        assert "Bearer" in body["detail"]
        assert_problem(client.get(path, headers={"Authorization": "Bearer not-a-token"}), 401)


def test_vendors_and_analysts_cannot_read_the_directory(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/practitioners/810106476764", headers=headers(Role.vendor)), 403)
    assert "vendor" in body["detail"]
    assert_problem(client.get("/v1/practitioners/810106476764", headers=headers(Role.analyst)), 403)
    for role in (Role.regulator, Role.maintainer):
        assert client.get("/v1/practitioners/810106476764", headers=headers(role)).status_code == 200


def test_search_around_a_point_is_nearest_first_with_distances(client: TestClient) -> None:
    r = client.get("/v1/practice-sites/search", params={"lat": 46.2051, "lon": 5.2460, "radius_km": 30}, headers=REG)
    assert r.status_code == 200, r.text
    body = r.json()
    distances = [x["distance_km"] for x in body["results"]]
    assert distances == sorted(distances) and all(d <= 30 for d in distances)
    assert body["total"] == len(body["results"]) == 7
    assert body["location"]["precision"] == "point"
    first = body["results"][0]["site"]
    assert first["practitioner"]["idnps"] and first["position"]["precision"]


def test_search_by_postcode_and_insee_code(client: TestClient) -> None:
    r = client.get("/v1/practice-sites/search", params={"postcode": "01300", "radius_km": 5}, headers=REG)
    assert r.status_code == 200
    assert {x["site"]["practitioner"]["last_name"] for x in r.json()["results"]} == {"PITHOUD", "CHEPY"}
    r = client.get("/v1/practice-sites/search", params={"insee": "01034", "radius_km": 5}, headers=REG)
    assert r.json()["location"]["label"].startswith("BELLEY")
    assert r.json()["total"] == 2


def test_filters_and_name_search(client: TestClient) -> None:
    params = {"lat": 46.2, "lon": 5.2, "radius_km": 100, "profession": "94"}
    r = client.get("/v1/practice-sites/search", params=params, headers=REG).json()
    assert {x["site"]["practitioner"]["profession_label"] for x in r["results"]} == {"Ergothérapeute"}
    r = client.get("/v1/practice-sites/search", params={"q": "lebrun carpentier"}, headers=REG).json()
    assert [x["site"]["practitioner"]["first_name"] for x in r["results"]] == ["Anaïs"]
    r = client.get("/v1/practice-sites/search", params={"q": "benhouchame", "specialty": "SM20"}, headers=REG)
    assert r.json()["total"] == 1


def test_pagination_by_cursor_covers_everything_once(client: TestClient) -> None:
    seen: list[str] = []
    params = {"lat": 46.2, "lon": 5.2, "radius_km": 200, "limit": 3}
    cursor = None
    for _ in range(10):
        r = client.get(
            "/v1/practice-sites/search", params={**params, **({"cursor": cursor} if cursor else {})}, headers=REG
        ).json()
        seen += [x["site"]["site_id"] for x in r["results"]]
        cursor = r["next_cursor"]
        if not cursor:
            break
    else:
        pytest.fail("the cursor never ran out")
    full = client.get("/v1/practice-sites/search", params={**params, "limit": 50}, headers=REG).json()
    assert full["total"] == len(full["results"]) > 3  # several pages of 3, and the whole of them in one
    assert seen == [x["site"]["site_id"] for x in full["results"]]


@pytest.mark.parametrize(
    "params",
    [
        {"lat": 46.2},
        {"lat": 95, "lon": 5},
        {"postcode": "1300"},
        {"postcode": "00000"},
        {"insee": "99999"},
        {"lat": 46.2, "lon": 5.2, "radius_km": 0},
        {"lat": 46.2, "lon": 5.2, "radius_km": 10000},
        {"lat": 46.2, "lon": 5.2, "limit": 5000},
        {},
    ],
)
def test_bad_search_parameters_are_422_problems(client: TestClient, params: dict) -> None:
    assert_problem(client.get("/v1/practice-sites/search", params=params, headers=REG), 422)


def test_practitioner_and_structure_lookups(client: TestClient) -> None:
    r = client.get("/v1/practitioners/0019402726", headers=REG).json()
    assert r["practitioner"]["last_name"] == "CHEPY"
    assert r["sites"][0]["finess_site"] == "010000032"
    s = client.get("/v1/structures/010000032", headers=REG).json()
    assert s["name"] == "CH HAUT BUGEY" and s["position"]["precision"] == "establishment"
    assert_problem(client.get("/v1/practitioners/899999999999", headers=REG), 404)
    assert_problem(client.get("/v1/structures/999999999", headers=REG), 404)


def test_openapi_documents_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/practice-sites/search", "/v1/practitioners/{idnps}", "/v1/structures/{finess}"} <= set(paths)


def test_backend_down_is_a_503_problem_and_readyz_says_so(settings: Settings) -> None:
    dead = ElasticsearchBackend("http://127.0.0.1:9", prefix="nothing", timeout_s=1)
    with TestClient(create_app(api_settings(settings), dead)) as c:
        body = assert_problem(c.get("/v1/practice-sites/search", params={"lat": 46, "lon": 5}, headers=REG), 503)
        assert "retry" in body["detail"]
        assert_problem(c.get("/v1/search", params={"lat": 46.2, "lon": 5.2}, headers=REG), 503)
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200


def test_tokens_are_stored_hashed() -> None:
    token, entry = TOKENS[Role.analyst]
    assert token not in entry
    role, digest, label = entry.split(":")
    assert role == "analyst" and len(digest) == 64 and label == "test-analyst"
