"""The table of routes and roles, read from the routes' own declarations (`api.deps.require` and `public`): the
documentation's copy (`docs/access.md`) is this module's output, and a test walks every cell of it.

    python -m api.access_table > docs/access.md
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from access.roles import SCOPE, Role
from api.deps import public, require

# FastAPI's own pages about the API (the OpenAPI document and its viewers): public, and holding no data.
FRAMEWORK = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
SHORT = {
    Role.regulator: "REG",
    Role.osnp: "OSNP",
    Role.ioa: "IOA",
    Role.effecteur: "EFF",
    Role.delegate: "DEL",
    Role.structure_manager: "STR",
    Role.territorial_referent: "REF",
    Role.territorial_admin: "TADM",
    Role.national_admin: "NADM",
    Role.analyst: "ANA",
    Role.maintainer: "MNT",
    Role.vendor: "VND",
}


@dataclass(frozen=True)
class Policy:
    method: str
    path: str
    roles: tuple[Role, ...]  # empty for a public route
    why_public: str | None
    narrowed: str | None  # what the route narrows further for some roles (territories, practitioners, own data)

    @property
    def declared(self) -> bool:
        return bool(self.roles) or self.why_public is not None


def _declarations(dependant: Dependant) -> Iterator[object]:
    for sub in dependant.dependencies:
        if isinstance(sub.call, require | public):
            yield sub.call
        yield from _declarations(sub)


def policies(app: FastAPI) -> list[Policy]:
    """Every route's declared callers, in path order; a route declaring none has empty roles and no reason."""
    out: list[Policy] = []
    for context in iter_route_contexts(app.routes):  # the routes of included routers too, with their prefixes
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        found = list(_declarations(route.dependant))
        roles = tuple(r for d in found if isinstance(d, require) for r in d.roles)
        why = next((d.why for d in found if isinstance(d, public)), None)
        narrowed = next((d.narrowed for d in found if isinstance(d, require) and d.narrowed), None)
        for method in sorted(route.methods - {"HEAD"}):
            out.append(Policy(method, context.path or route.path, tuple(dict.fromkeys(roles)), why, narrowed))
    return sorted(out, key=lambda p: (p.path, p.method))


def markdown(app: FastAPI) -> str:
    roles = list(Role)
    lines = [
        "# Who may call what",
        "",
        "Every route of the API declares its callers; this table is generated from those declarations",
        "(`python -m api.access_table > docs/access.md`) and a test calls every route with every role and with",
        "none. People sign in through Pro Santé Connect (a session cookie; changes also send the session's CSRF",
        "token in `X-CSRF-Token`); machine clients send a bearer token carrying one role (MNT, VND, and REG or",
        "ANA for scripts).",
        "",
        "| Role | Code | Granted on |",
        "|---|---|---|",
        *(f"| {r.value} | {SHORT[r]} | {SCOPE[r].value} |" for r in roles),
        "",
        "| Route | " + " | ".join(SHORT[r] for r in roles) + " | Narrowed |",
        "|---|" + "---|" * len(roles) + "---|",
    ]
    for p in policies(app):
        if p.why_public is not None:
            cells = ["·"] * len(roles)
            note = f"public: {p.why_public}"
        else:
            cells = ["✓" if r in p.roles else "" for r in roles]
            note = p.narrowed or ""
        lines.append(f"| `{p.method} {p.path}` | " + " | ".join(cells) + f" | {note} |")
    lines += [
        "",
        "✓ admitted · public: anyone, signed in or not; an empty cell is refused (403; 401 with no caller).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    from api.app import create_app
    from core.settings import Settings
    from indexer.sqlite_backend import SqliteBackend

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(data_dir=Path(folder), tokens="", secret_key="x" * 32)
        print(markdown(create_app(settings, SqliteBackend(Path(folder)))), end="")
