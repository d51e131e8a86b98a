"""The broker stopped while appointments are recorded, then started again: every message reaches the SAMU's regulation
software and is acknowledged, none is lost, and none is delivered twice except as a resend of the same message (the
same distributionID, which the LRM tells apart). A broker of the test's own, stopped and started by the project's
script on its data (`DISPO_RABBITMQ_DRILL_STATE` names one already started, reused and left running)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hub_support import appointment, client_ids, eventually, hub_settings, transmitting
from support import ROOT

from booking import hub_messages, hub_outbox
from booking.appointments import record
from core.settings import Settings
from editor_sandbox.lrm import LrmSandbox
from indexer.backend import Backend

SCRIPT = ROOT / "scripts" / "rabbitmq.sh"


def _script(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    named = os.environ.get("DISPO_RABBITMQ_DRILL_STATE")
    if named:
        env = {**os.environ, "DISPO_RABBITMQ_STATE": named}
        yield (
            next(line.split("=", 1)[1] for line in Path(named).read_text().split() if line.startswith("AMQP_URL=")),
            env,
        )
        return
    if not (os.environ.get("DISPO_AMQP_URL") or os.environ.get("DISPO_REQUIRE_AMQP") == "1"):
        pytest.skip("no broker tests: set DISPO_AMQP_URL (make test starts a broker, and one more here)")
    env = {**os.environ, "DISPO_RABBITMQ_STATE": str(tmp_path_factory.mktemp("rabbitmq") / "broker.env")}
    env.pop("DISPO_AMQP_URL", None)
    url = _script(env, "start").splitlines()[-1]
    try:
        yield url, env
    finally:
        _script(env, "stop")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_broker_outage_loses_and_duplicates_nothing(
    broker: tuple[str, dict[str, str]], loaded: Backend, settings: Settings
) -> None:
    url, env = broker
    sender, samu = client_ids()
    hub_outbox.set_recipient(loaded, "01", samu, datetime.now(UTC))
    with LrmSandbox(url, samu) as lrm, transmitting(loaded, hub_settings(settings, url, sender)):
        for i in range(10):
            record(loaded, appointment(f"before-{i}"))
        eventually(lambda: len(lrm.snapshot().deliveries) == 10, what="the first ten delivered")
        _script(env, "stop-node")
        for i in range(10):  # recorded while the broker is away: queued, nothing lost
            record(loaded, appointment(f"during-{i}"))
        assert sum(1 for r in hub_outbox.rows(loaded) if r.state == "queued") == 10
        _script(env, "start-node")
        eventually(
            lambda: hub_outbox.summary(loaded, datetime.now(UTC)).by_state["acknowledged"] == 20,
            within_s=90,
            what="all twenty acknowledged after the restart",
        )
        seen = lrm.snapshot()
    keys = [r.key for r in hub_outbox.rows(loaded)]
    expected = {hub_messages.distribution_id(sender, k) for k in keys}
    assert set(seen.deliveries) == expected  # every message received, and nothing else
    assert len(seen.appointments) == 20
    resent = {i: n for i, n in seen.deliveries.items() if n > 1}
    assert all(i in expected for i in resent)  # a second delivery is only ever the same message again
