"""Request-scoped dependencies: the settings, the backend, and who the caller is — a machine client by its bearer
token, a person by their session cookie — admitted only when they hold one of the route's roles.

Every route declares its callers with `require(...)` or `public(...)`; the declarations are read back by the
documentation's table of routes and roles (`api.access_table`) and walked by a test with every role and none.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from access import sessions
from access.accounts import get_account, principal_of
from access.roles import Principal, Role
from api.auth import TokenRegistry
from api.problems import Problem
from core.settings import Settings
from indexer.backend import Backend

_bearer = HTTPBearer(auto_error=False)
COOKIE, SECURE_COOKIE = "dispo_session", "__Host-dispo_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def session_cookie(request: Request) -> str | None:
    return request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE)


def session_principal(request: Request) -> tuple[Principal, dict] | None:  # type: ignore[type-arg]
    """The person a request's session cookie names, and the session; None without a live session."""
    value = session_cookie(request)
    if not value:
        return None
    backend: Backend = request.app.state.backend
    settings: Settings = request.app.state.settings
    found = sessions.find(backend, value, timedelta(seconds=settings.session_idle_s))
    if found is None:
        return None
    account = get_account(backend, found["account"])
    if account is None:
        return None
    return principal_of(account, session=found["session_id"]), found


def _unauthorized(request: Request) -> Problem:
    signin = request.app.state.settings.oidc_issuer is not None
    how = "Sign in (GET /auth/signin) or send" if signin else "Send"
    extra = {"sign_in": "/auth/signin"} if signin else {}
    return Problem(401, "Unauthorized", f"{how} 'Authorization: Bearer <token>'.", "unauthorized", **extra)


class require:
    """A dependency admitting callers who hold one of `roles`; a person's state-changing call must also echo their
    session's CSRF token in `X-CSRF-Token` (a page of another site can make the browser send the cookie, not read
    the token)."""

    def __init__(self, *roles: Role, narrowed: str | None = None) -> None:
        self.roles = roles
        self.narrowed = narrowed  # what the route narrows further, for the table of routes and roles

    def __call__(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Principal:
        if credentials is not None:
            if credentials.scheme.lower() != "bearer":
                raise _unauthorized(request)
            registry: TokenRegistry = request.app.state.tokens
            principal = registry.authenticate(credentials.credentials)
            if principal is None:
                raise Problem(401, "Unauthorized", "This token is not known; ask a maintainer for one.", "unauthorized")
        else:
            found = session_principal(request)
            if found is None:
                raise _unauthorized(request)
            principal, session = found
            if request.method not in SAFE_METHODS:
                sent = request.headers.get(CSRF_HEADER, "")
                if not sent or not hmac.compare_digest(sent.encode(), session["csrf"].encode()):
                    raise Problem(
                        403,
                        "Forbidden",
                        f"A signed-in change needs the session's CSRF token in {CSRF_HEADER} (GET /v1/me gives it).",
                        "csrf",
                    )
        if not principal.holds(self.roles):
            held = ", ".join(sorted(r.value for r in principal.roles)) or "no role"
            raise Problem(
                403,
                "Forbidden",
                f"You hold {held}: this route is for {', '.join(r.value for r in self.roles)}.",
                "forbidden",
            )
        return principal


class public:
    """A route anyone may call, and why (a health probe, a page holding no data, the sign-in's own steps)."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __call__(self) -> None:
        return None


# Who reads what: the route groups' callers, named once.
ADMINS = (Role.national_admin, Role.maintainer)
BOOKERS = (Role.regulator, Role.osnp, Role.ioa)  # search for a patient and book on their behalf
DIRECTORY_READERS = (*BOOKERS, Role.territorial_referent, Role.territorial_admin, *ADMINS)
ANALYSTS = (Role.analyst, Role.territorial_referent, *ADMINS)  # aggregates only: no person, no appointment
LOOKUP_READERS = (*DIRECTORY_READERS, Role.analyst)  # the pages' static tables (specialties, communes)
