"""Later pages: the signed cursor a page hands out and the sealed snapshot of the first answer it points to.

The first page keeps its ranked order (with its seed, radius, window and explanation) for an hour; later
pages follow that order, re-reading each site's slots as they are now, so pages neither repeat nor skip
a practitioner while slots come and go.

A cursor is signed with the server's key and bound to the request that made it: its snapshot, the rank the
next page starts at, when the search was made, and a tag of the request's parameters. A cursor that was
altered, made up, has expired or comes with other parameters is refused (`InvalidCursor`) before anything is
read with it.

A snapshot keeps no distance and no point, and is sealed with a key derived from the request's parameters: what
is stored says nothing of the place searched without the request that searched it. Later pages recompute
distances from the request's own point, which the cursor's binding guarantees is the first page's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken

from core.secrets import derive
from indexer.backend import Backend, GeoQuery, InvalidCursor
from indexer.lifecycle import ensure_live
from search.candidates import Group
from search.explanation import SearchExplanation
from search.request import SearchRequest

SNAPSHOTS = "search_snapshots"
SNAPSHOT_TTL_S = 3600
MAX_CURSOR_CHARS = 400  # a cursor this API hands out is under 200 characters
# The page size is left out of the binding: a cursor holds an absolute rank, so a later page of another
# size goes on exactly where the previous one stopped.
UNBOUND_FIELDS = frozenset({"cursor", "limit"})
_TOKEN = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$")

NOT_OURS = "the cursor is not one this API returned"
EXPIRED = "the cursor has expired (searches are kept one hour)"
OTHER_REQUEST = "the cursor belongs to a search with other parameters (a later page repeats the first one's)"


def request_digest(req: SearchRequest) -> bytes:
    """A digest of everything in the request that shapes its answer: the place, the filters, the window, the
    radius, the seed. Lists are sets (their order changes nothing) and instants are compared as instants."""
    shaping: dict[str, Any] = {}
    for f in fields(req):
        if f.name in UNBOUND_FIELDS:
            continue
        value = getattr(req, f.name)
        if isinstance(value, list):
            value = sorted(value)
        elif isinstance(value, datetime):
            value = value.timestamp()
        shaping[f.name] = value
    return hashlib.sha256(orjson.dumps(shaping, option=orjson.OPT_SORT_KEYS)).digest()


@dataclass(frozen=True)
class SearchCursor:
    snapshot: str  # the first answer's snapshot
    offset: int  # the rank (from 0) the next page starts at
    issued: int  # when the first page was asked (epoch seconds): the whole chain of pages expires with it


class CursorKeys:
    """Signs and opens cursors, seals and opens snapshots: sub-keys of the server's cursor key."""

    def __init__(self, key: bytes) -> None:
        self._sign = derive(key, "search-cursor-signature")
        self._seal = derive(key, "search-snapshot-seal")

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._sign, payload, hashlib.sha256).digest()

    def _tag(self, digest: bytes) -> str:
        return _b64(hmac.new(self._sign, b"request:" + digest, hashlib.sha256).digest()[:16])

    def encode(self, cursor: SearchCursor, digest: bytes) -> str:
        state = {"s": cursor.snapshot, "o": cursor.offset, "t": cursor.issued, "r": self._tag(digest)}
        payload = orjson.dumps(state)
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, token: str, digest: bytes, now: datetime) -> SearchCursor:
        """The cursor, if this server signed it for a request with these parameters within the hour."""
        found = _TOKEN.match(token) if len(token) <= MAX_CURSOR_CHARS else None
        if found is None:
            raise InvalidCursor(NOT_OURS)
        try:
            payload, mac = _unb64(found.group(1)), _unb64(found.group(2))
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursor(NOT_OURS) from exc
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidCursor(NOT_OURS)
        state = orjson.loads(payload)  # signed by this server: its shape is the one `encode` wrote
        if now.timestamp() - state["t"] > SNAPSHOT_TTL_S:
            raise InvalidCursor(EXPIRED)
        if not hmac.compare_digest(state["r"], self._tag(digest)):
            raise InvalidCursor(OTHER_REQUEST)
        return SearchCursor(state["s"], state["o"], state["t"])

    def fernet(self, digest: bytes) -> Fernet:
        """The seal of one request's snapshot: the server's key and the request's parameters are both needed."""
        return Fernet(base64.urlsafe_b64encode(hmac.new(self._seal, digest, hashlib.sha256).digest()))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Ranked:
    """One rank of a snapshot's order: which site, whose, in which group; never how far from the place."""

    site_id: str
    idnps: str
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
            "order": [[r.site_id, r.idnps, int(r.group)] for r in self.order],
            "explanation": self.explanation.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PageSnapshot:
        start, end = (datetime.fromisoformat(x) for x in data["window"])
        return cls(
            seed=data["seed"],
            radius_km=data["radius_km"],
            window=(start, end),
            order=tuple(Ranked(site, idnps, Group(group)) for site, idnps, group in data["order"]),
            explanation=SearchExplanation.from_json(data["explanation"]),
        )


def save_snapshot(backend: Backend, now: datetime, snapshot: PageSnapshot, seal: Fernet) -> str:
    """Keep a first answer, sealed, for its later pages; drop snapshots older than the TTL on the way."""
    index = ensure_live(backend, SNAPSHOTS)
    snapshot_id = secrets.token_hex(12)
    sealed = seal.encrypt(orjson.dumps(snapshot.to_json())).decode()
    backend.write(index, [{"snapshot_id": snapshot_id, "created_at": now.isoformat(), "payload": {"sealed": sealed}}])
    expired = backend.search(
        SNAPSHOTS, GeoQuery(ranges={"created": (None, now.timestamp() - SNAPSHOT_TTL_S)}, limit=500)
    ).hits
    if expired:
        backend.delete(index, [h.doc["snapshot_id"] for h in expired])
    return snapshot_id


def load_snapshot(backend: Backend, snapshot_id: str, seal: Fernet) -> PageSnapshot:
    doc = backend.get(SNAPSHOTS, snapshot_id)
    if doc is None:
        raise InvalidCursor(EXPIRED)
    try:
        return PageSnapshot.from_json(orjson.loads(seal.decrypt(doc["payload"]["sealed"])))
    except (InvalidToken, KeyError, TypeError) as exc:  # sealed with a former key, or kept by a former version
        raise InvalidCursor(EXPIRED) from exc
