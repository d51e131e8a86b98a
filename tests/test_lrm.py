"""Appointments reach the SAMU's regulation software: the messages are the guide's (its examples validate, read and
are rebuilt exactly), and against a real broker, on both backends, a recorded appointment is sent once to the SAMU of
its department and acknowledged end to end; an update follows its creation; an expired message is never sent; a
message the schema refuses is held with its reason; the Hub's and the LRM's errors land on the appointment."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import orjson
import pytest
from fastapi.testclient import TestClient
from hub_support import PRACTITIONER, amqp_url, appointment, client_ids, eventually, hub_settings, transmitting
from support import api_settings, headers
from test_cli import run

from api.app import create_app
from api.auth import Role
from booking import hub_messages, hub_outbox
from booking.appointments import record
from core.records import AppointmentStatus
from core.settings import Settings
from editor_sandbox.lrm import LrmSandbox
from indexer.backend import Backend

EXAMPLES = Path(__file__).parent / "fixtures" / "hub"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def test_the_guides_message_validates_and_is_rebuilt_exactly() -> None:
    report = example("report.json")
    assert hub_messages.problems(report) == []
    inner = report["content"][0]["jsonContent"]["embeddedJsonContent"]["message"]
    rebuilt = hub_messages.envelope(
        inner["appointment"],
        report["distributionID"],
        report["senderID"],
        report["descriptor"]["explicitAddress"]["explicitAddressValue"],
        datetime.fromisoformat(report["dateTimeSent"]),
        datetime.fromisoformat(report["dateTimeExpires"]),
    )
    assert rebuilt == report
    for name in ("content-create.json", "content-update.json", "content-cancel.json"):
        with_content = copy.deepcopy(report)
        with_content["content"][0]["jsonContent"]["embeddedJsonContent"]["message"] |= example(name)
        assert hub_messages.problems(with_content) == [], name


@pytest.mark.parametrize(
    ("path", "value", "found"),
    [
        (("appointment", "start"), None, "start"),  # a mandatory field missing
        (("appointment", "orientationCategory"), "Medecin", "Medecin"),  # the Hub's own example of a refusal
        (("appointment", "practitioner", "rppsId"), "0019402726", "rppsId"),  # not an RPPS number
        (("kind",), "Ack", "kind"),
    ],
)
def test_the_schema_refuses_what_the_guide_does_not_allow(path: tuple[str, ...], value: object, found: str) -> None:
    report = example("report.json")
    node = report["content"][0]["jsonContent"]["embeddedJsonContent"]["message"]
    for step in path[:-1]:
        node = node[step]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    problems = hub_messages.problems(report)
    assert problems and any(found in p for p in problems), problems


def test_answers_are_read_as_the_guide_writes_them() -> None:
    ack = hub_messages.read_answer((EXAMPLES / "ack.json").read_bytes())
    assert ack == hub_messages.Answer(example("report.json")["distributionID"], True, sender="fr.health.samu330")
    hub = hub_messages.read_answer((EXAMPLES / "error-hub-300.json").read_bytes())
    assert hub is not None and hub.code == 300 and not hub.acknowledged and hub.text == "INVALID_MESSAGE"
    assert hub.message_id == "fr.health.ptfsas_c461338a-97ea-41e5-b9fa-af87840890ff" and hub.sender == "fr.health.hub"
    conflict = hub_messages.read_answer((EXAMPLES / "error-lrm-409.json").read_bytes())
    assert conflict is not None and conflict.code == 409 and conflict.acknowledged  # delivered before: it counts
    for junk in (b"", b"[]", b'{"distributionKind": "Ack"}', b"\xff", b'{"distributionKind": "Error", "content": 1}'):
        assert hub_messages.read_answer(junk) is None


def test_a_departments_samu_follows_the_guides_naming_unless_maintainers_set_it(backend: Backend) -> None:
    assert hub_messages.samu_id("33") == "fr.health.samu330" and hub_messages.samu_id("971") == "fr.health.samu971"
    assert hub_outbox.recipient_for(backend, "01") == "fr.health.samu010"
    hub_outbox.set_recipient(backend, "01", "fr.health.samu001", datetime.now(UTC))
    assert (
        hub_outbox.recipient_for(backend, "01") == "fr.health.samu001"
        and hub_outbox.recipient_for(backend, None) is None
    )
    with pytest.raises(ValueError, match="client id"):
        hub_outbox.set_recipient(backend, "01", "samu 01", datetime.now(UTC))


def test_a_recorded_appointment_queues_one_message_in_the_same_write(loaded: Backend) -> None:
    outcome = record(loaded, appointment())
    doc = loaded.get("appointments", outcome.appointment.appointment_id)
    (entry,) = doc["lrm"]
    assert entry["state"] == "queued" and doc["lrm_pending"] is True and doc["lrm_states"] == ["queued"]
    content = entry["content"]
    assert content["method"] == "CreateAppointment" and content["status"] == "booked"
    assert content["practitioner"]["rppsId"] == PRACTITIONER and content["practitioner"]["lastName"]
    record(loaded, appointment())  # the same report again: nothing new to tell
    assert len(loaded.get("appointments", "v:A1")["lrm"]) == 1
    record(loaded, appointment(status=AppointmentStatus.cancelled, version=2))
    entries = loaded.get("appointments", "v:A1")["lrm"]
    assert [e["content"]["method"] for e in entries] == ["CreateAppointment", "UpdateAppointment"]
    assert entries[1]["content"]["status"] == "cancelled" and entries[0]["key"] != entries[1]["key"]


@pytest.mark.parametrize("answer_first", [False, True])
def test_an_answer_that_overtakes_the_send_leaves_both_recorded(loaded: Backend, answer_first: bool) -> None:
    record(loaded, appointment())
    key = loaded.get("appointments", "v:A1")["lrm"][0]["key"]
    published, answered = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC), datetime(2026, 3, 2, 9, 0, 1, tzinfo=UTC)
    writes = [hub_outbox.mark_sent(published), hub_outbox.mark_answered(hub_outbox.State.acknowledged, answered, None)]
    for change in reversed(writes) if answer_first else writes:
        assert hub_outbox.change_entry(loaded, "v:A1", key, change) is not None
    (entry,) = loaded.get("appointments", "v:A1")["lrm"]
    assert entry["state"] == "acknowledged" and entry["attempts"] == 1
    assert entry["sent_at"] == published.isoformat() and entry["acknowledged_at"] == answered.isoformat()
    # A final acknowledgement stays final, and a send is counted once.
    assert (
        hub_outbox.change_entry(loaded, "v:A1", key, hub_outbox.mark_answered(hub_outbox.State.failed, answered, None))
        is None
    )
    assert hub_outbox.change_entry(loaded, "v:A1", key, hub_outbox.mark_sent(answered)) is None


def test_an_appointment_is_sent_once_and_acknowledged_end_to_end(loaded: Backend, settings: Settings) -> None:
    url = amqp_url()
    sender, samu = client_ids()
    hub_outbox.set_recipient(loaded, "01", samu, datetime.now(UTC))
    configured = hub_settings(settings, url, sender)
    record(loaded, appointment())
    record(loaded, appointment(status=AppointmentStatus.cancelled, version=2))  # queued before anything is sent
    with LrmSandbox(url, samu) as lrm, transmitting(loaded, configured):
        eventually(
            lambda: loaded.get("appointments", "v:A1")["lrm_states"] == ["acknowledged"], what="both acknowledged"
        )
        seen = lrm.snapshot()
    entries = loaded.get("appointments", "v:A1")["lrm"]
    ids = [hub_messages.distribution_id(sender, e["key"]) for e in entries]
    assert dict(seen.deliveries) == {ids[0]: 1, ids[1]: 1}  # each once
    assert seen.received_at[ids[0]] <= seen.received_at[ids[1]]  # the update after its creation
    assert (
        seen.appointments["v:A1"]["status"] == "cancelled"
        and seen.appointments["v:A1"]["method"] == "UpdateAppointment"
    )
    assert all(e["sent_at"] and e["acknowledged_at"] for e in entries)
    assert loaded.get("appointments", "v:A1")["lrm_pending"] is False


def test_an_expired_message_is_never_sent(loaded: Backend, settings: Settings) -> None:
    url = amqp_url()
    sender, samu = client_ids()
    hub_outbox.set_recipient(loaded, "01", samu, datetime.now(UTC))
    record(loaded, appointment())
    time.sleep(1.1)  # the broker was away longer than the message may live
    with LrmSandbox(url, samu) as lrm, transmitting(loaded, hub_settings(settings, url, sender, lrm_ttl_s=1.0)):
        eventually(lambda: loaded.get("appointments", "v:A1")["lrm_states"] == ["expired"], what="expired")
        time.sleep(0.3)
        assert not lrm.snapshot().deliveries


def test_a_message_the_schema_refuses_is_held_with_its_reason(loaded: Backend, settings: Settings) -> None:
    url = amqp_url()
    sender, samu = client_ids()
    hub_outbox.set_recipient(loaded, "01", samu, datetime.now(UTC))
    record(loaded, appointment())
    key = loaded.get("appointments", "v:A1")["lrm"][0]["key"]
    hub_outbox.change_entry(loaded, "v:A1", key, lambda e: e | {"content": {**e["content"], "status": "lost"}})
    with LrmSandbox(url, samu) as lrm, transmitting(loaded, hub_settings(settings, url, sender)):
        eventually(lambda: loaded.get("appointments", "v:A1")["lrm_states"] == ["held"], what="held")
        assert not lrm.snapshot().deliveries
    (entry,) = loaded.get("appointments", "v:A1")["lrm"]
    assert "status" in entry["error"]["cause"] and "lost" in entry["error"]["cause"]


@pytest.mark.parametrize(("mode", "state", "code"), [("invalid", "failed", 422), ("conflict", "acknowledged", 409)])
def test_the_lrms_errors_land_on_the_appointment(
    loaded: Backend, settings: Settings, mode: str, state: str, code: int
) -> None:
    url = amqp_url()
    sender, samu = client_ids()
    hub_outbox.set_recipient(loaded, "01", samu, datetime.now(UTC))
    record(loaded, appointment())
    with LrmSandbox(url, samu, mode=mode), transmitting(loaded, hub_settings(settings, url, sender)):
        eventually(lambda: loaded.get("appointments", "v:A1")["lrm_states"] == [state], what=state)
    (entry,) = loaded.get("appointments", "v:A1")["lrm"]
    assert entry["error"]["code"] == code and entry["error"]["by"] == samu
    rows = hub_outbox.rows(loaded, state=state)
    assert [(r.appointment_id, r.state) for r in rows] == [("v:A1", state)]
    summary = hub_outbox.summary(loaded, datetime.now(UTC))
    assert summary.by_state[state] == 1 and summary.oldest_unacknowledged_s is None


def test_maintainers_and_regulators_see_where_messages_stand(loaded: Backend, settings: Settings) -> None:
    record(loaded, appointment(operator="test-regulator"))
    record(loaded, appointment("A2", operator="someone-else"))
    key = loaded.get("appointments", "v:A2")["lrm"][0]["key"]
    failed = {"state": "failed", "error": {"code": 422, "text": "UNPROCESSABLE", "cause": "refusé", "by": "x"}}
    hub_outbox.change_entry(loaded, "v:A2", key, lambda e: e | failed)
    with TestClient(create_app(api_settings(settings), loaded)) as c:
        maintainer = headers(Role.maintainer)
        body = c.get("/v1/lrm/messages", headers=maintainer).json()
        assert body["by_state"]["queued"] == 1 and body["by_state"]["failed"] == 1
        assert body["oldest_unacknowledged_s"] is not None and len(body["messages"]) == 2
        failed_only = c.get("/v1/lrm/messages", params={"state": "failed"}, headers=maintainer).json()["messages"]
        assert [(m["appointment_id"], m["error"]["code"]) for m in failed_only] == [("v:A2", 422)]
        assert c.get("/v1/lrm/messages", params={"state": "lost"}, headers=maintainer).status_code == 422
        assert c.get("/v1/lrm/messages", headers=headers(Role.regulator)).status_code == 403
        mine = c.get("/v1/appointments", headers=headers(Role.regulator)).json()
        assert [(a["appointment_id"], a["transmission"]["state"]) for a in mine] == [("v:A1", "queued")]
        metrics = c.get("/metrics", headers=maintainer).text
        assert (
            'dispo_lrm_messages{state="queued"} 1.0' in metrics and "dispo_lrm_oldest_unacknowledged_seconds" in metrics
        )
        r = c.put("/v1/lrm/recipients/01", json={"recipient": "fr.health.samu001"}, headers=maintainer)
        assert r.status_code == 200 and c.get("/v1/lrm/recipients", headers=maintainer).json() == {
            "01": "fr.health.samu001"
        }
        assert c.put("/v1/lrm/recipients/01", json={"recipient": "samu"}, headers=maintainer).status_code == 422
        assert c.put("/v1/lrm/recipients/01", json={"recipient": "fr.health.samu001"}).status_code == 401


def test_the_command_line_tells_where_messages_stand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPO_DATA_DIR", str(tmp_path / "dispo"))
    monkeypatch.setenv("DISPO_BACKEND", "sqlite")
    monkeypatch.delenv("DISPO_AMQP_URL", raising=False)
    assert run("lrm", "recipients", "set", "33", "fr.health.samu330").exit_code == 0
    assert json.loads(run("lrm", "recipients", "list", "--json").stdout) == {"33": "fr.health.samu330"}
    assert run("lrm", "recipients", "set", "33", "nope").exit_code == 2
    status = json.loads(run("lrm", "status", "--json").stdout)
    assert status["by_state"]["queued"] == 0 and status["messages"] == []
    assert run("lrm", "status", "--state", "lost").exit_code == 2
    r = run("lrm", "run")
    assert r.exit_code == 2 and "DISPO_AMQP_URL" in r.output
    monkeypatch.setenv("DISPO_AMQP_URL", "amqp://guest:guest@127.0.0.1:9/")  # nothing listens there
    r = run("lrm", "run")
    assert r.exit_code == 1 and "could not be reached" in r.output


def test_the_hubs_errors_land_on_the_appointment(loaded: Backend, settings: Settings) -> None:
    """The Hub refuses a message (its example: error 300, the message invalid) on the platform's `info` queue."""
    url = amqp_url()
    sender, samu = client_ids()
    hub_outbox.set_recipient(loaded, "01", samu, datetime.now(UTC))
    record(loaded, appointment())
    with LrmSandbox(url, samu, mode="silent"), transmitting(loaded, hub_settings(settings, url, sender)):
        eventually(lambda: loaded.get("appointments", "v:A1")["lrm_states"] == ["sent"], what="sent")
        key = loaded.get("appointments", "v:A1")["lrm"][0]["key"]
        error = example("error-hub-300.json")
        error["descriptor"]["explicitAddress"]["explicitAddressValue"] = sender
        inner = error["content"][0]["jsonContent"]["embeddedJsonContent"]["message"]["error"]
        inner["referencedDistributionID"] = hub_messages.distribution_id(sender, key)
        asyncio.run(_as_the_hub(url, sender, error))
        eventually(lambda: loaded.get("appointments", "v:A1")["lrm_states"] == ["failed"], what="failed")
    (entry,) = loaded.get("appointments", "v:A1")["lrm"]
    assert entry["error"]["code"] == 300 and entry["error"]["by"] == "fr.health.hub"
    assert "orientationCategory" in entry["error"]["cause"]


async def _as_the_hub(url: str, recipient: str, message: dict) -> None:
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("hubsante")
        body = aio_pika.Message(orjson.dumps(message), headers={"recipient": recipient, "kind": "Error"})
        await exchange.publish(body, routing_key="fr.health.hub")
