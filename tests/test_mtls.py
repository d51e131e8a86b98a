"""Mutual TLS between Dispo's contract client and a vendor: the vendor requires a client certificate."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import EXAMPLE_PRACTITIONERS

from aggregation.client import VendorError, make_client, search_slots
from core.records import Vendor
from editor_sandbox.agenda import SandboxConfig
from editor_sandbox.server import SandboxServer


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (CN and OU like IGC-Santé)."""
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=Test CA",
        cwd=d,
    )
    for name, subject, ext in [
        ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1"),
        ("client", "/CN=dispo-platform/OU=SAS", "extendedKeyUsage=clientAuth"),
    ]:
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subject,
            cwd=d,
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.pem",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )
    return d


# The vendor's clock and the window asked: one instant, whatever the time the test runs at.
NOW = datetime(2026, 11, 24, 9, 10, tzinfo=UTC)


def call(vendor: Vendor):
    async def go():
        async with make_client(vendor) as client:
            return await search_slots(client, vendor, ["810100050075"], NOW, NOW + timedelta(days=2), NOW)

    return asyncio.run(go())


def test_slot_search_over_mutual_tls(pki: Path) -> None:
    tls = (str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    config = SandboxConfig(vendor_id="tls", seed=5, practitioners=EXAMPLE_PRACTITIONERS, churn_rate=0)
    with SandboxServer(config, tls=tls, clock=lambda: NOW) as server:
        assert server.fhir_base.startswith("https://")
        vendor = Vendor(
            vendor_id="tls",
            name="tls",
            base_url=server.fhir_base,
            client_cert=str(pki / "client.pem"),
            client_key=str(pki / "client.key"),
            ca_bundle=str(pki / "ca.pem"),
            timeout_s=5,
        )
        result = call(vendor)
        assert result.slots and result.rejected == {}
        # Without the client certificate the vendor refuses the connection.
        anonymous = vendor.model_copy(update={"client_cert": None, "client_key": None})
        with pytest.raises(VendorError) as err:
            call(anonymous)
        assert err.value.kind == "connection"
