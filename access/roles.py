"""The platform's roles, the scope each one is granted on, and the caller a request acts as.

People are known by their IDNPS (or a technical id when they have none) and hold grants: a role on SAS territories
(departments) for the regulation's and the territories' roles, on practitioners for a delegate, on structures for a
structure manager; national roles have no scope. Machine clients (vendors, scripts, the command line) hold a bearer
token carrying one role, national.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    # People, signed in through Pro Santé Connect.
    regulator = "regulator"  # médecin régulateur
    osnp = "osnp"  # opérateur de soins non programmés
    ioa = "ioa"  # infirmier organisateur de l'accueil (emergency department)
    effecteur = "effecteur"  # a practitioner taking part, acting for themself
    delegate = "delegate"  # acts for one or more practitioners (a secretary)
    structure_manager = "structure_manager"  # of one or more structures (a CPTS, an SOS Médecins association)
    territorial_referent = "territorial_referent"
    territorial_admin = "territorial_admin"
    national_admin = "national_admin"
    analyst = "analyst"
    # Machine clients only (bearer tokens).
    maintainer = "maintainer"
    vendor = "vendor"


class Scope(StrEnum):
    national = "national"
    territories = "territories"
    practitioners = "practitioners"
    structures = "structures"
    self = "self"


SCOPE: dict[Role, Scope] = {
    Role.regulator: Scope.territories,
    Role.osnp: Scope.territories,
    Role.ioa: Scope.territories,
    Role.effecteur: Scope.self,
    Role.delegate: Scope.practitioners,
    Role.structure_manager: Scope.structures,
    Role.territorial_referent: Scope.territories,
    Role.territorial_admin: Scope.territories,
    Role.national_admin: Scope.national,
    Role.analyst: Scope.national,
    Role.maintainer: Scope.national,
    Role.vendor: Scope.national,
}
PERSON_ROLES = tuple(r for r in Role if r not in (Role.maintainer, Role.vendor))
TOKEN_ROLES = (Role.regulator, Role.maintainer, Role.analyst, Role.vendor)
# What a territorial administrator may grant, on their own territories only; the rest is a national administrator's.
TERRITORIAL_GRANTS = (Role.regulator, Role.osnp, Role.ioa, Role.territorial_referent)
ADMINS = (Role.national_admin, Role.maintainer)

DEPARTMENT = re.compile(r"^(0[1-9]|[1-8][0-9]|9[0-5]|2A|2B|97[1-6])$")
IDNPS = re.compile(r"^(8\d{11}|0\d{9})$")  # 8 + RPPS number, or 0 + ADELI number
STRUCTURE = re.compile(r"^[0-9A-Za-z]{9,15}$")


@dataclass(frozen=True)
class Grant:
    """One role and what it is granted on (the lists its scope uses; the others stay empty)."""

    role: Role
    territories: frozenset[str] = frozenset()
    practitioners: frozenset[str] = frozenset()
    structures: frozenset[str] = frozenset()

    def problems(self) -> list[str]:
        """What makes the grant unusable: a scope missing, or given where the role has none."""
        scope, out = SCOPE[self.role], []
        wanted = {
            Scope.territories: self.territories,
            Scope.practitioners: self.practitioners,
            Scope.structures: self.structures,
        }
        for kind, values in wanted.items():
            if scope == kind and not values:
                out.append(f"the {self.role.value} role is granted on {kind.value}: name at least one")
            if scope != kind and values:
                out.append(f"the {self.role.value} role has no {kind.value}")
        out += [
            f"{t!r} is not a department code (01, 2A, 971 …)"
            for t in sorted(self.territories - _valid(DEPARTMENT, self.territories))
        ]
        out += [f"{p!r} is not an IDNPS" for p in sorted(self.practitioners - _valid(IDNPS, self.practitioners))]
        out += [f"{s!r} is not a structure id" for s in sorted(self.structures - _valid(STRUCTURE, self.structures))]
        return out


def _valid(pattern: re.Pattern[str], values: frozenset[str]) -> frozenset[str]:
    return frozenset(v for v in values if pattern.fullmatch(v))


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a person's account (by a session) or a machine client (by a token)."""

    label: str  # the account id (a person's IDNPS or technical id), or the token's label (a vendor's id)
    grants: tuple[Grant, ...]
    person: bool = False
    name: str | None = None
    session: str | None = field(default=None, compare=False)  # the session's id digest, for a person signed in

    @property
    def roles(self) -> frozenset[Role]:
        return frozenset(g.role for g in self.grants)

    @property
    def role(self) -> Role:
        """The first role held (a machine client holds one)."""
        return self.grants[0].role

    def holds(self, roles: tuple[Role, ...] | frozenset[Role]) -> bool:
        return any(g.role in roles for g in self.grants)

    def territories(self, roles: tuple[Role, ...]) -> frozenset[str] | None:
        """The departments the caller acts on through these roles; None when one of them is national."""
        out: set[str] = set()
        for grant in self.grants:
            if grant.role not in roles:
                continue
            if SCOPE[grant.role] in (Scope.national,):
                return None
            out |= grant.territories
        return frozenset(out)

    def acts_for(self, idnps: str) -> bool:
        """Whether the caller may act for this practitioner: themself, or as their delegate."""
        for grant in self.grants:
            if grant.role is Role.effecteur and self.label == idnps:
                return True
            if grant.role is Role.delegate and idnps in grant.practitioners:
                return True
        return False

    def manages(self, structure: str) -> bool:
        return any(g.role is Role.structure_manager and structure in g.structures for g in self.grants)


def machine(role: Role, label: str) -> Principal:
    return Principal(label, (Grant(role),))
