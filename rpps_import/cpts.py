"""CPTS as structures of the directory (kind `cpts`): who they are and who belongs to them.

A CPTS is known from three sources, each writing only what it knows, by compare-and-set (two vendors' schedulers
may learn of one CPTS at once):
- the FINESS file, when the CPTS is an establishment there (its IDNST is 1 + FINESS): its name and phone;
- the participation list, whose `cpts` column names each practitioner's CPTS: its `members`;
- the vendors' answers of the CPTS flow (slots offered through it, with its Organization): its name and phone when
  the FINESS file lacks it, its `seen_members` and the `vendors` offering slots through it.
Its territory is the departments where its members practise (their practice sites), and its FINESS establishment's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from core.records import Cpts, CptsStructure
from indexer.backend import Backend
from indexer.lifecycle import ensure_live, iterate_all

KIND = "cpts"
FINESS = re.compile(r"^[0-9][0-9AB][0-9]{7}$")
SIRET = re.compile(r"^[0-9]{14}$")
SEEN_EVERY = timedelta(hours=1)  # `seen_at` moves on at most this often: not a write per cycle and CPTS


def cpts_idnst(value: str) -> str:
    """A CPTS's IDNST from what a list may write: its FINESS (9 characters), 1 + FINESS, or 3 + SIRET; raises
    ValueError for anything else."""
    v = value.strip().upper()
    if FINESS.fullmatch(v):
        return "1" + v
    if (v[:1] == "1" and FINESS.fullmatch(v[1:])) or (v[:1] == "3" and SIRET.fullmatch(v[1:])):
        return v
    raise ValueError(f"{value!r} is not a FINESS (9 characters), 1 + FINESS or 3 + SIRET")


def _departments(backend: Backend, idnps: Iterable[str]) -> set[str]:
    ids = sorted(set(idnps))
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        for site in iterate_all(backend, "practice_sites", {"idnps": ids[i : i + 500]}):
            if site.get("department_code"):
                found.add(site["department_code"])
    return found


def _completed(backend: Backend, doc: dict[str, Any], vendor: Cpts | None = None) -> dict[str, Any]:
    """The document with what the FINESS file and a vendor say of the CPTS, and its territory: the FINESS name is
    the directory's; the vendor's phone is the one it publishes for the CPTS flow, else the establishment's."""
    idnst = doc["idnst"]
    structure = backend.get("structures", idnst[1:]) if idnst.startswith("1") else None
    doc = dict(doc)
    if vendor is not None:
        doc["name"] = vendor.name or doc.get("name")
        doc["phone"] = vendor.phone or doc.get("phone")
    if structure is not None:
        doc["finess"] = structure["finess"]
        doc["name"] = structure.get("name") or doc.get("name")
        doc["phone"] = doc.get("phone") or structure.get("phone")
    territory = _departments(backend, [*doc.get("members", []), *doc.get("seen_members", [])])
    if structure is not None and structure.get("department_code"):
        territory.add(structure["department_code"])
    doc["territory"] = sorted(territory)
    return CptsStructure.model_validate(doc).model_dump(mode="json", exclude_none=True)


def record_members(backend: Backend, members: Mapping[str, Iterable[str]]) -> int:
    """After a participation list is loaded whole: each CPTS's `members` become those the list names (none for a
    CPTS it no longer names). Returns how many CPTS changed."""
    index = ensure_live(backend, KIND)
    wanted = {idnst: sorted(set(ids)) for idnst, ids in members.items()}
    named_before = {doc["idnst"] for doc in iterate_all(backend, KIND) if doc.get("members")}
    changed = 0
    for idnst in sorted(set(wanted) | named_before):
        changed += _set_members(backend, idnst, wanted.get(idnst, []))
    backend.refresh(index)
    return changed


def move_member(backend: Backend, idnps: str, before: str | None, after: str | None) -> None:
    """One practitioner's participation changed its CPTS (edited alone, not with a list)."""
    if before == after:
        return
    index = ensure_live(backend, KIND)
    for idnst, add in ((before, False), (after, True)):
        if idnst is None:
            continue
        doc = backend.get(KIND, idnst) or {}
        current = set(doc.get("members", []))
        _set_members(backend, idnst, sorted(current | {idnps} if add else current - {idnps}))
    backend.refresh(index)


def _set_members(backend: Backend, idnst: str, members: list[str]) -> int:
    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        doc = doc or {"idnst": idnst}
        if doc.get("members", []) == members and "territory" in doc:
            return None
        return _completed(backend, {**doc, "members": members})

    _, written = backend.update(KIND, idnst, change)
    return written is not None


def learn(backend: Backend, vendor_id: str, seen: Mapping[str, tuple[Cpts, set[str]]], now: datetime) -> int:
    """What one vendor's cycle showed: slots offered through these CPTS, for these practitioners. New members and
    the vendor are added, the name and phone the vendor gives kept; nothing is removed (a practitioner without a
    free slot this cycle is still a member). Returns how many CPTS changed."""
    index = ensure_live(backend, KIND)
    changed = 0
    for idnst, (cpts, idnps) in sorted(seen.items()):

        def change(doc: dict[str, Any] | None, cpts: Cpts = cpts, idnps: set[str] = idnps) -> dict[str, Any] | None:
            doc = doc or {"idnst": cpts.idnst}
            seen_members = sorted(set(doc.get("seen_members", [])) | idnps)
            vendors = sorted(set(doc.get("vendors", [])) | {vendor_id})
            last = doc.get("seen_at")
            stale = last is None or now - datetime.fromisoformat(last) >= SEEN_EVERY
            # The vendor's phone is kept over the establishment's; its name only where the FINESS file has none.
            same_phone = cpts.phone in (None, doc.get("phone"))
            same_name = cpts.name in (None, doc.get("name")) or bool(doc.get("finess"))
            news = seen_members != doc.get("seen_members") or vendors != doc.get("vendors")
            if not news and not stale and same_phone and same_name:
                return None
            updated = {**doc, "seen_members": seen_members, "vendors": vendors, "seen_at": now.isoformat()}
            return _completed(backend, updated, cpts)

        _, written = backend.update(KIND, idnst, change)
        changed += written is not None
    if changed:
        backend.refresh(index)
    return changed


def get_cpts(backend: Backend, idnst: str) -> CptsStructure | None:
    doc = backend.get(KIND, idnst)
    return CptsStructure.model_validate(doc) if doc else None


def list_cpts(backend: Backend, department: str | None = None, member: str | None = None) -> list[CptsStructure]:
    """The CPTS of a department (by territory), or of a practitioner (named by the list or seen), by IDNST."""
    filters: dict[str, list[str]] = {}
    if department:
        filters["territory"] = [department]
    found: dict[str, dict[str, Any]] = {}
    for field in ("member", "seen_member") if member else (None,):
        wanted = filters | ({field: [member]} if field and member else {})
        for doc in iterate_all(backend, KIND, wanted):
            found[doc["idnst"]] = doc
    return [CptsStructure.model_validate(found[k]) for k in sorted(found)]
