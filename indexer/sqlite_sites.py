"""The embedded index's directory table: practice sites by facet (a profession or a specialty) and position, in a
three-dimensional R*Tree kept in the same transaction as the site documents.

A site has a row per facet, the facet's number being the first dimension: counting the general practitioners
within 20 km of a point reads the rows of that facet in the circle's box and nothing else — not the other
professions' sites of a dense city, no document, no term table (`Backend.count_sites_in_reach`).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from typing import Any

from core.geo import EARTH_RADIUS_KM, bounding_box
from indexer.documents import field_values
from indexer.sqlite_slots import fill_once
from mappings import definition

KIND = "practice_sites"
SCHEMA = """
CREATE TABLE IF NOT EXISTS facets (facet INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE VIRTUAL TABLE IF NOT EXISTS sites_geo USING rtree(
    id, min_facet, max_facet, min_lat, max_lat, min_lon, max_lon, +site, +lat, +lon
);
"""
# A site's rows are numbered from its document's rowid: site x FACETS_PER_SITE + k, k < FACETS_PER_SITE.
FACETS_PER_SITE = 16
# What a count may filter on: the site's profession, or one of its practitioner's specialties.
COUNT_FILTERS = ("profession", "specialty")
_DISTANCE = (
    f"2 * {EARTH_RADIUS_KM} * asin(min(1.0, sqrt("
    "pow(sin((radians(lat) - :plat) / 2), 2) + "
    "cos(:plat) * cos(radians(lat)) * pow(sin((radians(lon) - :plon) / 2), 2))))"
)


def _facet_names(doc: dict[str, Any], paths: dict[str, str]) -> list[str]:
    names = [f"{name}:{v}" for name in COUNT_FILTERS for v in field_values(doc, paths[name])]
    return list(dict.fromkeys(names))[:FACETS_PER_SITE] or ["profession:"]  # a row at least: every site is counted


def _facet_ids(db: sqlite3.Connection, names: set[str], create: bool) -> dict[str, int]:
    known: dict[str, int] = {}
    wanted = sorted(names)
    for i in range(0, len(wanted), 900):
        chunk = wanted[i : i + 900]
        marks = ",".join("?" * len(chunk))
        known.update(db.execute(f"SELECT name, facet FROM facets WHERE name IN ({marks})", chunk).fetchall())
    if create:
        for name in wanted:
            if name not in known:
                facet = db.execute("INSERT INTO facets (name) VALUES (?)", (name,)).lastrowid
                assert facet is not None
                known[name] = facet
    return known


def ensure(db: sqlite3.Connection) -> None:
    """Create the tables; a directory written before they existed gets them filled from its documents once."""
    fill_once(db, "sites_geo", SCHEMA, added, "WHERE lat IS NOT NULL")


def added(db: sqlite3.Connection, docs: Sequence[tuple[int, dict[str, Any], float | None, float | None]]) -> None:
    """Site documents just inserted (rowid, document, quantised position): those with a position are placed, a row
    per facet."""
    paths = definition(KIND).filters
    placed = [(rowid, _facet_names(doc, paths), lat, lon) for rowid, doc, lat, lon in docs if lat is not None]
    ids = _facet_ids(db, {name for _, names, _, _ in placed for name in names}, create=True)
    db.executemany(
        "INSERT INTO sites_geo VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (rowid * FACETS_PER_SITE + k, ids[name], ids[name], lat, lat, lon, lon, rowid, lat, lon)
            for rowid, names, lat, lon in placed
            for k, name in enumerate(names)
        ],
    )


def removing(db: sqlite3.Connection, rowids: Sequence[int]) -> None:
    db.executemany(
        "DELETE FROM sites_geo WHERE id >= ? AND id < ?",
        [(r * FACETS_PER_SITE, (r + 1) * FACETS_PER_SITE) for r in rowids],
    )


def count_in_reach(
    db: sqlite3.Connection, lat: float, lon: float, radius_km: float, filters: dict[str, list[str]]
) -> int:
    unknown = set(filters) - set(COUNT_FILTERS)
    if unknown:
        raise KeyError(f"unknown filter {sorted(unknown)[0]!r}")
    lat0, lat1, lon0, lon1 = bounding_box(lat, lon, radius_km)
    params: dict[str, Any] = {"plat": math.radians(lat), "plon": math.radians(lon), "radius": radius_km}
    params.update(lat0=lat0, lat1=lat1, lon0=lon0, lon1=lon1)
    sql = (
        "SELECT site FROM sites_geo WHERE min_facet >= :facet AND max_facet <= :facet AND min_lat >= :lat0 "
        f"AND max_lat <= :lat1 AND min_lon >= :lon0 AND max_lon <= :lon1 AND {_DISTANCE} <= :radius"
    )
    asked = {name: values for name, values in sorted(filters.items()) if values}
    if not asked:  # every placed site of the circle, counted once (by any of its facets)
        every = sql.replace("min_facet >= :facet AND max_facet <= :facet AND ", "")
        return db.execute(f"SELECT count(DISTINCT site) FROM ({every})", params).fetchone()[0]
    per_filter = []
    for name, values in asked.items():
        ids = _facet_ids(db, {f"{name}:{v}" for v in values}, create=False)
        if not ids:
            return 0
        parts = []
        for i, facet in enumerate(sorted(ids.values())):
            params[f"facet{i}"] = facet
            parts.append(sql.replace(":facet", f":facet{i}"))
        per_filter.append(" UNION ".join(parts))  # a site of two of the values asked counts once
        if len(asked) == 1:
            return db.execute(f"SELECT count(*) FROM ({per_filter[0]})", params).fetchone()[0]
        params = {k: v for k, v in params.items() if not k.startswith("facet")} | {
            f"{name}{k}": v for k, v in params.items() if k.startswith("facet")
        }
        per_filter[-1] = per_filter[-1].replace(":facet", f":{name}facet")
    return db.execute(f"SELECT count(*) FROM ({' INTERSECT '.join(per_filter)})", params).fetchone()[0]
