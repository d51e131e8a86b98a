"""TLS to the broker, as the Hub Santé requires: a broker of the test's own with a TLS listener that asks for a client
certificate (`DISPO_RABBITMQ_TLS=1`); the transmitter, given the CA and the platform's certificate, sends over it and
the acknowledgement comes back; without the certificate, or trusting another CA, it cannot connect."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hub_support import appointment, client_ids, eventually, hub_settings, transmitting
from support import ROOT

from booking import hub_outbox
from booking.appointments import record
from booking.hub_broker import connect
from core.settings import Settings
from editor_sandbox.lrm import LrmSandbox
from indexer.backend import Backend

SCRIPT = ROOT / "scripts" / "rabbitmq.sh"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not (os.environ.get("DISPO_AMQP_URL") or os.environ.get("DISPO_REQUIRE_AMQP") == "1"):
        pytest.skip("no broker tests: set DISPO_AMQP_URL (make test starts a broker, and one with TLS here)")
    state = tmp_path_factory.mktemp("rabbitmq-tls") / "broker.env"
    env = {**os.environ, "DISPO_RABBITMQ_STATE": str(state), "DISPO_RABBITMQ_TLS": "1"}
    env.pop("DISPO_AMQP_URL", None)
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield dict(line.split("=", 1) for line in Path(state).read_text().split())
    finally:
        stopped = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stderr[-2000:]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_messages_go_over_tls_with_the_platforms_certificate(
    tls_broker: dict[str, str], loaded: Backend, settings: Settings
) -> None:
    sender, samu = client_ids()
    hub_outbox.set_recipient(loaded, "01", samu, datetime.now(UTC))
    record(loaded, appointment())
    over_tls = hub_settings(
        settings,
        tls_broker["AMQPS_URL"],
        sender,
        amqp_ca=tls_broker["TLS_CA"],
        amqp_cert=tls_broker["TLS_CERT"],
        amqp_key=tls_broker["TLS_KEY"],
    )
    with LrmSandbox(tls_broker["AMQP_URL"], samu), transmitting(loaded, over_tls):
        eventually(lambda: loaded.get("appointments", "v:A1")["lrm_states"] == ["acknowledged"], what="acknowledged")


def test_without_the_certificate_or_with_another_ca_there_is_no_connection(
    tls_broker: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    async def attempt(configured: Settings) -> None:
        connection = await asyncio.wait_for(connect(configured), 15)
        await connection.close()

    url = tls_broker["AMQPS_URL"]
    no_certificate = settings.model_copy(update={"amqp_url": url, "amqp_ca": tls_broker["TLS_CA"]})
    with pytest.raises(Exception):  # noqa: B017 - refused during the handshake, however the client words it
        asyncio.run(attempt(no_certificate))
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other"),
            *("-keyout", str(tmp_path / "other.key"), "-out", str(other_ca)),
        ],
        check=True,
        capture_output=True,
    )
    distrusting = no_certificate.model_copy(
        update={"amqp_ca": str(other_ca), "amqp_cert": tls_broker["TLS_CERT"], "amqp_key": tls_broker["TLS_KEY"]}
    )
    with pytest.raises(Exception):  # noqa: B017 - the broker's certificate is not signed by the CA trusted
        asyncio.run(attempt(distrusting))
