"""Request-scoped dependencies: the settings, the backend, the caller's role."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import Principal, Role, TokenRegistry
from api.problems import Problem
from core.settings import Settings
from indexer.backend import Backend

_bearer = HTTPBearer(auto_error=False)


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency that admits only callers whose token carries one of `roles`."""

    def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
        registry: TokenRegistry = request.app.state.tokens
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Problem(401, "Unauthorized", "Send 'Authorization: Bearer <token>'.", "unauthorized")
        principal = registry.authenticate(credentials.credentials)
        if principal is None:
            raise Problem(401, "Unauthorized", "This token is not known; ask a maintainer for one.", "unauthorized")
        if principal.role not in roles:
            raise Problem(
                403,
                "Forbidden",
                f"The {principal.role.value} role cannot use this route "
                f"(allowed: {', '.join(r.value for r in roles)}).",
                "forbidden",
            )
        return principal

    return check


DIRECTORY_READERS = (Role.regulator, Role.maintainer, Role.analyst)
