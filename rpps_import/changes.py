"""What an import changes in the directory: the version it wrote compared with the live one, before the switch.

Both versions are read once, in id order, with only the fields compared (`GeoQuery.fields`), and merged as two sorted
streams: memory holds one practitioner's sites at a time, whatever the file's size. A practice site's id begins with
its practitioner's IDNPS (`IDNPS:structure:mode`), so the id order groups each practitioner's sites together; an
establishment's id is its FINESS number.

    practitioner in the new version only           added (by profession, in the departments of their sites)
    in the live version only                       removed
    a site id in one version only                  site added / removed
    the same site at another address, or its       moved, with the distance between the two positions
    position, placed the same way, more than
    `MOVE_KM` away
    another set of savoir-faire codes              specialty change

What concerns the SAS comes first: a practitioner taking part (an active participation) gone from the register, one
of their sites gone, or moved more than `SAS_MOVE_KM`; and, for FINESS, a participating CPTS's establishment closed.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from core.geo import haversine_km
from core.report import (
    ChangeReport,
    DepartmentChanges,
    PractitionerRef,
    SasAlert,
    SiteMove,
    SiteRef,
    SpecialtyChange,
)
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import iterate_all, scan
from indexer.registry import participants

MOVE_KM = 1.0  # a position that moved farther than this without a change of address is a move all the same
SAS_MOVE_KM = 1.0  # a participant's site moved farther than this: regulators would send patients to the old place
LISTED = 500  # items kept per list of a report (the counts are whole)
SITE_FIELDS = ("site_id", "practitioner", "address", "department_code", "location", "position")
STRUCTURE_FIELDS = (
    "finess",
    "name",
    "category_label",
    "category_code",
    "address",
    "department_code",
    "location",
    "position",
)


def _address_key(doc: dict[str, Any]) -> tuple[str | None, ...]:
    a = doc.get("address") or {}
    return (a.get("number"), a.get("repetition"), a.get("street"), a.get("postcode"), a.get("insee_code"))


def _distance(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    old, new = before.get("location"), after.get("location")
    if not old or not new:
        return None
    return round(haversine_km(old["lat"], old["lon"], new["lat"], new["lon"]), 3)


def _precision(doc: dict[str, Any]) -> str | None:
    return (doc.get("position") or {}).get("precision")


def _moved(before: dict[str, Any], after: dict[str, Any]) -> tuple[bool, float | None]:
    """Whether a site moved, and how far. Its position alone moving is a move only when both were placed the same
    way: a site placed at its commune because the geocoder was away, at the same address, has not moved."""
    distance = _distance(before, after)
    if _address_key(before) != _address_key(after):
        return True, distance
    same_way = _precision(before) is not None and _precision(before) == _precision(after)
    return same_way and (distance or 0.0) > MOVE_KM, distance


def _commune(doc: dict[str, Any]) -> str | None:
    return (doc.get("address") or {}).get("commune")


@dataclass
class _Tally:
    """The report being built: counts whole, lists capped."""

    compared_with: str
    listed: int
    report: ChangeReport = field(init=False)
    departments: dict[str, DepartmentChanges] = field(default_factory=dict)
    added: Counter[str] = field(default_factory=Counter)
    removed: Counter[str] = field(default_factory=Counter)
    farthest: list[tuple[float, int, SiteMove]] = field(default_factory=list)  # a heap of the `listed` farthest
    order: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.report = ChangeReport(compared_with=self.compared_with, listed=self.listed)

    def department(self, code: str | None) -> DepartmentChanges:
        key = code or "?"
        if key not in self.departments:
            self.departments[key] = DepartmentChanges(department=key)
        return self.departments[key]

    def keep(self, items: list[Any], item: Any) -> None:
        if len(items) < self.listed:
            items.append(item)

    def move(self, move: SiteMove) -> None:
        """Kept if among the farthest `listed` moves so far."""
        entry = (move.distance_km, next(self.order), move)
        if len(self.farthest) < self.listed:
            heapq.heappush(self.farthest, entry)
        else:
            heapq.heappushpop(self.farthest, entry)

    def alert(self, alert: SasAlert) -> None:
        self.report.sas_alerts.append(alert)  # never capped: each one is a maintainer's task
        self.department(alert.department).sas_alerts += 1

    def done(self, started: float) -> ChangeReport:
        r = self.report
        r.added_by_profession = dict(self.added.most_common())
        r.removed_by_profession = dict(self.removed.most_common())
        r.by_department = [self.departments[k] for k in sorted(self.departments)]
        r.moves = [m for _, _, m in sorted(self.farthest, key=lambda e: (-e[0], e[1]))]
        r.duration_s = round(time.perf_counter() - started, 3)
        return r


def _groups(backend: Backend, kind: str, version: str, fields: tuple[str, ...]) -> Iterator[tuple[str, list[dict]]]:
    """A practice-site version's documents in id order, a practitioner's sites at a time, keyed so that keys sort
    as the groups come (`IDNPS:`: an IDNPS that began another one would otherwise sort after it)."""
    key, group = None, []
    for hit in scan(backend, kind, GeoQuery(version=version, fields=fields)):
        doc = hit.doc
        this = doc["practitioner"]["idnps"] + ":"
        if this != key and group:
            yield key, group  # type: ignore[misc]
            group = []
        key = this
        group.append(doc)
    if group:
        yield key, group  # type: ignore[misc]


def _merged(
    old: Iterator[tuple[str, list[dict]]], new: Iterator[tuple[str, list[dict]]]
) -> Iterator[tuple[list[dict], list[dict]]]:
    """Pairs of (live, new) groups of one key, either empty when the key is in one version only."""
    a, b = next(old, None), next(new, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            yield a[1], []  # type: ignore[index]
            a = next(old, None)
        elif a is None or b[0] < a[0]:
            yield [], b[1]
            b = next(new, None)
        else:
            yield a[1], b[1]
            a, b = next(old, None), next(new, None)


def _practitioner(sites: list[dict]) -> PractitionerRef:
    p = sites[0]["practitioner"]
    departments = sorted({s["department_code"] for s in sites if s.get("department_code")})
    return PractitionerRef(
        idnps=p["idnps"], profession=p.get("profession_label") or p["profession_code"], departments=departments
    )


def _specialties(sites: list[dict]) -> list[str]:
    return sorted({s["code"] for s in sites[0]["practitioner"].get("specialties") or [] if s.get("code")})


def _site(doc: dict[str, Any]) -> SiteRef:
    return SiteRef(
        site_id=doc["site_id"],
        idnps=doc["practitioner"]["idnps"],
        department=doc.get("department_code"),
        commune=_commune(doc),
    )


def compare_sites(
    backend: Backend, live: str, new: str, kind: str = "practice_sites", listed: int = LISTED
) -> ChangeReport:
    """The practice sites' change report between two versions (`live` the one live now, `new` the one written)."""
    started = time.perf_counter()
    taking_part = {p.idnps for p in participants(backend)}
    tally = _Tally(live, listed)
    r = tally.report
    for before, after in _merged(_groups(backend, kind, live, SITE_FIELDS), _groups(backend, kind, new, SITE_FIELDS)):
        if not before:
            who = _practitioner(after)
            tally.added[who.profession] += 1
            tally.keep(r.added, who)
            for code in who.departments or [None]:
                tally.department(code).added += 1
        elif not after:
            who = _practitioner(before)
            tally.removed[who.profession] += 1
            tally.keep(r.removed, who)
            for code in who.departments or [None]:
                tally.department(code).removed += 1
            if who.idnps in taking_part:
                tally.alert(SasAlert(alert="participant_removed", participant=who.idnps, department=_first(who)))
                for code in who.departments[1:]:  # one alert, counted in each department they practised in
                    tally.department(code).sas_alerts += 1
        elif _specialties(before) != _specialties(after):
            r.specialty_changes += 1
            tally.keep(
                r.specialties,
                SpecialtyChange(
                    idnps=after[0]["practitioner"]["idnps"], before=_specialties(before), after=_specialties(after)
                ),
            )
        _compare_group(tally, before, after, taking_part)
    return tally.done(started)


def _first(who: PractitionerRef) -> str | None:
    return who.departments[0] if who.departments else None


def _compare_group(tally: _Tally, before: list[dict], after: list[dict], taking_part: set[str]) -> None:
    r = tally.report
    old = {d["site_id"]: d for d in before}
    new = {d["site_id"]: d for d in after}
    gone_practitioner = not after
    for site_id in sorted(new.keys() - old.keys()):
        r.sites_added += 1
        tally.keep(r.added_sites, _site(new[site_id]))
        tally.department(new[site_id].get("department_code")).sites_added += 1
    for site_id in sorted(old.keys() - new.keys()):
        doc = old[site_id]
        r.sites_removed += 1
        tally.keep(r.removed_sites, _site(doc))
        tally.department(doc.get("department_code")).sites_removed += 1
        idnps = doc["practitioner"]["idnps"]
        if idnps in taking_part and not gone_practitioner:  # a practitioner gone is one alert, not one per site
            tally.alert(
                SasAlert(
                    alert="site_removed", participant=idnps, site_id=site_id, department=doc.get("department_code")
                )
            )
    for site_id in sorted(old.keys() & new.keys()):
        moved, distance = _moved(old[site_id], new[site_id])
        if not moved:
            continue
        doc = new[site_id]
        r.sites_moved += 1
        move = SiteMove(
            **_site(doc).model_dump(),
            distance_km=distance if distance is not None else 0.0,
            from_commune=_commune(old[site_id]),
        )
        tally.move(move)
        tally.department(doc.get("department_code")).sites_moved += 1
        idnps = doc["practitioner"]["idnps"]
        if idnps in taking_part and (distance is None or distance > SAS_MOVE_KM):
            tally.alert(
                SasAlert(
                    alert="site_moved",
                    participant=idnps,
                    site_id=site_id,
                    department=doc.get("department_code"),
                    distance_km=distance,
                )
            )


def _structures(backend: Backend, kind: str, version: str) -> Iterator[tuple[str, list[dict]]]:
    for hit in scan(backend, kind, GeoQuery(version=version, fields=STRUCTURE_FIELDS)):
        yield hit.doc["finess"], [hit.doc]


def compare_structures(
    backend: Backend, live: str, new: str, kind: str = "structures", listed: int = LISTED
) -> ChangeReport:
    """The FINESS establishments' change report: opened and closed (by category), moved; and the participating CPTS
    whose establishment closed."""
    started = time.perf_counter()
    cpts = {doc["finess"]: doc["idnst"] for doc in iterate_all(backend, "cpts") if doc.get("finess")}
    tally = _Tally(live, listed)
    r = tally.report
    for before, after in _merged(_structures(backend, kind, live), _structures(backend, kind, new)):
        if not before:
            (doc,) = after
            tally.added[doc.get("category_label") or doc.get("category_code") or "?"] += 1
            tally.keep(r.added_sites, _structure(doc))
            tally.department(doc.get("department_code")).added += 1
            r.sites_added += 1
        elif not after:
            (doc,) = before
            tally.removed[doc.get("category_label") or doc.get("category_code") or "?"] += 1
            tally.keep(r.removed_sites, _structure(doc))
            tally.department(doc.get("department_code")).removed += 1
            r.sites_removed += 1
            if doc["finess"] in cpts:
                tally.alert(
                    SasAlert(
                        alert="structure_closed",
                        participant=cpts[doc["finess"]],
                        finess=doc["finess"],
                        department=doc.get("department_code"),
                    )
                )
        else:
            moved, distance = _moved(before[0], after[0])
            if moved:
                r.sites_moved += 1
                move = SiteMove(
                    **_structure(after[0]).model_dump(), distance_km=distance or 0.0, from_commune=_commune(before[0])
                )
                tally.move(move)
                tally.department(after[0].get("department_code")).sites_moved += 1
    return tally.done(started)


def _structure(doc: dict[str, Any]) -> SiteRef:
    return SiteRef(site_id=doc["finess"], department=doc.get("department_code"), commune=_commune(doc))
