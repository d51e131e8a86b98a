"""What several test modules share: the sample files, the backends under test, API credentials and problem
checks, sandbox practitioners, and a read of the slots index.

A plain module, not a test module: importing it collects no test and runs no fixture, so each test module
stands alone. Fixtures live in conftest.py.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from access import accounts, sessions
from access.roles import TOKEN_ROLES, Grant, machine
from aggregation.availability import KIND as SLOTS
from aggregation.scheduler import Aggregator
from api.auth import Role, new_token
from bench.generate import generate
from core.settings import Settings
from editor_sandbox.agenda import SandboxPractitioner, SandboxSite
from editor_sandbox.fleet import start_fleet
from editor_sandbox.server import SandboxServer
from indexer.backend import Backend, GeoQuery
from indexer.es_backend import ElasticsearchBackend
from indexer.sqlite_backend import SqliteBackend
from rpps_import.pipeline import import_rpps

# -- sample files and backends -----------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
RPPS_SAMPLE = SAMPLES / "PS_LibreAcces_Personne_activite_sample.txt"
FINESS_RAW = SAMPLES / "etalab_raw_excerpt_20260512.csv"
FINESS_FLAT = SAMPLES / "etalab_flat_sample_dep01_20201231.csv"
BACKENDS = ["sqlite", "elasticsearch"]


def es_url() -> str | None:
    """The Elasticsearch cluster to test against; skips the test without one (fails it when CI requires one)."""
    url = os.environ.get("DISPO_ES_URL")
    if not url:
        if os.environ.get("DISPO_REQUIRE_ES") == "1":
            pytest.fail("DISPO_REQUIRE_ES=1 but DISPO_ES_URL is not set: Elasticsearch tests must run")
        pytest.skip("no Elasticsearch: set DISPO_ES_URL (make test starts one)")
    return url


def make_backend(kind: str, tmp_path: Path) -> Backend:
    """A fresh, empty backend: its own directory, or its own index prefix on the cluster."""
    if kind == "sqlite":
        return SqliteBackend(tmp_path / "index")
    return ElasticsearchBackend(es_url() or "", prefix=f"dispotest-{uuid.uuid4().hex[:10]}")


# -- the HTTP API --------------------------------------------------------------------------------------

TOKENS = {role: new_token(role, f"test-{role.value}") for role in TOKEN_ROLES}  # role -> (token, stored entry)


def headers(role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role][0]}"}


REG = headers(Role.regulator)


def api_settings(settings: Settings) -> Settings:
    """The settings with one token per role configured (the `headers` of each role are accepted)."""
    return settings.model_copy(update={"tokens": ",".join(entry for _, entry in TOKENS.values())})


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem of that status with a title and a detail; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# -- sandbox practitioners -----------------------------------------------------------------------------

# Two practitioners of the RPPS sample, at the FINESS establishments the sample names (placed in `loaded`).
CHEPY = SandboxPractitioner(
    idnps="0019402726",
    family="CHEPY",
    sites=[SandboxSite(idnst="1010000032", line="700 avenue de Narvik", city="BELLEY", postcode="01300")],
)
KRISTIAN = SandboxPractitioner(
    idnps="0019401140",
    family="KRISTIAN",
    sites=[SandboxSite(idnst="1010789956", line="23 chemin des Montaines", city="MEILLONNAS", postcode="01370")],
)

# The two practitioners the agency's FHIR examples name, THOMAS at two sites (not in the RPPS sample).
EXAMPLE_PRACTITIONERS = [
    SandboxPractitioner(
        idnps="810100050075",
        family="THOMAS",
        given="Sébastien",
        sites=[
            SandboxSite(idnst="1010000024", line="900 route de Paris", city="VIRIAT", postcode="01440"),
            SandboxSite(idnst="326010004500012", line="1 rue Mme DELMAS", city="BOURG EN BRESSE", postcode="01000"),
        ],
    ),
    SandboxPractitioner(
        idnps="810002673899",
        family="MARTIN",
        sites=[SandboxSite(idnst="1010000032", line="700 avenue de Narvik", city="BELLEY", postcode="01300")],
    ),
]


# -- the slots index -----------------------------------------------------------------------------------


def indexed(backend: Backend, vendor: str | None = None) -> dict[str, dict[str, Any]]:
    """Every slot held in the index (of one vendor if given), by slot id, as searches see them now."""
    live = backend.live_index(SLOTS)
    assert live is not None
    backend.refresh(live)
    filters = {"vendor": [vendor]} if vendor else {}
    return {h.doc["slot_id"]: h.doc for h in backend.search(SLOTS, GeoQuery(filters=filters, limit=2000)).hits}


# -- a generated department with sandbox vendors ---------------------------------------------------------


@contextmanager
def generated_world(
    kind: str, tmp: Path, seed: int, n_vendors: int
) -> Iterator[tuple[Backend, Settings, list[SandboxServer]]]:
    """The generated Ain directory on a fresh backend, `n_vendors` sandbox vendors serving its participants, and
    one aggregation cycle run: what the search tests search. Stops the vendors and empties the backend after."""
    backend = make_backend(kind, tmp)
    settings = Settings(data_dir=tmp / "dispo", tokens="")
    files = generate(tmp / "gen", "department", seed=seed, n_vendors=n_vendors)
    import_rpps(files["rpps"], backend, settings)
    servers = start_fleet(backend, n_vendors, participations=files["participations"], settings=settings, churn_rate=0.0)
    try:
        asyncio.run(Aggregator(backend, settings).run_once())
        yield backend, settings, servers
    finally:
        for server in servers:
            server.stop()
        if kind == "elasticsearch":
            backend.delete_all()  # type: ignore[attr-defined]
        backend.close()


ADMIN = machine(Role.maintainer, "test-admin")  # who makes the accounts the tests sign in with


def person(backend: Backend, account_id: str, *grants: Grant, idnps: str | None = None, name: str | None = None) -> str:
    """A person's account holding these grants (made now unless it exists), for `signed_in`."""
    if accounts.get_account(backend, account_id) is None:
        accounts.save_account(backend, ADMIN, account_id, idnps, None, name)
    for wanted in grants:
        accounts.grant(backend, ADMIN, account_id, wanted)
    return account_id


def signed_in(backend: Backend, account_id: str) -> dict[str, str]:
    """The headers a browser sends for a person with a fresh session: the session cookie and its CSRF token."""
    opened = sessions.open_session(backend, account_id, timedelta(hours=1), timedelta(hours=1))
    return {"Cookie": f"dispo_session={opened.value}", "X-CSRF-Token": opened.csrf}
