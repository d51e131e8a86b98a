"""Serve ASGI apps as real HTTP servers on loopback, in a background thread: sandbox vendors, and the API
itself where a vendor must call it back (tests, demo, benchmarks)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from editor_sandbox.agenda import SandboxConfig
from editor_sandbox.app import create_sandbox_app


def free_port() -> int:
    """A port nobody listened on a moment ago (for an address that must refuse connections)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bound_socket(port: int = 0) -> socket.socket:
    """A loopback socket bound now (port 0: any free one), handed to the server later: choosing a free port
    and binding it afterwards let another process take it in between."""
    # Created with the TCP protocol named: sockets accepted from it then carry it, and asyncio turns Nagle's
    # algorithm off only for those (with a bare socket() every small answer waited ~40 ms for a delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class ThreadedServer:
    """`with ThreadedServer(app) as server:` serves `app` at `server.url` until the block ends."""

    def __init__(
        self,
        app: Any,
        port: int | None = None,
        tls: tuple[str, str, str] | None = None,
        name: str = "server",
        sock: socket.socket | None = None,
    ) -> None:
        """`tls` = (server certificate, server key, CA bundle): serve HTTPS and require a client certificate
        signed by that CA (mutual TLS). `sock`: an already bound socket to serve on (see `bound_socket`)."""
        self.app = app
        self._sock = sock or bound_socket(port or 0)
        self.port = self._sock.getsockname()[1]
        self.scheme = "https" if tls else "http"
        self.name = name
        options: dict[str, Any] = {}
        if tls:
            options = {
                "ssl_certfile": tls[0],
                "ssl_keyfile": tls[1],
                "ssl_ca_certs": tls[2],
                "ssl_cert_reqs": ssl.CERT_REQUIRED,
            }
        self._server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="off", **options
            )
        )
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],), daemon=True, name=name)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self):
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{self.name} did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SandboxServer(ThreadedServer):
    """A sandbox vendor on loopback; its FHIR base is `fhir_base`."""

    def __init__(
        self,
        config: SandboxConfig,
        port: int | None = None,
        clock: Any = None,
        tls: tuple[str, str, str] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.config = config
        app = create_sandbox_app(config, clock=clock)
        super().__init__(app, port, tls, name=f"sandbox-{config.vendor_id}", sock=sock)

    @property
    def fhir_base(self) -> str:
        return self.url + "/fhir"
