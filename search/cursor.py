"""Later pages: the signed cursor a page hands out, which carries everything the next page needs.

Nothing is kept on the server for later pages. A search's neutral order is a function of the request, the seed,
the radius and the window (`search.rank`), and each site's place in it is a sort key (`search.rank.RankKey`). A
cursor carries:

- when the first page was asked, to the microsecond: the window follows from it and the request, and the whole
  chain of pages expires an hour after it;
- the seed, and the radius reached on the first page with the practitioners with slots at each radius tried and
  in reach there: the enlargement is decided once, and every page explains it the same way;
- the sort key of the last candidate the previous page went through: the next page ranks the candidates again as
  they are now and starts after it ("search after"), so no site is shown twice and none that still qualifies is
  skipped while slots come and go;
- a tag of the request's parameters.

It is signed with the server's key and bound to the request that made it: a cursor that was altered, made up, has
expired or comes with other parameters is refused (`InvalidCursor`) before anything is read with it. What it
holds is in the request it comes with or in the pages already given: a 300 m distance band to one public site is
coarser than the place the request names.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from core.secrets import derive
from indexer.backend import InvalidCursor
from search.rank import RankKey, rank_key
from search.request import SearchRequest

CURSOR_TTL_S = 3600  # a chain of pages lasts this long from its first page: the search is to be run again after
MAX_CURSOR_CHARS = 1000  # one this API hands out is about 220 characters; 420 with the longest site ids and radii
FORMAT = 2  # of the signed state: a cursor of another format (one naming a stored snapshot) is refused as expired
# The page size is left out of the binding: a cursor holds a position in the order, so a later page of another
# size goes on exactly where the previous one stopped.
UNBOUND_FIELDS = frozenset({"cursor", "limit"})
_TOKEN = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

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
    issued: datetime  # when the first page was asked: the window follows from it, the chain expires with it
    seed: int
    radius_km: float  # reached on the first page
    with_slots: tuple[int, ...]  # practitioners with slots at each radius tried on the first page, smallest first
    in_reach: int  # practitioners of the specialty within `radius_km` when the first page was asked
    after: RankKey  # the sort key of the last candidate the previous page went through


class CursorKeys:
    """Signs and opens cursors with a sub-key of the server's cursor key."""

    def __init__(self, key: bytes) -> None:
        self._sign = derive(key, "search-cursor-signature")

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._sign, payload, hashlib.sha256).digest()

    def _tag(self, digest: bytes) -> str:
        return _b64(hmac.new(self._sign, b"request:" + digest, hashlib.sha256).digest()[:16])

    def encode(self, cursor: SearchCursor, digest: bytes) -> str:
        group, band, _, site_id = cursor.after  # the tie-break is the seed's draw for the site: not carried
        state = {
            "v": FORMAT,
            "t": (cursor.issued - _EPOCH) // timedelta(microseconds=1),
            "s": cursor.seed,
            "k": cursor.radius_km,
            "n": cursor.with_slots,
            "i": cursor.in_reach,
            "a": [group, band, site_id],
            "r": self._tag(digest),
        }
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
        state = orjson.loads(payload)  # signed by this server: its shape is the one `encode` of its format wrote
        if not isinstance(state, dict) or state.get("v") != FORMAT:
            raise InvalidCursor(EXPIRED)  # handed out before this format: its search is to be run again
        issued = _EPOCH + timedelta(microseconds=state["t"])
        if (now - issued).total_seconds() > CURSOR_TTL_S:
            raise InvalidCursor(EXPIRED)
        if not hmac.compare_digest(state["r"], self._tag(digest)):
            raise InvalidCursor(OTHER_REQUEST)
        group, band, site_id = state["a"]
        seed = state["s"]
        return SearchCursor(
            issued=issued,
            seed=seed,
            radius_km=state["k"],
            with_slots=tuple(state["n"]),
            in_reach=state["i"],
            after=rank_key(group, band, seed, site_id),
        )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
