"""Cursors on both backends: a search's cursor is signed and bound to its request, and no cursor a caller makes up
(for the regulator search or the directory's site search) gets anything but a 400 problem saying what to do."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from support import BACKENDS, REG, api_settings, assert_problem, generated_world

from api.app import create_app
from core.secrets import derive, server_key
from core.settings import Settings
from indexer.backend import Backend, GeoQuery, InvalidCursor
from search.cursor import CursorKeys, SearchCursor, request_digest
from search.engine import SearchRequest, run_search
from search.rank import rank_key

BOURG = "12 rue de la République 01000 Bourg-en-Bresse"
FIRST = {"address": BOURG, "seed": 7, "limit": 3, "verify": "false"}


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Backend, Settings]]:
    tmp = tmp_path_factory.mktemp(f"cursors-{request.param}-{uuid.uuid4().hex[:6]}")
    with generated_world(request.param, tmp, seed=1, n_vendors=2) as (backend, settings, _):
        yield backend, api_settings(settings)


@pytest.fixture
def client(world) -> Iterator[TestClient]:
    backend, settings = world
    with TestClient(create_app(settings, backend)) as c:
        yield c


def first_page(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get("/v1/search", params={**FIRST, **params}, headers=REG)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"], "the first page must leave ranks for later pages"
    return body


def assert_cursor_refused(response, *fragments: str) -> None:
    body = assert_problem(response, 400)
    assert body["type"] == "/problems/invalid-cursor" and body["title"] == "Invalid cursor"
    assert body["detail"].endswith("search again without the cursor.")
    for fragment in fragments:
        assert fragment in body["detail"]


def test_later_pages_follow_with_the_first_pages_parameters_whatever_their_size(client: TestClient) -> None:
    whole = client.get("/v1/search", params={**FIRST, "limit": 12}, headers=REG).json()
    assert len(whole["cards"]) == 12
    seen, cursor = [], None
    for limit in (3, 5, 4):  # a cursor holds a place in the order, not a page number: the page size may change
        params = {**FIRST, "limit": limit} | ({"cursor": cursor} if cursor else {})
        r = client.get("/v1/search", params=params, headers=REG)
        assert r.status_code == 200, r.text
        seen += [(c["rank"], c["site"]["site_id"], c["distance_km"]) for c in r.json()["cards"]]
        cursor = r.json()["next_cursor"]
    assert seen == [(c["rank"], c["site"]["site_id"], c["distance_km"]) for c in whole["cards"]]
    r = client.get("/v1/search", params={**FIRST, "seed": 8, "cursor": cursor}, headers=REG)
    assert_cursor_refused(r, "other parameters")


@pytest.mark.parametrize(
    "changed",
    [
        {"address": None, "postcode": "01300"},  # another place
        {"seed": 8},
        {"modality": "home"},
        {"slot_type": "PUBLIC"},
        {"radius_km": 40},
        {"include_without_slots": "true"},
        {"specialty": "SM28"},
        {"end": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
    ],
    ids=lambda changed: ",".join(changed),
)
def test_a_cursor_given_with_other_parameters_is_refused(client: TestClient, changed: dict[str, Any]) -> None:
    cursor = first_page(client)["next_cursor"]
    other = {k: v for k, v in ({**FIRST, **changed}).items() if v is not None}
    assert_cursor_refused(client.get("/v1/search", params={**other, "cursor": cursor}, headers=REG), "other parameters")
    # With the first page's own parameters the cursor still leads to the second page.
    assert client.get("/v1/search", params={**FIRST, "cursor": cursor}, headers=REG).status_code == 200


def test_a_department_cursor_never_labels_another_departments_cards(client: TestClient) -> None:
    ain = first_page(client, address=None, department="01")
    r = client.get(
        "/v1/search", params={**FIRST, "address": None, "department": "69", "cursor": ain["next_cursor"]}, headers=REG
    )
    assert_cursor_refused(r, "other parameters")


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def _state(cursor: str) -> dict[str, Any]:
    payload = cursor.split(".")[0]
    return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _forged(cursor: str) -> list[str]:
    """Cursors made from a real one: its state altered under its own signature, signed by another key, cut."""
    payload, mac = cursor.split(".")
    state = _state(cursor)
    group, band, site_id = state["a"]
    altered = [
        {**state, "a": [group, band + 3, site_id]},  # further on
        {**state, "t": state["t"] + 7200 * 10**6},  # younger
        {**state, "k": 500.0},  # a wider circle
        {**state, "s": state["s"] + 1},  # another draw
    ]
    mine = SearchCursor(
        issued=datetime.now(UTC),
        seed=state["s"],
        radius_km=state["k"],
        with_slots=tuple(state["n"]),
        in_reach=state["i"],
        after=rank_key(group, band, state["s"], site_id),
    )
    other_key = CursorKeys(b"k" * 32).encode(mine, b"d" * 32)
    return [
        *(f"{_b64(s)}.{mac}" for s in altered),
        other_key,
        cursor[:-2],
        f"{payload}.{payload}",
        f"{cursor}.x",
    ]


MADE_UP = [
    "!!",
    "garbage",
    "a.b",
    "....",
    "x" * 5000,
    _b64({"snapshot": "x", "offset": 3}),  # the unsigned cursors this API used to hand out
    _b64({"snapshot": "", "offset": 2**62}),
    _b64({"snapshot": "../../etc", "offset": -1}),
    _b64(["abc", 1]),
]


def test_made_up_and_forged_cursors_are_400_problems(client: TestClient) -> None:
    cursor = first_page(client)["next_cursor"]
    for made_up in [*MADE_UP, *_forged(cursor)]:
        r = client.get("/v1/search", params={**FIRST, "cursor": made_up}, headers=REG)
        assert_cursor_refused(r, "not one this API returned")


def test_an_expired_cursor_is_refused(world, client: TestClient) -> None:
    backend, _ = world
    req = SearchRequest(address=BOURG, seed=5, limit=3)
    first = run_search(backend, req, staleness_limit_s=1e9)
    assert first.next_cursor
    later = SearchRequest(address=BOURG, seed=5, limit=3, cursor=first.next_cursor)
    with pytest.raises(InvalidCursor, match="expired"):
        run_search(backend, later, staleness_limit_s=1e9, now=datetime.now(UTC) + timedelta(minutes=61))
    assert run_search(backend, later, staleness_limit_s=1e9, now=datetime.now(UTC) + timedelta(minutes=59)).cards
    # The expiry runs from the first page: a later page's cursor does not extend it.
    third = run_search(backend, later, staleness_limit_s=1e9, now=datetime.now(UTC) + timedelta(minutes=30))
    assert third.next_cursor
    following = SearchRequest(address=BOURG, seed=5, limit=3, cursor=third.next_cursor)
    with pytest.raises(InvalidCursor, match="expired"):
        run_search(backend, following, staleness_limit_s=1e9, now=datetime.now(UTC) + timedelta(minutes=61))


def test_a_cursor_this_server_signed_before_cursors_carried_their_search_is_refused_as_expired(
    world, client: TestClient
) -> None:
    _, settings = world
    # The former cursors named a snapshot of the first answer kept in the index; none is kept any more.
    payload = orjson.dumps({"s": "5f0c2a9e1b7d4c3a8e6f0b1d", "o": 3, "t": int(datetime.now(UTC).timestamp())})
    sign = derive(derive(server_key(settings), "cursor"), "search-cursor-signature")
    mac = base64.urlsafe_b64encode(hmac.new(sign, payload, hashlib.sha256).digest()).decode().rstrip("=")
    former = f"{base64.urlsafe_b64encode(payload).decode().rstrip('=')}.{mac}"
    assert_cursor_refused(client.get("/v1/search", params={**FIRST, "cursor": former}, headers=REG), "expired")


@pytest.mark.parametrize("place", [{"address": BOURG}, {"address": None, "department": "01"}], ids=["address", "zone"])
def test_a_cursor_is_a_short_url_safe_string(client: TestClient, place: dict[str, Any]) -> None:
    cursor: str | None = first_page(client, **place)["next_cursor"]
    pages = 0
    while cursor and pages < 5:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", cursor) and len(cursor) < 300, cursor
        r = client.get("/v1/search", params={**FIRST, **place, "limit": 50, "cursor": cursor}, headers=REG)
        assert r.status_code == 200, r.text
        cursor, pages = r.json()["next_cursor"], pages + 1
    assert pages >= 2


def test_a_cursor_holds_on_every_instance_sharing_the_key_and_on_no_other(world) -> None:
    backend, settings = world
    one = settings.model_copy(update={"secret_key": SecretStr("one-key-shared-by-the-api-instances-0001")})
    other = settings.model_copy(update={"secret_key": SecretStr("another-deployments-key-00000000000000001")})
    with TestClient(create_app(one, backend)) as first, TestClient(create_app(one, backend)) as twin:
        cursor = first_page(first)["next_cursor"]
        assert twin.get("/v1/search", params={**FIRST, "cursor": cursor}, headers=REG).status_code == 200
    with TestClient(create_app(other, backend)) as stranger:
        r = stranger.get("/v1/search", params={**FIRST, "cursor": cursor}, headers=REG)
        assert_cursor_refused(r, "not one this API returned")


def test_the_binding_covers_what_shapes_an_answer_and_not_how_it_is_written() -> None:
    base = SearchRequest(address=BOURG, modalities=["home", "tele"], start=datetime(2026, 5, 1, 8, tzinfo=UTC))
    same = SearchRequest(
        address=BOURG,
        modalities=["tele", "home"],
        start=datetime(2026, 5, 1, 10, tzinfo=UTC) - timedelta(hours=2),
        limit=40,
    )
    assert request_digest(base) == request_digest(same)
    for field, value in {"lat": 46.2, "preferred": "810100050075", "via": ["cpts"], "extra_patients": True}.items():
        assert request_digest(SearchRequest(**{**base.__dict__, field: value})) != request_digest(base), field


# -- the directory's site search: its cursor is a backend sort key, checked before any backend is asked -----------


@pytest.mark.parametrize(
    ("params", "cursor"),
    [
        ({"lat": 46.2, "lon": 5.2}, ["abc", "x"]),  # a distance that is not a number
        ({"lat": 46.2, "lon": 5.2}, [1.5]),  # too short for (distance, id)
        ({"lat": 46.2, "lon": 5.2}, [1.5, "x", 3]),
        ({"lat": 46.2, "lon": 5.2}, [True, "x"]),
        ({"lat": 46.2, "lon": 5.2}, [1.5, 2]),  # an id that is not text
        ({"q": "martin"}, [1.5]),  # an id that is not text, without a centre
        ({"q": "martin"}, ["a", "b"]),
        ({"q": "martin"}, {"after": "x"}),
        ({"q": "martin"}, []),
    ],
)
def test_made_up_site_search_cursors_are_400_problems(client: TestClient, params: dict, cursor: Any) -> None:
    r = client.get("/v1/practice-sites/search", params={**params, "cursor": _b64(cursor)}, headers=REG)
    assert_cursor_refused(r, "not one this API returned")


def test_each_backend_refuses_a_sort_key_of_another_shape(world) -> None:
    backend, _ = world
    centred = GeoQuery(lat=46.2, lon=5.2, radius_km=20)
    for after in (("abc", "x"), (1.0,), (float("nan"), "x"), (1.0, 2)):
        with pytest.raises(InvalidCursor):
            backend.search("practice_sites", GeoQuery(**{**centred.__dict__, "after": after}))
    for after in ((1,), ("a", "b")):
        with pytest.raises(InvalidCursor):
            backend.search("practice_sites", GeoQuery(after=after))
    page = backend.search("practice_sites", GeoQuery(**{**centred.__dict__, "limit": 2}))
    following = backend.search("practice_sites", GeoQuery(**{**centred.__dict__, "after": page.next_after}))
    assert following.hits and following.hits[0].doc["site_id"] not in {h.doc["site_id"] for h in page.hits}
