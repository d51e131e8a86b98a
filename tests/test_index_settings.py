"""The deployment's Elasticsearch index layout comes from its settings: shards at creation; replicas and the
refresh interval once a version is sealed, so an import's bulk load writes each document once and unseen."""

from __future__ import annotations

import uuid

from support import es_url

from core.settings import Settings
from indexer.es_backend import ElasticsearchBackend
from indexer.factory import make_backend
from indexer.lifecycle import ensure_live


def test_shards_replicas_and_refresh_come_from_the_settings(tmp_path) -> None:
    url = es_url() or ""
    settings = Settings(
        backend="elasticsearch",
        es_url=url,
        index_prefix=f"dispotest-{uuid.uuid4().hex[:10]}",
        data_dir=tmp_path,
        es_shards=2,
        es_replicas=1,
        es_refresh_interval="5s",
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
        live = ensure_live(backend, "vendors")  # a registry's first index goes the same way
        index = backend.es.indices.get_settings(index=live)[live]["settings"]["index"]
        assert (index["number_of_shards"], index["number_of_replicas"]) == ("2", "1")
    finally:
        backend.delete_all()
        backend.close()
