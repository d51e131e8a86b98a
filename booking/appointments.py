"""Appointments reported by vendors (flow INT_R03): validation against FrAppointmentSAS, idempotent storage
with the history of statuses, and the effect on the index (a booked slot leaves search at once).

A vendor's report is taken only for what that vendor may speak of: a practitioner taking part in the SAS through
it, a regulator whose account it was given, instants within the years slots can be in, and identifiers of a
bounded size (everything stored is shown again in regulators' follow-up and analysts' counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aggregation.availability import KIND as SLOTS
from aggregation.availability import is_association
from aggregation.contract import IDNPS_SYSTEM, IDNST_SYSTEM, InstantOutOfRange, parse_instant
from booking import hub_messages, hub_outbox
from booking.accounts import account_pushed
from core.geo import EARLIEST, LATEST, department_of_postcode
from core.records import Appointment, AppointmentStatus, StatusChange
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live
from indexer.registry import get_participation

KIND = "appointments"
OPERATOR_EXTENSION = "http://interopsante.org/fhir/StructureDefinition/FrAppointmentOperator"
MAX_ID = 128  # characters of an identifier value, IDNPS, operator or version: far beyond any real one
MAX_URI = 512  # characters of an identifier system


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


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _bounded(value: Any, limit: int, what: str) -> str:
    """A vendor's identifier or version as stored: a string (a number is taken as written) of 1 to `limit`
    characters; raises AppointmentRejected otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise AppointmentRejected(422, f"{what} must be a string")
    if isinstance(value, int) and value.bit_length() > 4 * limit:  # more than `limit` digits, never written out
        raise AppointmentRejected(422, f"{what} is longer than {limit} characters")
    text = str(value)
    if not text:
        raise AppointmentRejected(422, f"{what} must not be empty")
    if len(text) > limit:
        raise AppointmentRejected(422, f"{what} is longer than {limit} characters")
    return text


def _instant(value: Any, what: str) -> datetime:
    try:
        return parse_instant(value)[0]
    except InstantOutOfRange as exc:
        raise AppointmentRejected(
            422, f"{what} must be an instant within {EARLIEST.year}–{LATEST.year - 1}: {exc}"
        ) from exc
    except ValueError as exc:
        raise AppointmentRejected(422, f"{what} must be an instant with an offset") from exc


def parse_appointment(resource: Any, vendor: str, backend: Backend, now: datetime) -> Appointment:
    """The stored form of a vendor's FrAppointmentSAS; raises AppointmentRejected for anything it may not report."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Appointment":
        raise AppointmentRejected(400, "the body is not a FHIR Appointment resource")
    identifiers = [i for i in _list(resource.get("identifier")) if isinstance(i, dict) and i.get("value")]
    if not identifiers:
        raise AppointmentRejected(422, "Appointment.identifier is required (the vendor's appointment id)")
    ident = identifiers[0]
    value = _bounded(ident["value"], MAX_ID, "identifier.value")
    system = _bounded(ident["system"], MAX_URI, "identifier.system") if ident.get("system") is not None else None
    status = resource.get("status")
    if not isinstance(status, str) or status not in AppointmentStatus.__members__:
        raise AppointmentRejected(422, f"status {status!r:.40} is not one of booked, fulfilled, noshow, cancelled")
    start = _instant(resource.get("start"), "start")
    end = _instant(resource.get("end"), "end")
    if end <= start:
        raise AppointmentRejected(422, "end must be after start")
    # Whose appointment: a practitioner by IDNPS; else an SOS Médecins association (its place's) by IDNST, 3 + SIRET.
    practitioners, associations = [], []
    for participant in _list(resource.get("participant")):
        actor = _dict(_dict(_dict(participant).get("actor")).get("identifier"))
        named = actor.get("value")
        if named and actor.get("system") == IDNPS_SYSTEM:
            practitioners.append(named)
        elif isinstance(named, str) and actor.get("system") == IDNST_SYSTEM and is_association(named):
            associations.append(named)
    named = (practitioners or associations or [None])[-1]
    idnps = None if named is None else _bounded(named, MAX_ID, "participant.actor.identifier.value")
    if idnps is None:
        raise AppointmentRejected(
            422, "participant.actor.identifier must name the practitioner's IDNPS (or the SOS association's IDNST)"
        )
    department = participant_department(backend, vendor, idnps)
    operator = None
    for ext in _list(resource.get("extension")):
        if isinstance(ext, dict) and ext.get("url") == OPERATOR_EXTENSION:
            operator = _dict(_dict(ext.get("valueReference")).get("identifier")).get("value")
    if not operator:
        raise AppointmentRejected(422, "the FrAppointmentOperator extension must identify the regulator")
    operator = _bounded(operator, MAX_ID, "the FrAppointmentOperator identifier")
    appointment_id = f"{vendor}:{value}"
    if not _accepted_before(backend, appointment_id, idnps, operator):
        _check_reporter(backend, vendor, idnps, operator)
    meta = _dict(resource.get("meta"))
    last_updated = _instant(meta["lastUpdated"], "meta.lastUpdated") if meta.get("lastUpdated") else now
    version = meta.get("versionId")
    return Appointment(
        appointment_id=appointment_id,
        vendor=vendor,
        identifier_system=system,
        identifier_value=value,
        status=AppointmentStatus(status),
        start=start,
        end=end,
        idnps=idnps,
        operator=operator,
        department_code=department,
        version=_bounded(version, MAX_ID, "meta.versionId") if version is not None else None,
        last_updated=last_updated,
    )


def participant_department(backend: Backend, vendor: str, participant: str) -> str | None:
    """The department of the participant's site, for territory follow-up: the directory's site of a practitioner
    (who must be in it); the place of an SOS association's slot at this vendor (its places are the vendor's word)."""
    if not is_association(participant):
        sites = backend.search("practice_sites", GeoQuery(filters={"idnps": [participant]}, limit=1)).hits
        if not sites:
            raise AppointmentRejected(422, f"practitioner {participant} is not in the directory")
        return sites[0].doc.get("department_code")
    if backend.live_index(SLOTS) is None:
        return None
    query = GeoQuery(filters={"vendor": [vendor], "idnps": [participant]}, limit=1, fields=("place",))
    hits = backend.search(SLOTS, query).hits
    postcode = (hits[0].doc.get("place") or {}).get("postcode") if hits else None
    return department_of_postcode(postcode) if postcode else None


def _check_reporter(backend: Backend, vendor: str, idnps: str, operator: str) -> None:
    """The vendor speaks for the practitioner (an active participation through it) and knows the regulator (their
    account was pushed to it): otherwise the appointment would show in a follow-up it has no part in."""
    participation = get_participation(backend, idnps)
    if participation is None or not participation.active or vendor not in participation.vendors:
        raise AppointmentRejected(422, f"practitioner {idnps} takes no part in the SAS through vendor {vendor}")
    if not account_pushed(backend, operator, vendor):
        raise AppointmentRejected(422, f"regulator {operator} has no account at vendor {vendor}")


def _accepted_before(backend: Backend, appointment_id: str, idnps: str, operator: str) -> bool:
    """An update of an appointment the vendor already reported, for the same practitioner and regulator: its later
    statuses (fulfilled, missed) still count once the practitioner has left the SAS."""
    stored = backend.get(KIND, appointment_id)
    return stored is not None and stored.get("idnps") == idnps and stored.get("operator") == operator


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
    """Store an appointment idempotently; an older update never overwrites a newer one, even when two reports of
    one appointment arrive at once (the decision and the write are one compare-and-set, `Backend.update`)."""
    now = now or datetime.now(UTC)
    ensure_live(backend, KIND)

    unchanged = {"history", "last_updated", "version"}

    def same(stored: Appointment) -> bool:
        return stored.model_dump(exclude=unchanged) == incoming.model_dump(exclude=unchanged)

    context = _message_context(backend, incoming)

    def decide(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        stored = Appointment.model_validate(doc) if doc else None
        if stored is not None:
            if _older(incoming, stored):
                return None
            if same(stored) and (stored.version, stored.last_updated) == (incoming.version, incoming.last_updated):
                return None  # the same report again
            history = [*stored.history]
            if incoming.status != stored.status:
                history.append(StatusChange(status=incoming.status, at=incoming.last_updated, received_at=now))
        else:
            history = [StatusChange(status=incoming.status, at=incoming.last_updated, received_at=now)]
        # A newer report saying the same is kept too: its version is what later reports are compared with.
        out = incoming.model_copy(update={"history": history}).model_dump(mode="json", exclude_none=True)
        if stored is not None and same(stored):
            return hub_outbox.carried(out, doc)
        # A creation or a change: the SAMU's regulation software is told, in this same write.
        method = hub_messages.UPDATE if stored is not None else hub_messages.CREATE
        content = hub_messages.content_of(
            incoming.appointment_id,
            method,
            history[0].at,
            incoming.start,
            incoming.end,
            incoming.status.value,
            *context,
        )
        return hub_outbox.add_entry(out, doc, content, now)

    before, written = backend.update(KIND, incoming.appointment_id, decide)
    stored = Appointment.model_validate(before) if before else None
    if written is None:
        assert stored is not None  # nothing is written only over a stored appointment
        return Outcome(stored, created=False, changed=False)
    result = Appointment.model_validate(written)
    backend.refresh(backend.live_index(KIND) or "")
    if result.status == AppointmentStatus.booked and (stored is None or not same(stored)):
        take_slot(backend, result)
    return Outcome(result, created=stored is None, changed=stored is None or not same(stored))


def _message_context(
    backend: Backend, appointment: Appointment
) -> tuple[str | None, dict[str, Any] | None, tuple[str, str] | None]:
    """What the message to the LRM says beside the appointment: how the participant takes part, the practitioner as
    the directory knows them, or the SOS Médecins association (its name as its vendor gives it)."""
    participation = get_participation(backend, appointment.idnps)
    via = participation.via.value if participation else None
    if is_association(appointment.idnps):
        name = None
        if backend.live_index(SLOTS) is not None:
            query = GeoQuery(filters={"idnps": [appointment.idnps]}, limit=1, fields=("structure_name",))
            hits = backend.search(SLOTS, query).hits
            name = hits[0].doc.get("structure_name") if hits else None
        return via or "sos", None, (appointment.idnps, name or "SOS Médecins")
    sites = backend.search("practice_sites", GeoQuery(filters={"idnps": [appointment.idnps]}, limit=1)).hits
    return via, (sites[0].doc.get("practitioner") if sites else None), None


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
