"""What the API accepts and what its errors say: bodies bounded on every route, problems that never echo a large
input, validation errors as problems, and an OpenAPI that documents every problem each route may answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from support import REG, api_settings, assert_problem, headers

from api.app import create_app
from api.auth import Role
from core.settings import Settings
from editor_sandbox.server import ThreadedServer
from indexer.backend import Backend
from indexer.registry import get_vendor

MAINTAINER = headers(Role.maintainer)
VENDOR = headers(Role.vendor)
MB = 1_000_000
VENDOR_BODY = {"vendor_id": "alpha", "name": "Alpha", "base_url": "https://alpha.example/fhir"}


@pytest.fixture
def client(loaded: Backend, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(settings), loaded)) as c:
        yield c


def test_a_body_declared_over_the_limit_is_a_413_problem_on_every_route(client: TestClient) -> None:
    big = b'{"slot_id": "' + b"x" * (20 * MB) + b'"}'
    r = client.post("/v1/bookings", content=big, headers={**REG, "Content-Type": "application/json"})
    body = assert_problem(r, 413)
    assert body["type"] == "/problems/body-too-large" and "1000000 bytes" in body["detail"]
    assert len(r.content) < 1_000  # nothing of the body comes back
    # A route without a body is no exception, and a FHIR route answers an OperationOutcome.
    assert_problem(client.request("GET", "/v1/specialties", content=b"x" * (2 * MB), headers=REG), 413)
    r = client.post("/fhir/Appointment", content=b"{}" + b" " * (2 * MB), headers=VENDOR)
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/fhir+json")
    assert r.json()["issue"][0]["code"] == "too-costly"
    # Under the limit, a body is read as before.
    r = client.put("/v1/vendors/alpha", json={**VENDOR_BODY, "name": "A" * 150}, headers=MAINTAINER)
    assert r.status_code == 200, r.text


def _chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


def test_a_chunked_body_is_counted_as_it_streams_and_cut_at_the_limit(loaded: Backend, settings: Settings) -> None:
    small = api_settings(settings).model_copy(update={"max_body_bytes": 16_384})
    with ThreadedServer(create_app(small, loaded), name="api") as api, httpx.Client(base_url=api.url) as http:

        def put_vendor(padding: int) -> httpx.Response:
            # A JSON body sent without a Content-Length: a vendor declaration padded with whitespace.
            body = httpx.Request("PUT", "/", json=VENDOR_BODY).content
            stream = (part for part in (body[:-1], *_chunks(padding), body[-1:]))
            return http.put(
                "/v1/vendors/alpha", content=stream, headers={**MAINTAINER, "Content-Type": "application/json"}
            )

        r = put_vendor(40_000)
        assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
        body = assert_problem(r, 413)
        assert "16384 bytes" in body["detail"]
        assert get_vendor(loaded, "alpha") is None  # the route never ran
        assert put_vendor(8_000).status_code == 200
        assert get_vendor(loaded, "alpha") is not None


def test_a_problem_quotes_an_identifier_shortened(client: TestClient) -> None:
    long_id = "sandbox-a:" + "7" * 280
    r = client.post("/v1/bookings", json={"slot_id": long_id}, headers=REG)
    body = assert_problem(r, 404)
    assert long_id not in body["detail"] and "sandbox-a:77777" in body["detail"]
    assert body["detail"].endswith("search again.")  # what to do is still said
    r = client.get("/fhir/Appointment/" + "v-" + "9" * 3000, headers=VENDOR)
    assert r.status_code in (403, 404) and len(r.content) < 1_000


def test_an_oversized_field_is_a_422_that_does_not_echo_it(client: TestClient) -> None:
    r = client.post("/v1/bookings", json={"slot_id": "x" * 900_000}, headers=REG)
    body = assert_problem(r, 422)
    assert body["errors"][0]["field"] == "slot_id" and len(r.content) < 1_000


INVALID: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/v1/search", {"params": {"lat": "north"}}),
    ("GET", "/v1/search", {"params": {"lat": 46.2, "lon": 5.2, "start": "2026-05-01T08:00:00"}}),  # no offset
    ("GET", "/v1/search", {"params": {"lat": 46.2, "lon": 5.2, "end": "9999-12-31T23:59:59Z"}}),
    ("GET", "/v1/coverage/activity", {"params": {"end": "0001-01-01T00:00:00Z"}}),
    ("GET", "/v1/appointments", {"params": {"start_from": "1900-01-01T00:00:00Z"}}),
    ("GET", "/v1/practice-sites/search", {"params": {"lat": 46.2, "lon": 5.2, "limit": "many"}}),
    ("POST", "/v1/bookings", {"content": b"not json", "headers": {"Content-Type": "application/json"}}),
    ("POST", "/v1/bookings", {"json": {"slot": "x"}}),
    ("GET", "/v1/practitioners/" + "1" * 40, {}),
    ("GET", "/v1/vendors/" + "bad id!" + "/slots", {}),
]


def test_invalid_requests_are_422_problems_naming_each_field(client: TestClient) -> None:
    for method, path, kwargs in INVALID:
        auth = MAINTAINER if "/vendors/" in path or "/coverage/" in path else REG
        r = client.request(method, path, **{**kwargs, "headers": {**auth, **kwargs.get("headers", {})}})
        body = assert_problem(r, 422)
        assert body["type"] == "/problems/invalid-request" and body["errors"][0]["field"], (path, kwargs)


def test_unexpected_errors_are_problems_too(loaded: Backend, settings: Settings, monkeypatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("internal detail that must not leak")

    monkeypatch.setattr("api.web.specialty_labels", broken)
    with TestClient(create_app(api_settings(settings), loaded), raise_server_exceptions=False) as c:
        r = c.get("/v1/specialties", headers=REG)
    body = assert_problem(r, 500)
    assert body["type"] == "/problems/internal" and "internal detail" not in r.text


# -- the OpenAPI ---------------------------------------------------------------------------------------------------

ROLE_FREE = {"/healthz", "/readyz"}


def test_openapi_documents_every_problem_of_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"type", "title", "status", "detail", "instance"} <= set(schemas["Problem"]["properties"])
    assert "issue" in schemas["OperationOutcome"]["properties"]
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 body is never answered
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            assert "413" in responses, where
            if path not in ROLE_FREE:
                assert {"401", "403"} <= set(responses), where
            if operation.get("parameters") or "requestBody" in operation:
                assert "422" in responses, where
            fhir = path.startswith("/fhir")
            for status, response in responses.items():
                if int(status) < 400 or (where == "GET /readyz" and status == "503"):
                    continue
                media, schema = (
                    ("application/fhir+json", "OperationOutcome") if fhir else ("application/problem+json", "Problem")
                )
                assert response["content"] == {media: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}, where
    search = spec["paths"]["/v1/search"]["get"]["responses"]
    assert {"400", "401", "403", "413", "422", "503"} <= set(search)
    booking = spec["paths"]["/v1/bookings"]["post"]["responses"]
    assert {"404", "409", "422"} <= set(booking)
    assert "404" in spec["paths"]["/v1/practitioners/{idnps}"]["get"]["responses"]
    assert set(spec["paths"]["/fhir/Appointment"]["post"]["responses"]["201"]["content"]) == {"application/fhir+json"}
