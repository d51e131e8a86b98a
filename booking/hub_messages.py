"""The messages the platform exchanges with the SAMU's regulation software (LRM) through the Hub Santé (flow INT_L02).

An appointment the regulator booked goes out as an EDXL-DE envelope (`distributionKind` Report) wrapping an RC-DE
header and the appointment's content; the LRM answers a final acknowledgement (an RC-REF: `Ack`, naming the message's
`distributionID`) on the platform's `ack` queue, and the Hub or the LRM report errors (`Error`, no RC-DE) on its
`info` queue. Where the agency's guide and its examples differ (method and status spelling, the content's nesting,
`hubex`), the examples' form is used: it is what the Hub validates. Each message is checked against a JSON Schema
written from the guide (`core/data/hub/appointment-report.schema.json`) before it is sent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

from core.geo import PARIS

SCHEMA = Path(__file__).resolve().parent.parent / "core" / "data" / "hub" / "appointment-report.schema.json"
R38_URL = "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"
G15_URL = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
CREATE, UPDATE = "CreateAppointment", "UpdateAppointment"
# The participation's way of taking part -> the guide's orientation category.
ORIENTATION = {"practice": "PS", "cpts": "CPTS", "msp": "MSP", "sos": "SOS"}
# Hub errors (technical) and the LRM's (functional) the guide names; others are recorded by their code alone.
ERRORS = {
    102: "the Hub could not read the message",
    300: "the Hub found the message invalid",
    400: "the message expired at the Hub before it was routed",
    500: "the message expired before the LRM read it",
    409: "the LRM already has this appointment",
}
DELIVERED_ANYWAY = {409}  # a resend of a creation the LRM has: what was to be delivered was


def instant(moment: datetime) -> str:
    """The guide's date-time: seconds and a numeric offset, in French time."""
    return moment.astimezone(PARIS).replace(microsecond=0).isoformat()


def samu_id(department: str | None) -> str | None:
    """The Hub client id of a department's SAMU by the guide's example (`fr.health.samu330` for the SAMU 33): the
    department code followed by 0, overseas codes as they are; a maintainer's table overrides it."""
    if not department:
        return None
    code = department.lower()
    return f"fr.health.samu{code}0" if len(code) == 2 else f"fr.health.samu{code}"


def distribution_id(sender: str, key: str) -> str:
    """`<senderId>_<internal id>`, the internal id the outbox entry's key (a UUID): the same entry keeps its id on
    every resend, so that the LRM can tell a resend from a new message."""
    return f"{sender}_{key}"


def party(client_id: str) -> dict[str, str]:
    return {"name": client_id, "URI": f"hubex:{client_id}"}


def envelope(
    content: dict[str, Any], message_id: str, sender: str, recipient: str, sent: datetime, expires: datetime
) -> dict[str, Any]:
    """The EDXL-DE envelope of one appointment message, its RC-DE header and content inside."""
    return {
        "distributionID": message_id,
        "senderID": sender,
        "dateTimeSent": instant(sent),
        "dateTimeExpires": instant(expires),
        "distributionStatus": "Actual",
        "distributionKind": "Report",
        "descriptor": {
            "language": "fr-FR",
            "explicitAddress": {"explicitAddressScheme": "hubex", "explicitAddressValue": recipient},
        },
        "content": [
            {
                "jsonContent": {
                    "embeddedJsonContent": {
                        "message": {
                            "messageId": message_id,
                            "sender": party(sender),
                            "sentAt": instant(sent),
                            "status": "Actual",
                            "kind": "Report",
                            "recipient": [party(recipient)],
                            "appointment": content,
                        }
                    }
                }
            }
        ],
    }


@cache
def _validator() -> Any:
    return jsonschema_rs.validator_for(orjson.loads(SCHEMA.read_bytes()))


def problems(message: dict[str, Any]) -> list[str]:
    """What the schema finds wrong with a message (empty when it may be sent), each with where."""
    found = []
    for error in _validator().iter_errors(message):
        where = "/".join(str(p) for p in error.instance_path) or "(the message)"
        found.append(f"{where}: {error.message}"[:300])
    return found


def content_of(
    appointment_id: str,
    method: str,
    created: datetime,
    start: datetime,
    end: datetime,
    status: str,
    via: str | None,
    practitioner: dict[str, Any] | None,
    organization: tuple[str, str] | None,
) -> dict[str, Any]:
    """The appointment's content as the guide lists it. The practitioner is sent with their RPPS number (the guide
    has no room for an ADELI one) and their name as the directory has it; an SOS Médecins association is the
    organisation. The regulator is not sent: the platform knows them by a technical identifier only, which the guide
    says is not to be sent."""
    out: dict[str, Any] = {
        "appointmentId": appointment_id,
        "method": method,
        "created": instant(created),
        "start": instant(start),
        "end": instant(end),
        "status": status,
    }
    if via in ORIENTATION:
        out["orientationCategory"] = ORIENTATION[via]
    p = practitioner or {}
    if str(p.get("idnps", "")).startswith("8") and p.get("last_name") and p.get("first_name"):
        who: dict[str, Any] = {"rppsId": p["idnps"], "lastName": p["last_name"], "firstName": p["first_name"]}
        specialties = [s["code"] for s in p.get("specialties") or [] if s.get("code")]
        if specialties:
            who |= {"specialityCode": specialties[0], "specialityUrl": R38_URL}
        if p.get("profession_code"):
            who |= {"professionUrl": G15_URL, "professionCode": p["profession_code"]}
        out["practitioner"] = who
    if organization is not None:
        out["organization"] = {"organizationId": organization[0], "name": organization[1]}
    return out


@dataclass(frozen=True)
class Answer:
    """What came back on the platform's `ack` or `info` queue about one message."""

    message_id: str  # the distributionID of the platform's message it is about
    acknowledged: bool  # a final acknowledgement (or an error that still means delivered)
    code: int | None = None
    text: str | None = None
    cause: str | None = None
    sender: str | None = None


def read_answer(body: bytes) -> Answer | None:
    """A final acknowledgement (RC-REF) or an error message, or None for anything else (logged by the caller,
    never trusted further)."""
    try:
        message = orjson.loads(body)
        kind = message["distributionKind"]
        inner = message["content"][0]["jsonContent"]["embeddedJsonContent"]["message"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    sender = message.get("senderID") if isinstance(message.get("senderID"), str) else None
    if kind == "Ack":
        reference = (inner.get("reference") or {}).get("distributionID") if isinstance(inner, dict) else None
        return Answer(reference, True, sender=sender) if isinstance(reference, str) else None
    if kind == "Error" and isinstance(inner, dict) and isinstance(inner.get("error"), dict):
        error = inner["error"]
        referenced = error.get("referencedDistributionID")
        if not isinstance(referenced, str):
            source = error.get("sourceMessage") or {}
            referenced = source.get("distributionID") if isinstance(source, dict) else None
        if not isinstance(referenced, str):
            return None
        code_of = error.get("errorCode") or {}
        code = code_of.get("statusCode") if isinstance(code_of, dict) else code_of
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        text = code_of.get("statusString") if isinstance(code_of, dict) else None
        cause = error.get("errorCause") if isinstance(error.get("errorCause"), str) else None
        return Answer(
            referenced,
            code in DELIVERED_ANYWAY,
            code,
            text if isinstance(text, str) else None,
            (cause or "")[:500] or None,
            sender,
        )
    return None


def reply(
    kind: str, sender: str, recipient: str, about: dict[str, Any], now: datetime, error: tuple[int, str, str] | None
) -> dict[str, Any]:
    """An LRM's answer to a message (`about`): its final acknowledgement, or an error (code, text, cause)."""
    own = f"{sender}_{uuid.uuid4()}"
    header = {"distributionID": own, "senderID": sender, "dateTimeSent": instant(now)}
    header |= {"dateTimeExpires": instant(now + timedelta(days=1)), "distributionStatus": "Actual"}
    header |= {
        "distributionKind": kind,
        "descriptor": {
            "language": "fr-FR",
            "explicitAddress": {"explicitAddressScheme": "hubex", "explicitAddressValue": recipient},
        },
    }
    if error is None:
        inner: dict[str, Any] = {
            "messageId": own,
            "sender": party(sender),
            "sentAt": instant(now),
            "kind": "Ack",
            "status": "Actual",
            "recipient": [party(recipient)],
            "reference": {"distributionID": about["distributionID"]},
        }
    else:
        code, text, cause = error
        inner = {
            "error": {
                "errorCode": {"statusCode": code, "statusString": text},
                "errorCause": cause,
                "sourceMessage": about,
                "referencedDistributionID": about["distributionID"],
            }
        }
    return header | {"content": [{"jsonContent": {"embeddedJsonContent": {"message": inner}}}]}
