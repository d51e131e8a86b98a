"""Appointments reported by vendors (flow INT_R03): validation against FrAppointmentSAS, idempotent storage
with the history of statuses, and the effect on the index (a booked slot leaves search at once)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aggregation.contract import IDNPS_SYSTEM, parse_instant
from core.records import Appointment, AppointmentStatus, StatusChange
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live

KIND = "appointments"
OPERATOR_EXTENSION = "http://interopsante.org/fhir/StructureDefinition/FrAppointmentOperator"


class AppointmentRejected(ValueError):
    """The resource breaks the contract: `status` is 400 (not an Appointment) or 422 (a business rule)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Outcome:
    appointment: Appointment
    created: bool
    changed: bool  # False for a duplicate or an out-of-order (older) update, which change nothing


def parse_appointment(resource: Any, vendor: str, backend: Backend, now: datetime) -> Appointment:
    if not isinstance(resource, dict) or resource.get("resourceType") != "Appointment":
        raise AppointmentRejected(400, "the body is not a FHIR Appointment resource")
    identifiers = [i for i in resource.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    if not identifiers:
        raise AppointmentRejected(422, "Appointment.identifier is required (the vendor's appointment id)")
    status = resource.get("status")
    if status not in AppointmentStatus.__members__:
        raise AppointmentRejected(422, f"status {status!r} is not one of booked, fulfilled, noshow, cancelled")
    try:
        start, _ = parse_instant(resource.get("start"))
        end, _ = parse_instant(resource.get("end"))
    except ValueError as exc:
        raise AppointmentRejected(422, "start and end must be instants with an offset") from exc
    if end <= start:
        raise AppointmentRejected(422, "end must be after start")
    idnps = None
    for participant in resource.get("participant") or []:
        ident = ((participant or {}).get("actor") or {}).get("identifier") or {}
        if ident.get("system") == IDNPS_SYSTEM and ident.get("value"):
            idnps = str(ident["value"])
    if idnps is None:
        raise AppointmentRejected(422, "participant.actor.identifier must name the practitioner's IDNPS")
    sites = backend.search("practice_sites", GeoQuery(filters={"idnps": [idnps]}, limit=1)).hits
    if not sites:
        raise AppointmentRejected(422, f"practitioner {idnps} is not in the directory")
    operator = None
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == OPERATOR_EXTENSION:
            operator = (((ext.get("valueReference") or {}).get("identifier")) or {}).get("value")
    if not operator:
        raise AppointmentRejected(422, "the FrAppointmentOperator extension must identify the regulator")
    meta = resource.get("meta") or {}
    try:
        last_updated = parse_instant(meta["lastUpdated"])[0] if meta.get("lastUpdated") else now
    except ValueError as exc:
        raise AppointmentRejected(422, "meta.lastUpdated must be an instant with an offset") from exc
    ident = identifiers[0]
    return Appointment(
        appointment_id=f"{vendor}:{ident['value']}",
        vendor=vendor,
        identifier_system=ident.get("system"),
        identifier_value=str(ident["value"]),
        status=AppointmentStatus(status),
        start=start,
        end=end,
        idnps=idnps,
        operator=str(operator),
        department_code=sites[0].doc.get("department_code"),
        version=str(meta["versionId"]) if meta.get("versionId") is not None else None,
        last_updated=last_updated,
    )


def find_by_identifier(backend: Backend, value: str) -> list[Appointment]:
    hits = backend.search(KIND, GeoQuery(filters={"identifier": [value]}, limit=10)).hits
    return [Appointment.model_validate(h.doc) for h in hits]


def _older(incoming: Appointment, stored: Appointment) -> bool:
    if incoming.version is not None and stored.version is not None:
        try:
            return int(incoming.version) < int(stored.version)
        except ValueError:
            pass
    return incoming.last_updated < stored.last_updated


def record(backend: Backend, incoming: Appointment, now: datetime | None = None) -> Outcome:
    """Store an appointment idempotently; an older update never overwrites a newer one."""
    now = now or datetime.now(UTC)
    index = ensure_live(backend, KIND)
    doc = backend.get(KIND, incoming.appointment_id)
    stored = Appointment.model_validate(doc) if doc else None
    if stored is not None:
        same = stored.model_dump(exclude={"history", "last_updated", "version"}) == incoming.model_dump(
            exclude={"history", "last_updated", "version"}
        )
        if same or _older(incoming, stored):
            return Outcome(stored, created=False, changed=False)
        history = [*stored.history]
        if incoming.status != stored.status:
            history.append(StatusChange(status=incoming.status, at=incoming.last_updated, received_at=now))
        result = incoming.model_copy(update={"history": history})
    else:
        result = incoming.model_copy(
            update={"history": [StatusChange(status=incoming.status, at=incoming.last_updated, received_at=now)]}
        )
    backend.write(index, [result.model_dump(mode="json", exclude_none=True)])
    backend.refresh(index)
    if result.status == AppointmentStatus.booked:
        take_slot(backend, result)
    return Outcome(result, created=stored is None, changed=True)


def take_slot(backend: Backend, appointment: Appointment) -> int:
    """The booked slot leaves the index now; a later cancellation does not bring it back (only the vendor
    publishing it again does)."""
    live = backend.live_index("slots")
    if live is None:
        return 0
    at = appointment.start.timestamp()
    hits = backend.search(
        "slots",
        GeoQuery(
            filters={"vendor": [appointment.vendor], "idnps": [appointment.idnps]},
            ranges={"start": (at - 1, at + 1)},
            limit=10,
        ),
    ).hits
    if hits:
        backend.delete(live, [h.doc["slot_id"] for h in hits])
        backend.refresh(live)
    return len(hits)


def to_fhir(appointment: Appointment) -> dict[str, Any]:
    """The stored appointment as a FrAppointmentSAS resource."""
    return {
        "resourceType": "Appointment",
        "id": appointment.appointment_id.replace(":", "-"),
        "meta": {
            "lastUpdated": appointment.last_updated.isoformat(),
            **({"versionId": appointment.version} if appointment.version else {}),
        },
        "extension": [
            {
                "url": OPERATOR_EXTENSION,
                "valueReference": {
                    "identifier": {
                        "type": {
                            "coding": [
                                {"system": "http://interopsante.org/fhir/CodeSystem/fr-v2-0203", "code": "IDNPS"}
                            ]
                        },
                        "system": IDNPS_SYSTEM,
                        "value": appointment.operator,
                    }
                },
            }
        ],
        "identifier": [
            {
                k: v
                for k, v in {"system": appointment.identifier_system, "value": appointment.identifier_value}.items()
                if v
            }
        ],
        "status": appointment.status.value,
        "start": appointment.start.isoformat(),
        "end": appointment.end.isoformat(),
        "participant": [
            {"actor": {"identifier": {"system": IDNPS_SYSTEM, "value": appointment.idnps}}, "status": "accepted"}
        ],
    }
