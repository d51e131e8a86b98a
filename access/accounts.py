"""People's accounts and their grants, changed by administrators within their reach, every change kept in the audit
log (kind `audit_log`: who, to whom, what, when; never updated nor deleted).

A national administrator (or a maintainer's token) grants any role anywhere; a territorial administrator grants and
revokes the regulation's roles (`roles.TERRITORIAL_GRANTS`) on their own territories only, and sees the accounts and
audit entries of those territories.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from access.roles import ADMINS, IDNPS, SCOPE, TERRITORIAL_GRANTS, Grant, Principal, Role, Scope
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live, iterate_all

ACCOUNTS = "accounts"
AUDIT = "audit_log"
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$")


class NotAllowed(PermissionError):
    """The caller may not make this change (outside their territories, or a role above theirs)."""


class InvalidAccount(ValueError):
    """The change asked is malformed: the message says what to correct."""


@dataclass(frozen=True)
class Change:
    """What one grant or revocation did, as the audit log keeps it."""

    account: dict[str, Any]
    entry: dict[str, Any]


def new_account_id() -> str:
    """A technical id for a person with no IDNPS, as the platform gives its regulators."""
    return f"sas-{secrets.token_hex(6)}"


def get_account(backend: Backend, account_id: str) -> dict[str, Any] | None:
    if backend.live_index(ACCOUNTS) is None:
        return None
    return backend.get(ACCOUNTS, account_id)


def find_account(backend: Backend, idnps: str | None, subject: str | None) -> dict[str, Any] | None:
    """The account a signed-in person is: by the IDNPS the provider vouches for, else by the provider's subject."""
    if backend.live_index(ACCOUNTS) is None:
        return None
    for field, value in (("idnps", idnps), ("subject", subject)):
        if value:
            hits = backend.search(ACCOUNTS, GeoQuery(filters={field: [value]}, limit=2)).hits
            if hits:
                return hits[0].doc
    return None


def grants_of(doc: dict[str, Any]) -> tuple[Grant, ...]:
    return tuple(
        Grant(
            Role(g["role"]),
            frozenset(g.get("territories", ())),
            frozenset(g.get("practitioners", ())),
            frozenset(g.get("structures", ())),
        )
        for g in doc.get("grants", ())
    )


def principal_of(doc: dict[str, Any], session: str | None = None) -> Principal:
    return Principal(doc["account_id"], grants_of(doc), person=True, name=doc.get("name"), session=session)


def reaches(actor: Principal, grant: Grant) -> bool:
    """Whether the actor may grant (or revoke) this."""
    if actor.holds(ADMINS):
        return True
    if grant.role not in TERRITORIAL_GRANTS or not grant.territories:
        return False
    mine = actor.territories((Role.territorial_admin,))
    return mine is not None and grant.territories <= mine


def sees(actor: Principal, doc: dict[str, Any]) -> bool:
    """Whether the actor may read this account: administrators all, a territorial one those of their territories."""
    if actor.holds(ADMINS):
        return True
    mine = actor.territories((Role.territorial_admin,)) or frozenset()
    return bool(mine & set(doc.get("territories", ())))


def _indexed(doc: dict[str, Any]) -> dict[str, Any]:
    grants = grants_of(doc)
    doc["roles"] = sorted({g.role.value for g in grants})
    doc["territories"] = sorted({t for g in grants for t in g.territories})
    doc["practitioners"] = sorted({p for g in grants for p in g.practitioners})
    doc["structures"] = sorted({s for g in grants for s in g.structures})
    return doc


def _grant_doc(grant: Grant, by: str, at: str) -> dict[str, Any]:
    out: dict[str, Any] = {"role": grant.role.value, "granted_by": by, "granted_at": at}
    for name in ("territories", "practitioners", "structures"):
        values = getattr(grant, name)
        if values:
            out[name] = sorted(values)
    return out


def _audit(
    backend: Backend, actor: Principal, account: str, action: str, grant: Grant | None, at: datetime, **detail: Any
) -> dict[str, Any]:
    index = ensure_live(backend, AUDIT)
    entry: dict[str, Any] = {
        # Sorted by id is sorted by time; the random tail keeps two entries of one instant apart.
        "entry_id": f"{at.strftime('%Y%m%dT%H%M%S.%fZ')}-{secrets.token_hex(4)}",
        "at": at.isoformat(),
        "actor": actor.label,
        "account": account,
        "action": action,
        "detail": {"actor_kind": "person" if actor.person else "token", **detail},
    }
    if grant is not None:
        entry["role"] = grant.role.value
        for name in ("territories", "practitioners", "structures"):
            entry[name] = sorted(getattr(grant, name))
    backend.write(index, [entry])
    backend.refresh(index)
    return entry


def record_change(backend: Backend, actor: Principal, subject: str, action: str, detail: dict[str, Any]) -> None:
    """Keep in the audit log a change made to what a practitioner declares (participation, calendar, periods away):
    who made it, when, and what it was."""
    _audit(backend, actor, subject, action, None, datetime.now(UTC), **detail)


def save_account(
    backend: Backend,
    actor: Principal,
    account_id: str,
    idnps: str | None,
    subject: str | None,
    name: str | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Create an account (an administrator's act) or change who it is; raises InvalidAccount or NotAllowed."""
    if not ACCOUNT_ID.fullmatch(account_id):
        raise InvalidAccount(f"{account_id!r} is not an account id (3 to 64 letters, digits, '.', '_' or '-')")
    if idnps is not None and not IDNPS.fullmatch(idnps):
        raise InvalidAccount(f"{idnps!r} is not an IDNPS (8 + the RPPS number, or 0 + the ADELI number)")
    if idnps is not None and account_id != idnps:
        raise InvalidAccount("a person with an IDNPS is known by it: the account id must be the IDNPS")
    at = now or datetime.now(UTC)
    before = get_account(backend, account_id)
    if before is not None and not sees(actor, before):
        raise NotAllowed("this account is outside your territories")
    if before is None and not actor.holds((*ADMINS, Role.territorial_admin)):
        raise NotAllowed("only administrators create accounts")
    for other in (find_account(backend, idnps, None), find_account(backend, None, subject)):
        if other is not None and other["account_id"] != account_id:
            raise InvalidAccount(f"account {other['account_id']} is already this person")
    index = ensure_live(backend, ACCOUNTS)

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        doc = dict(doc) if doc else {"account_id": account_id, "grants": [], "created_at": at.isoformat()}
        for field, value in (("idnps", idnps), ("subject", subject), ("name", name)):
            if value is None:
                doc.pop(field, None)
            else:
                doc[field] = value
        doc["updated_at"] = at.isoformat()
        return _indexed(doc)

    _, written = backend.update(ACCOUNTS, account_id, change)
    backend.refresh(index)
    assert written is not None
    _audit(backend, actor, account_id, "created" if before is None else "updated", None, at)
    return written


def grant(backend: Backend, actor: Principal, account_id: str, wanted: Grant, now: datetime | None = None) -> Change:
    """Add a role (or more of its scope) to an account; raises InvalidAccount, NotAllowed or LookupError."""
    problems = wanted.problems()
    if problems:
        raise InvalidAccount("; ".join(problems))
    if wanted.role not in SCOPE or wanted.role in (Role.maintainer, Role.vendor):
        raise InvalidAccount(f"the {wanted.role.value} role belongs to machine clients' tokens, not to people")
    if wanted.role is Role.effecteur:
        doc = get_account(backend, account_id)
        if doc is not None and not doc.get("idnps"):
            raise InvalidAccount("an effecteur is a practitioner: their account must carry their IDNPS")
    if not reaches(actor, wanted):
        raise NotAllowed(f"you may not grant the {wanted.role.value} role there")
    at = now or datetime.now(UTC)
    return _change(backend, actor, account_id, at, "granted", wanted, lambda grants: _merge(grants, wanted, actor, at))


def revoke(
    backend: Backend,
    actor: Principal,
    account_id: str,
    role: Role,
    scope: Iterable[str] = (),
    now: datetime | None = None,
) -> Change:
    """Take a role away, or only some of its scope (its territories, practitioners or structures named)."""
    at = now or datetime.now(UTC)
    doc = get_account(backend, account_id)
    if doc is None:
        raise LookupError(f"no account {account_id}")
    held = next((g for g in grants_of(doc) if g.role is role), None)
    if held is None:
        raise InvalidAccount(f"account {account_id} does not hold the {role.value} role")
    names = frozenset(scope)
    field = {Scope.territories: "territories", Scope.practitioners: "practitioners", Scope.structures: "structures"}
    kept = names and SCOPE[role] in field
    removed = Grant(role, **{field[SCOPE[role]]: names & getattr(held, field[SCOPE[role]])}) if kept else held
    if kept and not getattr(removed, field[SCOPE[role]]):
        raise InvalidAccount(f"the {role.value} role is not held on {', '.join(sorted(names))}")
    if not reaches(actor, removed):
        raise NotAllowed(f"you may not revoke the {role.value} role there")

    def without(grants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for g in grants:
            if g["role"] == role.value and kept:
                name = field[SCOPE[role]]
                left = sorted(set(g.get(name, ())) - names)
                if left:
                    out.append({**g, name: left})
                continue
            if g["role"] != role.value:
                out.append(g)
        return out

    return _change(backend, actor, account_id, at, "revoked", removed, without)


def _merge(grants: list[dict[str, Any]], wanted: Grant, actor: Principal, at: datetime) -> list[dict[str, Any]]:
    for i, g in enumerate(grants):
        if g["role"] == wanted.role.value:
            (held,) = grants_of({"grants": [g]})
            merged = Grant(
                wanted.role,
                held.territories | wanted.territories,
                held.practitioners | wanted.practitioners,
                held.structures | wanted.structures,
            )
            return [*grants[:i], _grant_doc(merged, actor.label, at.isoformat()), *grants[i + 1 :]]
    return [*grants, _grant_doc(wanted, actor.label, at.isoformat())]


def _change(
    backend: Backend, actor: Principal, account_id: str, at: datetime, action: str, what: Grant, edit
) -> Change:  # type: ignore[no-untyped-def]
    if get_account(backend, account_id) is None:
        raise LookupError(f"no account {account_id}: create it first (dispo accounts create, PUT /v1/accounts/{{id}})")
    index = ensure_live(backend, ACCOUNTS)

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        return _indexed({**doc, "grants": edit(list(doc.get("grants", ()))), "updated_at": at.isoformat()})

    _, written = backend.update(ACCOUNTS, account_id, change)
    backend.refresh(index)
    if written is None:
        raise LookupError(f"no account {account_id}")
    return Change(written, _audit(backend, actor, account_id, action, what, at))


def signed_in(backend: Backend, account_id: str, now: datetime, profession: str | None = None) -> None:
    """Note the sign-in, and the profession the provider vouches for (its code, as Pro Santé Connect gives it)."""

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        return {**doc, "last_sign_in_at": now.isoformat()} | ({"profession": profession} if profession else {})

    backend.update(ACCOUNTS, account_id, change)


def list_accounts(
    backend: Backend, actor: Principal, role: Role | None = None, territory: str | None = None
) -> list[dict[str, Any]]:
    if backend.live_index(ACCOUNTS) is None:
        return []
    filters: dict[str, list[str]] = {}
    if role is not None:
        filters["roles"] = [role.value]
    if territory is not None:
        filters["territories"] = [territory]
    return sorted((d for d in iterate_all(backend, ACCOUNTS, filters) if sees(actor, d)), key=lambda d: d["account_id"])


def audit_entries(
    backend: Backend, actor: Principal, account: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """The latest entries first; a territorial administrator sees those touching their territories."""
    if backend.live_index(AUDIT) is None:
        return []
    filters: dict[str, list[str]] = {"account": [account]} if account else {}
    if not actor.holds(ADMINS):
        filters["territories"] = sorted(actor.territories((Role.territorial_admin,)) or ()) or ["-"]
    entries = list(iterate_all(backend, AUDIT, filters))
    return sorted(entries, key=lambda e: e["entry_id"], reverse=True)[:limit]
