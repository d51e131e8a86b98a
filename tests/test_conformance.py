"""One conformance suite for every backend: same data in, same answers out.

Answers are checked against a brute-force oracle computed here in Python, so each backend is held
to the same truth; `test_backends_agree` also compares the two backends directly.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from support import BACKENDS, make_backend

from core.geo import haversine_km
from core.records import Address, Position, PracticeSite, Practitioner, Specialty
from core.text import fold
from indexer.backend import Backend, GeoQuery, decode_cursor, encode_cursor
from indexer.documents import site_document
from indexer.sqlite_backend import SqliteBackend

CENTRE = (45.7640, 4.8357)  # Lyon
NAMES = ["LEFÈVRE", "Lefebvre", "MÜLLER", "Dupont", "Ñúñez", "Œuvrard", "Lebrun-Carpentier", "Martin", "Petit"]
FIRST = ["Anaïs", "Éloïse", "Jean", "Zoé", "Hélène"]
PROFESSIONS = [("10", "Médecin"), ("40", "Chirurgien-Dentiste"), ("70", "Masseur-Kinésithérapeute")]
SPECIALTIES = ["SM54", "SM20", "SM26"]


def make_sites(n: int = 240, seed: int = 7) -> list[PracticeSite]:
    rng = random.Random(seed)
    sites = []
    for i in range(n):
        code, label = rng.choice(PROFESSIONS)
        specialties = [Specialty(code=c) for c in rng.sample(SPECIALTIES, rng.randint(0, 2))] if code == "10" else []
        practitioner = Practitioner(
            idnps=f"8{10000000000 + i}",
            id_type="RPPS",
            id=str(10000000000 + i),
            last_name=rng.choice(NAMES),
            first_name=rng.choice(FIRST),
            profession_code=code,
            profession_label=label,
            specialties=specialties,
        )
        if i % 17 == 0:
            position = None  # no structure, no position
        elif i % 11 == 0:
            position = CENTRE  # identical positions: ties broken by id
        else:
            position = (CENTRE[0] + rng.uniform(-0.5, 0.5), CENTRE[1] + rng.uniform(-0.7, 0.7))
        department = rng.choice(["69", "01", "38"])
        site = PracticeSite(
            site_id=f"{practitioner.idnps}:S{i:05d}:L",
            practitioner=practitioner,
            mode_code=rng.choice(["L", "S"]),
            name=f"Cabinet {i}",
            department_code=department,
            address=Address(postcode=f"{department}000", commune="X") if position else None,
        )
        if position is not None:
            site.position = Position(lat=position[0], lon=position[1], precision="municipality", source="test")
        sites.append(site)
    return sites


SITES = make_sites()
DOCS = [site_document(s) for s in SITES]


def oracle(query: GeoQuery) -> list[tuple[str, float | None]]:
    """Ids (and distances) a correct backend returns for `query` on DOCS, all pages."""
    rows: list[tuple[Any, ...]] = []
    for doc in DOCS:
        if not _matches(doc, query):
            continue
        if query.has_centre:
            loc = doc.get("location")
            if loc is None:
                continue
            d = haversine_km(query.lat, query.lon, loc["lat"], loc["lon"])
            if query.radius_km is not None and d > query.radius_km:
                continue
            rows.append((d, doc["site_id"]))
        else:
            rows.append((None, doc["site_id"]))
    rows.sort(key=lambda r: (r[0] if r[0] is not None else 0, r[1]))
    return [(r[1], r[0]) for r in rows]


def _matches(doc: dict[str, Any], query: GeoQuery) -> bool:
    p = doc["practitioner"]
    values = {
        "profession": [p["profession_code"]],
        "specialty": [s["code"] for s in p.get("specialties", [])],
        "department": [doc.get("department_code")],
        "mode": [doc.get("mode_code")],
        "idnps": [p["idnps"]],
    }
    for name, wanted in query.filters.items():
        if not set(wanted) & set(values[name]):
            return False
    if query.text:
        words = doc["search_text"].split()
        tokens = query.text.split()
        if not all(t in words for t in tokens[:-1]) or not any(w.startswith(tokens[-1]) for w in words):
            return False
    return True


def load(backend: Backend) -> str:
    index = backend.create_version("practice_sites")
    assert backend.write(index, DOCS[:100]) == 100
    assert backend.write(index, DOCS[100:]) == len(DOCS) - 100
    backend.seal(index)
    backend.switch("practice_sites", index)
    return index


def all_pages(backend: Backend, query: GeoQuery) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = []
    after = None
    while True:
        page = backend.search("practice_sites", GeoQuery(**{**query.__dict__, "after": after}))
        out.extend((h.doc["site_id"], h.distance_km) for h in page.hits)
        if len(page.hits) < query.limit:
            return out
        after = decode_cursor(encode_cursor(page.next_after))  # through the wire format


QUERIES = {
    "circle": GeoQuery(lat=CENTRE[0], lon=CENTRE[1], radius_km=25, limit=500),
    "circle-paged": GeoQuery(lat=CENTRE[0], lon=CENTRE[1], radius_km=40, limit=7),
    "profession": GeoQuery(lat=CENTRE[0], lon=CENTRE[1], radius_km=60, filters={"profession": ["10"]}, limit=500),
    "specialty": GeoQuery(
        lat=CENTRE[0], lon=CENTRE[1], radius_km=60, filters={"specialty": ["SM54", "SM20"]}, limit=500
    ),
    "department-mode": GeoQuery(
        lat=CENTRE[0], lon=CENTRE[1], radius_km=60, filters={"department": ["69"], "mode": ["L"]}, limit=500
    ),
    "name-folded": GeoQuery(lat=CENTRE[0], lon=CENTRE[1], radius_km=80, text=fold("lefevre"), limit=500),
    "name-prefix": GeoQuery(text=fold("LEBRUN-CARP"), limit=9),
    "name-two-words": GeoQuery(text=fold("lefèvre ANAIS"), limit=500),
    "no-centre": GeoQuery(filters={"profession": ["40"]}, limit=11),
    "everywhere": GeoQuery(lat=CENTRE[0], lon=CENTRE[1], limit=50),
}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_search_matches_the_oracle(backend: Backend, name: str) -> None:
    load(backend)
    query = QUERIES[name]
    got = all_pages(backend, query)
    expected = oracle(query)
    if query.radius_km is None and query.has_centre:
        expected = expected[: len(got)] if len(got) < len(expected) else expected
    assert [g[0] for g in got] == [e[0] for e in expected]
    for (_, gd), (_, ed) in zip(got, expected, strict=True):
        if ed is not None:
            assert gd == pytest.approx(ed, abs=1e-3)
    assert backend.search("practice_sites", query).total == len(oracle(query))
    assert got, "every conformance query must match something"


def test_folding_finds_accented_uppercase_names(backend: Backend) -> None:
    load(backend)
    page = backend.search("practice_sites", GeoQuery(text="lefevre", limit=500))
    names = {h.doc["practitioner"]["last_name"] for h in page.hits}
    assert names == {"LEFÈVRE"}
    page = backend.search("practice_sites", GeoQuery(text=fold("NUNEZ"), limit=500))
    assert {h.doc["practitioner"]["last_name"] for h in page.hits} == {"Ñúñez"}
    page = backend.search("practice_sites", GeoQuery(text=fold("oeuvrard"), limit=500))
    assert {h.doc["practitioner"]["last_name"] for h in page.hits} == {"Œuvrard"}


def test_get_by_id_and_counts(backend: Backend) -> None:
    load(backend)
    doc = backend.get("practice_sites", DOCS[5]["site_id"])
    assert doc == DOCS[5]
    assert backend.get("practice_sites", "nope") is None
    assert backend.count("practice_sites") == len(DOCS)
    expected = sum(1 for d in DOCS if d["practitioner"]["profession_code"] == "10")
    assert backend.count("practice_sites", {"profession": ["10"]}) == expected


def test_many_documents_are_read_by_id_at_once(backend: Backend) -> None:
    """What cards and ranking read: the documents of many ids in one go, missing ids left out, more ids than a page."""
    assert backend.get_many("practice_sites", ["nope"]) == {}  # no live index yet
    load(backend)
    backend.max_page = 7  # Elasticsearch asks a page of ids at a time
    wanted = [d["site_id"] for d in DOCS[::3]]
    found = backend.get_many("practice_sites", [*wanted, "nope", wanted[0]])
    assert found == {d["site_id"]: d for d in DOCS[::3]}
    assert backend.get_many("practice_sites", []) == {}


def test_a_kinds_revision_changes_with_each_write_and_only_then(backend: Backend) -> None:
    """What a reader keeping a small registry parsed compares: any write, delete or switch changes it."""
    assert backend.revision("practice_sites") is None  # no live index yet
    index = load(backend)
    seen = [backend.revision("practice_sites")]
    assert backend.revision("practice_sites") == seen[0]  # reading changes nothing
    backend.search("practice_sites", GeoQuery(limit=5))
    assert backend.revision("practice_sites") == seen[0]
    backend.write(index, [dict(DOCS[3])])  # the same document again is still a write
    backend.refresh(index)
    seen.append(backend.revision("practice_sites"))
    backend.delete(index, [DOCS[4]["site_id"]])
    backend.refresh(index)
    seen.append(backend.revision("practice_sites"))
    backend.switch("practice_sites", load(backend))
    seen.append(backend.revision("practice_sites"))
    assert len(set(seen)) == len(seen), seen


def test_another_process_writing_changes_the_revision_seen_here(tmp_path: Path) -> None:
    """Embedded: the counter is in the version's file, so a writer elsewhere (the aggregator) is seen by the API."""
    reader, writer = SqliteBackend(tmp_path), SqliteBackend(tmp_path)
    index = load(writer)
    before = reader.revision("practice_sites")
    writer.write(index, [dict(DOCS[0], department_code="75")])
    assert reader.revision("practice_sites") != before
    assert reader.get("practice_sites", DOCS[0]["site_id"])["department_code"] == "75"


def test_rewriting_a_document_replaces_it(backend: Backend) -> None:
    index = load(backend)
    changed = dict(DOCS[3], department_code="75")
    backend.write(index, [changed])
    backend.seal(index)
    assert backend.get("practice_sites", changed["site_id"])["department_code"] == "75"
    assert backend.count("practice_sites") == len(DOCS)
    assert backend.count("practice_sites", {"department": ["75"]}) == 1


def test_rewritten_documents_keep_their_place_in_every_query(backend: Backend) -> None:
    """A rewrite replaces the document's filter, position and text rows with the new ones (the embedded
    index drops and re-inserts them): old values no longer match, new ones do, nothing is duplicated."""
    index = load(backend)
    movers = [d for d in DOCS if d.get("location")][:20]
    moved = [dict(d, department_code="75", location={"lat": 48.8566, "lon": 2.3522}) for d in movers]
    backend.write(index, moved + moved[:5])  # an id written twice in one bulk: the last write wins
    backend.seal(index)
    assert backend.count("practice_sites") == len(DOCS)
    assert backend.count("practice_sites", {"department": ["75"]}) == len(moved)
    near_paris = backend.search("practice_sites", GeoQuery(lat=48.8566, lon=2.3522, radius_km=1, limit=100))
    assert sorted(h.doc["site_id"] for h in near_paris.hits) == sorted(d["site_id"] for d in moved)
    left = {d["site_id"] for d in movers}
    near_lyon = all_pages(backend, GeoQuery(lat=CENTRE[0], lon=CENTRE[1], radius_km=200))
    assert not left & {h for h, _ in near_lyon}
    folded = fold(movers[0]["practitioner"]["last_name"]).split()[0]
    by_name = backend.search("practice_sites", GeoQuery(text=folded, limit=1000))
    assert len({h.doc["site_id"] for h in by_name.hits}) == len(by_name.hits)  # no leftover text rows


def test_a_selective_filter_with_a_broad_one_matches_their_intersection(backend: Backend) -> None:
    """The embedded index gathers the most selective filter's documents and checks the others per row:
    whichever order the filters come in, the answer is the intersection."""
    load(backend)
    few = [d["practitioner"]["idnps"] for d in DOCS[:6]]
    for filters in (
        {"profession": ["10"], "idnps": few},
        {"idnps": few, "profession": ["10"]},
        {"idnps": few, "profession": ["10", "40", "70"], "department": ["69", "01", "38"]},
    ):
        expected = sorted(
            d["site_id"]
            for d in DOCS
            if d["practitioner"]["idnps"] in few
            and d["practitioner"]["profession_code"] in filters["profession"]
            and d["department_code"] in filters.get("department", [d["department_code"]])
        )
        page = backend.search("practice_sites", GeoQuery(filters=filters, limit=1000))
        assert sorted(h.doc["site_id"] for h in page.hits) == expected and page.total == len(expected)
        assert backend.count("practice_sites", filters) == len(expected)


def test_a_query_can_read_only_some_fields(backend: Backend) -> None:
    """`fields` keeps the named top-level fields of each hit (a nested object and a list included, a field a
    document lacks left out), in the same order and with the same values as whole documents."""
    load(backend)
    names = ("site_id", "practitioner", "location", "department_code")
    for query in (GeoQuery(limit=50), GeoQuery(lat=CENTRE[0], lon=CENTRE[1], radius_km=30, limit=50)):
        whole = backend.search("practice_sites", query)
        some = backend.search("practice_sites", GeoQuery(**{**query.__dict__, "fields": names}))
        assert [h.sort for h in some.hits] == [h.sort for h in whole.hits] and some.total == whole.total
        for a, b in zip(whole.hits, some.hits, strict=True):
            assert b.doc == {k: a.doc[k] for k in names if a.doc.get(k) is not None}
    single = backend.search("practice_sites", GeoQuery(limit=5, fields=("site_id",)))
    assert all(list(h.doc) == ["site_id"] for h in single.hits) and len(single.hits) == 5
    assert any("location" not in h.doc for h in backend.search("practice_sites", GeoQuery(limit=50, fields=names)).hits)


def test_empty_before_first_import(backend: Backend) -> None:
    assert backend.live_index("practice_sites") is None
    assert backend.count("practice_sites") == 0
    assert backend.search("practice_sites", GeoQuery(lat=45.0, lon=5.0, radius_km=10)).hits == []


def test_unknown_filter_is_an_error(backend: Backend) -> None:
    load(backend)
    with pytest.raises(KeyError):
        backend.search("practice_sites", GeoQuery(filters={"vendor": ["x"]}))


def test_backends_agree(tmp_path: Path) -> None:
    answers = []
    backends = [make_backend(kind, tmp_path / kind) for kind in BACKENDS]
    try:
        for b in backends:
            load(b)
            answers.append([[h for h, _ in all_pages(b, q)] for q in QUERIES.values()])
    finally:
        for b in backends:
            if b.name == "elasticsearch":
                b.delete_all()  # type: ignore[attr-defined]
            b.close()
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    "filters",
    [{"profession": ["10"]}, {"specialty": ["SM54"]}, {"specialty": ["SM54", "SM20"]}, {"profession": ["40", "70"]}],
)
def test_counting_the_sites_in_reach_matches_the_oracle(backend: Backend, filters: dict[str, list[str]]) -> None:
    """The directory's count the search explains itself with: native on each backend (an R*Tree carrying the
    profession and specialties embedded, a count query on Elasticsearch)."""
    load(backend)
    for radius in (5.0, 25.0, 80.0):
        query = GeoQuery(lat=CENTRE[0], lon=CENTRE[1], radius_km=radius, filters=filters)
        assert backend.count_sites_in_reach(CENTRE[0], CENTRE[1], radius, filters) == len(oracle(query))
    with pytest.raises(KeyError):
        backend.count_sites_in_reach(CENTRE[0], CENTRE[1], 5.0, {"department": ["69"]})


def test_a_directory_written_before_its_position_table_gets_it_on_opening(tmp_path: Path) -> None:
    import sqlite3

    from indexer.sqlite_backend import SqliteBackend

    backend = SqliteBackend(tmp_path / "index")
    index = load(backend)
    before = backend.count_sites_in_reach(CENTRE[0], CENTRE[1], 40.0, {"profession": ["10"]})
    backend.close()
    db = sqlite3.connect(tmp_path / "index" / f"{index}.db")
    db.execute("DROP TABLE sites_geo")
    db.close()
    reopened = SqliteBackend(tmp_path / "index")
    assert reopened.count_sites_in_reach(CENTRE[0], CENTRE[1], 40.0, {"profession": ["10"]}) == before > 0
    reopened.close()
