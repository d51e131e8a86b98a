"""`dispo accounts create|grant|revoke|list|show|audit`: people's accounts and roles, from the command line.

The command line acts as a national administrator, recorded in the audit log as `cli:<operating-system user>`."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from access import accounts, sessions
from access.roles import PERSON_ROLES, SCOPE, Grant, Principal, Role, Scope, machine
from dispo.console import FAILED, INVALID, REFUSED, fail, open_backend, out, print_table, write_json

accounts_app = typer.Typer(help="People's accounts and their roles on SAS territories.", no_args_is_help=True)
ROLES = ", ".join(r.value for r in PERSON_ROLES)


def _actor() -> Principal:
    return machine(Role.maintainer, f"cli:{getpass.getuser()}")


def _role(value: str) -> Role:
    if value not in Role.__members__ or Role(value) not in PERSON_ROLES:
        raise fail(f"unknown role {value!r}", INVALID, hint=f"one of {ROLES}")
    return Role(value)


def _refused(exc: Exception) -> typer.Exit:
    if isinstance(exc, accounts.NotAllowed):
        return fail(str(exc), REFUSED)
    if isinstance(exc, LookupError):
        return fail(str(exc), FAILED)
    return fail(str(exc), INVALID)


def _scope_text(grant: dict) -> str:  # type: ignore[type-arg]
    if SCOPE[Role(grant["role"])] is Scope.national:
        return "national"
    return ", ".join([*grant.get("territories", ()), *grant.get("practitioners", ()), *grant.get("structures", ())])


@accounts_app.command("create")
def create(
    account_id: Annotated[str, typer.Argument(help="the IDNPS, or a technical id for a person without one")],
    idnps: Annotated[
        bool, typer.Option("--idnps", help="the id is the person's IDNPS (as the provider gives it)")
    ] = False,
    subject: Annotated[str | None, typer.Option(help="the provider's subject, for a person without IDNPS")] = None,
    name: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create an account (or change who it is)."""
    try:
        doc = accounts.save_account(open_backend(), _actor(), account_id, account_id if idnps else None, subject, name)
    except (accounts.NotAllowed, accounts.InvalidAccount) as exc:
        raise _refused(exc) from exc
    out.print(f"account {doc['account_id']}" + (f" ({doc['name']})" if doc.get("name") else ""))


@accounts_app.command("grant")
def grant(
    account_id: str,
    role: Annotated[str, typer.Argument(help=ROLES)],
    territory: Annotated[list[str] | None, typer.Option("--territory", "-t", help="a department: 01, 2A, 971")] = None,
    practitioner: Annotated[list[str] | None, typer.Option("--practitioner", "-p", help="an IDNPS (delegate)")] = None,
    structure: Annotated[list[str] | None, typer.Option("--structure", "-s", help="a FINESS or IDNST")] = None,
) -> None:
    """Grant a role, on territories, practitioners or structures as the role wants."""
    wanted = Grant(_role(role), frozenset(territory or ()), frozenset(practitioner or ()), frozenset(structure or ()))
    try:
        changed = accounts.grant(open_backend(), _actor(), account_id, wanted)
    except (accounts.NotAllowed, accounts.InvalidAccount, LookupError) as exc:
        raise _refused(exc) from exc
    out.print(f"{account_id}: {', '.join(g['role'] for g in changed.account['grants'])}")


@accounts_app.command("revoke")
def revoke(
    account_id: str,
    role: Annotated[str, typer.Argument(help=ROLES)],
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="only these territories/practitioners/structures")
    ] = None,
) -> None:
    """Revoke a role, or only part of its scope; an account left with no role is signed out everywhere."""
    backend = open_backend()
    try:
        changed = accounts.revoke(backend, _actor(), account_id, _role(role), scope or ())
    except (accounts.NotAllowed, accounts.InvalidAccount, LookupError) as exc:
        raise _refused(exc) from exc
    if not changed.account.get("grants"):
        ended = sessions.close_all(backend, account_id)
        out.print(f"{account_id}: no role left; {ended} session(s) ended")
    else:
        out.print(f"{account_id}: {', '.join(g['role'] for g in changed.account['grants'])}")


@accounts_app.command("list")
def list_(
    role: Annotated[str | None, typer.Option()] = None,
    territory: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Accounts, optionally holding a role or a territory."""
    found = accounts.list_accounts(open_backend(), _actor(), _role(role) if role else None, territory)
    if as_json:
        write_json(found)
        return
    rows = [
        (
            d["account_id"],
            d.get("name") or "",
            "; ".join(f"{g['role']} ({_scope_text(g)})" for g in d.get("grants", ())),
            (d.get("last_sign_in_at") or "")[:16],
        )
        for d in found
    ]
    print_table("Accounts", ("account", "name", "roles", "last sign-in"), rows)


@accounts_app.command("show")
def show(account_id: str) -> None:
    """One account as JSON."""
    doc = accounts.get_account(open_backend(), account_id)
    if doc is None:
        raise fail(f"no account {account_id}", FAILED, hint="dispo accounts list")
    write_json(doc)


@accounts_app.command("audit")
def audit(
    account: Annotated[str | None, typer.Option(help="only this account's changes")] = None,
    limit: Annotated[int, typer.Option()] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Who changed which account, how and when: the latest first."""
    entries = accounts.audit_entries(open_backend(), _actor(), account, limit)
    if as_json:
        write_json(entries)
        return
    rows = [
        (
            e["at"][:19],
            e["actor"],
            e["account"],
            e["action"],
            e.get("role") or "",
            _scope_text(e) if e.get("role") else "",
        )
        for e in entries
    ]
    print_table("Changes of accounts", ("at", "by", "account", "action", "role", "on"), rows)
