"""Shared fixtures: the real samples, and each backend (embedded SQLite and a real Elasticsearch).

Elasticsearch tests use the cluster at DISPO_ES_URL (`make test` starts one). Without it they are
skipped, unless DISPO_REQUIRE_ES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from indexer.backend import Backend
from indexer.sqlite_backend import SqliteBackend

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
RPPS_SAMPLE = SAMPLES / "PS_LibreAcces_Personne_activite_sample.txt"
FINESS_RAW = SAMPLES / "etalab_raw_excerpt_20260512.csv"
FINESS_FLAT = SAMPLES / "etalab_flat_sample_dep01_20201231.csv"
BACKENDS = ["sqlite", "elasticsearch"]


def es_url() -> str | None:
    url = os.environ.get("DISPO_ES_URL")
    if not url:
        if os.environ.get("DISPO_REQUIRE_ES") == "1":
            pytest.fail("DISPO_REQUIRE_ES=1 but DISPO_ES_URL is not set: Elasticsearch tests must run")
        pytest.skip("no Elasticsearch: set DISPO_ES_URL (make test starts one)")
    return url


def pytest_report_header(config: pytest.Config) -> list[str]:
    url = os.environ.get("DISPO_ES_URL")
    if not url:
        return ["elasticsearch: not configured (Elasticsearch tests skip)"]
    from indexer.es_backend import ElasticsearchBackend

    backend = ElasticsearchBackend(url, prefix="dispo-header")
    health = backend.health()
    backend.close()
    return [f"elasticsearch: {health.version} at {url} ({health.detail})"]


def make_backend(kind: str, tmp_path: Path) -> Backend:
    if kind == "sqlite":
        return SqliteBackend(tmp_path / "index")
    from indexer.es_backend import ElasticsearchBackend

    return ElasticsearchBackend(es_url() or "", prefix=f"dispotest-{uuid.uuid4().hex[:10]}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = make_backend(request.param, tmp_path)
    yield b
    if request.param == "elasticsearch":
        b.delete_all()  # type: ignore[attr-defined]
    b.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "dispo", tokens="")


@pytest.fixture
def loaded(backend: Backend, settings: Settings) -> Backend:
    """A backend holding the Ain FINESS sample and the RPPS sample, as the demo loads them."""
    from rpps_import.pipeline import import_finess, import_rpps

    import_finess(FINESS_FLAT, backend, settings)
    import_rpps(RPPS_SAMPLE, backend, settings)
    return backend
