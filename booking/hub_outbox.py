"""The outbox of messages to the SAMU's regulation software, kept in each appointment's own document.

Every creation or change of an appointment adds an entry to the document's `lrm` list in the same compare-and-set
write as the change itself (`booking.appointments.record`): nothing recorded can miss its message, whatever the
broker's state, on either backend. An entry is the message's content as it was then, in order (`seq`), with its
state:
    queued → sent (the broker confirmed it) → acknowledged (the LRM's final acknowledgement)
    queued → expired (its time to live passed before it could be sent: never sent late)
    queued → held (the schema refuses it: kept with the reason, not sent)
    sent → failed (the Hub or the LRM answered an error)
Indexed beside it, per document: the states of its entries (`lrm_state`), their keys (`lrm_key`, what answers name)
and whether one is still queued (`lrm_pending`, what the publisher looks for).
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from booking.hub_messages import samu_id
from indexer.backend import Backend
from indexer.lifecycle import ensure_live, iterate_all

KIND = "appointments"
FIELD = "lrm"


class State(StrEnum):
    queued = "queued"
    sent = "sent"
    acknowledged = "acknowledged"
    failed = "failed"
    expired = "expired"
    held = "held"


UNANSWERED = (State.queued, State.sent)  # what an unacknowledged message's age counts
Change = Callable[[dict[str, Any]], dict[str, Any] | None]  # one entry changed, or None to leave it


def entry_key(appointment_id: str, seq: int) -> str:
    """The entry's key: a UUID made from the appointment and the entry's rank, the internal part of the message's
    distributionID (`booking.hub_messages.distribution_id`)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dispo:lrm:{appointment_id}#{seq}"))


def add_entry(
    doc: dict[str, Any], before: dict[str, Any] | None, content: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """The appointment's new document with a message queued after those of `before`."""
    entries = list((before or {}).get(FIELD) or [])
    seq = len(entries) + 1
    entries.append(
        {
            "seq": seq,
            "key": entry_key(doc["appointment_id"], seq),
            "state": State.queued.value,
            "queued_at": now.isoformat(),
            "attempts": 0,
            "content": content,
        }
    )
    return indexed(doc | {FIELD: entries})


def indexed(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with what is searched of its entries brought up to date."""
    entries = doc.get(FIELD) or []
    return doc | {
        "lrm_states": sorted({e["state"] for e in entries}),
        "lrm_keys": [e["key"] for e in entries],
        "lrm_pending": any(e["state"] == State.queued for e in entries),
    }


def carried(doc: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """A rewritten appointment keeps its messages (a vendor's report does not know of them)."""
    if not before or not before.get(FIELD):
        return doc
    return indexed(doc | {FIELD: before[FIELD]})


def next_to_send(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The appointment's first queued entry: an update never overtakes its creation."""
    return next((e for e in sorted(doc.get(FIELD) or [], key=lambda e: e["seq"]) if e["state"] == State.queued), None)


def pending(backend: Backend) -> Iterator[dict[str, Any]]:
    """Appointments with a message still queued."""
    if backend.live_index(KIND) is None:
        return iter(())
    return iterate_all(backend, KIND, {"lrm_pending": ["true"]})


def by_key(backend: Backend, key: str) -> dict[str, Any] | None:
    if backend.live_index(KIND) is None:
        return None
    found = list(iterate_all(backend, KIND, {"lrm_key": [key]}))
    return found[0] if found else None


def change_entry(backend: Backend, appointment_id: str, key: str, change: Change) -> dict[str, Any] | None:
    """Compare-and-set one entry of an appointment's outbox: `change` gets the entry and returns it changed, or
    None to leave it. Returns the entry as written (None when nothing was)."""
    written: dict[str, Any] | None = None

    def update(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal written
        written = None
        if doc is None:
            return None
        entries = list(doc.get(FIELD) or [])
        for i, entry in enumerate(entries):
            if entry["key"] == key:
                after = change(dict(entry))
                if after is None:
                    return None
                entries[i] = written = after
                return indexed(doc | {FIELD: entries})
        return None

    backend.update(KIND, appointment_id, update)
    return written


def mark_sent(now: datetime) -> Change:
    """The broker confirmed the entry at `now`. An answer can overtake this write (the LRM acknowledges before the
    transmitter records the send): the answer's state then stays, and the publish time replaces the one it assumed."""

    def change(e: dict[str, Any]) -> dict[str, Any] | None:
        attempt = {"sent_at": now.isoformat(), "attempts": e.get("attempts", 0) + 1}
        if e["state"] == State.queued:
            return e | attempt | {"state": State.sent.value}
        if e["state"] in (State.acknowledged, State.failed) and e.get("attempts", 0) == 0:
            return e | attempt
        return None

    return change


def mark_answered(state: State, now: datetime, error: dict[str, Any] | None) -> Change:
    """The Hub or the LRM answered the entry (`acknowledged` or `failed`). A final acknowledgement stays final. An
    answer names a message the broker had, so the entry was sent even when the send is not recorded yet."""
    stamp = "acknowledged_at" if state == State.acknowledged else "failed_at"

    def change(e: dict[str, Any]) -> dict[str, Any] | None:
        if e["state"] == State.acknowledged:
            return None
        done = {"state": state.value, stamp: now.isoformat(), "sent_at": e.get("sent_at") or now.isoformat()}
        return e | done | ({"error": error} if error else {})

    return change


@dataclass(frozen=True)
class Row:
    """One message as maintainers list it (no content: the appointment's own record tells the rest)."""

    appointment_id: str
    key: str
    seq: int
    method: str
    state: str
    queued_at: str
    sent_at: str | None
    acknowledged_at: str | None
    attempts: int
    error: dict[str, Any] | None
    department: str | None


def rows(backend: Backend, state: str | None = None, limit: int = 500) -> list[Row]:
    """Messages, oldest queued first, of one state or all."""
    if backend.live_index(KIND) is None:
        return []
    filters = {"lrm_state": [state]} if state else {}
    out = []
    for doc in iterate_all(backend, KIND, filters):
        for e in doc.get(FIELD) or []:
            if state is None or e["state"] == state:
                out.append(
                    Row(
                        doc["appointment_id"],
                        e["key"],
                        e["seq"],
                        e["content"].get("method", ""),
                        e["state"],
                        e["queued_at"],
                        e.get("sent_at"),
                        e.get("acknowledged_at"),
                        e.get("attempts", 0),
                        e.get("error"),
                        doc.get("department_code"),
                    )
                )
    out.sort(key=lambda r: (r.queued_at, r.appointment_id, r.seq))
    return out[:limit]


@dataclass(frozen=True)
class Summary:
    by_state: dict[str, int]
    oldest_unacknowledged_s: float | None


def summary(backend: Backend, now: datetime) -> Summary:
    """Messages by state, and how long the oldest one not yet acknowledged (queued or sent) has waited."""
    counts: Counter[str] = Counter()
    oldest: datetime | None = None
    if backend.live_index(KIND) is not None:
        for doc in iterate_all(backend, KIND, {"lrm_state": [s.value for s in State]}):
            for e in doc.get(FIELD) or []:
                counts[e["state"]] += 1
                if e["state"] in UNANSWERED:
                    queued = datetime.fromisoformat(e["queued_at"])
                    oldest = queued if oldest is None or queued < oldest else oldest
    age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
    return Summary({s.value: counts.get(s.value, 0) for s in State}, age)


def expired(entry: dict[str, Any], ttl: timedelta, now: datetime) -> bool:
    return now >= datetime.fromisoformat(entry["queued_at"]) + ttl


RECIPIENTS = "hub_recipients"
CLIENT_ID = re.compile(r"^fr\.health(\.[a-z0-9-]+)+$")


def set_recipient(backend: Backend, department: str, recipient: str, now: datetime) -> None:
    """The SAMU (Hub client id) that receives a department's appointments; raises ValueError for a malformed id."""
    if not CLIENT_ID.fullmatch(recipient):
        raise ValueError(f"{recipient!r} is not a Hub client id such as fr.health.samu330")
    index = ensure_live(backend, RECIPIENTS)
    backend.write(index, [{"department": department, "recipient": recipient, "updated_at": now.isoformat()}])
    backend.refresh(index)


def recipients(backend: Backend) -> dict[str, str]:
    if backend.live_index(RECIPIENTS) is None:
        return {}
    return {d["department"]: d["recipient"] for d in iterate_all(backend, RECIPIENTS)}


def recipient_for(backend: Backend, department: str | None) -> str | None:
    """The SAMU of a department: the maintainers' table, else the guide's naming (`hub_messages.samu_id`)."""
    if department is None:
        return None
    doc = backend.get(RECIPIENTS, department) if backend.live_index(RECIPIENTS) is not None else None
    return doc["recipient"] if doc else samu_id(department)
