"""The regulator search on both backends, over a generated Ain directory and three sandbox vendors."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import pytest
from fastapi.testclient import TestClient
from support import BACKENDS, REG, api_settings, assert_problem, generated_world

from api.app import create_app
from core.settings import Settings
from indexer.backend import Backend, GeoQuery, SearchPage
from indexer.lifecycle import iterate_all
from search.answer import build_answer
from search.candidates import Group
from search.engine import SearchRequest, run_search
from search.radius import radius_table
from search.rank import BAND_KM
from search.request import BUCKETS_H

BOURG = "12 rue de la République 01000 Bourg-en-Bresse"


class World:
    servers: ClassVar[dict[str, list]] = {}


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Backend, Settings]]:
    tmp = tmp_path_factory.mktemp(f"search-{request.param}-{uuid.uuid4().hex[:6]}")
    with generated_world(request.param, tmp, seed=1, n_vendors=3) as (backend, settings, servers):
        World.servers[request.param] = servers
        yield backend, settings


def search(world, **kw):
    backend, settings = world
    return run_search(backend, SearchRequest(**kw), staleness_limit_s=settings.staleness_limit_s)


def test_nearest_with_slots_ranked_by_distance_bands(world) -> None:
    result = search(world, address=BOURG, seed=3, limit=50)
    cards = result.cards
    assert len(cards) >= 5
    assert {c.group for c in cards} == {1}  # SAS participants with free slots
    bands = [int(c.distance_km // BAND_KM) for c in cards]
    assert bands == sorted(bands)
    start, end = result.window
    for c in cards:
        assert c.slots and all(
            start.timestamp() <= datetime.fromisoformat(s["start"]).timestamp() <= end.timestamp() for s in c.slots
        )
        assert all("SM54" in s["practitioner_specialties"] for s in c.slots)
    expl = result.explanation
    assert expl.radius_steps[0].radius_km == radius_table()["01"].city_km
    assert expl.practitioners_with_slots >= 5 and expl.practitioners_in_reach >= expl.practitioners_with_slots


def test_same_seed_same_order_and_cursor_pages_cover_everything_once(world) -> None:
    first = search(world, address=BOURG, seed=11, limit=200)
    assert len(first.cards) > 2 * 7  # the pages below are three or more
    again = search(world, address=BOURG, seed=11, limit=200)
    assert [c.site_id for c in first.cards] == [c.site_id for c in again.cards]
    other = search(world, address=BOURG, seed=12, limit=200)
    assert sorted(c.site_id for c in other.cards) == sorted(c.site_id for c in first.cards)
    assert [c.site_id for c in other.cards] != [c.site_id for c in first.cards]  # ties reshuffled
    paged, cursor = [], None
    while True:
        page = search(world, address=BOURG, seed=11, limit=7, cursor=cursor)
        paged += [c.site_id for c in page.cards]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert paged == [c.site_id for c in first.cards]


def test_pages_neither_repeat_nor_skip_a_site_while_slots_come_and_go(world) -> None:
    backend, _ = world
    live = backend.live_index("slots")
    full = [c.site_id for c in search(world, address=BOURG, seed=21, limit=200).cards]
    # A site of the second page has no slot when the first page is asked, and gets them back before the second.
    late = full[7]
    late_slots = list(iterate_all(backend, "slots", {"site": [late]}))
    backend.delete(live, [d["slot_id"] for d in late_slots])
    backend.refresh(live)
    first = search(world, address=BOURG, seed=21, limit=5)
    assert [c.site_id for c in first.cards] == full[:5]
    # Between the pages a site of the first page and one of the second lose their slots.
    gone, emptied = full[1], full[6]
    backend.delete(live, [d["slot_id"] for d in iterate_all(backend, "slots", {"site": [gone, emptied]})])
    backend.write(live, late_slots)
    backend.refresh(live)
    second = search(world, address=BOURG, seed=21, limit=5, cursor=first.next_cursor)
    # The second page goes on after the first page's last site, in the same order, with the sites that qualify now.
    assert [c.site_id for c in second.cards] == [s for s in full[5:11] if s != emptied]
    assert not {c.site_id for c in first.cards} & {c.site_id for c in second.cards}
    assert second.total == len(full) - 2 and second.offset == 4  # what qualifies now: `gone` no longer ranks
    assert second.seed == 21 and second.explanation == first.explanation


def test_department_search_uses_its_barycentre_and_county_radius(world) -> None:
    result = search(world, department="01", seed=5, limit=200)
    rule = radius_table()["01"]
    assert result.place.precision == "department" and result.place.zone
    assert result.radius_km == rule.county_km
    distances = [c.distance_km for c in result.cards]
    assert distances != sorted(distances)  # a zone is ordered by seeded shuffle only


def test_filters_apply_to_every_slot(world) -> None:
    home = search(world, address=BOURG, seed=1, limit=50, modalities=["home"])
    assert home.cards and all(s["modalities"] == ["HH"] for c in home.cards for s in c.slots)
    snp = search(world, address=BOURG, seed=1, limit=50, slot_types=["SNP"])
    assert snp.cards and all("SNP" in s["types"] for c in snp.cards for s in c.slots)
    # Each band holds only its slots; which bands hold any depends on the hour the suite runs (agendas open by day).
    now = datetime.now(UTC)
    answered = 0
    for band, (low, high) in BUCKETS_H.items():
        found = search(world, address=BOURG, seed=1, limit=50, within=[band])
        answered += bool(found.cards)
        starts = [datetime.fromisoformat(s["start"]) for c in found.cards for s in c.slots]
        earliest, latest = now + timedelta(hours=low, minutes=-1), now + timedelta(hours=high, minutes=1)
        assert all(earliest <= t <= latest for t in starts), band
    assert answered >= 2


def test_the_preferred_doctor_comes_first_when_within_reach(world) -> None:
    ranked = search(world, address=BOURG, seed=2, limit=200).cards
    last = ranked[-1]
    result = search(world, address=BOURG, seed=2, limit=5, preferred=last.idnps)
    assert result.cards[0].idnps == last.idnps and result.cards[0].group is Group.preferred


def test_thin_results_enlarge_the_radius_step_by_step(world) -> None:
    # Nobody in the generated directory practises nuclear medicine: every step is tried up to the department.
    result = search(world, address=BOURG, seed=1, limit=20, specialty="SM28")
    rule = radius_table()["01"]
    expected = [rule.city_km + i * rule.step_km for i in range(100) if rule.city_km + i * rule.step_km < rule.county_km]
    steps = result.explanation.radius_steps
    assert [s.radius_km for s in steps] == [*expected, rule.county_km]
    assert all(s.practitioners_with_slots == 0 for s in steps)
    assert result.radius_km == rule.county_km and result.cards == []
    # With slots everywhere, the first step is enough (five practitioners or more within it).
    enough = search(world, address=BOURG, seed=1, limit=20).explanation.radius_steps
    assert len(enough) == 1 and enough[0].practitioners_with_slots >= 5


def test_stale_vendors_are_left_out_and_named(world) -> None:
    backend, _ = world
    fresh = run_search(backend, SearchRequest(address=BOURG, seed=1, limit=200), staleness_limit_s=900)
    later = run_search(
        backend,
        SearchRequest(address=BOURG, seed=1, limit=200),
        staleness_limit_s=900,
        now=datetime.now(UTC) + timedelta(minutes=20),
    )
    assert fresh.cards and later.cards == []
    assert later.explanation.stale_vendors == ("sandbox-a", "sandbox-b", "sandbox-c")


def test_api_answers_cards_and_explains_empty_results(world) -> None:
    backend, settings = world
    # The answer's shape is tested here, not the live check's deadline (test_verify.py is): on a loaded machine the
    # default 0.8 s can pass before the sandboxes answer, leaving the slot unverified.
    patient = api_settings(settings).model_copy(update={"verify_deadline_s": 10.0})
    with TestClient(create_app(patient, backend)) as c:
        r = c.get("/v1/search", params={"address": BOURG, "seed": 4, "limit": 3}, headers=REG)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["seed"] == 4 and len(body["cards"]) == 3 and body["next_cursor"]
        card = body["cards"][0]
        assert card["rank"] == 1 and card["practitioner"]["specialties"] == ["SM54"]
        assert set(card["slots"]) == {"today", "tomorrow", "day_after"}
        slot = next(s for day in card["slots"].values() for s in day)
        assert slot["vendor_name"] and slot["booking_url"]
        assert slot["verified"] is True and slot["age_s"] == 0  # re-checked live for this answer
        assert body["verification"]["vendors_answered"] == body["verification"]["vendors_asked"] > 0
        unverified = c.get(
            "/v1/search", params={"address": BOURG, "seed": 4, "limit": 3, "verify": "false"}, headers=REG
        ).json()
        slot = next(s for day in unverified["cards"][0]["slots"].values() for s in day)
        assert slot["verified"] is False and slot["age_s"] >= 0 and unverified["verification"] is None
        assert card["participation"]["vendors"]
        empty = c.get("/v1/search", params={"address": BOURG, "specialty": "SM28", "radius_km": 5}, headers=REG).json()
        assert empty["cards"] == [] and "No practitioner with a free slot" in empty["explanation"]["message"]


def test_ranking_groups_order_the_cards_and_name_them_in_the_answer(world) -> None:
    backend, settings = world
    assert Group.preferred < Group.participant < Group.other < Group.no_slots
    last = search(world, address=BOURG, seed=2, limit=200).cards[-1]
    req = SearchRequest(address=BOURG, seed=2, limit=1000, preferred=last.idnps, include_without_slots=True)
    result = run_search(backend, req, staleness_limit_s=settings.staleness_limit_s)
    groups = [c.group for c in result.cards]
    assert groups == sorted(groups)
    assert groups[0] is Group.preferred and {Group.participant, Group.no_slots} <= set(groups)
    assert all(bool(c.slots) == (c.group is not Group.no_slots) for c in result.cards)
    answer = build_answer(backend, settings, result, req)
    assert [c.group for c in answer.cards] == [g.name for g in groups]


def test_a_later_page_ranks_again_with_the_first_pages_seed_radius_and_window(world) -> None:
    full = search(world, address=BOURG, seed=41, limit=200, modalities=["home"])
    first = search(world, address=BOURG, seed=41, limit=3, modalities=["home"])
    assert len(full.cards) > 6 and first.next_cursor
    # The later page keeps the first page's seed, radius, window and explanation, so it ranks the candidates in the
    # same order, still applies the request's slot filters, and measures each card's distance from its point.
    later = search(world, address=BOURG, seed=41, limit=3, modalities=["home"], cursor=first.next_cursor)
    assert [c.site_id for c in later.cards] == [c.site_id for c in full.cards[3:6]]
    assert [c.distance_km for c in later.cards] == [c.distance_km for c in full.cards[3:6]]
    assert (later.seed, later.radius_km, later.window) == (first.seed, first.radius_km, first.window)
    assert later.explanation == first.explanation and later.total == first.total and later.offset == 3
    assert all(s["modalities"] == ["HH"] for c in later.cards for s in c.slots)


class CountingBackend:
    """The real backend, counting the reads made through it."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.reads: Counter[str] = Counter()

    def get(self, kind: str, doc_id: str) -> dict[str, Any] | None:
        self.reads[f"get {kind}"] += 1
        return self.backend.get(kind, doc_id)

    def get_many(self, kind: str, doc_ids: Any) -> dict[str, dict[str, Any]]:
        self.reads[f"get_many {kind}"] += 1
        return self.backend.get_many(kind, doc_ids)

    def search(self, kind: str, query: GeoQuery) -> SearchPage:
        self.reads[f"search {kind}"] += 1
        return self.backend.search(kind, query)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


def test_an_answer_reads_the_pages_sites_and_participations_in_one_read_each(world) -> None:
    backend, settings = world
    reads = {}
    for limit in (3, 10):
        req = SearchRequest(address=BOURG, seed=6, limit=limit)
        result = run_search(backend, req, staleness_limit_s=settings.staleness_limit_s)
        assert len(result.cards) == limit
        counting = CountingBackend(backend)
        answer = build_answer(counting, settings, result, req)  # type: ignore[arg-type]
        reads[limit] = counting.reads
        assert [c.site.site_id for c in answer.cards] == [c.site_id for c in result.cards]
        assert all(c.practitioner.name and c.site.lat is not None and c.participation for c in answer.cards)
    one_each = Counter({"search vendors": 1, "get_many practice_sites": 1, "get_many participations": 1})
    assert reads[3] == reads[10] == one_each


@pytest.mark.parametrize(
    ("params", "fragment", "slug"),
    [
        ({"address": BOURG, "specialty": "SM99"}, "unknown specialty", "invalid-search"),
        ({"address": "nowhere at all"}, "could not be located", "invalid-search"),
        ({"postcode": "00000"}, "no commune with postcode '00000'", "invalid-search"),
        ({"department": "99"}, "unknown department '99'", "invalid-search"),
        ({"address": BOURG, "radius_km": 0}, "radius_km", "invalid-request"),  # refused by the route's own checks
        ({"address": BOURG, "radius_km": 900}, "radius_km", "invalid-request"),
        (
            {"address": BOURG, "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
            "end after",
            "invalid-search",
        ),
        ({"address": BOURG, "start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"}, "past", "invalid-search"),
        ({"address": BOURG, "limit": 500}, "limit", "invalid-request"),
        ({"address": BOURG, "within": "3-5h"}, "bucket", "invalid-search"),
        ({}, "location", "invalid-search"),
    ],
)
def test_bad_input_is_a_422_saying_what_to_fix(world, params: dict, fragment: str, slug: str) -> None:
    backend, settings = world
    with TestClient(create_app(api_settings(settings), backend)) as c:
        body = assert_problem(c.get("/v1/search", params=params, headers=REG), 422)
        assert fragment in body["detail"] and body["type"] == f"/problems/{slug}"
        if slug == "invalid-search":
            assert body["title"] == "Invalid search" and body["detail"].endswith(".")


# Live verification changes the index: these tests come last for each backend.


def vendor_server(world, vendor_id: str):
    backend, _ = world
    return next(s for s in World.servers[backend.name] if s.config.vendor_id == vendor_id)


def test_live_verification_confirms_the_page_and_the_later_ones(world) -> None:
    backend, _ = world
    first = run_search(backend, SearchRequest(address=BOURG, seed=8, limit=5), verify_deadline_s=5.0)
    later = run_search(
        backend, SearchRequest(address=BOURG, seed=8, limit=5, cursor=first.next_cursor), verify_deadline_s=5.0
    )
    for result in (first, later):
        v = result.verification
        assert v.vendors_asked == v.vendors_answered > 0 and v.slots_gone == 0 and v.timed_out == []
        assert len(result.cards) == 5
        assert all(doc.get("verified") for c in result.cards for doc in c.slots)


def test_a_slot_taken_elsewhere_leaves_the_card_and_the_index(world) -> None:
    backend, _ = world
    first = run_search(backend, SearchRequest(address=BOURG, seed=8, limit=5)).cards[0]
    taken = first.slots[0]
    server = vendor_server(world, taken["vendor"])
    resource_id = taken["slot_id"].split(":", 1)[1]  # "<vendor>:<Slot.id>"
    assert httpx.post(f"{server.url}/booking/{resource_id}").status_code == 201
    result = run_search(backend, SearchRequest(address=BOURG, seed=8, limit=5), verify_deadline_s=5.0)
    card = next(c for c in result.cards if c.site_id == first.site_id)
    assert taken["slot_id"] not in {d["slot_id"] for d in card.slots}
    assert result.verification.slots_gone >= 1
    assert backend.get("slots", taken["slot_id"]) is None


def test_a_slow_vendor_leaves_its_cards_unverified_within_the_deadline(world) -> None:
    backend, _ = world
    slow = vendor_server(world, "sandbox-a")
    httpx.post(slow.url + "/_control", json={"hang_rate": 1.0, "hang_s": 5.0})
    try:
        result = run_search(backend, SearchRequest(address=BOURG, seed=8, limit=10), verify_deadline_s=2.0)
    finally:
        httpx.post(slow.url + "/_control", json={"hang_rate": 0.0})
    v = result.verification
    assert v.timed_out == ["sandbox-a"]
    shown = [doc for card in result.cards for doc in card.slots]
    vendors = {doc["vendor"] for doc in shown}
    assert "sandbox-a" in vendors and len(vendors) > 1  # the page shows the slow vendor's cards and others'
    assert all(bool(doc.get("verified")) == (doc["vendor"] != "sandbox-a") for doc in shown)


def test_cards_left_empty_are_replaced_by_the_next_candidates(world) -> None:
    backend, _ = world
    gone = vendor_server(world, "sandbox-c")
    httpx.post(gone.url + "/_control", json={"churn_rate": 1.0})  # every slot of this vendor is taken
    try:
        result = run_search(backend, SearchRequest(address=BOURG, seed=8, limit=10), verify_deadline_s=5.0)
    finally:
        httpx.post(gone.url + "/_control", json={"churn_rate": 0.0})
    assert result.verification.cards_emptied > 0
    assert len(result.cards) == 10
    assert all(c.slots and all(d["vendor"] != "sandbox-c" for d in c.slots) for c in result.cards)


def test_neutrality_audit_finds_no_vendor_favoured_and_catches_a_biased_ranking(world, monkeypatch) -> None:
    """|z| < 3 for each of 3 vendors: under a vendor-blind ranking each |z| exceeds 3 with probability
    0.27 %, so the audit raises a false alarm in under 1 % of runs (and the seeds here are fixed)."""
    import search.rank as ranking
    from search.audit import audit_neutrality

    backend, _ = world
    rows = audit_neutrality(backend, searches=40, seed=3)
    assert {r.vendor for r in rows} == {"sandbox-a", "sandbox-b", "sandbox-c"}
    assert all(abs(r.z) < 3 for r in rows), [(r.vendor, r.z) for r in rows]
    assert all(0.3 < (r.mean_tie_position or 0.5) < 0.7 for r in rows)

    original = ranking.shuffle_key

    def favour_sandbox_a(seed: int, site_id: str) -> str:  # a ranking that breaks ties by vendor
        vendor = favour_sandbox_a.vendors.get(site_id, "z")
        return ("0" if vendor == "sandbox-a" else "1") + original(seed, site_id)

    from indexer.lifecycle import iterate_all

    favour_sandbox_a.vendors = {d["site_id"]: d["vendor"] for d in iterate_all(backend, "slots")}
    monkeypatch.setattr(ranking, "shuffle_key", favour_sandbox_a)
    biased = {r.vendor: r for r in audit_neutrality(backend, searches=40, seed=3)}
    assert biased["sandbox-a"].z > 3
