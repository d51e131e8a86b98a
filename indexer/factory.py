"""Builds the configured backend from the settings."""

from __future__ import annotations

from core.secrets import Sealer, server_key
from core.settings import Settings
from indexer.backend import Backend
from indexer.sqlite_backend import SqliteBackend


def make_backend(settings: Settings) -> Backend:
    backend = _open(settings)
    backend.sealer = Sealer(server_key(settings))
    return backend


def _open(settings: Settings) -> Backend:
    if settings.backend == "elasticsearch":
        # Imported here: the Elasticsearch client is only loaded by deployments that use it.
        from indexer.es_backend import ElasticsearchBackend, IndexSettings

        if not settings.es_url:
            raise ValueError("DISPO_BACKEND=elasticsearch needs DISPO_ES_URL (e.g. http://127.0.0.1:9200)")
        return ElasticsearchBackend(
            settings.es_url,
            prefix=settings.index_prefix,
            timeout_s=settings.es_timeout_s,
            bulk_size=settings.bulk_size,
            index_settings=IndexSettings(
                shards=settings.es_shards,
                replicas=settings.es_replicas,
                refresh_interval=settings.es_refresh_interval,
                refresh_intervals=settings.es_refresh_intervals,
                wait_for_active_shards=settings.es_wait_for_active_shards,
            ),
        )
    return SqliteBackend(settings.data_dir / "index")
