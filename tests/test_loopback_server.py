"""The loopback servers that serve sandbox vendors and the API in tests, the demo and the benchmarks."""

from __future__ import annotations

import socket

import httpx
from fastapi import FastAPI

from editor_sandbox.server import ThreadedServer, bound_socket


def test_the_bound_socket_names_tcp_so_accepted_connections_send_small_answers_at_once() -> None:
    # asyncio disables Nagle's algorithm only on sockets whose protocol is TCP; accepted sockets inherit the
    # listener's. A listener made with a bare socket() made every small answer wait for a delayed ACK (~40 ms).
    with bound_socket() as sock:
        assert sock.proto == socket.IPPROTO_TCP


def test_a_threaded_server_answers_on_its_bound_socket() -> None:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    with ThreadedServer(app) as server, httpx.Client() as client:
        assert [client.get(f"{server.url}/ping").json() for _ in range(3)] == [{"pong": "yes"}] * 3
