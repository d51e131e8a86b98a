"""People's accounts and roles: who one is (`/v1/me`), and the administrators' routes granting and revoking roles,
each change kept in the audit log. A territorial administrator reaches the accounts of their territories only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from access import accounts, sessions
from access.roles import Grant, Principal, Role
from api.deps import ADMINS, get_backend, require, session_principal
from api.problems import Problem, problems
from indexer.backend import Backend

router = APIRouter(prefix="/v1", tags=["accounts"], responses=problems(400, 401, 403, 422, 503))
MANAGERS = Depends(
    require(
        *ADMINS,
        Role.territorial_admin,
        narrowed="a territorial administrator: their territories' accounts; the regulation's roles there only",
    )
)
AccountId = Annotated[str, Path(pattern=accounts.ACCOUNT_ID.pattern)]


class GrantView(BaseModel):
    role: Role
    territories: list[str] = []
    practitioners: list[str] = []
    structures: list[str] = []
    granted_by: str | None = None
    granted_at: datetime | None = None


class Account(BaseModel):
    account_id: str
    idnps: str | None = None
    subject: str | None = None  # the provider's subject, for a person without an IDNPS
    name: str | None = None
    profession: str | None = None  # as the provider gave it at the last sign-in (Pro Santé Connect: SubjectRefPro)
    grants: list[GrantView]
    created_at: datetime
    updated_at: datetime
    last_sign_in_at: datetime | None = None


class Me(BaseModel):
    id: str  # the account id, or the token's label
    kind: str  # person | token
    name: str | None
    grants: list[GrantView]
    csrf_token: str | None  # to echo in X-CSRF-Token on state-changing calls (a session only)
    session_expires_at: datetime | None


class Identity(BaseModel):
    idnps: str | None = Field(default=None, description="8 + RPPS or 0 + ADELI; the account id must then be it")
    subject: str | None = Field(default=None, max_length=200, description="the provider's subject, without IDNPS")
    name: str | None = Field(default=None, max_length=200)


class GrantRequest(BaseModel):
    role: Role
    territories: list[str] = Field(default=[], max_length=120)
    practitioners: list[str] = Field(default=[], max_length=500)
    structures: list[str] = Field(default=[], max_length=500)


class AuditEntry(BaseModel):
    entry_id: str
    at: datetime
    actor: str
    account: str
    action: str  # created | updated | granted | revoked
    role: Role | None = None
    territories: list[str] = []
    practitioners: list[str] = []
    structures: list[str] = []


def _view(doc: dict[str, Any]) -> Account:
    return Account.model_validate(doc)


def _refused(exc: Exception) -> Problem:
    if isinstance(exc, accounts.NotAllowed):
        return Problem(403, "Forbidden", f"{exc}.", "forbidden")
    if isinstance(exc, LookupError):
        return Problem(404, "Not found", f"{exc}.", "not-found")
    return Problem(422, "Invalid change", f"{exc}.", "invalid-request")


@router.get("/me", response_model=Me, summary="Who I am: my roles, and my session's CSRF token")
def me(
    request: Request,
    principal: Annotated[Principal, Depends(require(*Role, narrowed="oneself"))],
) -> Me:
    found = session_principal(request) if principal.person else None
    session = found[1] if found else None
    grants = [
        GrantView(
            role=g.role,
            territories=sorted(g.territories),
            practitioners=sorted(g.practitioners),
            structures=sorted(g.structures),
        )
        for g in principal.grants
    ]
    return Me(
        id=principal.label,
        kind="person" if principal.person else "token",
        name=principal.name,
        grants=grants,
        csrf_token=session["csrf"] if session else None,
        session_expires_at=session["expires_at"] if session else None,
    )


@router.get("/accounts", response_model=list[Account], summary="Accounts within my reach")
def list_accounts(
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, MANAGERS],
    role: Annotated[Role | None, Query()] = None,
    territory: Annotated[str | None, Query(max_length=3)] = None,
) -> list[Account]:
    return [_view(d) for d in accounts.list_accounts(backend, principal, role, territory)]


@router.get("/accounts/{account_id}", response_model=Account, summary="One account", responses=problems(404))
def get_account(
    account_id: AccountId, backend: Annotated[Backend, Depends(get_backend)], principal: Annotated[Principal, MANAGERS]
) -> Account:
    doc = accounts.get_account(backend, account_id)
    if doc is None or not accounts.sees(principal, doc):
        raise Problem(404, "Not found", f"No account {account_id} within your reach.", "not-found")
    return _view(doc)


@router.put("/accounts/{account_id}", response_model=Account, summary="Create an account, or change who it is")
def put_account(
    account_id: AccountId,
    body: Identity,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, MANAGERS],
) -> Account:
    try:
        return _view(accounts.save_account(backend, principal, account_id, body.idnps, body.subject, body.name))
    except (accounts.NotAllowed, accounts.InvalidAccount) as exc:
        raise _refused(exc) from exc


@router.post(
    "/accounts/{account_id}/grants",
    response_model=Account,
    summary="Grant a role (or more of its scope)",
    responses=problems(404),
)
def grant(
    account_id: AccountId,
    body: GrantRequest,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, MANAGERS],
) -> Account:
    wanted = Grant(body.role, frozenset(body.territories), frozenset(body.practitioners), frozenset(body.structures))
    try:
        return _view(accounts.grant(backend, principal, account_id, wanted).account)
    except (accounts.NotAllowed, accounts.InvalidAccount, LookupError) as exc:
        raise _refused(exc) from exc


@router.delete(
    "/accounts/{account_id}/grants/{role}",
    response_model=Account,
    summary="Revoke a role, or only some of its scope",
    responses=problems(404),
)
def revoke(
    account_id: AccountId,
    role: Role,
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, MANAGERS],
    scope: Annotated[list[str] | None, Query(description="territories, practitioners or structures to remove")] = None,
) -> Account:
    try:
        changed = accounts.revoke(backend, principal, account_id, role, scope or ())
    except (accounts.NotAllowed, accounts.InvalidAccount, LookupError) as exc:
        raise _refused(exc) from exc
    if not changed.account.get("grants"):
        sessions.close_all(backend, account_id)  # no role left: signed out everywhere
    return _view(changed.account)


@router.get("/audit", response_model=list[AuditEntry], summary="Changes of accounts, latest first")
def audit(
    backend: Annotated[Backend, Depends(get_backend)],
    principal: Annotated[Principal, MANAGERS],
    account: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[AuditEntry]:
    return [AuditEntry.model_validate(e) for e in accounts.audit_entries(backend, principal, account, limit)]
