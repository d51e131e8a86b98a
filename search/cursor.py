"""Later pages: the cursor a page hands out and the snapshot of the first answer it points to.

The first page keeps its ranked order (with its seed, radius, window and explanation) for an hour; later
pages follow that order, re-reading each site's slots as they are now, so pages neither repeat nor skip
a practitioner while slots come and go.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from indexer.backend import Backend, GeoQuery, InvalidCursor
from indexer.lifecycle import ensure_live
from search.candidates import Group
from search.explanation import SearchExplanation

SNAPSHOTS = "search_snapshots"
SNAPSHOT_TTL_S = 3600


@dataclass(frozen=True)
class SearchCursor:
    snapshot: str  # the first answer's snapshot
    offset: int  # the rank (from 0) the next page starts at

    def encode(self) -> str:
        state = {"snapshot": self.snapshot, "offset": self.offset}
        return base64.urlsafe_b64encode(orjson.dumps(state)).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> SearchCursor:
        try:
            state = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            if not isinstance(state, dict) or not {"snapshot", "offset"} <= set(state):
                raise ValueError
            offset = state["offset"]
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise ValueError
            return cls(str(state["snapshot"]), offset)
        except ValueError as exc:  # binascii.Error and orjson.JSONDecodeError are ValueErrors
            raise InvalidCursor("the cursor is not one this API returned") from exc


@dataclass(frozen=True)
class Ranked:
    """One rank of a snapshot's order."""

    site_id: str
    idnps: str
    distance_km: float
    group: Group


@dataclass(frozen=True)
class PageSnapshot:
    seed: int
    radius_km: float
    window: tuple[datetime, datetime]
    order: tuple[Ranked, ...]
    explanation: SearchExplanation

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "radius_km": self.radius_km,
            "window": [self.window[0].isoformat(), self.window[1].isoformat()],
            "order": [[r.site_id, r.idnps, r.distance_km, int(r.group)] for r in self.order],
            "explanation": self.explanation.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PageSnapshot:
        start, end = (datetime.fromisoformat(x) for x in data["window"])
        return cls(
            seed=data["seed"],
            radius_km=data["radius_km"],
            window=(start, end),
            order=tuple(Ranked(site, idnps, distance, Group(group)) for site, idnps, distance, group in data["order"]),
            explanation=SearchExplanation.from_json(data["explanation"]),
        )


def save_snapshot(backend: Backend, now: datetime, snapshot: PageSnapshot) -> str:
    """Keep a first answer for its later pages; drop snapshots older than the TTL on the way."""
    index = ensure_live(backend, SNAPSHOTS)
    payload = snapshot.to_json()
    snapshot_id = hashlib.blake2b(orjson.dumps(payload["order"]) + now.isoformat().encode(), digest_size=12).hexdigest()
    backend.write(index, [{"snapshot_id": snapshot_id, "created_at": now.isoformat(), "payload": payload}])
    expired = backend.search(
        SNAPSHOTS, GeoQuery(ranges={"created": (None, now.timestamp() - SNAPSHOT_TTL_S)}, limit=500)
    ).hits
    if expired:
        backend.delete(index, [h.doc["snapshot_id"] for h in expired])
    return snapshot_id


def load_snapshot(backend: Backend, snapshot_id: str) -> PageSnapshot:
    doc = backend.get(SNAPSHOTS, snapshot_id)
    if doc is None:
        raise InvalidCursor("the cursor has expired (searches are kept one hour); search again")
    return PageSnapshot.from_json(doc["payload"])
