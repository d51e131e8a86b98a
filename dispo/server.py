"""`dispo serve` and `dispo tokens create`: the HTTP API, and the bearer tokens its callers present."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

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
    if role not in Role.__members__:
        raise fail(f"unknown role {role!r}; roles: {', '.join(Role)}", INVALID)
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
    # Each worker builds its own app from the same environment (connections never cross processes).
    uvicorn.run("api.app:create_app", factory=True, workers=n, **where)
