"""What every command of the `dispo` command line shares: the consoles, the backend, errors and listings.

Results go to stdout, progress and errors to stderr, so that `--json` output pipes cleanly. A domain error
(`core.errors.DispoError`) or an unreachable backend, raised by any command, is told in one red line with an
exit code rather than a traceback: the root command is a `ReportingGroup`.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
import orjson
import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from core.errors import DispoError, NotFound
from core.settings import Settings
from indexer.backend import Backend, BackendUnavailable
from indexer.factory import make_backend

out = Console()
err = Console(stderr=True)

# Exit codes besides 0: 1 what was asked for is not there or did not pass its check, 2 the command cannot run as
# asked (input, configuration, a missing extra), 3 an import refused to switch (see --force), 4 the backend cannot
# be reached.
FAILED, INVALID, REFUSED, UNAVAILABLE = 1, 2, 3, 4
BACKEND_HINT = "check DISPO_ES_URL / DISPO_BACKEND and retry"


def fail(detail: str, code: int, title: str | None = "error", hint: str | None = None) -> typer.Exit:
    """Print `title: detail` (or the bare detail) and a hint line on stderr; returns the exit for the caller to
    raise, so that the command reads `raise fail(...)`."""
    detail = escape(detail)  # a detail quoting input or a command line is text, never rich markup
    err.print(f"[red]{title}:[/] {detail}" if title else detail)
    if hint:
        err.print(escape(hint))
    return typer.Exit(code)


class ReportingGroup(TyperGroup):
    """The root command: tells a domain error or an unreachable backend from any command in one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DispoError as exc:
            raise fail(exc.detail, FAILED if isinstance(exc, NotFound) else INVALID, exc.title) from exc
        except BackendUnavailable as exc:
            raise fail(str(exc), UNAVAILABLE, "backend unavailable", BACKEND_HINT) from exc


# The libraries of each optional extra (pyproject.toml): a command importing one of these lacks the extra.
EXTRAS = {"analytics": {"pandas", "pyarrow", "matplotlib", "numpy"}}


@contextmanager
def needing_extra(extra: str) -> Iterator[None]:
    """Around the import of what needs an optional extra: when the extra is not installed, say how to install it."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in EXTRAS[extra]:
            raise
        raise fail(f"this command needs the {extra} extra: pip install 'dispo[{extra}]'", INVALID) from exc


def open_backend(settings: Settings | None = None) -> Backend:
    """The configured backend; a configuration mistake exits with what to set."""
    try:
        return make_backend(settings or Settings())
    except ValueError as exc:
        raise fail(str(exc), INVALID) from exc


def write_json(value: Any) -> None:
    """One JSON document on stdout: a pydantic model indented, anything else on one line."""
    text = value.model_dump_json(indent=2) if isinstance(value, BaseModel) else orjson.dumps(value).decode()
    sys.stdout.write(text + "\n")


def write_json_lines(values: Iterable[Any]) -> None:
    for value in values:
        sys.stdout.write(orjson.dumps(value).decode() + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], right: Collection[str] = ()) -> None:
    """A table on stdout; the `right` columns (figures) are right-aligned."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def print_listing(as_json: bool, data: Any, title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A listing: `data` as one JSON document with --json, else a table (`rows` is only read then)."""
    if as_json:
        write_json(data)
    else:
        print_table(title, columns, rows)
