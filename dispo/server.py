"""`dispo serve` and `dispo tokens create`: the HTTP API, and the bearer tokens its callers present."""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from access.roles import TOKEN_ROLES
from api.app import create_app
from api.auth import Role, new_token
from core.secrets import server_key
from core.settings import Settings
from dispo.console import INVALID, err, fail

tokens_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)


@tokens_app.command("create")
def tokens_create(
    role: Annotated[str, typer.Option(help="regulator | maintainer | analyst | vendor")],
    label: Annotated[str, typer.Option(help="who holds it")] = "",
    file: Annotated[Path | None, typer.Option(help="append the entry to this tokens file")] = None,
) -> None:
    """Make a token: prints the token once, and the hashed entry to configure."""
    if role not in TOKEN_ROLES:
        raise fail(f"unknown role {role!r} for a token; roles: {', '.join(TOKEN_ROLES)} (people sign in)", INVALID)
    token, entry = new_token(Role(role), label or role)
    target = file or Settings().tokens_file
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as fh:
            fh.write(entry + "\n")
        err.print(f"entry appended to {target}")
    else:
        err.print(f"add to DISPO_TOKENS or a tokens file: {entry}")
    sys.stdout.write(token + "\n")


def serve(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="worker processes (default DISPO_WORKERS, else the cores)")
    ] = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    settings = Settings()
    n = workers or settings.workers
    where = {"host": host or settings.host, "port": port or settings.port, "log_level": "info", "access_log": False}
    if n == 1:
        uvicorn.run(create_app(settings), **where)
        return
    # Every worker signs and opens the same cursors: the key exists before they start, not made by each at once.
    server_key(settings)
    serve_workers(n, str(where["host"]), int(where["port"]))


def serve_workers(n: int, host: str, port: int) -> None:
    """`n` worker processes, each listening on its own socket bound to the same port (`SO_REUSEPORT`): the kernel
    spreads new connections evenly over them. On one shared socket, the worker that woke first accepted a whole burst
    of connections, and kept-alive clients then all queued on it while the others idled. A worker that dies is
    started again; a signal stops them all."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_worker, args=(host, port), daemon=False)
        process.start()
        return process

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    processes = [start() for _ in range(n)]
    err.print(f"serving on http://{host}:{port} with {n} workers")
    try:
        while not stopping:
            for i, process in enumerate(processes):
                if not process.is_alive() and not stopping:
                    err.print(f"worker {process.pid} ended ({process.exitcode}); starting another")
                    processes[i] = start()
            time.sleep(0.5)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # uvicorn ends its connections gracefully on SIGTERM
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def _worker(host: str, port: int) -> None:
    """One worker: its own app (connections never cross processes) on its own socket of the shared port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    config = uvicorn.Config(create_app(Settings()), log_level="info", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
