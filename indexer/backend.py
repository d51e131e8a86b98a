"""The one interface every search backend implements, and the query/answer types it speaks.

A backend stores documents of a few kinds (see `mappings.KINDS`) in *versioned* indices behind one
live alias per kind: an import writes a new version, then `switch` makes it live atomically.
"""

from __future__ import annotations

import base64
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from core.secrets import Sealer
from indexer.availability import SiteInReach, SlotCount, SlotMatch
from indexer.writer import BackgroundWriter


class BackendUnavailable(Exception):
    """The backend cannot be reached or answered with a server error; the caller may retry later."""


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class GeoQuery:
    """Documents of one kind, optionally inside a circle, filtered, optionally matching folded text.

    Sorted by distance then id when a centre is given, by id otherwise. `after` is the sort key of the
    last hit of the previous page (see `encode_cursor`).
    """

    lat: float | None = None
    lon: float | None = None
    radius_km: float | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)
    # Range name (mapping `_meta.ranges`) -> (lowest, highest) in epoch seconds, either end open.
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    text: str | None = None  # already folded (core.text.fold)
    limit: int = 20
    after: tuple[Any, ...] | None = None
    # Counting every match costs a second pass: scans that page through results do without (total = -1).
    count_total: bool = True
    # Only these top-level fields of each document (None: whole documents). A reconciliation compares the
    # hashes of a thousand slots per batch: decoding their whole documents cost more than the comparison.
    fields: tuple[str, ...] | None = None
    # A version of the kind other than the live one: an import compares the version it wrote with the live one before
    # switching (`rpps_import.changes`).
    version: str | None = None

    @property
    def has_centre(self) -> bool:
        return self.lat is not None and self.lon is not None

    def checked_after(self) -> tuple[Any, ...] | None:
        """`after`, if it is the sort key of a hit of such a query: (distance, id) around a centre, (id,) otherwise.
        It comes from a caller's cursor: any other shape is refused as one this API did not return."""
        after = self.after
        if after is None:
            return None
        shape = (float, str) if self.has_centre else (str,)
        if len(after) != len(shape) or not all(_is(value, kind) for value, kind in zip(after, shape, strict=True)):
            raise InvalidCursor("the cursor is not one this API returned")
        return after


@dataclass(frozen=True)
class Hit:
    doc: dict[str, Any]
    distance_km: float | None
    sort: tuple[Any, ...]


@dataclass(frozen=True)
class SearchPage:
    hits: list[Hit]
    total: int

    @property
    def next_after(self) -> tuple[Any, ...] | None:
        return self.hits[-1].sort if self.hits else None


@dataclass(frozen=True)
class Health:
    reachable: bool
    backend: str
    version: str | None = None
    live: dict[str, str | None] = field(default_factory=dict)
    detail: str | None = None


def encode_cursor(sort: tuple[Any, ...] | None) -> str | None:
    if sort is None:
        return None
    return base64.urlsafe_b64encode(orjson.dumps(list(sort))).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[Any, ...] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidCursor("the cursor is not one this API returned") from exc
    if not isinstance(value, list) or not value or not all(isinstance(v, str | int | float) for v in value):
        raise InvalidCursor("the cursor is not one this API returned")
    return tuple(value)


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


class Backend(ABC):
    """Storage and search of index documents; identical semantics on every implementation."""

    name: str
    # Seals secrets before they are stored (`indexer.registry`): set from the settings' key by `make_backend`; a
    # backend opened otherwise (a test, a tool) seals with a key of its process only.
    sealer: Sealer | None = None
    # The largest page one search may return: a scan reads in pages of at most this (each page of a sorted
    # scan re-runs the query, so fewer pages is faster; Elasticsearch caps it with max_result_window).
    max_page: int = 10_000

    # -- lifecycle ---------------------------------------------------------------------------------
    @abstractmethod
    def create_version(self, kind: str, version: str | None = None) -> str:
        """Create an empty version of `kind`'s index and return its name.

        `version` defaults to a timestamp; a fixed one makes creation idempotent (an existing index of
        that name is kept), which is how in-place kinds get their first index without races."""

    @abstractmethod
    def write(self, index: str, docs: Iterable[dict[str, Any]]) -> int:
        """Insert or replace documents (by their id field) in a version; returns how many were written."""

    @abstractmethod
    def delete(self, index: str, ids: Iterable[str]) -> int:
        """Remove documents by id from a version; returns how many existed."""

    @abstractmethod
    def update(
        self, kind: str, doc_id: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Compare and set one document of a kind's live index: `change` gets the stored document (None when there
        is none) and returns the one to store in its place, or None to leave it. No other write to that document
        comes between the read and the write (it may be called again if one did). Returns what was stored
        before and what was written (None when nothing was)."""

    def bulk_writer(self, index: str) -> BackgroundWriter:
        """A writer for a long series of batches into a new version (imports); synchronous by default."""
        return BackgroundWriter(lambda docs: self.write(index, docs))

    def refresh(self, index: str) -> None:  # noqa: B027 - only near-real-time backends need it
        """Make recent writes to a live version visible to searches now rather than within a second."""

    @abstractmethod
    def seal(self, index: str) -> None:
        """Make everything written to a version visible to searches."""

    @abstractmethod
    def live_index(self, kind: str) -> str | None:
        """The version the alias points to, or None before the first import."""

    @abstractmethod
    def switch(self, kind: str, index: str) -> str | None:
        """Point the alias at `index` atomically; returns the previous version. Older ones are dropped."""

    @abstractmethod
    def drop(self, index: str) -> None:
        """Delete a version that never went live (a refused or failed import)."""

    @abstractmethod
    def versions(self, kind: str) -> list[str]:
        """Existing versions of a kind, oldest first."""

    # -- reads -------------------------------------------------------------------------------------
    @abstractmethod
    def count(self, kind: str, filters: dict[str, list[str]] | None = None, index: str | None = None) -> int:
        """Documents of the live index (or of `index`) matching the filters."""

    @abstractmethod
    def get(self, kind: str, doc_id: str) -> dict[str, Any] | None: ...

    def revision(self, kind: str) -> Hashable | None:
        """A value that changes whenever a document of the kind's live index is written or deleted (or the alias
        moves), for readers that keep a small registry parsed while it is unchanged; None when the backend cannot
        tell cheaply, and nothing is kept."""
        return None

    @abstractmethod
    def get_many(self, kind: str, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The live documents of these ids, by id (those missing left out): one read by key, not a search."""

    @abstractmethod
    def search(self, kind: str, query: GeoQuery) -> SearchPage: ...

    # -- availability (`indexer.availability`) ------------------------------------------------------
    @abstractmethod
    def sites_with_slots(self, lat: float, lon: float, radius_km: float, match: SlotMatch) -> list[SiteInReach]:
        """Every site within `radius_km` of the centre holding at least one free slot that matches, with its
        practitioner and distance, nearest first then by site id. Reads a row per site, not the slots."""

    @abstractmethod
    def slots_of_sites(
        self, site_ids: Iterable[str], match: SlotMatch, fields: tuple[str, ...] | None = None
    ) -> list[dict[str, Any]]:
        """The free slots of these sites that match (only `fields` of each, when given), in no particular order."""

    @abstractmethod
    def slot_counts(self, start: float, days: int) -> list[SlotCount]:
        """The free slots starting within `days` days of `start` (epoch seconds), counted by the engine per site,
        vendor, practitioner and day: what coverage snapshots are made of."""

    # -- directory ------------------------------------------------------------------------------------
    @abstractmethod
    def count_sites_in_reach(self, lat: float, lon: float, radius_km: float, filters: dict[str, list[str]]) -> int:
        """How many practice sites lie within `radius_km`, of one of the professions or specialties asked
        (`filters`: "profession" and/or "specialty", any of each list)."""

    @abstractmethod
    def health(self) -> Health: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
