"""The one retry policy (`core.retry`) against a real loopback HTTP server and real failing functions: what is
retried, exactly how many times, with real waits; and the regulator-account push that uses it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from aggregation.client import VendorError
from booking.accounts import ensure_account
from core.records import Vendor
from core.retry import Retry, is_retryable
from editor_sandbox.server import free_port
from indexer.sqlite_backend import SqliteBackend


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next status of `script`, then 200 (201 for a POST) once it runs out."""

    script: ClassVar[list[int]] = []
    requests: ClassVar[list[str]] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def answer(self, ok: int) -> None:
        type(self).requests.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        status = type(self).script.pop(0) if type(self).script else ok
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.answer(200)

    def do_POST(self) -> None:
        self.answer(201)

    def do_PUT(self) -> None:
        self.answer(200)


@pytest.fixture
def server() -> Iterator[str]:
    Scripted.script, Scripted.requests = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def get(url: str) -> int:
    return httpx.get(url, timeout=2).raise_for_status().status_code


@pytest.mark.parametrize("status", [503, 500, 429])
def test_a_retryable_status_is_retried_until_it_passes(server: str, status: int) -> None:
    Scripted.script = [status, status]
    assert Retry(retries=2, base_s=0.01).call(get, server + "/x") == 200
    assert len(Scripted.requests) == 3


def test_the_last_failure_is_raised_after_exactly_the_retries(server: str) -> None:
    Scripted.script = [503] * 10
    with pytest.raises(httpx.HTTPStatusError) as err:
        Retry(retries=3, base_s=0.01).call(get, server + "/x")
    assert err.value.response.status_code == 503
    assert len(Scripted.requests) == 1 + 3


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_a_client_error_is_not_retried(server: str, status: int) -> None:
    Scripted.script = [status]
    with pytest.raises(httpx.HTTPStatusError):
        Retry(retries=3, base_s=0.01).call(get, server + "/x")
    assert len(Scripted.requests) == 1


def test_no_retries_means_one_try(server: str) -> None:
    Scripted.script = [503]
    with pytest.raises(httpx.HTTPStatusError):
        Retry(retries=0, base_s=0.01).call(get, server + "/x")
    assert len(Scripted.requests) == 1


def test_async_calls_retry_a_refused_connection_the_same_way() -> None:
    tries: list[float] = []
    refused = f"http://127.0.0.1:{free_port()}/x"

    async def ask() -> int:
        tries.append(time.monotonic())
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(refused)).status_code

    with pytest.raises(httpx.ConnectError):
        asyncio.run(Retry(retries=2, base_s=0.01).acall(ask))
    assert len(tries) == 3


def test_exceptions_that_say_whether_to_retry_are_taken_at_their_word() -> None:
    calls: list[str] = []

    def fails(kind: str) -> None:
        calls.append(kind)
        raise VendorError(kind, f"vendor failed: {kind}")

    with pytest.raises(VendorError):
        Retry(retries=2, base_s=0.01).call(fails, "timeout")
    assert calls == ["timeout"] * 3
    calls.clear()
    with pytest.raises(VendorError):
        Retry(retries=2, base_s=0.01).call(fails, "malformed")  # the same garbage would come back
    assert calls == ["malformed"]
    assert not is_retryable(ValueError("unreadable")) and not is_retryable(KeyError("id"))


def test_retries_wait_a_growing_backoff_from_the_base() -> None:
    tries: list[float] = []

    def fails() -> None:
        tries.append(time.monotonic())
        raise httpx.ConnectTimeout("no answer")

    with pytest.raises(httpx.ConnectTimeout):
        Retry(retries=2, base_s=0.05).call(fails)
    first, second = tries[1] - tries[0], tries[2] - tries[1]
    assert first >= 0.05 and second >= 0.1  # base, then twice the base, each plus up to the base of jitter


def test_a_regulator_account_push_is_retried_on_a_server_error_not_on_a_refusal(server: str, tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "index")
    vendor = Vendor(vendor_id="v", name="V", base_url=server + "/fhir")
    try:
        Scripted.script = [503]
        state = asyncio.run(ensure_account(backend, vendor, "reg-1", retries=2, retry_base_s=0.01))
        assert (state["state"], state["attempts"]) == ("created", 2)
        assert Scripted.requests == ["POST /fhir/Practitioner"] * 2
        Scripted.script, Scripted.requests = [403], []
        state = asyncio.run(ensure_account(backend, vendor, "reg-1", retries=2, force=True, retry_base_s=0.01))
        assert (state["state"], state["attempts"], state["last_error"]) == ("failed", 3, "HTTP 403")
        assert len(Scripted.requests) == 1 and Scripted.requests[0].startswith("PUT /fhir/Practitioner?identifier=")
        assert backend.get("regulator_accounts", "reg-1:v")["state"] == "failed"
    finally:
        backend.close()
