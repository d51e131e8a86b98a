"""The availability port on every backend: the sites of a circle holding a matching free slot, and the slots of given
sites, checked against a brute-force oracle over the same slot documents after writes, rewrites and deletions.

The embedded index answers from typed tables kept beside the documents (`indexer.sqlite_slots`), Elasticsearch by
collapsing slots on their site: the two must agree with the oracle, and so with each other.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import BACKENDS, make_backend

from aggregation.availability import SAS_VENDOR, freshness
from aggregation.status import STATUS, group_failing
from core.geo import haversine_km, lucene_quantise
from indexer.availability import SITE_FILTERS, SiteInReach, SlotMatch
from indexer.backend import Backend
from indexer.lifecycle import ensure_live
from indexer.sqlite_backend import SqliteBackend

CENTRE = (45.7640, 4.8357)
T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
VENDORS = ["v1", "v2", "v3"]
TYPES = ["PUBLIC", "PRO", "SNP"]
MODALITIES = ["AMB", "HH", "VR"]
# The document field each slot filter reads.
FIELD = {
    "vendor": "vendor",
    "type": "types",
    "modality": "modalities",
    "appointment_type": "appointment_type",
    "profession": "profession_code",
    "practitioner_specialty": "practitioner_specialties",
}


def make_sites(rng: random.Random, n: int) -> list[dict[str, Any]]:
    sites = []
    for i in range(n):
        if i % 7 == 3 and sites:
            lat, lon = sites[-1]["lat"], sites[-1]["lon"]  # two practitioners at one address: a tie
        else:
            lat, lon = CENTRE[0] + rng.uniform(-0.3, 0.3), CENTRE[1] + rng.uniform(-0.4, 0.4)
        profession = rng.choice(["10", "40"])
        specialties = rng.sample(["SM54", "SM26", "SM20"], rng.randint(0, 2)) if profession == "10" else []
        sites.append(
            {"site_id": f"site-{i:03d}", "idnps": f"8{i:010d}", "lat": lat, "lon": lon}
            | {"profession_code": profession, "practitioner_specialties": specialties}
        )
    return sites


def make_slot(rng: random.Random, n: int, site: dict[str, Any]) -> dict[str, Any]:
    start = T0 + timedelta(minutes=15 * rng.randrange(0, 4 * 72))
    return {
        "slot_id": f"slot-{n:05d}",
        "vendor": rng.choice(VENDORS),
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=15)).isoformat(),
        "types": rng.sample(TYPES, rng.randint(1, 2)),
        "modalities": rng.sample(MODALITIES, rng.randint(0, 2)),
        "appointment_type": rng.choice(["ROUTINE", "WALKIN"]),
        "idnps": site["idnps"],
        "site_id": site["site_id"],
        "site_source": "directory",
        "profession_code": site["profession_code"],
        "practitioner_specialties": site["practitioner_specialties"],
        "location": {"lat": site["lat"], "lon": site["lon"]},
        "fetched_at": T0.isoformat(),
    }


def random_match(rng: random.Random) -> SlotMatch:
    filters: dict[str, list[str]] = {}
    if rng.random() < 0.7:
        filters["vendor"] = rng.sample(VENDORS, rng.randint(1, 3))
    if rng.random() < 0.4:
        filters["type"] = rng.sample(TYPES, rng.randint(1, 2))
    if rng.random() < 0.3:
        filters["modality"] = rng.sample(MODALITIES, 1)
    if rng.random() < 0.3:
        filters["appointment_type"] = [rng.choice(["ROUTINE", "WALKIN"])]
    if rng.random() < 0.4:
        filters["practitioner_specialty"] = [rng.choice(["SM54", "SM26"])]
    elif rng.random() < 0.3:
        filters["profession"] = [rng.choice(["10", "40"])]
    low = (T0 + timedelta(hours=rng.randrange(0, 48))).timestamp() if rng.random() < 0.8 else None
    high = (T0 + timedelta(hours=rng.randrange(24, 80))).timestamp() if rng.random() < 0.8 else None
    return SlotMatch(filters=filters, start=(low, high))


def matches(doc: dict[str, Any], match: SlotMatch) -> bool:
    for name, wanted in match.filters.items():
        value = doc.get(FIELD[name])
        values = value if isinstance(value, list) else [value]
        if not set(wanted) & set(values):
            return False
    start = datetime.fromisoformat(doc["start"]).timestamp()
    low, high = match.start
    if (low is not None and start < low) or (high is not None and start > high):
        return False
    return doc["idnps"] not in match.hidden.get(doc["vendor"], frozenset())


def oracle_sites(docs: dict[str, dict[str, Any]], radius_km: float, match: SlotMatch) -> dict[str, float]:
    found: dict[str, float] = {}
    for doc in docs.values():
        if not matches(doc, match):
            continue
        distance = haversine_km(*CENTRE, *lucene_quantise(doc["location"]["lat"], doc["location"]["lon"]))
        if distance <= radius_km:
            found[doc["site_id"]] = distance
    return found


def check(backend: Backend, docs: dict[str, dict[str, Any]], match: SlotMatch, radius_km: float) -> None:
    answer = backend.sites_with_slots(*CENTRE, radius_km, match)
    expected = oracle_sites(docs, radius_km, match)
    # A site a hair's breadth from the edge may fall either side by rounding: those are not held against a backend.
    edge = {s for s, d in expected.items() if abs(d - radius_km) < 1e-6}
    assert {s.site_id for s in answer} - edge == set(expected) - edge
    for site in answer:
        assert site.distance_km == pytest.approx(expected.get(site.site_id, site.distance_km), abs=1e-5)
        assert site.idnps == next(d["idnps"] for d in docs.values() if d["site_id"] == site.site_id)
    keys = [(round(s.distance_km, 5), s.site_id) for s in answer]
    assert keys == sorted(keys), "nearest first, then by site id"
    some = sorted(expected)[::3]
    slots = backend.slots_of_sites(some, match, ("slot_id", "site_id", "start"))
    wanted = {d["slot_id"] for d in docs.values() if d["site_id"] in some and matches(d, match)}
    assert sorted(s["slot_id"] for s in slots) == sorted(wanted)
    assert all(set(s) == {"slot_id", "site_id", "start"} for s in slots)


def apply(backend: Backend, index: str, docs: dict[str, dict[str, Any]], rng: random.Random, sites: list) -> None:
    """A reconciliation's worth of changes: new slots, slots moved in time or to another site, slots gone."""
    ids = sorted(docs)
    rewritten = []
    for slot_id in rng.sample(ids, len(ids) // 5):
        doc = make_slot(rng, int(slot_id.split("-")[1]), rng.choice(sites))
        rewritten.append(doc)
        docs[slot_id] = doc
    fresh = [make_slot(rng, 10_000 + len(docs) + i, rng.choice(sites)) for i in range(rng.randint(0, 20))]
    docs.update({d["slot_id"]: d for d in fresh})
    gone = rng.sample(sorted(set(ids) - {d["slot_id"] for d in rewritten}), len(ids) // 4)
    for slot_id in gone:
        del docs[slot_id]
    backend.write(index, rewritten + fresh)
    backend.delete(index, gone)
    backend.refresh(index)


@pytest.mark.parametrize("kind", BACKENDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_sites_with_slots_match_the_oracle_through_writes_and_deletes(kind: str, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    backend = make_backend(kind, tmp_path / str(seed))
    try:
        index = ensure_live(backend, "slots")
        sites = make_sites(rng, rng.randint(1, 40))
        docs = {d["slot_id"]: d for d in (make_slot(rng, i, rng.choice(sites)) for i in range(rng.randint(0, 150)))}
        backend.write(index, list(docs.values()))
        backend.refresh(index)
        for _ in range(3):
            for _ in range(3):
                check(backend, docs, random_match(rng), rng.choice([2.0, 10.0, 40.0]))
            apply(backend, index, docs, rng, sites)
        hidden = {rng.choice(VENDORS): frozenset(rng.sample([s["idnps"] for s in sites], min(3, len(sites))))}
        check(backend, docs, SlotMatch(hidden=hidden), 40.0)
    finally:
        if kind == "elasticsearch":
            backend.delete_all()  # type: ignore[attr-defined]
        backend.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path):
    b = make_backend(request.param, tmp_path)
    yield b
    if request.param == "elasticsearch":
        b.delete_all()  # type: ignore[attr-defined]
    b.close()


def spread_slots(
    backend: Backend, rng: random.Random, n_sites: int, n_slots: int
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """`n_sites` sites and `n_slots` slots dealt over them in turn, indexed: the sites and the slots by id."""
    sites = make_sites(rng, n_sites)
    docs = {d["slot_id"]: d for d in (make_slot(rng, i, sites[i % n_sites]) for i in range(n_slots))}
    index = ensure_live(backend, "slots")
    backend.write(index, list(docs.values()))
    backend.refresh(index)
    return sites, docs


def test_more_sites_than_one_page_are_all_found_in_order(backend: Backend) -> None:
    """Elasticsearch collapses a page of sites at most: past it, it pages by site and computes distances itself."""
    sites, docs = spread_slots(backend, random.Random(5), 30, 90)
    whole = backend.sites_with_slots(*CENTRE, 60.0, SlotMatch())
    backend.max_page = 7
    paged = backend.sites_with_slots(*CENTRE, 60.0, SlotMatch())
    assert [s.site_id for s in paged] == [s.site_id for s in whole] and len(whole) == 30
    assert [s.distance_km for s in paged] == pytest.approx([s.distance_km for s in whole], abs=1e-6)
    slots = backend.slots_of_sites([s["site_id"] for s in sites], SlotMatch(), ("slot_id",))
    assert sorted(s["slot_id"] for s in slots) == sorted(docs)


def test_tens_of_thousands_of_hidden_practitioners_are_hidden_in_one_query(backend: Backend) -> None:
    """A vendor whose calls fail for a third of the country hides tens of thousands of practitioners at once: more
    than a query may hold as parameters (embedded) or as the terms of one clause (Elasticsearch's 65,536)."""
    sites, docs = spread_slots(backend, random.Random(13), 20, 80)
    strangers = [f"1{i:010d}" for i in range(70_000)]  # practitioners with no slot here
    hidden = {v: frozenset(strangers + [s["idnps"] for s in sites[: 5 + 3 * k]]) for k, v in enumerate(VENDORS)}
    match = SlotMatch(hidden=hidden)
    check(backend, docs, match, 60.0)
    everyone = backend.sites_with_slots(*CENTRE, 60.0, SlotMatch())
    assert len(backend.sites_with_slots(*CENTRE, 60.0, match)) < len(everyone)


def test_an_unknown_slot_filter_is_refused() -> None:
    with pytest.raises(KeyError, match="colour"):
        SlotMatch(filters={"colour": ["red"]})
    assert set(SITE_FILTERS) <= set(FIELD)


def test_a_slots_index_written_before_the_availability_tables_gets_them_on_opening(tmp_path: Path) -> None:
    """An embedded index of an earlier release holds the slot documents only: opening it fills the tables once."""
    rng = random.Random(3)
    sites = make_sites(rng, 12)
    docs = {d["slot_id"]: d for d in (make_slot(rng, i, rng.choice(sites)) for i in range(60))}
    backend = SqliteBackend(tmp_path / "index")
    index = ensure_live(backend, "slots")
    backend.write(index, list(docs.values()))
    match = SlotMatch(filters={"vendor": ["v1", "v2"]}, start=(None, (T0 + timedelta(hours=40)).timestamp()))
    before = backend.sites_with_slots(*CENTRE, 30.0, match)
    backend.close()
    db = sqlite3.connect(tmp_path / "index" / f"{index}.db")
    db.executescript("DROP TABLE slot_facts; DROP TABLE slot_sites; DROP TABLE slot_sites_geo;")
    db.close()
    reopened = SqliteBackend(tmp_path / "index")
    assert reopened.sites_with_slots(*CENTRE, 30.0, match) == before
    assert {s.site_id for s in before} == set(oracle_sites(docs, 30.0, match))
    reopened.close()


def test_a_site_left_without_slots_is_no_longer_in_reach(backend: Backend) -> None:
    rng = random.Random(9)
    site = make_sites(rng, 1)[0]
    docs = [make_slot(rng, i, site) for i in range(3)]
    index = ensure_live(backend, "slots")
    backend.write(index, docs)
    backend.refresh(index)
    assert [s.site_id for s in backend.sites_with_slots(*CENTRE, 80.0, SlotMatch())] == [site["site_id"]]
    backend.delete(index, [d["slot_id"] for d in docs[:2]])
    backend.refresh(index)
    assert len(backend.sites_with_slots(*CENTRE, 80.0, SlotMatch())) == 1
    backend.delete(index, [docs[2]["slot_id"]])
    backend.refresh(index)
    assert backend.sites_with_slots(*CENTRE, 80.0, SlotMatch()) == []
    moved = dict(docs[0], location={"lat": CENTRE[0] + 1.0, "lon": CENTRE[1]})  # comes back 111 km away
    backend.write(index, [moved])
    backend.refresh(index)
    assert backend.sites_with_slots(*CENTRE, 80.0, SlotMatch()) == []
    (far,) = backend.sites_with_slots(*CENTRE, 120.0, SlotMatch())
    assert isinstance(far, SiteInReach) and far.distance_km == pytest.approx(111.2, abs=0.1)


def test_slot_counts_by_site_vendor_practitioner_and_day_match_the_oracle(backend: Backend) -> None:
    """What coverage snapshots are made of, counted by the engine: a GROUP BY embedded, a composite aggregation with
    terms sub-aggregations on Elasticsearch."""
    rng = random.Random(11)
    sites = make_sites(rng, 15)
    docs = [make_slot(rng, i, rng.choice(sites)) for i in range(400)]
    index = ensure_live(backend, "slots")
    backend.write(index, docs)
    backend.refresh(index)
    start = T0 + timedelta(hours=5, minutes=7)
    expected: dict[tuple[str, str, str, int], list[Any]] = {}
    for d in docs:
        ahead = datetime.fromisoformat(d["start"]).timestamp() - start.timestamp()
        if not 0 <= ahead < 3 * 86400:
            continue
        row = expected.setdefault((d["site_id"], d["vendor"], d["idnps"], int(ahead // 86400)), [0, {}, {}])
        row[0] += 1
        for t in d["types"]:
            row[1][t] = row[1].get(t, 0) + 1
        for m in d["modalities"]:
            row[2][m] = row[2].get(m, 0) + 1
    counts = backend.slot_counts(start.timestamp(), 3)
    got = {(c.site_id, c.vendor, c.idnps, c.day): [c.slots, c.by_type, c.by_modality] for c in counts}
    assert len(got) == len(counts), "one count per site, vendor, practitioner and day"
    assert got == expected
    assert {c.day for c in counts} == {0, 1, 2}


def test_freshness_reads_failing_practitioners_by_instant_and_as_earlier_releases_stored_them(
    backend: Backend,
) -> None:
    """A status stores its failing practitioners by the instant they started failing; one written by an earlier
    release held IDNPS -> since. Both give the brute-force answer: stale past the limit, failing however recently."""
    rng = random.Random(17)
    now = T0 + timedelta(hours=1)
    index = ensure_live(backend, STATUS)
    for shape in ("grouped", "flat"):
        since = {
            vendor: {
                f"8{rng.randrange(10**10):010d}": (
                    now - timedelta(seconds=rng.choice([30, 600, 899, 901, 5000]))
                ).isoformat()
                for _ in range(rng.randint(0, 40))
            }
            for vendor in VENDORS
        }
        docs = [
            {
                "vendor_id": vendor,
                "last_success_at": (now - timedelta(seconds=60 if vendor != "v3" else 2000)).isoformat(),
                "failing": group_failing(failing) if shape == "grouped" else failing,
            }
            for vendor, failing in since.items()
        ]
        backend.write(index, docs)
        backend.refresh(index)
        fresh = freshness(backend, now, 900)
        # The SAS calendars, kept in Dispo itself, are always fresh.
        assert fresh.fresh_vendors == {"v1", "v2", SAS_VENDOR} and fresh.stale_vendors == {"v3"}
        for vendor, failing in since.items():
            old = {i for i, at in failing.items() if datetime.fromisoformat(at) < now - timedelta(seconds=900)}
            assert fresh.stale_practitioners.get(vendor, set()) == old, shape
            assert fresh.failing(vendor) == set(failing), shape
            for idnps in failing:
                assert fresh.is_fresh({"vendor": vendor, "idnps": idnps}) == (vendor != "v3" and idnps not in old)
