"""The vendor registry on both backends: saved, listed, disabled; settings bounded, bearer tokens sealed at rest."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from support import api_settings, headers
from typer.testing import CliRunner

from api.app import create_app
from api.auth import Role
from core.records import Vendor
from core.secrets import SEALED_PREFIX, SecretKeyError
from core.settings import Settings
from dispo.cli import app
from indexer.backend import Backend
from indexer.factory import make_backend
from indexer.lifecycle import ensure_live
from indexer.registry import get_vendor, list_vendors, save_vendor, set_enabled
from indexer.sqlite_backend import SqliteBackend


def test_vendors_are_saved_listed_and_disabled(backend: Backend) -> None:
    assert list_vendors(backend) == []
    a = Vendor(vendor_id="a", name="Agenda A", base_url="https://a.example/fhir", bearer_token="s3cret")
    b = Vendor(
        vendor_id="b",
        name="Agenda B",
        base_url="https://b.example/fhir",
        client_cert="/etc/dispo/b.pem",
        client_key="/etc/dispo/b.key",
        ca_bundle="/etc/dispo/igc-sante.pem",
        timeout_s=5,
    )
    save_vendor(backend, a)
    save_vendor(backend, b)
    assert get_vendor(backend, "b") == b
    assert [v.vendor_id for v in list_vendors(backend)] == ["a", "b"]
    disabled = set_enabled(backend, "a", False)
    assert disabled is not None and not disabled.enabled
    assert [v.vendor_id for v in list_vendors(backend, enabled_only=True)] == ["b"]
    assert set_enabled(backend, "zzz", False) is None


def test_vendor_routes_are_for_maintainers_and_hide_secrets(loaded: Backend, settings: Settings) -> None:
    with TestClient(create_app(api_settings(settings), loaded)) as c:
        body = {"vendor_id": "a", "name": "Agenda A", "base_url": "https://a.example/fhir", "bearer_token": "s3cret"}
        assert c.put("/v1/vendors/a", json=body, headers=headers(Role.regulator)).status_code == 403
        r = c.put("/v1/vendors/a", json=body, headers=headers(Role.maintainer))
        assert r.status_code == 200 and r.json()["auth"] == "bearer" and "s3cret" not in r.text
        assert c.put("/v1/vendors/b", json=body, headers=headers(Role.maintainer)).status_code == 422
        r = c.post("/v1/vendors/a/disable", headers=headers(Role.maintainer))
        assert r.json()["enabled"] is False
        listed = c.get("/v1/vendors", headers=headers(Role.maintainer))
        assert [v["vendor_id"] for v in listed.json()] == ["a"] and "s3cret" not in listed.text
        assert c.post("/v1/vendors/zz/enable", headers=headers(Role.maintainer)).status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"concurrency": 10**26}, "concurrency"),
        ({"concurrency": 0}, "concurrency"),
        ({"requests_per_second": -1}, "requests_per_second"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"timeout_s": 3600}, "timeout_s"),
        ({"vendor_id": "a:b"}, "vendor_id"),  # ':' separates the vendor from its slot id
        ({"vendor_id": "x" * 65}, "vendor_id"),
        ({"base_url": "ftp://a.example/fhir"}, "base_url"),
        ({"base_url": "http://[::1"}, "base_url"),
        ({"name": "n" * 201}, "name"),
        ({"bearer_token": "t" * 5_000}, "bearer_token"),
    ],
)
def test_vendor_settings_out_of_bounds_are_refused_everywhere(
    change: dict[str, Any], field: str, loaded: Backend, settings: Settings, tmp_path: Path
) -> None:
    body = {"vendor_id": "a", "name": "Agenda A", "base_url": "https://a.example/fhir", **change}
    with pytest.raises(ValidationError) as refused:
        Vendor(**body)
    assert [e["loc"][0] for e in refused.value.errors()] == [field]
    with TestClient(create_app(api_settings(settings), loaded)) as c:
        r = c.put(
            f"/v1/vendors/{body['vendor_id']}",
            content=json.dumps(body),  # NaN written as JSON parsers read it, though the standard lacks it
            headers={**headers(Role.maintainer), "Content-Type": "application/json"},
        )
        assert r.status_code in (404, 422) and r.headers["content-type"].startswith("application/problem+json")
    assert get_vendor(loaded, "a") is None


def test_the_command_line_refuses_a_vendor_out_of_bounds_with_what_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPO_DATA_DIR", str(tmp_path / "dispo"))
    r = CliRunner(env={"COLUMNS": "250"}).invoke(
        app, ["vendors", "add", "v1", "--base-url", "http://127.0.0.1:1/fhir", "--concurrency", "100000000"]
    )
    assert r.exit_code == 2 and "invalid vendor: concurrency: Input should be less than or equal to 64" in r.output
    r = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["vendors", "add", "v1", "--base-url", "file:///etc/passwd"])
    assert r.exit_code == 2 and "base_url: an http(s) URL" in r.output


def test_bearer_tokens_are_sealed_at_rest(backend: Backend, tmp_path: Path) -> None:
    token = "tok-" + uuid.uuid4().hex
    save_vendor(backend, Vendor(vendor_id="a", name="Agenda A", base_url="https://a.example/fhir", bearer_token=token))
    stored = backend.get("vendors", "a")
    assert stored is not None and stored["bearer_token"].startswith(SEALED_PREFIX)
    assert token not in orjson.dumps(stored).decode()
    assert get_vendor(backend, "a").bearer_token == token  # type: ignore[union-attr]
    assert [v.bearer_token for v in list_vendors(backend)] == [token]
    if isinstance(backend, SqliteBackend):  # not in the database files either, whatever page it sits on
        for path in (tmp_path / "index").rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path.name


def test_a_token_sealed_with_the_settings_key_opens_only_with_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "dispo")
    token = "tok-" + uuid.uuid4().hex
    save_vendor(
        make_backend(settings),
        Vendor(vendor_id="a", name="Agenda A", base_url="https://a.example/fhir", bearer_token=token),
    )
    key_file = tmp_path / "dispo" / "secret.key"
    assert key_file.stat().st_mode & 0o077 == 0  # the key is its owner's only
    assert get_vendor(make_backend(settings), "a").bearer_token == token  # type: ignore[union-attr]
    other = settings.model_copy(update={"secret_key": SecretStr("another key of at least thirty-two chars")})
    with pytest.raises(SecretKeyError, match="sealed with another secret key"):
        get_vendor(make_backend(other), "a")
    with pytest.raises(SecretKeyError, match="at least 32"):
        make_backend(settings.model_copy(update={"secret_key": SecretStr("short")}))


def test_a_token_stored_in_clear_before_sealing_is_still_read(backend: Backend) -> None:
    index = ensure_live(backend, "vendors")
    doc = {"vendor_id": "old", "name": "Old", "base_url": "https://old.example/fhir", "bearer_token": "clear"}
    backend.write(index, [doc])
    backend.refresh(index)
    assert get_vendor(backend, "old").bearer_token == "clear"  # type: ignore[union-attr]
