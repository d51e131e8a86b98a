"""The vendor registry on both backends: saved, listed, disabled."""

from __future__ import annotations

from fastapi.testclient import TestClient
from support import api_settings, headers

from api.app import create_app
from api.auth import Role
from core.records import Vendor
from core.settings import Settings
from indexer.backend import Backend
from indexer.registry import get_vendor, list_vendors, save_vendor, set_enabled


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
