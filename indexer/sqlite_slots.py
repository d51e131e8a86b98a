"""The embedded index's availability tables: typed rows beside the slot documents, kept in the same transaction.

`slot_sites` holds one row per site with at least one indexed slot (its practitioner, profession, specialties,
position and how many slots it holds) behind an R*Tree; `slot_facts` one row per slot with what searches filter on,
keyed by site and start. A search finds the sites of its circle in the R*Tree and asks each, through the
(site, start) index, whether one of its slots matches: it reads a row per site, never the slots' documents
(`indexer.availability`).
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

from core.geo import EARTH_RADIUS_KM, bounding_box
from indexer.availability import SiteInReach, SlotCount, SlotMatch

SCHEMA = """
CREATE TABLE IF NOT EXISTS slot_sites (
    site INTEGER PRIMARY KEY,
    site_id TEXT NOT NULL UNIQUE,
    idnps TEXT NOT NULL,
    profession TEXT NOT NULL,
    specialties TEXT NOT NULL,  -- '|SM54|SM26|': each code between bars, so that a code is found whole
    lat REAL,
    lon REAL,
    slots INTEGER NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS slot_sites_geo USING rtree(site, min_lat, max_lat, min_lon, max_lon);
CREATE TABLE IF NOT EXISTS slot_facts (
    doc INTEGER PRIMARY KEY,  -- the slot document's rowid
    site INTEGER NOT NULL,
    start REAL NOT NULL,
    vendor TEXT NOT NULL,
    idnps TEXT NOT NULL,
    types TEXT NOT NULL,
    modalities TEXT NOT NULL,
    appointment_type TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS slot_facts_by_site ON slot_facts (site, start);
"""

# Great-circle distance in km from a bound centre (radians) to a site's columns, as Elasticsearch computes it.
_DISTANCE = (
    f"2 * {EARTH_RADIUS_KM} * asin(min(1.0, sqrt("
    "pow(sin((radians(s.lat) - :plat) / 2), 2) + "
    "cos(:plat) * cos(radians(s.lat)) * pow(sin((radians(s.lon) - :plon) / 2), 2))))"
)
# Slot filter -> the slot_facts column, and whether it holds several values between bars.
_SLOT_COLUMNS = {"vendor": ("vendor", False), "type": ("types", True), "modality": ("modalities", True)}
_SLOT_COLUMNS["appointment_type"] = ("appointment_type", False)
_SITE_COLUMNS = {"profession": ("profession", False), "practitioner_specialty": ("specialties", True)}


def _bars(values: Iterable[str] | None) -> str:
    return "|" + "|".join(values or ()) + "|"


def _practitioner(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc.get("idnps") or "", doc.get("profession_code") or "", _bars(doc.get("practitioner_specialties"))


def ensure(db: sqlite3.Connection) -> None:
    """Create the tables; an index written before they existed gets them filled from its documents once."""
    fill_once(db, "slot_facts", SCHEMA, added)


def fill_once(db: sqlite3.Connection, marker: str, schema: str, add: Any, where: str = "") -> None:
    """Create typed tables (`marker` one of them) missing from a version, and fill them from its documents by `add`,
    in one immediate transaction."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (marker,)).fetchone():
        return
    db.executescript(schema)
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(f"SELECT rowid, body, lat, lon FROM docs {where}")
        while batch := rows.fetchmany(5000):
            add(db, [(rowid, orjson.loads(body), lat, lon) for rowid, body, lat, lon in batch])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def added(db: sqlite3.Connection, docs: Sequence[tuple[int, dict[str, Any], float | None, float | None]]) -> None:
    """Slot documents just inserted (rowid, document, quantised position): their facts, their sites counted."""
    docs = [d for d in docs if d[1].get("site_id")]  # a slot on no site is in no search
    if not docs:
        return
    per_site: Counter[str] = Counter(doc["site_id"] for _, doc, _, _ in docs)
    latest: dict[str, tuple[dict[str, Any], float | None, float | None]] = {
        doc["site_id"]: (doc, lat, lon) for _, doc, lat, lon in docs
    }
    known = _sites(db, list(per_site))
    keys: dict[str, int] = {}
    for site_id, n in per_site.items():
        doc, lat, lon = latest[site_id]
        idnps, profession, specialties = _practitioner(doc)
        if site_id not in known:
            key = db.execute(
                "INSERT INTO slot_sites (site_id, idnps, profession, specialties, lat, lon, slots) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (site_id, idnps, profession, specialties, lat, lon, n),
            ).lastrowid
            assert key is not None
            keys[site_id] = key
            _place(db, key, lat, lon)
            continue
        key, was_lat, was_lon = known[site_id]
        keys[site_id] = key
        # The latest slot speaks for its site: a practitioner's specialties or a site's position may change.
        db.execute(
            "UPDATE slot_sites SET slots = slots + ?, idnps = ?, profession = ?, specialties = ?, lat = ?, lon = ? "
            "WHERE site = ?",
            (n, idnps, profession, specialties, lat, lon, key),
        )
        if (was_lat, was_lon) != (lat, lon):
            db.execute("DELETE FROM slot_sites_geo WHERE site = ?", (key,))
            _place(db, key, lat, lon)
    db.executemany(
        "INSERT INTO slot_facts (doc, site, start, vendor, idnps, types, modalities, appointment_type) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                rowid,
                keys[doc["site_id"]],
                datetime.fromisoformat(doc["start"]).timestamp(),
                doc.get("vendor") or "",
                doc.get("idnps") or "",
                _bars(doc.get("types")),
                _bars(doc.get("modalities")),
                doc.get("appointment_type") or "",
            )
            for rowid, doc, _, _ in docs
        ],
    )


def removing(db: sqlite3.Connection, rowids: Sequence[int]) -> None:
    """Slot documents about to be deleted: their facts go, their sites lose them, a site left without any goes."""
    if not rowids:
        return
    per_site: Counter[int] = Counter()
    for i in range(0, len(rowids), 900):
        chunk = rowids[i : i + 900]
        marks = ",".join("?" * len(chunk))
        per_site.update(
            dict(db.execute(f"SELECT site, count(*) FROM slot_facts WHERE doc IN ({marks}) GROUP BY site", chunk))
        )
    db.executemany("DELETE FROM slot_facts WHERE doc = ?", [(r,) for r in rowids])
    db.executemany("UPDATE slot_sites SET slots = slots - ? WHERE site = ?", [(n, s) for s, n in per_site.items()])
    sites = list(per_site)
    for i in range(0, len(sites), 900):
        chunk = sites[i : i + 900]
        marks = ",".join("?" * len(chunk))
        empty = [
            (site,)
            for (site,) in db.execute(f"SELECT site FROM slot_sites WHERE slots <= 0 AND site IN ({marks})", chunk)
        ]
        db.executemany("DELETE FROM slot_sites WHERE site = ?", empty)
        db.executemany("DELETE FROM slot_sites_geo WHERE site = ?", empty)


def _sites(db: sqlite3.Connection, site_ids: list[str]) -> dict[str, tuple[int, float | None, float | None]]:
    """The key and position of those of these sites already holding slots."""
    found: dict[str, tuple[int, float | None, float | None]] = {}
    for i in range(0, len(site_ids), 900):
        chunk = site_ids[i : i + 900]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(f"SELECT site_id, site, lat, lon FROM slot_sites WHERE site_id IN ({marks})", chunk)
        found.update({site_id: (key, lat, lon) for site_id, key, lat, lon in rows})
    return found


def _place(db: sqlite3.Connection, key: int, lat: float | None, lon: float | None) -> None:
    if lat is not None and lon is not None:
        db.execute("INSERT INTO slot_sites_geo VALUES (?, ?, ?, ?, ?)", (key, lat, lat, lon, lon))


def _matching(
    columns: dict[str, tuple[str, bool]], table: str, filters: dict[str, list[str]], params: dict[str, Any], tag: str
) -> list[str]:
    """WHERE conditions on `table`'s typed columns: any of each filter's values."""
    where = []
    for i, (name, values) in enumerate(sorted(filters.items())):
        column, several = columns[name]
        holders = []
        for j, value in enumerate(values):
            params[f"{tag}{i}_{j}"] = f"|{value}|" if several else value
            holders.append(f":{tag}{i}_{j}")
        if several:
            where.append("(" + " OR ".join(f"instr({table}.{column}, {h}) > 0" for h in holders) + ")")
        else:
            where.append(f"{table}.{column} IN ({', '.join(holders)})")
    return where


def _slot_conditions(match: SlotMatch, params: dict[str, Any]) -> list[str]:
    """WHERE conditions on a slot_facts row `f`: the window, the slot filters, the hidden practitioners."""
    where = _matching(_SLOT_COLUMNS, "f", match.slot_filters(), params, "sf")
    low, high = match.start
    if low is not None:
        where.append("f.start >= :start_low")
        params["start_low"] = low
    if high is not None:
        where.append("f.start <= :start_high")
        params["start_high"] = high
    # A vendor's hidden practitioners as one JSON array each, read by `json_each` once per query: a vendor failing
    # for a region hides tens of thousands, past the parameters a statement may hold (one per practitioner was also
    # checked against every slot of the circle, which made such a search take minutes).
    for i, (vendor, ids) in enumerate(match.hidden_pairs().items()):
        params[f"hv{i}"], params[f"hp{i}"] = vendor, orjson.dumps(ids).decode()
        where.append(f"NOT (f.vendor = :hv{i} AND f.idnps IN (SELECT value FROM json_each(:hp{i})))")
    return where


def sites_with_slots(
    db: sqlite3.Connection, lat: float, lon: float, radius_km: float, match: SlotMatch
) -> list[SiteInReach]:
    params: dict[str, Any] = {"plat": math.radians(lat), "plon": math.radians(lon), "radius": radius_km}
    lat0, lat1, lon0, lon1 = bounding_box(lat, lon, radius_km)
    params.update(lat0=lat0, lat1=lat1, lon0=lon0, lon1=lon1)
    site_where = _matching(_SITE_COLUMNS, "s", match.site_filters(), params, "tf")
    slot_where = _slot_conditions(match, params)
    exists = "EXISTS (SELECT 1 FROM slot_facts f WHERE f.site = s.site" + "".join(f" AND {w}" for w in slot_where) + ")"
    sql = (
        f"SELECT site_id, idnps, dist FROM (SELECT s.site_id, s.idnps, {_DISTANCE} AS dist FROM slot_sites_geo g "
        "JOIN slot_sites s ON s.site = g.site WHERE g.min_lat >= :lat0 AND g.max_lat <= :lat1 "
        "AND g.min_lon >= :lon0 AND g.max_lon <= :lon1"
        + "".join(f" AND {w}" for w in site_where)
        + f" AND {exists}) WHERE dist <= :radius ORDER BY dist, site_id"
    )
    return [SiteInReach(site_id, idnps, dist) for site_id, idnps, dist in db.execute(sql, params)]


def slot_rowids(db: sqlite3.Connection, site_ids: Sequence[str], match: SlotMatch) -> list[int]:
    """The rowids of the matching slots of these sites, by site then start (the (site, start) index's order)."""
    out: list[int] = []
    for i in range(0, len(site_ids), 500):
        chunk = list(site_ids[i : i + 500])
        params: dict[str, Any] = {f"s{j}": s for j, s in enumerate(chunk)}
        where = _slot_conditions(match, params) + _matching(_SITE_COLUMNS, "s", match.site_filters(), params, "tf")
        sql = (
            "SELECT f.doc FROM slot_sites s JOIN slot_facts f ON f.site = s.site "
            f"WHERE s.site_id IN ({', '.join(':s' + str(j) for j in range(len(chunk)))})"
            + "".join(f" AND {w}" for w in where)
        )
        out += [r for (r,) in db.execute(sql, params)]
    return out


def slot_counts(db: sqlite3.Connection, start: float, days: int) -> list[SlotCount]:
    """Slots starting in [start, start + days x 24 h), grouped by the engine by site, vendor, practitioner, day and
    combination of types and modalities; the few combinations of a group are then merged here."""
    sql = (
        "SELECT s.site_id, f.vendor, f.idnps, CAST((f.start - :start) / 86400 AS INTEGER) AS day, f.types, "
        "f.modalities, count(*) FROM slot_facts f JOIN slot_sites s ON s.site = f.site "
        "WHERE f.start >= :start AND f.start < :end GROUP BY f.site, f.vendor, f.idnps, day, f.types, f.modalities"
    )
    merged: dict[tuple[str, str, str, int], tuple[list[int], dict[str, int], dict[str, int]]] = {}
    values: dict[str, list[str]] = {}  # a few distinct combinations of types (and of modalities), split once each
    for site_id, vendor, idnps, day, types, modalities, n in db.execute(
        sql, {"start": start, "end": start + days * 86400}
    ):
        key = (site_id, vendor, idnps, day)
        found = merged.get(key)
        if found is None:
            found = merged[key] = ([0], {}, {})
        total, by_type, by_modality = found
        total[0] += n
        for combination, into in ((types, by_type), (modalities, by_modality)):
            split = values.get(combination)
            if split is None:
                split = values[combination] = [v for v in combination.split("|") if v]
            for value in split:
                into[value] = into.get(value, 0) + n
    return [SlotCount(*key, total[0], by_type, by_modality) for key, (total, by_type, by_modality) in merged.items()]
