"""The Elasticsearch backend: versioned indices `<prefix>-<kind>-v<timestamp>` behind the alias `<prefix>-<kind>`.

Written for the server-core distribution (no analysis-common, painless, reindex or join): text is
folded in Python, switching is an atomic `_aliases` call, and nothing relies on scripts.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from elasticsearch import (
    ApiError,
    BadRequestError,
    ConflictError,
    Elasticsearch,
    NotFoundError,
    TransportError,
    helpers,
)
from elasticsearch.serializer import OrjsonSerializer

from core.geo import haversine_km, lucene_quantise
from indexer.availability import SiteInReach, SlotCount, SlotMatch
from indexer.backend import Backend, BackendUnavailable, GeoQuery, Health, Hit, SearchPage
from indexer.writer import ThreadWriter
from mappings import KINDS, definition

SLOTS, SITES = "slots", "practice_sites"
MAX_TERMS = 50_000  # values of one terms clause, below Elasticsearch's default limit of 65,536
# One compare-and-set keeps reading and deciding while others win the race, for this long at most: each lost race is
# another's write, and a jittered pause after it lets the writers of one document take turns rather than collide
# again (a fixed count of attempts let one of eight busy writers lose twenty in a row).
UPDATE_DEADLINE_S = 10.0
UPDATE_PAUSE_S = 0.05  # the longest pause between two attempts


@dataclass(frozen=True)
class IndexSettings:
    """How every index of the deployment is laid out on the cluster: one shard holds a national kind comfortably
    (the largest, slots, is a few GB); replicas where there are nodes to hold them."""

    shards: int = 1
    # A count, or a range Elasticsearch expands to the nodes there are: "0-1" is none on one node, one on a cluster.
    replicas: str = "0-1"
    refresh_interval: str = "1s"  # how soon a write is searchable, once a version is sealed ...
    refresh_intervals: Mapping[str, str] = field(default_factory=dict)  # ... per kind where it differs
    wait_for_active_shards: str = "1"  # copies of a shard that must be up before a write goes ahead

    def replica_settings(self) -> dict[str, Any]:
        if "-" in self.replicas:
            return {"auto_expand_replicas": self.replicas}
        return {"auto_expand_replicas": "false", "number_of_replicas": int(self.replicas)}

    def live(self, kind: str) -> dict[str, Any]:
        """The settings of a sealed version of `kind`."""
        return {
            **self.replica_settings(),
            "refresh_interval": self.refresh_intervals.get(kind, self.refresh_interval),
            "write.wait_for_active_shards": self.wait_for_active_shards,
        }


def nodes(url: str) -> list[str]:
    """The nodes of a `DISPO_ES_URL`: one URL, or several comma-separated."""
    found = [part.strip().rstrip("/") for part in url.split(",") if part.strip()]
    if not found:
        raise ValueError("DISPO_ES_URL names no node; give one URL or several comma-separated")
    return found


class ElasticsearchBackend(Backend):
    name = "elasticsearch"

    def __init__(
        self,
        url: str,
        prefix: str = "dispo",
        timeout_s: float = 30.0,
        bulk_size: int = 2000,
        index_settings: IndexSettings | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.bulk_size = bulk_size
        self.index_settings = index_settings or IndexSettings()
        self._up_to_date: set[str] = set()  # indexes whose mapping this process has brought up to date
        # Every node named is in the client's pool: a request that finds its node gone (refused connection, timeout,
        # a 502/503/504 from a node leaving) is sent again to another, and the dead node rests before it is tried.
        self.es = Elasticsearch(
            nodes(url),
            request_timeout=timeout_s,
            retry_on_timeout=True,
            retry_on_status=(502, 503, 504),
            max_retries=3,
            serializers={"application/json": OrjsonSerializer()},
        )

    def alias(self, kind: str) -> str:
        return f"{self.prefix}-{kind}"

    def _kind_of(self, index: str) -> str:
        return index[len(self.prefix) + 1 :].rsplit("-v", 1)[0]

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotFoundError:
            raise
        except (TransportError, ConnectionError) as exc:
            raise BackendUnavailable(f"Elasticsearch at {self.url} is unreachable: {exc}") from exc
        except ApiError as exc:
            if exc.meta.status >= 500:
                raise BackendUnavailable(f"Elasticsearch error {exc.meta.status}: {exc}") from exc
            raise

    # -- lifecycle ---------------------------------------------------------------------------------
    def create_version(self, kind: str, version: str | None = None) -> str:
        spec = definition(kind)
        index = f"{self.alias(kind)}-v{version or datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
        # Bulk loading: no refresh and no replica to copy each write to until the version is sealed.
        settings = {
            "number_of_shards": self.index_settings.shards,
            "number_of_replicas": 0,
            "auto_expand_replicas": "false",
            "refresh_interval": "-1",
        }
        try:
            self._call(self.es.indices.create, index=index, settings=settings, mappings=spec.mappings)
            self._up_to_date.add(index)
        except BadRequestError as exc:
            if version is None or exc.error != "resource_already_exists_exception":
                raise
        return index

    def _mapped(self, index: str) -> None:
        """Before this process's first write to an index: fields added to its kind's mapping since the index was
        created are added to it (additions only, which Elasticsearch applies in place), so that an in-place kind
        created by an earlier release takes documents of this one."""
        if index in self._up_to_date:
            return
        spec = definition(self._kind_of(index))
        self._call(self.es.indices.put_mapping, index=index, properties=spec.mappings["properties"])
        self._up_to_date.add(index)

    def write(self, index: str, docs: Iterable[dict[str, Any]]) -> int:
        self._mapped(index)
        id_field = definition(self._kind_of(index)).id_field
        actions = ({"_index": index, "_id": doc[id_field], "_source": doc} for doc in docs)
        n = 0
        errors: list[Any] = []
        try:
            for ok, item in helpers.streaming_bulk(
                self.es, actions, chunk_size=self.bulk_size, raise_on_error=False, max_retries=3
            ):
                if ok:
                    n += 1
                elif len(errors) < 5:
                    errors.append(item)
        except (TransportError, ConnectionError) as exc:
            raise BackendUnavailable(f"Elasticsearch at {self.url} is unreachable: {exc}") from exc
        if errors:
            raise ValueError(f"Elasticsearch refused documents, first: {errors[0]}")
        return n

    def delete(self, index: str, ids: Iterable[str]) -> int:
        actions = ({"_op_type": "delete", "_index": index, "_id": doc_id} for doc_id in ids)
        n = 0
        try:
            for ok, item in helpers.streaming_bulk(
                self.es, actions, chunk_size=self.bulk_size, raise_on_error=False, raise_on_exception=True
            ):
                if ok:
                    n += 1
                elif item.get("delete", {}).get("status") != 404:
                    raise ValueError(f"Elasticsearch refused a delete: {item}")
        except (TransportError, ConnectionError) as exc:
            raise BackendUnavailable(f"Elasticsearch at {self.url} is unreachable: {exc}") from exc
        return n

    def update(
        self, kind: str, doc_id: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Optimistic concurrency: the write names the sequence number it read (or creates only), and a write that
        came in between makes it read and decide again."""
        index = self.live_index(kind)
        if index is None:
            raise KeyError(f"no live index of {kind!r}")
        self._mapped(index)
        give_up = time.monotonic() + UPDATE_DEADLINE_S
        attempt = 0
        while True:
            try:
                got = self._call(self.es.get, index=index, id=doc_id)
                before, guard = got["_source"], {"if_seq_no": got["_seq_no"], "if_primary_term": got["_primary_term"]}
            except NotFoundError:
                before, guard = None, {"op_type": "create"}
            after = change(before)
            if after is None:
                return before, None
            try:
                self._call(self.es.index, index=index, id=doc_id, document=after, refresh=True, **guard)
            except ConflictError:
                if time.monotonic() >= give_up:
                    raise BackendUnavailable(
                        f"{kind} {doc_id}: lost to concurrent writes for {UPDATE_DEADLINE_S:g} s; try again"
                    ) from None
                attempt += 1
                time.sleep(random.uniform(0, min(UPDATE_PAUSE_S, 0.002 * 2**attempt)))
                continue
            return before, after

    def bulk_writer(self, index: str) -> Any:
        """Bulk requests go out from a thread while the import reads the next chunk (indexing is the JVM's)."""

        return ThreadWriter(lambda docs: self.write(index, docs))

    def refresh(self, index: str) -> None:
        self._call(self.es.indices.refresh, index=index)

    def seal(self, index: str) -> None:
        live = self.index_settings.live(self._kind_of(index))
        self._call(self.es.indices.put_settings, index=index, settings={"index": live})
        self._call(self.es.indices.refresh, index=index)

    def live_index(self, kind: str) -> str | None:
        try:
            found = self._call(self.es.indices.get_alias, name=self.alias(kind))
        except NotFoundError:
            return None
        names = sorted(found.body)
        return names[-1] if names else None

    def switch(self, kind: str, index: str) -> str | None:
        previous = self.live_index(kind)
        actions: list[dict[str, Any]] = [{"add": {"index": index, "alias": self.alias(kind)}}]
        if previous is not None and previous != index:
            actions.insert(0, {"remove": {"index": previous, "alias": self.alias(kind)}})
        self._call(self.es.indices.update_aliases, actions=actions)
        # Keep the previous version (searches may still be reading it); drop anything older.
        for old in self.versions(kind):
            if old not in (index, previous):
                self.drop(old)
        return previous

    def drop(self, index: str) -> None:
        with contextlib.suppress(NotFoundError):
            self._call(self.es.indices.delete, index=index)

    def versions(self, kind: str) -> list[str]:
        try:
            found = self._call(self.es.indices.get, index=f"{self.alias(kind)}-v*", expand_wildcards="open")
        except NotFoundError:
            return []
        return sorted(found.body)

    # -- reads -------------------------------------------------------------------------------------
    def _filter_clauses(self, kind: str, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        known = definition(kind).filters
        clauses = []
        for name, values in sorted(filters.items()):
            if name not in known:
                raise KeyError(f"unknown filter {name!r}")
            if values:
                clauses.append({"terms": {known[name]: list(values)}})
        return clauses

    @staticmethod
    def _range_clauses(kind: str, ranges: dict[str, tuple[float | None, float | None]]) -> list[dict[str, Any]]:
        known = definition(kind).ranges
        clauses = []
        for name, (low, high) in sorted(ranges.items()):
            if name not in known:
                raise KeyError(f"unknown range {name!r}")
            bounds: dict[str, Any] = {"format": "epoch_second"}
            if low is not None:
                bounds["gte"] = int(low)
            if high is not None:
                bounds["lte"] = int(high)
            clauses.append({"range": {known[name]: bounds}})
        return clauses

    def count(self, kind: str, filters: dict[str, list[str]] | None = None, index: str | None = None) -> int:
        target = index or self.alias(kind)
        query = {"bool": {"filter": self._filter_clauses(kind, filters or {})}}
        try:
            return self._call(self.es.count, index=target, query=query)["count"]
        except NotFoundError:
            return 0

    def get(self, kind: str, doc_id: str) -> dict[str, Any] | None:
        try:
            return self._call(self.es.get, index=self.alias(kind), id=doc_id)["_source"]
        except NotFoundError:
            return None

    def revision(self, kind: str) -> Hashable | None:
        """Each document's index, id, sequence number and primary term, without their sources: a small kind only
        (a page of documents at most, else None)."""
        try:
            answer = self._call(
                self.es.search,
                index=self.alias(kind),
                size=self.max_page,
                source=False,
                seq_no_primary_term=True,
                sort=["_doc"],
                track_total_hits=self.max_page + 1,
            )
        except NotFoundError:
            return None
        if answer["hits"]["total"]["value"] > self.max_page:
            return None
        return tuple(sorted((h["_index"], h["_id"], h["_seq_no"], h["_primary_term"]) for h in answer["hits"]["hits"]))

    def get_many(self, kind: str, doc_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = sorted(set(doc_ids))
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(wanted), self.max_page):
            try:
                answer = self._call(self.es.mget, index=self.alias(kind), ids=wanted[i : i + self.max_page])
            except NotFoundError:  # no live index of the kind yet
                return {}
            # A document of a kind without a live index comes back with an error rather than `found`: none found.
            found.update({d["_id"]: d["_source"] for d in answer["docs"] if d.get("found")})
        return found

    def search(self, kind: str, query: GeoQuery) -> SearchPage:
        spec = definition(kind)
        after = query.checked_after()  # a malformed `search_after` would be Elasticsearch's 400, not a bad cursor
        filters = self._filter_clauses(kind, query.filters) + self._range_clauses(kind, query.ranges)
        must: list[dict[str, Any]] = []
        if query.text:
            must.append({"match_bool_prefix": {spec.text_field: {"query": query.text, "operator": "and"}}})
        sort: list[Any]
        if query.has_centre:
            centre = {"lat": query.lat, "lon": query.lon}
            if query.radius_km is not None:
                filters.append({"geo_distance": {"distance": f"{query.radius_km}km", spec.location_field: centre}})
            else:
                filters.append({"exists": {"field": spec.location_field}})
            sort = [
                {
                    "_geo_distance": {
                        spec.location_field: centre,
                        "unit": "km",
                        "order": "asc",
                        "distance_type": "arc",
                    }
                },
                {spec.id_field: "asc"},
            ]
        else:
            sort = [{spec.id_field: "asc"}]
        body: dict[str, Any] = {
            "query": {"bool": {"filter": filters, "must": must}},
            "sort": sort,
            "size": query.limit,
            "track_total_hits": query.count_total,
        }
        if after is not None:
            body["search_after"] = list(after)
        if query.fields is not None:
            body["_source"] = list(query.fields)
        try:
            answer = self._call(self.es.search, index=query.version or self.alias(kind), **body)
        except NotFoundError:
            if query.version is not None:  # a version asked for by name and gone: not an empty one
                raise KeyError(f"no index version {query.version!r}") from None
            return SearchPage(hits=[], total=0)
        hits = []
        for h in answer["hits"]["hits"]:
            key = tuple(h["sort"])
            hits.append(Hit(h["_source"], key[0] if query.has_centre else None, key))
        total = answer["hits"]["total"]["value"] if query.count_total else -1
        return SearchPage(hits=hits, total=total)

    # -- availability (`indexer.availability`) ------------------------------------------------------
    def _slot_match(self, match: SlotMatch) -> dict[str, Any]:
        """The bool query of the slots that match: filters and window, without the hidden practitioners'."""
        low, high = match.start
        ranges = {"start": (low, high)} if low is not None or high is not None else {}
        # A terms clause holds at most `index.max_terms_count` (65,536) values: a vendor failing for a region hides
        # more practitioners than that, in several clauses.
        must_not = [
            {"bool": {"filter": [{"term": {"vendor": vendor}}, {"terms": {"idnps": ids[i : i + MAX_TERMS]}}]}}
            for vendor, ids in match.hidden_pairs().items()
            for i in range(0, len(ids), MAX_TERMS)
        ]
        filters = self._filter_clauses(SLOTS, dict(match.filters)) + self._range_clauses(SLOTS, ranges)
        return {"bool": {"filter": filters, "must_not": must_not}}

    def sites_with_slots(self, lat: float, lon: float, radius_km: float, match: SlotMatch) -> list[SiteInReach]:
        """One hit per site (`collapse` on the site id) among the matching slots of the circle, nearest first: the
        engine reads the slots, the answer holds the sites. Past a window of hits, pages in site id order."""
        query = self._slot_match(match)
        centre = {"lat": lat, "lon": lon}
        query["bool"]["filter"].append({"geo_distance": {"distance": f"{radius_km}km", "location": centre}})
        by_distance = {"_geo_distance": {"location": centre, "unit": "km", "order": "asc", "distance_type": "arc"}}
        body: dict[str, Any] = {
            "query": query,
            "collapse": {"field": "site_id"},
            "sort": [by_distance, {"site_id": "asc"}],
            "size": self.max_page,
            "_source": ["idnps", "location"],
            "track_total_hits": False,
        }
        try:
            hits = self._call(self.es.search, index=self.alias(SLOTS), **body)["hits"]["hits"]
        except NotFoundError:
            return []
        if len(hits) < self.max_page:
            return [SiteInReach(h["fields"]["site_id"][0], h["_source"]["idnps"], h["sort"][0]) for h in hits]
        # More sites than one page holds: collapsed hits page only in the order of their site, so each distance
        # is computed here, from the position as the engine stores it.
        body["sort"] = [{"site_id": "asc"}]
        found: list[SiteInReach] = []
        while True:
            hits = self._call(self.es.search, index=self.alias(SLOTS), **body)["hits"]["hits"]
            for h in hits:
                at = h["_source"]["location"]
                quantised = lucene_quantise(at["lat"], at["lon"])
                found.append(
                    SiteInReach(h["fields"]["site_id"][0], h["_source"]["idnps"], haversine_km(lat, lon, *quantised))
                )
            if len(hits) < self.max_page:
                break
            body["search_after"] = hits[-1]["sort"]
        return sorted(found, key=lambda s: (s.distance_km, s.site_id))

    def slots_of_sites(
        self, site_ids: Iterable[str], match: SlotMatch, fields: tuple[str, ...] | None = None
    ) -> list[dict[str, Any]]:
        wanted = sorted(set(site_ids))
        docs: list[dict[str, Any]] = []
        for i in range(0, len(wanted), 1000):
            query = self._slot_match(match)
            query["bool"]["filter"].append({"terms": {"site_id": wanted[i : i + 1000]}})
            body: dict[str, Any] = {"query": query, "sort": [{"slot_id": "asc"}], "size": self.max_page}
            body["track_total_hits"] = False
            if fields is not None:
                body["_source"] = list(fields)
            while True:
                try:
                    hits = self._call(self.es.search, index=self.alias(SLOTS), **body)["hits"]["hits"]
                except NotFoundError:
                    return []
                docs += [h["_source"] for h in hits]
                if len(hits) < self.max_page:
                    break
                body["search_after"] = hits[-1]["sort"]
        return docs

    def slot_counts(self, start: float, days: int) -> list[SlotCount]:
        """A composite aggregation per day (site, vendor, practitioner), with the slots' types and modalities counted
        by terms sub-aggregations, read a page of groups at a time."""
        counts: list[SlotCount] = []
        for day in range(days):
            low, high = start + day * 86400, start + (day + 1) * 86400
            window = {"range": {"start": {"gte": int(low * 1000), "lt": int(high * 1000), "format": "epoch_millis"}}}
            composite: dict[str, Any] = {
                "size": 5000,
                "sources": [
                    {"site": {"terms": {"field": "site_id"}}},
                    {"vendor": {"terms": {"field": "vendor"}}},
                    {"idnps": {"terms": {"field": "idnps"}}},
                ],
            }
            values = {"types": {"terms": {"field": "types", "size": 50}}}
            values["modalities"] = {"terms": {"field": "modalities", "size": 50}}
            while True:
                try:
                    answer = self._call(
                        self.es.search,
                        index=self.alias(SLOTS),
                        size=0,
                        query={"bool": {"filter": [window]}},
                        aggs={"groups": {"composite": composite, "aggs": values}},
                    )
                except NotFoundError:
                    return []
                groups = answer["aggregations"]["groups"]
                for b in groups["buckets"]:
                    key = b["key"]
                    by_type = {t["key"]: t["doc_count"] for t in b["types"]["buckets"]}
                    by_modality = {m["key"]: m["doc_count"] for m in b["modalities"]["buckets"]}
                    counts.append(
                        SlotCount(key["site"], key["vendor"], key["idnps"], day, b["doc_count"], by_type, by_modality)
                    )
                if "after_key" not in groups or not groups["buckets"]:
                    break
                composite["after"] = groups["after_key"]
        return counts

    # -- directory ------------------------------------------------------------------------------------
    def count_sites_in_reach(self, lat: float, lon: float, radius_km: float, filters: dict[str, list[str]]) -> int:
        unknown = set(filters) - {"profession", "specialty"}
        if unknown:
            raise KeyError(f"unknown filter {sorted(unknown)[0]!r}")
        clauses = self._filter_clauses(SITES, filters)
        clauses.append({"geo_distance": {"distance": f"{radius_km}km", "location": {"lat": lat, "lon": lon}}})
        try:
            return self._call(self.es.count, index=self.alias(SITES), query={"bool": {"filter": clauses}})["count"]
        except NotFoundError:
            return 0

    def health(self) -> Health:
        try:
            health = self.es.cluster.health(timeout="2s")
            found = self.es.nodes.info(node_id="_local", filter_path="nodes.*.version")
            version = next(iter(found["nodes"].values()))["version"]
            live = {kind: self.live_index(kind) for kind in KINDS}
        except Exception as exc:
            return Health(reachable=False, backend=self.name, detail=f"{type(exc).__name__}: {exc}")
        return Health(
            reachable=health["status"] in ("green", "yellow"),
            backend=self.name,
            version=f"Elasticsearch {version}",
            live=live,
            detail=f"cluster {health['status']}, {health['number_of_nodes']} node(s)",
        )

    def delete_all(self) -> None:
        """Remove every index of this prefix, naming each one (tests start from an empty cluster with it)."""
        try:
            found = self._call(self.es.indices.get, index=f"{self.prefix}-*", expand_wildcards="all")
        except NotFoundError:
            return
        for name in found.body:
            self.drop(name)

    def close(self) -> None:
        self.es.close()
