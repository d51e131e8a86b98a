"""A vendor's side of the SAS contract, faithful enough to test and demo against.

- `GET /fhir/Slot`: the slot search of flow INT_R01 (parameters checked as the contract requires; 400
  with an OperationOutcome otherwise), answered with a searchset Bundle of Slot, Schedule,
  Practitioner and PractitionerRole (contained Location), offsets in Europe/Paris time;
- `GET /fhir/Schedule`: the SOS Médecins flow's search of associations' consultation places by SIRET;
- `GET /fhir/metadata`: its CapabilityStatement, declaring what the agency requires of the flows it serves;
- `POST /fhir/Practitioner`, `PUT /fhir/Practitioner?identifier=`: regulator accounts (flow INT_R02);
- `GET /booking/{slot_id}`: the booking page a slot's URL opens (`origin=sas` accepted);
- `POST /_control`: change latency, error, malformed, hang, churn and paging knobs while running, and the
  untrusted content knobs: slots of practitioners not asked for, slots at out-of-range dates; and answers
  padded to a size or dribbled over seconds.
"""

from __future__ import annotations

import asyncio
import html
import random
import uuid
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from functools import cache, lru_cache
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.datastructures import URL

from aggregation.capability import capability_statement
from aggregation.contract import (
    CPTS_CATEGORY,
    CPTS_INCLUDES,
    IDNPS_SYSTEM,
    IDNST_SYSTEM,
    MAX_ASSOCIATIONS,
    MAX_IDENTIFIERS,
    SERVICE_TYPE_REFERENCE,
    parse_instant,
)
from core.geo import department_of_postcode, gazetteer
from core.records import Flow, is_association
from editor_sandbox.agenda import (
    MODALITIES,
    PARIS,
    REASONS,
    TYPES,
    AgendaSlot,
    SandboxAssociation,
    SandboxConfig,
    SandboxCpts,
    SandboxPlace,
    SandboxPractitioner,
    SandboxSite,
    day_slots,
    free_slots,
)

FHIR_JSON = "application/fhir+json"
TYPE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R314-TypeCreneau/FHIR/TRE-R314-TypeCreneau"
ACT_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
R38_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"
V20276 = "http://terminology.hl7.org/CodeSystem/v2-0276"
V20203 = "http://interopsante.org/fhir/CodeSystem/fr-v2-0203"
R66_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R66-CategorieEtablissement/FHIR/TRE-R66-CategorieEtablissement"
LOCATION_TYPES = "http://interopsante.org/fhir/CodeSystem/fr-location-identifier-type"
IDNST_TYPE = {"coding": [{"system": LOCATION_TYPES, "code": "IDNST"}]}
INTRN_TYPE = {"coding": [{"system": LOCATION_TYPES, "code": "INTRN"}]}
PLACES_SYSTEM = "https://sandbox.dispo.invalid/lieux"  # the sandbox's own identifiers of consultation places
KNOBS = (
    "full_rate",
    "unknown_sites",
    "foreign_practitioners",
    "odd_dates",
    "slow_practitioners",
    "page_size",
    "total_offset",
    "foreign_next",
    "padding_bytes",
    "dribble_s",
    "latency_ms_min",
    "latency_ms_max",
    "error_rate",
    "malformed_rate",
    "hang_rate",
    "hang_s",
    "churn_rate",
    "churn_period_s",
    "flows",
)


def outcome(status: int, code: str, text: str) -> JSONResponse:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def create_sandbox_app(config: SandboxConfig, clock: Any = None) -> FastAPI:
    app = FastAPI(title=f"SAS vendor sandbox: {config.name}")
    practitioners = {p.idnps: p for p in config.practitioners}
    associations = {a.siret: a for a in config.associations}
    # Their places' agendas are practitioners' agendas under the association's id: booked and found alike.
    practitioners |= {a.agenda_id: a.as_practitioner() for a in config.associations}
    booked: set[str] = set()
    accounts: dict[str, dict[str, Any]] = {}
    stats = {"searches": 0}
    rng = random.Random(config.seed)
    now = clock or (lambda: datetime.now(UTC))
    app.state.config, app.state.booked, app.state.accounts, app.state.stats = config, booked, accounts, stats

    @app.get("/fhir/Slot")
    async def search_slots(request: Request) -> Response:
        stats["searches"] += 1
        params = request.query_params
        window = _window(params, "start")
        if isinstance(window, Response):
            return window
        start_ge, start_le = window
        if params.get("status") != "free":
            return outcome(400, "not-supported", "status=free is mandatory and the only status supported")
        raw = params.get("schedule.actor:Practitioner.identifier")
        if not raw:
            return outcome(400, "required", "schedule.actor:Practitioner.identifier is mandatory")
        identifiers = []
        for token in raw.split(","):
            system, _, value = token.rpartition("|")
            if system != IDNPS_SYSTEM or not value:
                return outcome(400, "value", f"identifier {token!r} is not {IDNPS_SYSTEM}|<IDNPS>")
            identifiers.append(value)
        if len(identifiers) > MAX_IDENTIFIERS:
            return outcome(400, "too-costly", f"at most {MAX_IDENTIFIERS} identifiers per search")
        delay = rng.uniform(config.latency_ms_min, config.latency_ms_max) / 1000
        delay += max((config.slow_practitioners.get(i, 0.0) for i in identifiers), default=0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        draw = rng.random()
        if draw < config.hang_rate:
            await asyncio.sleep(config.hang_s)
        elif draw < config.hang_rate + config.error_rate:
            return outcome(500, "exception", "sandbox: simulated server error")
        elif draw < config.hang_rate + config.error_rate + config.malformed_rate:
            return Response('{"resourceType": "Bundle", "entry": "oops"', media_type=FHIR_JSON)
        # Paging (`_count`, then `next` links carrying `_offset`), as a FHIR server may do; a vendor may impose
        # its own page size whatever the client asks (`page_size`).
        try:
            count = config.page_size or int(params.get("_count", 0)) or None
            offset = int(params.get("_offset", 0))
        except ValueError:
            return outcome(400, "value", "_count and _offset must be integers")
        include = "Slot:schedule" in params.getlist("_include")
        iterate = "Schedule:actor" in params.getlist("_include:iterate")
        # The CPTS flow's includes: the HealthcareService a CPTS slot references, and the CPTS's Organization.
        services = CPTS_INCLUDES[0][1] in params.getlist("_include")
        organizations = CPTS_INCLUDES[1][1] in params.getlist("_include:iterate")
        moment = now()
        entries: list[dict[str, Any]] = []
        seen: set[str] = set()
        base = str(request.base_url).rstrip("/")
        matching = [
            slot
            for idnps in identifiers
            if idnps in practitioners
            for slot in free_slots(config, practitioners[idnps], start_ge, start_le, moment, booked)
        ]
        described = dict(practitioners)  # whom the answer's slots are for: served, or foreign ones added
        for foreign in _foreign(config, practitioners, identifiers):
            described[foreign.idnps] = foreign
            matching += free_slots(config, foreign, start_ge, start_le, moment, booked)[:1]
        if config.odd_dates:
            matching += _odd_dated(practitioners, identifiers)
        page = matching[offset : offset + count] if count else matching
        for slot in page:
            practitioner, idnps = described[slot.idnps], slot.idnps
            cpts = practitioner.cpts if slot.slot_type == "CPTS" else None
            entries.append(_entry(base, "Slot", _slot(base, slot, cpts)))
            if cpts is not None and services and f"HealthcareService/cpts-{cpts.idnst}" not in seen:
                seen.add(f"HealthcareService/cpts-{cpts.idnst}")
                entries.append(_entry(base, "HealthcareService", _service(cpts)))
                if organizations:
                    entries.append(_entry(base, "Organization", _cpts_organization(cpts)))
            schedule_id = f"{idnps}-{slot.site_index}"
            if include and f"Schedule/{schedule_id}" not in seen:
                seen.add(f"Schedule/{schedule_id}")
                entries.append(_entry(base, "Schedule", _schedule(schedule_id, idnps, slot.site_index)))
                if iterate:
                    if f"Practitioner/{idnps}" not in seen:
                        seen.add(f"Practitioner/{idnps}")
                        entries.append(_entry(base, "Practitioner", _practitioner(practitioner)))
                    unknown = idnps in config.unknown_sites
                    entries.append(_entry(base, "PractitionerRole", _role(practitioner, slot.site_index, unknown)))
        links = [{"relation": "self", "url": str(request.url)}]
        if count and offset + count < len(matching):
            following = request.url.include_query_params(_offset=offset + count)
            if config.foreign_next:  # the same query, on another server
                following = following.replace(**_origin_of(config.foreign_next))
            links.append({"relation": "next", "url": str(following)})
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matching) + config.total_offset,
            "link": links,
            "entry": entries,
        }
        body = orjson.dumps(bundle)
        parts = [body] if config.padding_bytes <= len(body) else _padded(body, bool(entries), config.padding_bytes)
        if config.dribble_s > 0:
            return StreamingResponse(_dribble(parts, config.dribble_s), media_type=FHIR_JSON)
        return Response(b"".join(parts), media_type=FHIR_JSON)

    @app.get("/fhir/metadata")
    async def metadata() -> Response:
        """The server's CapabilityStatement: what the agency's statements require for the flows it serves."""
        flows = config.flows
        if flows is None:
            flows = [Flow.individual, Flow.cpts] + ([Flow.sos] if config.associations else [])
        statement = capability_statement(flows, config.name)
        return Response(orjson.dumps(statement), media_type=FHIR_JSON)

    @app.get("/fhir/Schedule")
    async def search_schedules(request: Request) -> Response:
        """The SOS Médecins flow: the schedules of the asked associations' consultation places holding a free slot in
        the window, with their slots, places and associations (as asked by the includes)."""
        stats["searches"] += 1
        params = request.query_params
        window = _window(params, "_has:Slot:schedule:start")
        if isinstance(window, Response):
            return window
        start_ge, start_le = window
        if params.get("_has:Slot:schedule:status") != "free":
            return outcome(400, "not-supported", "_has:Slot:schedule:status=free is mandatory")
        raw = params.get("actor:Location.organization.identifier")
        if not raw:
            return outcome(400, "required", "actor:Location.organization.identifier is mandatory")
        sirets = []
        for token in raw.split(","):
            system, _, value = token.rpartition("|")
            if system != IDNST_SYSTEM or not is_association(value):
                return outcome(400, "value", f"identifier {token!r} is not {IDNST_SYSTEM}|3<SIRET>")
            sirets.append(value[1:])
        if len(sirets) > MAX_ASSOCIATIONS:
            return outcome(400, "too-costly", f"at most {MAX_ASSOCIATIONS} associations per search")
        delay = rng.uniform(config.latency_ms_min, config.latency_ms_max) / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            count = config.page_size or int(params.get("_count", 0)) or None
            offset = int(params.get("_offset", 0))
        except ValueError:
            return outcome(400, "value", "_count and _offset must be integers")
        moment = now()
        asked = [associations[s] for s in sirets if s in associations]
        matching = [
            (association, slot)
            for association in asked
            for slot in free_slots(config, practitioners[association.agenda_id], start_ge, start_le, moment, booked)
        ]
        page = matching[offset : offset + count] if count else matching
        base = str(request.base_url).rstrip("/")
        slots = "Slot:schedule" in params.getlist("_revinclude")
        places = "Schedule:actor:Location" in params.getlist("_include")
        organizations = "Location:organization" in params.getlist("_include:iterate")
        entries: list[dict[str, Any]] = []
        seen: set[str] = set()
        for association, slot in page:
            place = association.places[slot.site_index]
            schedule_id = f"{slot.idnps}-{slot.site_index}"
            if f"Schedule/{schedule_id}" not in seen:
                seen.add(f"Schedule/{schedule_id}")
                entries.append(_entry(base, "Schedule", _place_schedule(schedule_id, place)))
                if places:
                    entries.append(_entry(base, "Location", _location(association, place)))
                if organizations and f"Organization/sos-{association.siret}" not in seen:
                    seen.add(f"Organization/sos-{association.siret}")
                    entries.append(_entry(base, "Organization", _association(association)))
            if slots:
                entries.append(_entry(base, "Slot", _sos_slot(base, slot)))
        links = [{"relation": "self", "url": str(request.url)}]
        if count and offset + count < len(matching):
            links.append({"relation": "next", "url": str(request.url.include_query_params(_offset=offset + count))})
        # Bundle.total counts the Slots, as the agency's guide has it for this search.
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(matching), "link": links}
        return Response(orjson.dumps({**bundle, "entry": entries}), media_type=FHIR_JSON)

    @app.post("/fhir/Practitioner")
    async def create_account(request: Request) -> Response:
        body = await request.json()
        ident = _account_identifier(body)
        if ident is None:
            return outcome(422, "required", "a regulator account needs an identifier")
        created = ident not in accounts
        accounts[ident] = body
        return JSONResponse(
            body,
            status_code=201 if created else 200,
            media_type=FHIR_JSON,
            headers={"Location": f"/fhir/Practitioner/{ident}"},
        )

    @app.put("/fhir/Practitioner")
    async def update_account(request: Request, identifier: str) -> Response:
        body = await request.json()
        value = identifier.rpartition("|")[2]
        created = value not in accounts
        accounts[value] = body
        return JSONResponse(body, status_code=201 if created else 200, media_type=FHIR_JSON)

    appointments: dict[str, dict[str, Any]] = {}
    app.state.appointments = appointments

    @app.get("/booking/{slot_id}", response_class=HTMLResponse)
    async def booking_page(slot_id: str, origin: str | None = None) -> str:
        taken = slot_id in booked
        via = "via le SAS" if origin == "sas" else "en ligne"
        state = "Ce créneau n'est plus disponible." if taken else "Créneau disponible."
        regulators = "".join(f"<option value='{html.escape(a)}'>{html.escape(a)}</option>" for a in accounts)
        return (
            f"<!doctype html><html lang='fr'><head><meta charset='utf-8'><title>{config.name}</title></head>"
            f"<body><h1>{config.name}: réservation {via}</h1><p id='state'>{state}</p>"
            f"<form method='post' action='/booking/{slot_id}?origin={origin or ''}'>"
            f"<label>Régulateur <select name='operator' id='operator'>{regulators}</select></label>"
            f"<button id='book' {'disabled' if taken else ''}>Réserver</button></form></body></html>"
        )

    @app.post("/booking/{slot_id}")
    async def book(slot_id: str, request: Request, origin: str | None = None) -> Response:
        if slot_id in booked:
            return JSONResponse({"booked": False, "reason": "already booked"}, status_code=409)
        slot = _find_slot(config, practitioners, slot_id)
        if slot is None:
            return JSONResponse({"booked": False, "reason": "unknown slot"}, status_code=404)
        form = parse_qs((await request.body()).decode("utf-8"))  # an HTML form, url-encoded
        operator = (form.get("operator") or [""])[0]
        booked.add(slot_id)
        reported = None
        if origin == "sas" and config.platform_url and operator:
            appointment = _appointment(config, slot, operator, "booked")
            appointments[appointment["identifier"][0]["value"]] = appointment
            reported = await _report(config, appointment, create=True)
        return JSONResponse({"booked": True, "slot": slot_id, "reported": reported}, status_code=201)

    @app.post("/_appointments/{identifier}/status")
    async def change_status(identifier: str, request: Request) -> Response:
        """Knob: the appointment is later fulfilled, missed or cancelled, and the platform is told."""
        appointment = appointments.get(identifier)
        if appointment is None:
            return JSONResponse({"reason": "unknown appointment"}, status_code=404)
        body = await request.json()
        appointment["status"] = body["status"]
        version = int(appointment["meta"]["versionId"]) + 1
        appointment["meta"] = {"versionId": str(version), "lastUpdated": _instant(datetime.now(PARIS))}
        return JSONResponse({"reported": await _report(config, appointment, create=False)})

    @app.post("/_control")
    async def control(request: Request) -> dict[str, Any]:
        changes = await request.json()
        unknown = set(changes) - set(KNOBS)
        if unknown:
            return JSONResponse({"unknown": sorted(unknown)}, status_code=422)  # type: ignore[return-value]
        for key, value in changes.items():
            setattr(config, key, value)
        return {k: getattr(config, k) for k in KNOBS}

    @app.get("/_stats")
    async def get_stats() -> dict[str, Any]:
        return {**stats, "booked": len(booked), "accounts": len(accounts)}

    return app


def _window(params: Any, name: str) -> tuple[datetime, datetime] | Response:
    """The window a search asks for (`name`=ge<instant> and `name`=le<instant>), or the 400 answer to give."""
    starts = params.getlist(name)
    ge = [s[2:] for s in starts if s.startswith("ge")]
    le = [s[2:] for s in starts if s.startswith("le")]
    if len(ge) != 1 or len(le) != 1:
        return outcome(400, "required", f"{name}=ge<instant> and {name}=le<instant> are both mandatory")
    try:
        return parse_instant(ge[0])[0], parse_instant(le[0])[0]
    except ValueError:
        return outcome(400, "value", "start must be an instant with an offset")


def _origin_of(base: str) -> dict[str, Any]:
    """The scheme, host and port of a base URL, as `URL.replace` takes them."""
    url = URL(base)
    return {"scheme": url.scheme, "hostname": url.hostname, "port": url.port}


def _foreign(
    config: SandboxConfig, practitioners: dict[str, SandboxPractitioner], asked: list[str]
) -> list[SandboxPractitioner]:
    """The `foreign_practitioners` a search did not ask for: served ones as they are, others with an agenda at the
    first served site."""
    first = next((p.sites[0] for p in config.practitioners if p.sites), SandboxSite(idnst="1999999999"))
    return [
        practitioners.get(idnps) or SandboxPractitioner(idnps=idnps, family="INCONNU", sites=[first])
        for idnps in config.foreign_practitioners
        if idnps not in asked
    ]


# Placeholder dates some agendas hold, written with an offset that carries them out of datetime's range in UTC.
_ODD_STARTS = (
    datetime(9999, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5))),
    datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=1))),
)


def _odd_dated(practitioners: dict[str, SandboxPractitioner], asked: list[str]) -> list[AgendaSlot]:
    """Two slots of the first practitioner asked that the sandbox serves, well formed but for their dates."""
    practitioner = next((practitioners[i] for i in asked if i in practitioners and practitioners[i].sites), None)
    if practitioner is None:
        return []
    return [
        AgendaSlot(
            # The agenda's id form, which the booking page reads back: <idnps>-<site>-<YYYYmmddHHMM>.
            slot_id=f"{practitioner.idnps}-0-{start.year:04d}{start:%m%d%H%M}",
            idnps=practitioner.idnps,
            site_index=0,
            start=start,
            end=start + timedelta(minutes=20),
            slot_type="PUBLIC",
            modality="AMB",
            appointment_type="ROUTINE",
            reason=REASONS[0],
            specialty=practitioner.specialties[0] if practitioner.specialties else "SM54",
        )
        for start in _ODD_STARTS
    ]


def _find_slot(config: SandboxConfig, practitioners: dict[str, SandboxPractitioner], slot_id: str) -> AgendaSlot | None:
    idnps, site, stamp = slot_id.rsplit("-", 2)
    practitioner = practitioners.get(idnps)
    if practitioner is None:
        return None
    day = datetime.strptime(stamp, "%Y%m%d%H%M").date()
    return next((s for s in day_slots(config, practitioner, int(site), day) if s.slot_id == slot_id), None)


def _appointment(config: SandboxConfig, slot: AgendaSlot, operator: str, status: str) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "meta": {"versionId": "1", "lastUpdated": _instant(datetime.now(PARIS))},
        "extension": [
            {
                "url": "http://interopsante.org/fhir/StructureDefinition/FrAppointmentOperator",
                "valueReference": {"identifier": {"system": IDNPS_SYSTEM, "value": operator}},
            }
        ],
        "identifier": [{"system": f"urn:sandbox:{config.vendor_id}", "value": uuid.uuid4().hex}],
        "status": status,
        "start": _instant(slot.start),
        "end": _instant(slot.end),
        "participant": [{"actor": {"identifier": _participant(slot.idnps)}, "status": "accepted"}],
    }


def _participant(agenda_id: str) -> dict[str, str]:
    """Whose appointment it is: a practitioner by IDNPS, an association's place by the association's IDNST."""
    if agenda_id.startswith("sos"):  # `SandboxAssociation.agenda_id`
        return {"system": IDNST_SYSTEM, "value": "3" + agenda_id.removeprefix("sos")}
    return {"system": IDNPS_SYSTEM, "value": agenda_id}


async def _report(config: SandboxConfig, appointment: dict[str, Any], create: bool) -> int | None:
    """POST (or conditional PUT) the appointment to the platform; returns its HTTP status."""
    headers = {"Content-Type": FHIR_JSON}
    if config.platform_token:
        headers["Authorization"] = f"Bearer {config.platform_token}"
    base = (config.platform_url or "").rstrip("/")
    ident = appointment["identifier"][0]
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            if create:
                response = await client.post(f"{base}/Appointment", json=appointment, headers=headers)
            else:
                response = await client.put(
                    f"{base}/Appointment",
                    params={"identifier": f"{ident['system']}|{ident['value']}"},
                    json=appointment,
                    headers=headers,
                )
        except httpx.HTTPError:
            return None
    return response.status_code


DRIBBLE_CHUNKS = 20  # pieces a dribbled body is sent in


def _filler_entry(i: int) -> bytes:
    """A padding entry: a Basic resource, included, never a Slot; the same length whatever `i` (zero-padded id)."""
    resource = {"resourceType": "Basic", "id": f"padding-{i:08d}", "code": {"text": "remplissage " * 16}}
    return orjson.dumps({"resource": resource, "search": {"mode": "include"}})


_FILLER_BYTES = len(_filler_entry(0)) + 1  # with its separating comma


@lru_cache(maxsize=1)
def _filler(size: int) -> bytes:
    """Padding entries for about `size` bytes, comma-separated, serialised once per size: a padded answer of
    100 MB costs the sandbox a copy per search, not a serialisation."""
    return b",".join(_filler_entry(i) for i in range(size // _FILLER_BYTES + 1))


def _padded(body: bytes, has_entries: bool, size: int) -> list[bytes | memoryview]:
    """The serialised Bundle `body` (its `entry` list written last) padded to about `size` bytes with entries
    appended to that list, as the parts to send one after the other: the padding is a view of the shared filler,
    so an answer its client gives up on early is never copied whole."""
    count = max(1, (size - len(body)) // _FILLER_BYTES)
    filler = memoryview(_filler(size))[: count * _FILLER_BYTES - 1]  # the first `count` entries: all one length
    return [body[:-2], b"," if has_entries else b"", filler, b"]}"]


async def _dribble(parts: list[bytes | memoryview], seconds: float) -> AsyncIterator[bytes]:
    """The body made of `parts` in about DRIBBLE_CHUNKS pieces spread over `seconds`: each piece comes soon, the
    whole late."""
    step = max(1, -(-sum(len(p) for p in parts) // DRIBBLE_CHUNKS))
    pieces = [memoryview(p)[i : i + step] for p in parts for i in range(0, len(p), step)]
    for piece in pieces:
        await asyncio.sleep(seconds / len(pieces))
        yield bytes(piece)


def _entry(base: str, kind: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/fhir/{kind}/{resource['id']}",
        "resource": resource,
        "search": {"mode": "match" if kind == "Slot" else "include"},
    }


# The coded parts of a Slot take few values: built once and shared by every slot that uses them (a slot
# search answers up to a thousand slots; orjson writes a shared object as many times as it appears).
_SECURITY = {code: {"security": [{"system": TYPE_SYSTEM, "code": code}]} for code, _ in TYPES}
_APPOINTMENT = {code: {"coding": [{"system": V20276, "code": code}]} for code in ("ROUTINE", "WALKIN")}
_MODALITY = {code: {"coding": [{"system": ACT_SYSTEM, "code": code}]} for code, _ in MODALITIES}
_REASON = {text: {"text": text} for text in REASONS}


def _slot(base: str, slot: AgendaSlot, cpts: SandboxCpts | None = None) -> dict[str, Any]:
    """The Slot resource; one offered through a CPTS has its serviceType 604 referencing the CPTS's service."""
    service_types = [_MODALITY[slot.modality], _REASON[slot.reason]]
    if cpts is not None:
        service_types.append(
            {
                "extension": [
                    {
                        "url": SERVICE_TYPE_REFERENCE,
                        "valueReference": {"reference": f"HealthcareService/cpts-{cpts.idnst}"},
                    }
                ],
                "coding": [{"system": R66_SYSTEM, "code": CPTS_CATEGORY}],
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "Slot",
        "id": slot.slot_id,
        "meta": _SECURITY[slot.slot_type],
        "serviceType": service_types,
        "specialty": [{"coding": [{"system": R38_SYSTEM, "code": slot.specialty}]}],
        "appointmentType": _APPOINTMENT[slot.appointment_type],
        "schedule": {"reference": f"Schedule/{slot.idnps}-{slot.site_index}"},
        "status": "free",
        "start": _instant(slot.start),
        "end": _instant(slot.end),
    }
    if cpts is not None and zlib.crc32(slot.slot_id.encode()) % 2 == 0:
        # Half the slots offered through a CPTS are open to everyone too, as in the agency's example.
        resource["meta"] = {"security": [*_SECURITY["PUBLIC"]["security"], *_SECURITY["CPTS"]["security"]]}
    # Every free slot carries its page (test-kit requirement 25), walk-in ones included.
    resource["comment"] = f"{base}/booking/{slot.slot_id}?lang=fr"
    return resource


def _sos_slot(base: str, slot: AgendaSlot) -> dict[str, Any]:
    """An SOS Médecins slot: the types that flow knows (PUBLIC, SNP), at its consultation place."""
    resource = _slot(base, slot)
    resource["meta"] = _SECURITY["SNP" if slot.slot_type == "SNP" else "PUBLIC"]
    return resource


def _place_schedule(schedule_id: str, place: SandboxPlace) -> dict[str, Any]:
    return {"resourceType": "Schedule", "id": schedule_id, "actor": [{"reference": f"Location/{place.place_id}"}]}


def _location(association: SandboxAssociation, place: SandboxPlace) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Location",
        "id": place.place_id,
        "identifier": [{"type": INTRN_TYPE, "system": PLACES_SYSTEM, "value": place.place_id}],
        "name": place.name,
        "address": {"line": [place.line or ""], "city": place.city or "", "postalCode": place.postcode or ""},
        "managingOrganization": {"reference": f"Organization/sos-{association.siret}"},
        "hoursOfOperation": place.hours,
    }
    if place.phone:
        resource["telecom"] = [{"system": "phone", "value": place.phone}]
    return resource


def _association(association: SandboxAssociation) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": f"sos-{association.siret}",
        "identifier": [{"type": IDNST_TYPE, "system": IDNST_SYSTEM, "value": "3" + association.siret}],
        "name": association.name,
    }


def _service(cpts: SandboxCpts) -> dict[str, Any]:
    return {
        "resourceType": "HealthcareService",
        "id": f"cpts-{cpts.idnst}",
        "providedBy": {"reference": f"Organization/cpts-{cpts.idnst}"},
    }


def _cpts_organization(cpts: SandboxCpts) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "id": f"cpts-{cpts.idnst}",
        "identifier": [
            {
                "type": IDNST_TYPE,
                "system": IDNST_SYSTEM,
                "value": cpts.idnst,
            }
        ],
        "name": cpts.name,
    }
    if cpts.phone:
        resource["telecom"] = [{"system": "phone", "value": cpts.phone}]
    return resource


def _schedule(schedule_id: str, idnps: str, site_index: int) -> dict[str, Any]:
    return {
        "resourceType": "Schedule",
        "id": schedule_id,
        "actor": [{"reference": f"Practitioner/{idnps}"}, {"reference": f"PractitionerRole/{idnps}-{site_index}"}],
    }


def _practitioner(p: SandboxPractitioner) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": p.idnps,
        "identifier": [
            {"type": {"coding": [{"system": V20203, "code": "IDNPS"}]}, "system": IDNPS_SYSTEM, "value": p.idnps}
        ],
        "name": [{"family": p.family, **({"given": [p.given]} if p.given else {})}],
    }
    if p.phone:
        resource["telecom"] = [{"system": "phone", "value": p.phone}]
    return resource


UNKNOWN_LINE = "1 place de la Mairie"


@cache
def unknown_site(postcode: str | None) -> SandboxSite:
    """A site no directory holds: "1 place de la Mairie" in the commune of another postcode of the same department
    (the first such postcode of a single commune), with a SIRET-style structure identifier no register issued."""
    gaz = gazetteer()
    department = department_of_postcode(postcode) if postcode else "75"
    other = next(
        area
        for code, area in sorted(gaz.postcodes.items())
        if code != postcode and len(area.communes) == 1 and department_of_postcode(code) == department
    )
    commune = gaz.communes[other.communes[0]]
    return SandboxSite(
        idnst="39" + other.postcode.rjust(13, "0"), line=UNKNOWN_LINE, city=commune.name, postcode=other.postcode
    )


def _role(p: SandboxPractitioner, site_index: int, unknown: bool = False) -> dict[str, Any]:
    site = unknown_site(p.sites[site_index].postcode) if unknown else p.sites[site_index]
    address = {
        k: v
        for k, v in {"line": [site.line] if site.line else None, "city": site.city, "postalCode": site.postcode}.items()
        if v
    }
    return {
        "resourceType": "PractitionerRole",
        "id": f"{p.idnps}-{site_index}",
        "contained": [{"resourceType": "Location", "id": "loc", "address": address}],
        "practitioner": {"reference": f"Practitioner/{p.idnps}"},
        "organization": {
            "identifier": {
                "type": {"coding": [{"system": V20203, "code": "IDNST"}]},
                "system": IDNST_SYSTEM,
                "value": site.idnst,
            }
        },
        "location": [{"reference": "#loc"}],
    }


def _account_identifier(body: Any) -> str | None:
    for ident in (body or {}).get("identifier", []) or []:
        if isinstance(ident, dict) and ident.get("value"):
            return str(ident["value"])
    return None
