"""Shared fixtures: the real samples, and each backend (embedded SQLite and a real Elasticsearch).

Elasticsearch tests use the cluster at DISPO_ES_URL (`make test` starts one). Without it they are
skipped, unless DISPO_REQUIRE_ES=1 (CI), where they fail. Helpers and constants that test modules import
are in support.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import addok_like
import pytest
from support import BACKENDS, FINESS_FLAT, RPPS_SAMPLE, make_backend

from core.settings import Settings
from indexer.backend import Backend
from indexer.es_backend import ElasticsearchBackend
from rpps_import.pipeline import import_finess, import_rpps


def pytest_report_header(config: pytest.Config) -> list[str]:
    url = os.environ.get("DISPO_ES_URL")
    if not url:
        return ["elasticsearch: not configured (Elasticsearch tests skip)"]
    backend = ElasticsearchBackend(url, prefix="dispo-header")
    health = backend.health()
    backend.close()
    return [f"elasticsearch: {health.version} at {url} ({health.detail})"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = make_backend(request.param, tmp_path)
    yield b
    if request.param == "elasticsearch":
        b.delete_all()  # type: ignore[attr-defined]
    b.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The provider named for the tests (DISPO_OIDC_ISSUER) is for the tests that sign in: the others use tokens.
    return Settings(data_dir=tmp_path / "dispo", tokens="", oidc_issuer=None)


@pytest.fixture
def loaded(backend: Backend, settings: Settings) -> Backend:
    """A backend holding the Ain FINESS sample and the RPPS sample, as the demo loads them."""
    import_finess(FINESS_FLAT, backend, settings)
    import_rpps(RPPS_SAMPLE, backend, settings)
    return backend


@pytest.fixture
def addok() -> Iterator[str]:
    """A geocoder speaking addok's protocols on loopback (`addok_like`)."""
    with addok_like.serving() as url:
        yield url
