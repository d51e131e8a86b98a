"""The embedded backend: one SQLite file per index version (R*Tree for positions, FTS5 for folded text).

A small catalog database maps each kind to its live version; switching is one transaction on the
catalog, so readers see either the old version or the new one, never a half-written index. Filter
fields come from `mappings/` (`_meta.filters`), so the embedded index filters on exactly what
Elasticsearch filters on.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from core.geo import EARTH_RADIUS_KM, bounding_box, lucene_quantise
from indexer import sqlite_sites, sqlite_slots
from indexer.availability import SiteInReach, SlotCount, SlotMatch
from indexer.backend import Backend, GeoQuery, Health, Hit, SearchPage
from indexer.documents import field_values
from indexer.writer import ProcessWriter
from mappings import KINDS, definition

SLOTS = "slots"
# Kinds whose documents also fill typed tables, kept in the same transactions: the availability of slots by site,
# the directory's sites by position with their profession and specialties.
_TYPED: dict[str, Any] = {SLOTS: sqlite_slots, sqlite_sites.KIND: sqlite_sites}


def _epoch(value: str) -> float:
    """A date field's value in epoch seconds (ISO 8601 with an offset, as the records dump them)."""
    return datetime.fromisoformat(value).timestamp()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    lat REAL,
    lon REAL
);
CREATE VIRTUAL TABLE IF NOT EXISTS geo USING rtree(rowid, min_lat, max_lat, min_lon, max_lon);
CREATE TABLE IF NOT EXISTS terms (
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    doc INTEGER NOT NULL,
    PRIMARY KEY (field, value, doc)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS terms_by_doc ON terms (doc);
CREATE TABLE IF NOT EXISTS nums (
    field TEXT NOT NULL,
    value REAL NOT NULL,
    doc INTEGER NOT NULL,
    PRIMARY KEY (field, value, doc)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nums_by_doc ON nums (doc);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(text, tokenize = 'unicode61 remove_diacritics 2');
"""

# Great-circle distance in km between (lat, lon) columns and a bound centre (radians), as Elasticsearch.
_DISTANCE_SQL = (
    f"2 * {EARTH_RADIUS_KM} * asin(min(1.0, sqrt("
    "pow(sin((radians(d.lat) - :plat) / 2), 2) + "
    "cos(:plat) * cos(radians(d.lat)) * pow(sin((radians(d.lon) - :plon) / 2), 2))))"
)


def _body_sql(fields: tuple[str, ...] | None) -> str:
    """The column a search reads: the whole body, or only some top-level fields, extracted by SQLite as one
    JSON array (always two paths or more, so that the answer is JSON even for a single string field)."""
    if fields is None:
        return "d.body"
    for name in fields:
        if not name.replace("_", "").isalnum():
            raise KeyError(f"unknown field {name!r}")
    paths = [f"'$.{name}'" for name in (fields if len(fields) > 1 else (*fields, *fields))]
    return f"json_extract(CAST(d.body AS TEXT), {', '.join(paths)})"


def _decode(body: Any, fields: tuple[str, ...] | None) -> dict[str, Any]:
    if fields is None:
        return orjson.loads(body)
    return {name: value for name, value in zip(fields, orjson.loads(body), strict=False) if value is not None}


def _estimate(db: sqlite3.Connection, name: str, values: list[str], cap: int = 2000) -> int:
    """How many term rows a filter matches, counted up to `cap`: enough to tell 25 practitioners' slots
    from a vendor's hundreds of thousands, at a bounded cost."""
    marks = ",".join("?" * len(values))
    sql = f"SELECT count(*) FROM (SELECT 1 FROM terms WHERE field = ? AND value IN ({marks}) LIMIT {cap})"
    return db.execute(sql, [name, *values]).fetchone()[0]


class SqliteBackend(Backend):
    name = "sqlite"
    max_page = 1_000_000

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Writers of this process take turns; other processes wait on SQLite's busy timeout (BEGIN IMMEDIATE).
        self._write_lock = threading.RLock()
        with self._catalog() as db:
            db.execute("CREATE TABLE IF NOT EXISTS aliases (kind TEXT PRIMARY KEY, target TEXT NOT NULL)")

    # -- connections -------------------------------------------------------------------------------
    def _connect(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def _catalog(self) -> sqlite3.Connection:
        conns = self._conns()
        key = "__catalog__"
        if key not in conns:
            conns[key] = self._connect(self.root / "catalog.db")
        return conns[key]

    def _conns(self) -> dict[str, sqlite3.Connection]:
        if not hasattr(self._local, "conns"):
            self._local.conns = {}
        return self._local.conns

    def _db(self, index: str) -> sqlite3.Connection:
        conns = self._conns()
        db = conns.get(index)
        if db is None:
            path = self._path(index)
            if not path.exists():
                raise KeyError(f"no index version {index!r}")
            db = self._connect(path)
            typed = _TYPED.get(self._kind_of(index))
            if typed is not None:
                with self._write_lock:
                    typed.ensure(db)
            conns[index] = db
        return db

    def _path(self, index: str) -> Path:
        return self.root / f"{index}.db"

    @staticmethod
    def _kind_of(index: str) -> str:
        return index.rsplit("-v", 1)[0]

    # -- lifecycle ---------------------------------------------------------------------------------
    def create_version(self, kind: str, version: str | None = None) -> str:
        definition(kind)
        index = f"{kind}-v{version or datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
        with self._write_lock:
            db = self._connect(self._path(index))
            db.executescript(_SCHEMA)
            if kind in _TYPED:
                _TYPED[kind].ensure(db)
        self._conns()[index] = db
        return index

    @contextmanager
    def _transaction(self, index: str) -> Iterator[sqlite3.Connection]:
        """One write transaction on a version, serialised with the other writers of this process."""
        db = self._db(index)
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                # Every write bumps the version's counter in its header, in the same transaction: `revision`.
                (counter,) = db.execute("PRAGMA user_version").fetchone()
                db.execute(f"PRAGMA user_version = {(int(counter) + 1) % 2**31}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _drop_rows(db: sqlite3.Connection, rowids: list[int], kind: str) -> None:
        """Delete documents and their side rows, a statement per table for the whole list."""
        if kind in _TYPED:
            _TYPED[kind].removing(db, rowids)
        params = [(r,) for r in rowids]
        for table, column in (("geo", "rowid"), ("terms", "doc"), ("nums", "doc"), ("fts", "rowid"), ("docs", "rowid")):
            db.executemany(f"DELETE FROM {table} WHERE {column} = ?", params)

    @staticmethod
    def _rowids(db: sqlite3.Connection, ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            marks = ",".join("?" * len(chunk))
            found.update(db.execute(f"SELECT id, rowid FROM docs WHERE id IN ({marks})", chunk).fetchall())
        return found

    def write(self, index: str, docs: Iterable[dict[str, Any]]) -> int:
        spec = definition(self._kind_of(index))
        batch = list(docs)
        with self._transaction(index) as db:
            # A document already in the version is replaced: its rows go and it comes back with the new
            # ones, so new and replaced documents take one path, a statement per table for the whole batch.
            latest = {doc[spec.id_field]: doc for doc in batch}  # the last write of an id wins, as in a bulk
            existing = self._rowids(db, list(latest))
            if existing:
                self._drop_rows(db, list(existing.values()), spec.kind)
            self._insert_many(db, spec, list(latest.values()))
        return len(batch)

    def update(
        self, kind: str, doc_id: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Read, decide and write in one immediate transaction: it holds the version's write lock, so no other
        writer, in this process or another, comes in between."""
        index = self.live_index(kind)
        if index is None:
            raise KeyError(f"no live index of {kind!r}")
        spec = definition(kind)
        with self._transaction(index) as db:
            row = db.execute("SELECT rowid, body FROM docs WHERE id = ?", (doc_id,)).fetchone()
            before = orjson.loads(row[1]) if row else None
            after = change(before)
            if after is None:
                return before, None
            if after[spec.id_field] != doc_id:
                raise ValueError("an update keeps the document's id")
            if row is not None:
                self._drop_rows(db, [row[0]], kind)
            self._insert_many(db, spec, [after])
        return before, after

    def bulk_writer(self, index: str) -> Any:
        """Rows are built and written in a child process with its own connection, while this one reads on."""
        return ProcessWriter(_VersionWriter(self.root, index))

    @staticmethod
    def _insert_many(db: sqlite3.Connection, spec: Any, docs: list[dict[str, Any]]) -> None:
        start = (db.execute("SELECT max(rowid) FROM docs").fetchone()[0] or 0) + 1
        rows, geo, terms, nums, texts, placed = [], [], [], [], [], []
        for rowid, doc in enumerate(docs, start):
            location = doc.get(spec.location_field) if spec.location_field else None
            lat = lon = None
            if location:
                lat, lon = lucene_quantise(location["lat"], location["lon"])
                geo.append((rowid, lat, lat, lon, lon))
            rows.append((rowid, doc[spec.id_field], orjson.dumps(doc), lat, lon))
            placed.append((rowid, doc, lat, lon))
            terms.extend({(name, v, rowid) for name, path in spec.filters.items() for v in field_values(doc, path)})
            nums.extend(
                {(name, _epoch(v), rowid) for name, path in spec.ranges.items() for v in field_values(doc, path)}
            )
            text = doc.get(spec.text_field) if spec.text_field else None
            if text:
                texts.append((rowid, text))
        db.executemany("INSERT INTO docs (rowid, id, body, lat, lon) VALUES (?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO geo VALUES (?, ?, ?, ?, ?)", geo)
        db.executemany("INSERT OR IGNORE INTO terms (field, value, doc) VALUES (?, ?, ?)", terms)
        db.executemany("INSERT OR IGNORE INTO nums (field, value, doc) VALUES (?, ?, ?)", nums)
        db.executemany("INSERT INTO fts (rowid, text) VALUES (?, ?)", texts)
        if spec.kind in _TYPED:
            _TYPED[spec.kind].added(db, placed)

    def delete(self, index: str, ids: Iterable[str]) -> int:
        with self._transaction(index) as db:
            found = self._rowids(db, list(dict.fromkeys(ids)))
            self._drop_rows(db, list(found.values()), self._kind_of(index))
        return len(found)

    def seal(self, index: str) -> None:
        db = self._db(index)
        with self._write_lock:
            db.execute("ANALYZE")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def live_index(self, kind: str) -> str | None:
        row = self._catalog().execute("SELECT target FROM aliases WHERE kind = ?", (kind,)).fetchone()
        return row[0] if row else None

    def switch(self, kind: str, index: str) -> str | None:
        if not self._path(index).exists():
            raise KeyError(f"no index version {index!r}")
        db = self._catalog()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            previous = self.live_index(kind)
            db.execute("INSERT OR REPLACE INTO aliases (kind, target) VALUES (?, ?)", (kind, index))
            db.execute("COMMIT")
        # Keep the previous version (searches may still be reading it); drop anything older.
        for old in self.versions(kind):
            if old not in (index, previous):
                self.drop(old)
        return previous

    def drop(self, index: str) -> None:
        conns = self._conns()
        db = conns.pop(index, None)
        if db is not None:
            db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self._path(index)) + suffix).unlink(missing_ok=True)

    def versions(self, kind: str) -> list[str]:
        return sorted(p.stem for p in self.root.glob(f"{kind}-v*.db"))

    # -- reads -------------------------------------------------------------------------------------
    def _live_db(self, kind: str, index: str | None = None) -> sqlite3.Connection | None:
        target = index or self.live_index(kind)
        if target is None:
            return None
        conns = self._conns()
        # A connection to a version that is no longer live is closed once the alias has moved on.
        for name in [n for n in conns if n != "__catalog__" and self._kind_of(n) == kind and n != target]:
            if not self._path(name).exists():
                conns.pop(name).close()
        return self._db(target)

    def count(self, kind: str, filters: dict[str, list[str]] | None = None, index: str | None = None) -> int:
        db = self._live_db(kind, index)
        if db is None:
            return 0
        where, params = self._filter_sql(kind, filters or {}, db=db)
        sql = "SELECT count(*) FROM docs d" + (f" WHERE {' AND '.join(where)}" if where else "")
        return db.execute(sql, params).fetchone()[0]

    def get(self, kind: str, doc_id: str) -> dict[str, Any] | None:
        db = self._live_db(kind)
        if db is None:
            return None
        row = db.execute("SELECT body FROM docs WHERE id = ?", (doc_id,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def revision(self, kind: str) -> Hashable | None:
        """The live version and the counter its every write transaction bumps (`PRAGMA user_version`, read from the
        header as any reader of this process or another sees it)."""
        index = self.live_index(kind)
        if index is None:
            return None
        return index, self._db(index).execute("PRAGMA user_version").fetchone()[0]

    def get_many(self, kind: str, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        db = self._live_db(kind)
        wanted = sorted(set(doc_ids))
        if db is None or not wanted:
            return {}
        # One JSON array of ids, however many: read through the ids' unique index.
        sql = "SELECT id, body FROM docs WHERE id IN (SELECT value FROM json_each(?))"
        return {doc_id: orjson.loads(body) for doc_id, body in db.execute(sql, (orjson.dumps(wanted).decode(),))}

    @staticmethod
    def _filter_sql(
        kind: str,
        filters: dict[str, list[str]],
        ranges: dict[str, tuple[float | None, float | None]] | None = None,
        per_row: bool = False,
        db: sqlite3.Connection | None = None,
    ) -> tuple[list[str], dict[str, Any]]:
        """WHERE conditions for filters and ranges. `per_row` checks each candidate row (the R*Tree's, for a
        circle) against its own term and number rows; otherwise the documents matching the most selective
        filter are gathered first (estimated on `db`) and the other filters checked per row.
        A circle holds thousands of rows where a filter may match millions (every slot of the fresh vendors):
        gathering those first is what made a dense-city search take seconds at national scale, and gathering
        a vendor's 400,000 slots to keep the thousand of 25 practitioners made each reconciliation slow."""
        known = definition(kind).filters
        driver = None
        if not per_row and db is not None and sum(1 for v in filters.values() if v) > 1:
            driver = min((name for name, v in filters.items() if v), key=lambda n: _estimate(db, n, filters[n]))
        where: list[str] = []
        params: dict[str, Any] = {}
        known_ranges = definition(kind).ranges
        for i, (name, (low, high)) in enumerate(sorted((ranges or {}).items())):
            if name not in known_ranges:
                raise KeyError(f"unknown range {name!r}")
            conds = [f"field = :rn{i}"]
            params[f"rn{i}"] = name
            if low is not None:
                conds.append(f"value >= :rlo{i}")
                params[f"rlo{i}"] = low
            if high is not None:
                conds.append(f"value <= :rhi{i}")
                params[f"rhi{i}"] = high
            # Always per row: a time range matches most of a kind (every slot of the next days), and a
            # scan paging through it in id order would otherwise gather all of them again for each page.
            where.append(f"EXISTS (SELECT 1 FROM nums WHERE doc = d.rowid AND {' AND '.join(conds)})")
        for i, (name, values) in enumerate(sorted(filters.items())):
            if name not in known:
                raise KeyError(f"unknown filter {name!r}")
            if not values:
                continue
            holders = []
            for j, value in enumerate(values):
                params[f"f{i}_{j}"] = value
                holders.append(f":f{i}_{j}")
            params[f"fn{i}"] = name
            match = f"field = :fn{i} AND value IN ({', '.join(holders)})"
            if per_row or (driver is not None and name != driver):
                where.append(f"EXISTS (SELECT 1 FROM terms WHERE doc = d.rowid AND {match})")
            else:
                where.append(f"d.rowid IN (SELECT doc FROM terms WHERE {match})")
        return where, params

    def search(self, kind: str, query: GeoQuery) -> SearchPage:
        db = self._live_db(kind, query.version)
        if db is None:
            return SearchPage(hits=[], total=0)
        after = query.checked_after()
        circle = query.has_centre and query.radius_km is not None
        where, params = self._filter_sql(kind, query.filters, query.ranges, per_row=circle, db=db)
        if query.text:
            tokens = query.text.split()
            if tokens:
                # Every word must match; the last one as a prefix (typing "lefe" finds "lefevre").
                params["match"] = " AND ".join([f'"{t}"' for t in tokens[:-1]] + [f'"{tokens[-1]}"*'])
                where.append("d.rowid IN (SELECT rowid FROM fts WHERE fts MATCH :match)")
        if query.has_centre:
            assert query.lat is not None and query.lon is not None
            params["plat"], params["plon"] = math.radians(query.lat), math.radians(query.lon)
            source = "docs d"
            if query.radius_km is not None:
                lat0, lat1, lon0, lon1 = bounding_box(query.lat, query.lon, query.radius_km)
                params.update(lat0=lat0, lat1=lat1, lon0=lon0, lon1=lon1, radius=query.radius_km)
                source = "geo g JOIN docs d ON d.rowid = g.rowid"
                where.append("g.min_lat >= :lat0 AND g.max_lat <= :lat1 AND g.min_lon >= :lon0 AND g.max_lon <= :lon1")
            else:
                where.append("d.lat IS NOT NULL")
            inner = f"SELECT d.id AS id, {_body_sql(query.fields)} AS body, {_DISTANCE_SQL} AS dist FROM {source}"
            if where:
                inner += " WHERE " + " AND ".join(where)
            outer = ["dist <= :radius"] if query.radius_km is not None else []
            total = (
                db.execute(
                    f"SELECT count(*) FROM ({inner})" + (f" WHERE {' AND '.join(outer)}" if outer else ""), params
                ).fetchone()[0]
                if query.count_total
                else -1
            )
            if after is not None:
                params["a_dist"], params["a_id"] = float(after[0]), after[1]
                outer.append("(dist > :a_dist OR (dist = :a_dist AND id > :a_id))")
            params["limit"] = query.limit
            sql = (
                f"SELECT id, body, dist FROM ({inner})"
                + (f" WHERE {' AND '.join(outer)}" if outer else "")
                + " ORDER BY dist, id LIMIT :limit"
            )
            rows = db.execute(sql, params).fetchall()
            hits = [Hit(_decode(body, query.fields), dist, (dist, doc_id)) for doc_id, body, dist in rows]
            return SearchPage(hits=hits, total=total)
        cond = " AND ".join(where)
        total = (
            db.execute("SELECT count(*) FROM docs d" + (f" WHERE {cond}" if cond else ""), params).fetchone()[0]
            if query.count_total
            else -1
        )
        if after is not None:
            params["a_id"] = after[0]
            where.append("d.id > :a_id")
        params["limit"] = query.limit
        sql = f"SELECT d.id, {_body_sql(query.fields)} FROM docs d" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = db.execute(sql + " ORDER BY d.id LIMIT :limit", params).fetchall()
        hits = [Hit(_decode(body, query.fields), None, (doc_id,)) for doc_id, body in rows]
        return SearchPage(hits=hits, total=total)

    # -- availability (`indexer.availability`) ------------------------------------------------------
    def sites_with_slots(self, lat: float, lon: float, radius_km: float, match: SlotMatch) -> list[SiteInReach]:
        db = self._live_db(SLOTS)
        if db is None:
            return []
        return sqlite_slots.sites_with_slots(db, lat, lon, radius_km, match)

    def slots_of_sites(
        self, site_ids: Iterable[str], match: SlotMatch, fields: tuple[str, ...] | None = None
    ) -> list[dict[str, Any]]:
        db = self._live_db(SLOTS)
        if db is None:
            return []
        rowids = sqlite_slots.slot_rowids(db, sorted(set(site_ids)), match)
        docs = []
        for i in range(0, len(rowids), 900):
            chunk = rowids[i : i + 900]
            sql = f"SELECT {_body_sql(fields)} FROM docs d WHERE d.rowid IN ({','.join('?' * len(chunk))})"
            docs += [_decode(body, fields) for (body,) in db.execute(sql, chunk)]
        return docs

    def slot_counts(self, start: float, days: int) -> list[SlotCount]:
        db = self._live_db(SLOTS)
        return [] if db is None else sqlite_slots.slot_counts(db, start, days)

    def count_sites_in_reach(self, lat: float, lon: float, radius_km: float, filters: dict[str, list[str]]) -> int:
        db = self._live_db(sqlite_sites.KIND)
        if db is None:
            return 0
        return sqlite_sites.count_in_reach(db, lat, lon, radius_km, filters)

    def health(self) -> Health:
        try:
            live = {kind: self.live_index(kind) for kind in KINDS}
        except sqlite3.Error as exc:
            return Health(reachable=False, backend=self.name, detail=str(exc))
        return Health(reachable=True, backend=self.name, version=f"SQLite {sqlite3.sqlite_version}", live=live)

    def close(self) -> None:
        for db in self._conns().values():
            db.close()
        self._conns().clear()


@dataclass(frozen=True)
class _VersionWriter:
    """The writer process's side of `bulk_writer`: its own backend (connections never cross processes)."""

    root: Path
    index: str

    def __call__(self) -> Callable[[list[dict[str, Any]]], int]:
        return partial(SqliteBackend(self.root).write, self.index)
