"""What the index holds for a vendor, and why its slots were rejected or unplaced, as maintainers read it:
`GET /v1/vendors/{id}/slots`, `dispo slots list` and `dispo vendors status VENDOR`, on both backends, after one
cycle against a real sandbox on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import CHEPY, KRISTIAN, api_settings, assert_problem, es_url, headers, indexed
from typer.testing import CliRunner

from aggregation.availability import ensure_slots_index
from aggregation.scheduler import Aggregator
from aggregation.status import STATUS
from api.app import create_app
from api.auth import Role
from core.records import Participation, Vendor
from core.settings import Settings
from dispo.cli import app as cli
from editor_sandbox.agenda import SandboxConfig, SandboxPractitioner, SandboxSite
from editor_sandbox.server import SandboxServer
from indexer.backend import Backend
from indexer.lifecycle import ensure_live
from indexer.registry import save_participation, save_vendor

MAINTAINER = headers(Role.maintainer)
# Served by the vendor but absent from the directory: each of its slots is left unplaced.
STRANGER = SandboxPractitioner(idnps="810999999999", family="INCONNU", sites=[SandboxSite(idnst="1999999999")])


@pytest.fixture
def pulled(loaded: Backend, settings: Settings) -> Iterator[Backend]:
    """The index after one cycle of vendor `v` (CHEPY, KRISTIAN and a practitioner outside the directory)."""
    served = [CHEPY, KRISTIAN, STRANGER]
    config = SandboxConfig(vendor_id="v", seed=1, practitioners=served, churn_rate=0)
    with SandboxServer(config) as server:
        save_vendor(loaded, Vendor(vendor_id="v", name="Vendor V", base_url=server.fhir_base, timeout_s=3))
        for p in served:
            save_participation(loaded, Participation(idnps=p.idnps, vendors=["v"]))
        asyncio.run(Aggregator(loaded, settings).run_once())
    indexed(loaded)  # the cycle's writes made visible to searches now (Elasticsearch shows them within a second)
    yield loaded


@pytest.fixture
def api(pulled: Backend, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(settings), pulled)) as client:
        yield client


@pytest.fixture
def cli_env(pulled: Backend, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A command line reading the same index as `pulled`."""
    monkeypatch.setenv("DISPO_BACKEND", pulled.name)
    monkeypatch.setenv("DISPO_DATA_DIR", str(settings.data_dir.parent))  # where `loaded` keeps an embedded index
    if pulled.name == "elasticsearch":
        monkeypatch.setenv("DISPO_ES_URL", es_url() or "")
        monkeypatch.setenv("DISPO_INDEX_PREFIX", pulled.prefix)  # type: ignore[attr-defined]
    return CliRunner(env={"COLUMNS": "250"})


def every_page(client: TestClient, limit: int, **params: str) -> list[dict[str, Any]]:
    """Every page of the vendor's slots, following the cursors."""
    pages, cursor = [], None
    while True:
        query = {"limit": str(limit), **params} | ({"cursor": cursor} if cursor else {})
        response = client.get("/v1/vendors/v/slots", params=query, headers=MAINTAINER)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages


def starts(results: list[dict[str, Any]]) -> list[tuple[datetime, str]]:
    return [(datetime.fromisoformat(r["slot"]["start"]), r["slot"]["slot_id"]) for r in results]


def test_the_api_lists_exactly_what_the_index_holds_for_the_vendor_earliest_first(
    api: TestClient, pulled: Backend
) -> None:
    held = indexed(pulled, "v")
    assert held  # the cycle placed slots
    pages = every_page(api, limit=7)
    assert len(pages) > 2
    listed = [r for page in pages for r in page["results"]]
    ids = [r["slot"]["slot_id"] for r in listed]
    assert len(ids) == len(set(ids))  # no slot repeated across pages
    assert set(ids) == set(held)  # none skipped, none of another vendor
    assert all(page["total"] == pulled.count("slots", {"vendor": ["v"]}) == len(held) for page in pages)
    assert all(len(page["results"]) == 7 for page in pages[:-1])
    assert starts(listed) == sorted(starts(listed))
    assert {r["slot"]["site_id"] for r in listed} == {d["site_id"] for d in held.values()}
    first = listed[0]
    assert first["fresh"] is True and first["age_s"] >= 0
    fetched = datetime.fromisoformat(first["slot"]["fetched_at"])
    assert fetched == datetime.fromisoformat(held[first["slot"]["slot_id"]]["fetched_at"])
    assert pages[0]["vendor_fresh"] is True and pages[0]["last_success_at"] is not None


def test_the_api_filters_by_practitioner(api: TestClient, pulled: Backend) -> None:
    expected = {i for i, d in indexed(pulled, "v").items() if d["idnps"] == CHEPY.idnps}
    pages = every_page(api, limit=5, idnps=CHEPY.idnps)
    listed = [r["slot"] for page in pages for r in page["results"]]
    assert expected and {s["slot_id"] for s in listed} == expected and len(listed) == len(expected)
    assert pages[0]["total"] == pulled.count("slots", {"vendor": ["v"], "idnps": [CHEPY.idnps]})
    unplaced = every_page(api, limit=5, idnps=STRANGER.idnps)  # served, but none of its slots could be placed
    assert len(unplaced) == 1 and unplaced[0]["total"] == 0 and unplaced[0]["results"] == []


def test_the_api_answers_problems_and_only_to_maintainers(api: TestClient) -> None:
    body = assert_problem(api.get("/v1/vendors/nobody/slots", headers=MAINTAINER), 404)
    assert "nobody" in body["detail"]
    assert_problem(api.get("/v1/vendors/v/slots", headers=headers(Role.regulator)), 403)
    assert_problem(api.get("/v1/vendors/v/slots"), 401)
    assert_problem(api.get("/v1/vendors/v/slots", params={"cursor": "garbage"}, headers=MAINTAINER), 400)
    assert_problem(api.get("/v1/vendors/v/slots", params={"limit": 10_000}, headers=MAINTAINER), 422)


def test_the_cli_prints_the_same_slots(api: TestClient, cli_env: CliRunner) -> None:
    pages = every_page(api, limit=200)
    result = cli_env.invoke(cli, ["slots", "list", "--vendor", "v", "--limit", "200", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert [r["slot"]["slot_id"] for r in printed["results"]] == [r["slot"]["slot_id"] for r in pages[0]["results"]]
    assert printed["total"] == pages[0]["total"]

    table = cli_env.invoke(cli, ["slots", "list", "--vendor", "v", "--idnps", KRISTIAN.idnps, "--limit", "3"])
    assert table.exit_code == 0, table.output
    first = every_page(api, limit=3, idnps=KRISTIAN.idnps)[0]["results"][0]
    assert first["slot"]["slot_id"] in table.stdout and "more: --cursor" in table.stdout
    assert CHEPY.idnps not in table.stdout

    unknown = cli_env.invoke(cli, ["slots", "list", "--vendor", "nobody"])
    assert unknown.exit_code == 1 and "nobody" in unknown.output


def test_vendors_status_shows_the_last_cycle_and_why_slots_were_set_aside(pulled: Backend, cli_env: CliRunner) -> None:
    cycle = pulled.get(STATUS, "v")["last_cycle"]  # type: ignore[index]
    result = cli_env.invoke(cli, ["vendors", "status", "v"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"requests: {cycle['requests']}, pages: {cycle['pages']}" in text
    assert f"slots received: {cycle['slots_received']}, inserted: {cycle['inserted']}," in text
    assert cycle["unplaced"]["practitioner not in the directory"] > 0  # STRANGER's slots
    assert f"practitioner not in the directory: {cycle['unplaced']['practitioner not in the directory']}" in text
    assert "rejected slots: none" in text

    whole = json.loads(cli_env.invoke(cli, ["vendors", "status", "v", "--json"]).stdout)
    assert whole["last_cycle"] == cycle and whole["vendor_id"] == "v" and whole["slots_held"] > 0

    listing = cli_env.invoke(cli, ["vendors", "status", "--json"])  # without a vendor: every vendor, as before
    assert [row["vendor_id"] for row in json.loads(listing.stdout)] == ["v"]
    assert cli_env.invoke(cli, ["vendors", "status", "nobody"]).exit_code == 1


def test_vendors_status_shows_rejected_and_unplaced_examples_and_failing_practitioners(
    pulled: Backend, cli_env: CliRunner
) -> None:
    """No sandbox knob spoils a single slot (a malformed answer loses the whole batch): the status document is
    written here with known reasons and examples."""
    doc = pulled.get(STATUS, "v") or {}
    doc["failing"] = {KRISTIAN.idnps: "2026-05-01T08:00:00+00:00"}
    doc["last_cycle"] |= {
        "rejected": {"no start": 2, "unknown slot type": 1},
        "unplaced": {"no matching site": 1},
        "examples": {"rejected": {"no start": ["v:a1", "v:a2"]}, "unplaced": {"no matching site": ["v:b1"]}},
        "failing_reasons": {KRISTIAN.idnps: "timeout"},
    }
    pulled.write(ensure_live(pulled, STATUS), [doc])
    pulled.refresh(pulled.live_index(STATUS) or "")
    text = cli_env.invoke(cli, ["vendors", "status", "v"]).stdout
    assert "no start: 2 (e.g. v:a1, v:a2)" in text
    assert "unknown slot type: 1" in text and "unknown slot type: 1 (e.g." not in text
    assert "no matching site: 1 (e.g. v:b1)" in text
    assert f"{KRISTIAN.idnps}: since 2026-05-01T08:00:00+00:00, timeout" in text


def test_a_vendor_without_slots_yet_lists_none(loaded: Backend, settings: Settings, tmp_path: Path) -> None:
    save_vendor(loaded, Vendor(vendor_id="new", name="new", base_url="http://127.0.0.1:9/fhir"))
    ensure_slots_index(loaded)
    with TestClient(create_app(api_settings(settings), loaded)) as client:
        body = client.get("/v1/vendors/new/slots", headers=MAINTAINER).json()
    assert body["total"] == 0 and body["results"] == [] and body["vendor_fresh"] is False
