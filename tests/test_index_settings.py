"""The deployment's Elasticsearch index layout comes from its settings: shards at creation; replicas and the
refresh interval once a version is sealed, so an import's bulk load writes each document once and unseen."""

from __future__ import annotations

import uuid

from support import es_url

from core.settings import Settings
from indexer.es_backend import ElasticsearchBackend
from indexer.factory import make_backend
from indexer.lifecycle import ensure_live
from mappings import definition


def test_shards_replicas_and_refresh_come_from_the_settings(tmp_path) -> None:
    url = es_url() or ""
    settings = Settings(
        backend="elasticsearch",
        es_url=url,
        index_prefix=f"dispotest-{uuid.uuid4().hex[:10]}",
        data_dir=tmp_path,
        es_shards=2,
        es_replicas="1",
        es_refresh_interval="5s",
        es_refresh_intervals={"vendors": "250ms"},
        es_wait_for_active_shards="all",
    )
    backend = make_backend(settings)
    assert isinstance(backend, ElasticsearchBackend)
    try:
        loading = backend.create_version("structures")
        index = backend.es.indices.get_settings(index=loading)[loading]["settings"]["index"]
        assert (index["number_of_shards"], index["number_of_replicas"], index["refresh_interval"]) == ("2", "0", "-1")
        backend.seal(loading)
        index = backend.es.indices.get_settings(index=loading)[loading]["settings"]["index"]
        assert (index["number_of_shards"], index["number_of_replicas"], index["refresh_interval"]) == ("2", "1", "5s")
        assert (index["auto_expand_replicas"], index["write"]["wait_for_active_shards"]) == ("false", "all")
        live = ensure_live(backend, "vendors")  # a registry's first index goes the same way, with its own refresh
        index = backend.es.indices.get_settings(index=live)[live]["settings"]["index"]
        assert (index["number_of_shards"], index["number_of_replicas"]) == ("2", "1")
        assert index["refresh_interval"] == "250ms"
    finally:
        backend.delete_all()
        backend.close()


def test_replicas_expand_to_the_nodes_there_are_by_default(tmp_path) -> None:
    """By default a sealed version asks for "0-1" replicas: none on a single node (which stays green), one as soon as
    the cluster has a second node."""
    prefix = f"dispotest-{uuid.uuid4().hex[:10]}"
    settings = Settings(backend="elasticsearch", es_url=es_url() or "", index_prefix=prefix, data_dir=tmp_path)
    assert (settings.es_replicas, settings.es_wait_for_active_shards) == ("0-1", "1")
    backend = make_backend(settings)
    assert isinstance(backend, ElasticsearchBackend)
    try:
        live = ensure_live(backend, "slots")
        index = backend.es.indices.get_settings(index=live)[live]["settings"]["index"]
        assert index["auto_expand_replicas"] == "0-1"
        nodes = backend.es.cluster.health()["number_of_data_nodes"]
        health = backend.es.cluster.health(index=live, wait_for_status="green", timeout="30s")
        assert health["status"] == "green"
        assert int(backend.es.indices.get_settings(index=live)[live]["settings"]["index"]["number_of_replicas"]) == min(
            1, nodes - 1
        )
    finally:
        backend.delete_all()
        backend.close()


def test_an_index_an_earlier_release_created_gets_the_fields_added_since(tmp_path) -> None:
    """In-place kinds live on across releases: a field added to a kind's mapping (the slots' CPTS) is added to the
    live index before this release first writes to it, instead of every write being refused by the strict mapping."""
    backend = ElasticsearchBackend(es_url() or "", prefix=f"dispotest-{uuid.uuid4().hex[:10]}")
    try:
        spec = definition("slots")
        earlier = {**spec.mappings, "properties": {k: v for k, v in spec.mappings["properties"].items() if k != "cpts"}}
        index = f"{backend.alias('slots')}-v1"
        backend.es.indices.create(index=index, mappings=earlier)
        backend.switch("slots", index)
        doc = {"slot_id": "v:1", "vendor": "v", "cpts": [{"idnst": "1010006040", "name": "CPTS", "phone": "+33400"}]}
        assert ElasticsearchBackend(backend.url, prefix=backend.prefix).write(index, [doc]) == 1
        mapping = backend.es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        assert mapping["cpts"]["properties"]["idnst"]["type"] == "keyword"
    finally:
        backend.delete_all()
        backend.close()
