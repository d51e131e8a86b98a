"""Positions for addresses, each with its precision and source.

Order of preference for a practice site:
1. the FINESS establishment's own coordinates, when the site is a known establishment;
2. an address geocoder (BAN/addok `/search/csv/`), when one is configured;
3. offline, the commune centroid from the INSEE code, else from the postcode (CEDEX resolved).
Sites without an address keep no position.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from core.geo import Gazetteer, gazetteer, in_france
from core.records import Address, Position, PositionPrecision, PracticeSite
from core.retry import Retry
from core.settings import Settings


@dataclass(frozen=True)
class GeocodeQuery:
    street: str
    postcode: str | None
    insee_code: str | None
    commune: str | None


class Geocoder(Protocol):
    """Turns addresses into positions; None where it finds nothing trustworthy."""

    def geocode(self, queries: Sequence[GeocodeQuery]) -> list[Position | None]: ...


class CommuneGeocoder:
    """Offline: the commune centroid from the INSEE code, else the postcode's (CEDEX codes resolved)."""

    def __init__(self, gaz: Gazetteer | None = None) -> None:
        self.gaz = gaz or gazetteer()

    def locate(self, insee_code: str | None, postcode: str | None) -> Position | None:
        commune = self.gaz.commune(insee_code)
        if commune is not None:
            return Position(
                lat=commune.lat,
                lon=commune.lon,
                precision=PositionPrecision.municipality,
                source="laposte-commune",
            )
        area = self.gaz.postcode_area(postcode)
        if area is not None:
            precision = PositionPrecision.municipality if len(area.communes) == 1 else PositionPrecision.postcode
            return Position(lat=area.lat, lon=area.lon, precision=precision, source="laposte-postcode")
        return None

    def geocode(self, queries: Sequence[GeocodeQuery]) -> list[Position | None]:
        return [self.locate(q.insee_code, q.postcode) for q in queries]


_BAN_TYPES = {
    "housenumber": PositionPrecision.housenumber,
    "street": PositionPrecision.street,
    "locality": PositionPrecision.locality,
    "municipality": PositionPrecision.municipality,
}


class AddokGeocoder:
    """BAN/addok batch geocoder (`POST /search/csv/`), with an on-disk cache, a rate limit and retries.

    Timeouts, lost connections, 429 and 5xx answers are retried (`core.retry`), up to `retries` times with a
    backoff from `retry_base_s`; any other failure, or the last one, yields None for the batch's rows, so the
    caller falls back to commune centroids and the import goes on.
    """

    def __init__(
        self,
        base_url: str,
        cache_path: Path | None = None,
        min_score: float = 0.5,
        requests_per_second: float = 10.0,
        batch_rows: int = 1000,
        retries: int = 3,
        timeout_s: float = 60.0,
        client: httpx.Client | None = None,
        retry_base_s: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.min_score = min_score
        self.interval = 1.0 / requests_per_second if requests_per_second > 0 else 0.0
        self.batch_rows = batch_rows
        self.retry = Retry(retries, retry_base_s, max_s=8.0)
        self.client = client or httpx.Client(timeout=timeout_s)
        self._last = 0.0
        self._lock = threading.Lock()
        self.failures = 0
        self._db: sqlite3.Connection | None = None
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(cache_path, check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS geocode (key TEXT PRIMARY KEY, lat REAL, lon REAL, precision TEXT)"
            )

    @staticmethod
    def _key(q: GeocodeQuery) -> str:
        raw = "|".join((q.street, q.postcode or "", q.insee_code or "", q.commune or ""))
        return hashlib.sha1(raw.encode()).hexdigest()

    def geocode(self, queries: Sequence[GeocodeQuery]) -> list[Position | None]:
        results: list[Position | None] = [None] * len(queries)
        todo: list[int] = []
        for i, q in enumerate(queries):
            cached = self._cached(q)
            if cached is False:
                todo.append(i)
            else:
                results[i] = cached
        for start in range(0, len(todo), self.batch_rows):
            batch = todo[start : start + self.batch_rows]
            answers = self._batch([queries[i] for i in batch])
            for i, pos in zip(batch, answers, strict=True):
                results[i] = pos
        return results

    def geocode_one(self, text: str) -> Position | None:
        """One free-text address (a regulator typing), with `GET /search/?q=&limit=1`; None if not trusted."""
        query = GeocodeQuery(street=text, postcode=None, insee_code=None, commune=None)
        cached = self._cached(query)
        if cached is not False:
            return cached if isinstance(cached, Position) else None
        try:
            answer = self.retry.call(self._ask, "GET", "/search/", params={"q": text, "limit": 1})
            position = self._first_feature(answer.json())
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            self.failures += 1
            return None
        self._store([(query, position)])
        return position

    def _ask(self, method: str, path: str, **request: Any) -> httpx.Response:
        """One throttled request to the geocoder; raises httpx.HTTPStatusError for an answer other than 2xx."""
        self._throttle()
        return self.client.request(method, self.base_url + path, **request).raise_for_status()

    def _first_feature(self, answer: dict) -> Position | None:
        features = answer.get("features") or []
        if not features:
            return None
        props = features[0].get("properties", {})
        lon, lat = features[0]["geometry"]["coordinates"]
        precision = _BAN_TYPES.get(props.get("type", ""))
        if precision is None or float(props.get("score", 0)) < self.min_score or not in_france(lat, lon):
            return None
        return Position(lat=lat, lon=lon, precision=precision, source="ban")

    def _cached(self, q: GeocodeQuery) -> Position | bool | None:
        """The cached answer (a Position, or None for 'known not found'), or False when not cached."""
        if self._db is None:
            return False
        row = self._db.execute("SELECT lat, lon, precision FROM geocode WHERE key = ?", (self._key(q),)).fetchone()
        if row is None:
            return False
        if row[2] is None:
            return None
        return Position(lat=row[0], lon=row[1], precision=PositionPrecision(row[2]), source="ban")

    def _store(self, pairs: Iterable[tuple[GeocodeQuery, Position | None]]) -> None:
        if self._db is None:
            return
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO geocode VALUES (?, ?, ?, ?)",
                [
                    (
                        self._key(q),
                        p.lat if p else None,
                        p.lon if p else None,
                        p.precision.value if p else None,
                    )
                    for q, p in pairs
                ],
            )

    def _throttle(self) -> None:
        with self._lock:
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()

    def _batch(self, queries: list[GeocodeQuery]) -> list[Position | None]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["id", "street", "postcode", "citycode", "city"])
        for i, q in enumerate(queries):
            writer.writerow([i, q.street, q.postcode or "", q.insee_code or "", q.commune or ""])
        payload = buf.getvalue().encode("utf-8")
        try:
            answer = self.retry.call(
                self._ask,
                "POST",
                "/search/csv/",
                files={"data": ("addresses.csv", payload, "text/csv")},
                data={"columns": ["street", "city"], "postcode": "postcode", "citycode": "citycode"},
            )
            positions = self._parse(answer.text, len(queries))
        except (httpx.HTTPError, ValueError, KeyError):
            self.failures += 1
            return [None] * len(queries)
        self._store(zip(queries, positions, strict=True))
        return positions

    def _parse(self, text: str, n: int) -> list[Position | None]:
        out: list[Position | None] = [None] * n
        for row in csv.DictReader(io.StringIO(text)):
            i = int(row["id"])
            try:
                lat, lon = float(row["latitude"]), float(row["longitude"])
                score = float(row.get("result_score") or 0)
            except ValueError:
                continue
            precision = _BAN_TYPES.get(row.get("result_type") or "")
            if precision is None or score < self.min_score or not in_france(lat, lon):
                continue
            out[i] = Position(lat=lat, lon=lon, precision=precision, source="ban")
        return out


def make_geocoder(settings: Settings) -> Geocoder | None:
    if not settings.geocoder_url:
        return None
    return AddokGeocoder(
        settings.geocoder_url,
        cache_path=settings.data_dir / "cache" / "geocoder.db",
        min_score=settings.geocoder_min_score,
        requests_per_second=settings.geocoder_rps,
        batch_rows=settings.geocoder_batch_rows,
        retries=settings.geocoder_retries,
    )


class Positioner:
    """Places practice sites: establishment coordinates, then the address geocoder, then the commune."""

    def __init__(
        self,
        establishments: dict[str, Position] | None = None,
        geocoder: Geocoder | None = None,
        communes: CommuneGeocoder | None = None,
    ) -> None:
        self.establishments = establishments or {}
        self.geocoder = geocoder
        self.communes = communes or CommuneGeocoder()

    def place(self, sites: Sequence[PracticeSite]) -> None:
        to_geocode: list[PracticeSite] = []
        for site in sites:
            if site.address is None:
                continue
            if site.finess_site and site.finess_site in self.establishments:
                site.position = self.establishments[site.finess_site]
            elif self.geocoder is not None and site.address.street:
                to_geocode.append(site)
            else:
                site.position = self._commune(site.address)
        if to_geocode and self.geocoder is not None:
            answers = self.geocoder.geocode([_query(s.address) for s in to_geocode if s.address])
            for site, pos in zip(to_geocode, answers, strict=True):
                site.position = pos if pos is not None else self._commune(site.address)

    def _commune(self, address: Address | None) -> Position | None:
        if address is None:
            return None
        return self.communes.locate(address.insee_code, address.postcode)


def _query(address: Address) -> GeocodeQuery:
    return GeocodeQuery(
        street=address.street_line(),
        postcode=address.postcode,
        insee_code=address.insee_code,
        commune=address.commune,
    )
