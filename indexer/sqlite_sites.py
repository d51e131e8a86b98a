"""The embedded index's directory table: practice sites by position with their profession and specialties, in an
R*Tree whose auxiliary columns carry them, kept in the same transaction as the site documents.

Counting the general practitioners within 20 km of a point reads the R*Tree's rows of the circle's box and nothing
else: no document, no term table (`Backend.count_sites_in_reach`).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from core.geo import EARTH_RADIUS_KM, bounding_box
from indexer.documents import field_values
from mappings import definition

KIND = "practice_sites"
SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS sites_geo USING rtree(
    rowid, min_lat, max_lat, min_lon, max_lon, +lat, +lon, +profession, +specialties
);
"""
# What a count may filter on: the site's profession, or one of its practitioner's specialties.
COUNT_FILTERS = ("profession", "specialty")
_DISTANCE = (
    f"2 * {EARTH_RADIUS_KM} * asin(min(1.0, sqrt("
    "pow(sin((radians(lat) - :plat) / 2), 2) + "
    "cos(:plat) * cos(radians(lat)) * pow(sin((radians(lon) - :plon) / 2), 2))))"
)


def _bars(values: list[str]) -> str:
    return "|" + "|".join(values) + "|"


def ensure(db: sqlite3.Connection) -> None:
    """Create the table; a directory written before it existed gets it filled from its documents once."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sites_geo'").fetchone():
        return
    db.executescript(SCHEMA)
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute("SELECT rowid, body, lat, lon FROM docs WHERE lat IS NOT NULL")
        while batch := rows.fetchmany(5000):
            added(db, [(rowid, orjson.loads(body), lat, lon) for rowid, body, lat, lon in batch])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def added(db: sqlite3.Connection, docs: Sequence[tuple[int, dict[str, Any], float | None, float | None]]) -> None:
    """Site documents just inserted (rowid, document, quantised position): those with a position are placed."""
    paths = definition(KIND).filters
    db.executemany(
        "INSERT INTO sites_geo VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                rowid,
                lat,
                lat,
                lon,
                lon,
                lat,
                lon,
                _bars(field_values(doc, paths["profession"])),
                _bars(field_values(doc, paths["specialty"])),
            )
            for rowid, doc, lat, lon in docs
            if lat is not None and lon is not None
        ],
    )


def removing(db: sqlite3.Connection, rowids: Sequence[int]) -> None:
    db.executemany("DELETE FROM sites_geo WHERE rowid = ?", [(r,) for r in rowids])


def count_in_reach(
    db: sqlite3.Connection, lat: float, lon: float, radius_km: float, filters: dict[str, list[str]]
) -> int:
    unknown = set(filters) - set(COUNT_FILTERS)
    if unknown:
        raise KeyError(f"unknown filter {sorted(unknown)[0]!r}")
    lat0, lat1, lon0, lon1 = bounding_box(lat, lon, radius_km)
    params: dict[str, Any] = {"plat": math.radians(lat), "plon": math.radians(lon), "radius": radius_km}
    params.update(lat0=lat0, lat1=lat1, lon0=lon0, lon1=lon1)
    where = ["min_lat >= :lat0", "max_lat <= :lat1", "min_lon >= :lon0", "max_lon <= :lon1"]
    column = {"profession": "profession", "specialty": "specialties"}
    for i, (name, values) in enumerate(sorted(filters.items())):
        if not values:
            continue
        holders = []
        for j, value in enumerate(values):
            params[f"f{i}_{j}"] = f"|{value}|"
            holders.append(f"instr({column[name]}, :f{i}_{j}) > 0")
        where.append("(" + " OR ".join(holders) + ")")
    sql = f"SELECT count(*) FROM sites_geo WHERE {' AND '.join(where)} AND {_DISTANCE} <= :radius"
    return db.execute(sql, params).fetchone()[0]
