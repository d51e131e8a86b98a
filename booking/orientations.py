"""Orientations without a slot: a regulator sends the patient to a practitioner who accepts patients beyond their
slots (surnuméraire), to an SOS Médecins consultation place, or redirects them from an emergency department to a
practitioner who takes such patients; they record it from the card, then its outcome. Seen in the regulator's
follow-up, the practitioner's space and the analysts' tables (per territory, kind and week). No patient data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aggregation.availability import declared_sites
from core.errors import InvalidRequest, NotFound
from core.geo import department_of_postcode
from core.records import Orientation, OrientationKind, OrientationOutcome, is_association
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live
from indexer.registry import get_participation

KIND = "orientations"


def record_orientation(
    backend: Backend,
    operator: str,
    idnps: str,
    site_id: str,
    kind: OrientationKind,
    outcome: OrientationOutcome = OrientationOutcome.pending,
    now: datetime | None = None,
) -> Orientation:
    """Keep an orientation once the site is the practitioner's (or the association's place) and the practitioner
    takes such patients; raises NotFound or InvalidRequest saying which."""
    at = now or datetime.now(UTC)
    site = _site(backend, site_id)
    owner = (site or {}).get("practitioner", {}).get("idnps") if site else None
    if site is None or (owner != idnps and not is_association(idnps)):
        raise NotFound("Site not found", f"{site_id} is not a site of {idnps}.", "not-found")
    participation = get_participation(backend, idnps)
    if participation is None or not participation.active:
        raise InvalidRequest("Not taking part", f"{idnps} takes no part in the SAS.", "not-taking-part")
    if kind is OrientationKind.extra_patients and not participation.extra_patients:
        raise InvalidRequest("No surnuméraire", f"{idnps} does not accept patients beyond their slots.", "not-accepted")
    if kind is OrientationKind.er_redirection and not participation.er_redirection:
        raise InvalidRequest(
            "No redirection", f"{idnps} does not take patients redirected from emergencies.", "not-accepted"
        )
    if kind is OrientationKind.sos and participation.via.value != "sos":
        raise InvalidRequest("Not SOS Médecins", f"{idnps} does not take part through SOS Médecins.", "not-accepted")
    orientation = Orientation(
        orientation_id=uuid.uuid4().hex,
        kind=kind,
        idnps=idnps,
        site_id=site_id,
        department_code=site.get("department_code") or _department((site.get("address") or {}).get("postcode")),
        operator=operator,
        outcome=outcome,
        at=at,
        outcome_at=at if outcome is not OrientationOutcome.pending else None,
    )
    index = ensure_live(backend, KIND)
    backend.write(index, [orientation.model_dump(mode="json", exclude_none=True)])
    backend.refresh(index)
    return orientation


def _site(backend: Backend, site_id: str) -> dict[str, Any] | None:
    """A directory practice site, or a site a vendor declared (an SOS Médecins place)."""
    if backend.live_index("practice_sites") is not None:
        found = backend.get("practice_sites", site_id)
        if found is not None:
            return found
    return declared_sites(backend, [site_id]).get(site_id) if backend.live_index("slots") is not None else None


def _department(postcode: str | None) -> str | None:
    return department_of_postcode(postcode) if postcode else None


def set_outcome(
    backend: Backend, orientation_id: str, operator: str, outcome: OrientationOutcome, now: datetime | None = None
) -> Orientation:
    """The outcome of one of the regulator's own orientations."""
    at = now or datetime.now(UTC)
    ensure_live(backend, KIND)

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None or doc.get("operator") != operator:
            return None
        return {**doc, "outcome": outcome.value, "outcome_at": at.isoformat()}

    _, written = backend.update(KIND, orientation_id, change)
    if written is None:
        raise NotFound("Not found", f"No orientation {orientation_id} of yours.", "not-found")
    backend.refresh(ensure_live(backend, KIND))
    return Orientation.model_validate(written)


def orientations(
    backend: Backend,
    operator: str | None = None,
    idnps: str | None = None,
    departments: list[str] | None = None,
    since: datetime | None = None,
) -> list[Orientation]:
    """Orientations, latest first: a regulator's, a practitioner's, or those of departments."""
    if backend.live_index(KIND) is None:
        return []
    filters = {
        k: v
        for k, v in (
            ("operator", [operator] if operator else None),
            ("idnps", [idnps] if idnps else None),
            ("department", departments),
        )
        if v
    }
    ranges = {"at": (since.timestamp(), None)} if since else {}
    hits = backend.search(KIND, GeoQuery(filters=filters, ranges=ranges, limit=1000)).hits
    return sorted((Orientation.model_validate(h.doc) for h in hits), key=lambda o: o.at, reverse=True)
