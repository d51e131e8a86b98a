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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """`with ThreadedServer(app) as server:` serves `app` at `server.url` until the block ends."""

    def __init__(
        self, app: Any, port: int | None = None, tls: tuple[str, str, str] | None = None, name: str = "server"
    ) -> None:
        """`tls` = (server certificate, server key, CA bundle): serve HTTPS and require a client certificate
        signed by that CA (mutual TLS)."""
        self.app = app
        self.port = port or free_port()
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
        self._thread = threading.Thread(target=self._server.run, daemon=True, name=name)

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

    def __enter__(self):
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SandboxServer(ThreadedServer):
    """A sandbox vendor on loopback; its FHIR base is `fhir_base`."""

    def __init__(
        self, config: SandboxConfig, port: int | None = None, clock: Any = None, tls: tuple[str, str, str] | None = None
    ) -> None:
        self.config = config
        super().__init__(create_sandbox_app(config, clock=clock), port, tls, name=f"sandbox-{config.vendor_id}")

    @property
    def fhir_base(self) -> str:
        return self.url + "/fhir"
