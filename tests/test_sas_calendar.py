"""Practitioners in Dispo: the SAS calendar of a practitioner without an interfaced vendor (its slots indexed like a
vendor's, booked inside Dispo, one regulator only per slot), periods of unavailability that take a practitioner's
slots and cards out of the searches whatever the vendor says, and the practitioner's space where they (or their
delegate, never another's) declare all this."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, time, timedelta

import pytest
from fastapi.testclient import TestClient
from support import CHEPY, KRISTIAN, REG, api_settings, assert_problem, headers, person, signed_in

from access.roles import Grant, Role
from aggregation import sas_calendar, unavailability
from aggregation.availability import SAS_VENDOR, SiteMapper, reconcile
from aggregation.sas_calendar import OneOffOpening, SasCalendar, WeeklyOpening, slots_of
from aggregation.status import STATUS
from api.app import create_app
from booking import hub_outbox, sas_booking
from core.errors import Conflict
from core.records import Modality, Participation, Slot, SlotType
from core.settings import Settings
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live
from indexer.registry import save_participation

PARIS_MONDAY = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)  # 07:00 in Paris, winter time


def site_of(backend: Backend, idnps: str) -> dict:
    (site,) = [s for s in SiteMapper(backend).sites(idnps) if s.get("location")][:1]
    return site


def every_day(site_id: str, start: time = time(8), end: time = time(20), minutes: int = 30) -> SasCalendar:
    return SasCalendar(
        weekly=[WeeklyOpening(site_id=site_id, weekday=d, start=start, end=end, slot_minutes=minutes) for d in range(7)]
    )


def test_the_calendar_gives_slots_in_paris_time_less_closed_days_plus_one_offs() -> None:
    calendar = SasCalendar(
        weekly=[WeeklyOpening(site_id="s", weekday=0, start=time(9), end=time(10), slot_minutes=20)],
        one_offs=[
            OneOffOpening(
                site_id="s",
                day=date(2026, 12, 9),
                start=time(14),
                end=time(15),
                slot_minutes=30,
                slot_type=SlotType.PUBLIC,
                modality=Modality.HH,
            )
        ],
        closed_days=[date(2026, 12, 14)],
    )
    found = slots_of("0019402726", calendar, PARIS_MONDAY, days=14)
    assert [s.start.isoformat() for s in found] == [
        "2026-12-07T08:00:00+00:00",
        "2026-12-07T08:20:00+00:00",
        "2026-12-07T08:40:00+00:00",  # Monday 9:00-10:00
        "2026-12-09T13:00:00+00:00",
        "2026-12-09T13:30:00+00:00",  # the one-off, at home, public
        "2026-12-21T08:00:00+00:00",
        "2026-12-21T08:20:00+00:00",
        "2026-12-21T08:40:00+00:00",  # not the 14th
    ]
    assert found[3].types == [SlotType.PUBLIC] and found[3].modalities == [Modality.HH]
    assert all(s.vendor == SAS_VENDOR and s.slot_id.startswith("sas:0019402726-s-") for s in found)
    summer = slots_of("0019402726", calendar, datetime(2026, 7, 6, 5, 0, tzinfo=UTC), days=0)
    assert summer[0].start.isoformat() == "2026-07-06T07:00:00+00:00" and summer[0].utc_offset == "+02:00"
    assert slots_of("0019402726", calendar, PARIS_MONDAY + timedelta(hours=2, minutes=1), days=0)[0].start.minute == 20


def test_a_calendar_names_only_the_practitioners_own_sites(loaded: Backend) -> None:
    other = site_of(loaded, KRISTIAN.idnps)["site_id"]
    with pytest.raises(ValueError, match="not one of the practitioner's practice sites"):
        sas_calendar.save_calendar(loaded, CHEPY.idnps, every_day(other), "test")


def test_calendar_slots_are_indexed_searched_and_withdrawn_with_the_calendar(
    loaded: Backend, settings: Settings
) -> None:
    site = site_of(loaded, CHEPY.idnps)
    save_participation(loaded, Participation(idnps=CHEPY.idnps, vendors=[SAS_VENDOR]))
    stats = sas_calendar.save_calendar(loaded, CHEPY.idnps, every_day(site["site_id"]), "test")
    assert stats.inserted > 0 and loaded.count("slots", {"vendor": [SAS_VENDOR]}) == stats.inserted
    client = TestClient(create_app(api_settings(settings), loaded))
    found = client.get("/v1/search", params=_near(site, CHEPY.idnps), headers=REG).json()
    card = next(c for c in found["cards"] if c["practitioner"]["idnps"] == CHEPY.idnps)
    slot = next(s for day in card["slots"].values() for s in day)
    assert (slot["vendor"], slot["vendor_name"], slot["types"]) == ("sas", "Agenda SAS", ["SNP"])
    again = sas_calendar.publish(loaded, CHEPY.idnps)
    assert (again.inserted, again.removed) == (0, 0)  # idempotent
    sas_calendar.save_calendar(loaded, CHEPY.idnps, SasCalendar(), "test")
    assert loaded.count("slots", {"vendor": [SAS_VENDOR]}) == 0


def _near(site: dict, idnps: str) -> dict:
    loc = site["location"]
    return {"lat": loc["lat"], "lon": loc["lon"], "profession": site["practitioner"]["profession_code"], "radius_km": 5}


def test_two_regulators_booking_one_sas_slot_at_once_exactly_one_wins(loaded: Backend) -> None:
    site = site_of(loaded, CHEPY.idnps)
    save_participation(loaded, Participation(idnps=CHEPY.idnps, vendors=[SAS_VENDOR]))
    sas_calendar.save_calendar(loaded, CHEPY.idnps, every_day(site["site_id"]), "test")
    (first,) = loaded.search("slots", GeoQuery(filters={"vendor": [SAS_VENDOR]}, limit=1)).hits
    slot_id = first.doc["slot_id"]
    start = threading.Barrier(8)
    won, lost = [], []

    def attempt(n: int) -> None:
        start.wait()
        try:
            won.append(sas_booking.book(loaded, slot_id, f"sas-reg{n}"))
        except Conflict as exc:
            lost.append(exc)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    assert all(c.extra["next_slots"] and slot_id not in {s["slot_id"] for s in c.extra["next_slots"]} for c in lost), [
        c.extra for c in lost
    ][:2]
    (appointment,) = [h.doc for h in loaded.search("appointments", GeoQuery(filters={"vendor": [SAS_VENDOR]})).hits]
    assert appointment["operator"] == won[0].operator and appointment["idnps"] == CHEPY.idnps
    assert appointment["department_code"] == "01"
    assert [r.state for r in hub_outbox.rows(loaded)] == ["queued"]  # the SAMU will be told, like any appointment
    assert loaded.get("slots", slot_id) is None
    sas_calendar.publish(loaded, CHEPY.idnps)
    assert loaded.get("slots", slot_id) is None  # booked: never offered again
    with pytest.raises(Conflict):
        sas_booking.book(loaded, slot_id, "sas-late")


def test_an_unavailability_period_hides_a_vendor_practitioners_slots_and_cards(
    loaded: Backend, settings: Settings
) -> None:
    site = site_of(loaded, CHEPY.idnps)
    save_participation(loaded, Participation(idnps=CHEPY.idnps, vendors=["v"]))
    now = datetime.now(UTC)
    vendor_slots = [_vendor_slot(site["site_id"], now + timedelta(hours=h)) for h in (2, 30, 60)]
    _pulled(loaded, vendor_slots, now)
    client = TestClient(create_app(api_settings(settings.model_copy(update={"staleness_limit_s": 1e9})), loaded))
    _vendor_fresh(loaded, now)
    assert _slots_shown(client, site) == 3

    period = unavailability.add_period(loaded, CHEPY.idnps, now, now + timedelta(hours=40), "congés", "test")
    assert _slots_shown(client, site) == 1  # the one after the period
    stats, _ = _pulled(loaded, vendor_slots, now)
    assert (stats.unavailable, stats.inserted) == (2, 0)  # whatever the vendor says
    # Nor a card without slots while away.
    unavailability.add_period(loaded, CHEPY.idnps, now, now + timedelta(days=5), None, "test")
    without = client.get("/v1/search", params=_near(site, CHEPY.idnps) | {"include_without_slots": "true"}, headers=REG)
    assert CHEPY.idnps not in {c["practitioner"]["idnps"] for c in without.json()["cards"]}

    for p in unavailability.periods(loaded, CHEPY.idnps):
        assert unavailability.remove_period(loaded, CHEPY.idnps, p.period_id, "test")
    assert period.period_id not in {p.period_id for p in unavailability.periods(loaded, CHEPY.idnps)}
    _pulled(loaded, vendor_slots, now)
    assert _slots_shown(client, site) == 3


def _pulled(backend: Backend, slots: list[Slot], now: datetime) -> tuple:
    """A vendor's answer for CHEPY reconciled, and visible to searches at once (as the aggregator's cycle ends)."""
    done = reconcile(backend, "v", [CHEPY.idnps], slots, SiteMapper(backend), now)
    backend.refresh(ensure_live(backend, "slots"))
    return done


def _vendor_slot(site_id: str, start: datetime) -> Slot:
    return Slot(
        slot_id=f"v:{start:%Y%m%d%H%M}",
        vendor="v",
        resource_id=f"{start:%Y%m%d%H%M}",
        start=start,
        end=start + timedelta(minutes=20),
        utc_offset="+01:00",
        types=[SlotType.SNP],
        modalities=[Modality.AMB],
        appointment_type="ROUTINE",
        booking_url="https://v.example/book",
        idnps=CHEPY.idnps,
        site_id=site_id,
        fetched_at=start - timedelta(hours=3),
    )


def _vendor_fresh(backend: Backend, now: datetime) -> None:
    from indexer.lifecycle import ensure_live

    index = ensure_live(backend, STATUS)
    backend.write(index, [{"vendor_id": "v", "last_success_at": now.isoformat()}])
    backend.refresh(index)


def _slots_shown(client: TestClient, site: dict) -> int:
    found = client.get("/v1/search", params=_near(site, CHEPY.idnps) | {"verify": "false"}, headers=REG).json()
    cards = [c for c in found["cards"] if c["practitioner"]["idnps"] == CHEPY.idnps]
    return sum(len(day) for c in cards for day in c["slots"].values())


def test_a_delegate_acts_in_their_practitioners_space_only(loaded: Backend, settings: Settings) -> None:
    client = TestClient(create_app(api_settings(settings), loaded))
    delegate = Grant(Role.delegate, practitioners=frozenset({CHEPY.idnps}))
    secretary = signed_in(loaded, person(loaded, "sas-secretary", delegate, name="Secrétariat"))
    assert client.get(f"/v1/space/{CHEPY.idnps}", headers=secretary).status_code == 200
    assert_problem(client.get(f"/v1/space/{KRISTIAN.idnps}", headers=secretary), 403)
    site = site_of(loaded, KRISTIAN.idnps)["site_id"]
    body = every_day(site).model_dump(mode="json")
    assert_problem(client.put(f"/v1/space/{KRISTIAN.idnps}/calendar", json=body, headers=secretary), 403)
    soon = datetime.now(UTC) + timedelta(days=1)
    away = {"start": soon.isoformat(), "end": (soon + timedelta(days=1)).isoformat()}
    assert_problem(client.post(f"/v1/space/{KRISTIAN.idnps}/unavailability", json=away, headers=secretary), 403)
    assert loaded.count("slots", {"idnps": [KRISTIAN.idnps]}) == 0 if loaded.live_index("slots") else True


def test_a_practitioner_keeps_their_space_and_every_change_is_attributed(loaded: Backend, settings: Settings) -> None:
    client = TestClient(create_app(api_settings(settings), loaded))
    doctor = signed_in(loaded, person(loaded, CHEPY.idnps, Grant(Role.effecteur), idnps=CHEPY.idnps, name="Dr CHEPY"))
    chosen = {"via": "practice", "vendor": None, "extra_patients": True, "er_redirection": True}
    saved = client.put(f"/v1/space/{CHEPY.idnps}/participation", json=chosen, headers=doctor)
    assert saved.status_code == 200, saved.text
    assert (saved.json()["vendors"], saved.json()["er_redirection"]) == (["sas"], True)
    unknown = client.put(f"/v1/space/{CHEPY.idnps}/participation", json=chosen | {"vendor": "nope"}, headers=doctor)
    assert_problem(unknown, 422)

    site = site_of(loaded, CHEPY.idnps)["site_id"]
    published = client.put(
        f"/v1/space/{CHEPY.idnps}/calendar", json=every_day(site).model_dump(mode="json"), headers=doctor
    )
    assert published.status_code == 200 and published.json()["inserted"] > 0
    other = site_of(loaded, KRISTIAN.idnps)["site_id"]
    assert_problem(
        client.put(f"/v1/space/{CHEPY.idnps}/calendar", json=every_day(other).model_dump(mode="json"), headers=doctor),
        422,
    )
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    away = {"start": tomorrow.isoformat(), "end": (tomorrow + timedelta(days=1)).isoformat(), "reason": "formation"}
    added = client.post(f"/v1/space/{CHEPY.idnps}/unavailability", json=away, headers=doctor)
    assert added.status_code == 201, added.text
    backwards = away | {"end": away["start"], "start": away["end"]}
    assert_problem(client.post(f"/v1/space/{CHEPY.idnps}/unavailability", json=backwards, headers=doctor), 422)

    space = client.get(f"/v1/space/{CHEPY.idnps}", headers=doctor).json()
    assert space["participation"]["extra_patients"] is True and len(space["calendar"]["weekly"]) == 7
    assert [p["reason"] for p in space["unavailability"]] == ["formation"]
    assert space["figures"]["slots_offered"] == space["figures"]["sas_calendar_slots"] > 0
    assert space["calendar_updated_by"] == CHEPY.idnps
    starts = [
        datetime.fromisoformat(h.doc["start"])
        for h in loaded.search("slots", GeoQuery(filters={"idnps": [CHEPY.idnps]}, limit=1000)).hits
    ]
    assert not [s for s in starts if tomorrow <= s < tomorrow + timedelta(days=1)]  # the day away is empty

    assert_problem(client.get("/v1/audit", headers=doctor), 403)  # an effecteur reads no audit log
    entries = client.get("/v1/audit", params={"account": CHEPY.idnps}, headers=headers(Role.maintainer)).json()
    assert {e["action"] for e in entries} >= {"participation", "calendar", "unavailability"}
    declared = [e for e in entries if e["action"] in ("participation", "calendar", "unavailability")]
    assert declared and all(e["actor"] == CHEPY.idnps for e in declared)
