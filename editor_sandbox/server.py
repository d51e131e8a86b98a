"""Run sandbox vendors as real HTTP servers on loopback: one per port, in a background thread."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from types import TracebackType

import uvicorn

from editor_sandbox.agenda import SandboxConfig
from editor_sandbox.app import create_sandbox_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SandboxServer:
    """`with SandboxServer(config) as url:` serves the vendor at `url` (its FHIR base is `url + '/fhir'`)."""

    def __init__(
        self, config: SandboxConfig, port: int | None = None, clock=None, tls: tuple[str, str, str] | None = None
    ) -> None:
        """`tls` = (server certificate, server key, CA bundle): serve HTTPS and require a client certificate
        signed by that CA, as vendors do with the platform's IGC-Santé certificate (mutual TLS)."""
        self.config = config
        self.port = port or free_port()
        self.scheme = "https" if tls else "http"
        self.app = create_sandbox_app(config, clock=clock)
        options: dict = {}
        if tls:
            options = {
                "ssl_certfile": tls[0],
                "ssl_keyfile": tls[1],
                "ssl_ca_certs": tls[2],
                "ssl_cert_reqs": ssl.CERT_REQUIRED,
            }
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                **options,
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True, name=f"sandbox-{config.vendor_id}")

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def fhir_base(self) -> str:
        return self.url + "/fhir"

    def start(self) -> SandboxServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"sandbox {self.config.vendor_id} did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
