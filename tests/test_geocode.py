"""Positions: the offline commune fallback, and the BAN/addok batch client against a CSV endpoint on loopback.

The endpoint below speaks addok's `/search/csv/` protocol (multipart `data`, `columns`, `postcode`,
`citycode`; answer = the input CSV plus latitude, longitude, result_score, result_type) so the client's
request, parsing, cache, rate limit and retries are exercised over real HTTP.
"""

from __future__ import annotations

from pathlib import Path

from addok_like import AddokLike

from core.geo import gazetteer
from core.records import Address, PositionPrecision, PracticeSite, Practitioner
from rpps_import.geocode import AddokGeocoder, CommuneGeocoder, GeocodeQuery, Positioner

QUERIES = [
    GeocodeQuery("900 Route DE PARIS", "01440", "01451", "Viriat"),
    GeocodeQuery("? vague", "01300", "01034", "Belley"),  # low score: not trusted
    GeocodeQuery("1 rue nulle part", "99999", "99999", "Nowhere"),  # not found
]


def test_batch_request_and_answers(addok: str, tmp_path: Path) -> None:
    geocoder = AddokGeocoder(addok, cache_path=tmp_path / "cache.db", requests_per_second=100)
    got = geocoder.geocode(QUERIES)
    assert got[0] is not None and got[0].precision == PositionPrecision.housenumber and got[0].source == "ban"
    assert got[1] is None and got[2] is None
    (call,) = AddokLike.calls
    assert call["path"] == "/search/csv/"
    assert call["fields"] == {"columns": ["street", "city"], "postcode": ["postcode"], "citycode": ["citycode"]}
    assert call["rows"] == 3


def test_cache_answers_repeated_addresses_without_a_request(addok: str, tmp_path: Path) -> None:
    AddokGeocoder(addok, cache_path=tmp_path / "cache.db", requests_per_second=100).geocode(QUERIES)
    again = AddokGeocoder(addok, cache_path=tmp_path / "cache.db", requests_per_second=100).geocode(QUERIES)
    assert len(AddokLike.calls) == 1
    assert again[0] is not None and again[1] is None


def test_server_errors_are_retried_then_given_up(addok: str) -> None:
    AddokLike.fail_next = 1
    geocoder = AddokGeocoder(addok, requests_per_second=100, retries=2, retry_base_s=0.01)
    assert geocoder.geocode(QUERIES[:1])[0] is not None
    assert len(AddokLike.calls) == 2 and geocoder.failures == 0
    AddokLike.fail_next = 10
    geocoder = AddokGeocoder(addok, requests_per_second=100, retries=1, retry_base_s=0.01)
    assert geocoder.geocode(QUERIES[:1]) == [None]
    assert len(AddokLike.calls) == 2 + 2  # the first try and its one retry
    assert geocoder.failures == 1


def test_too_many_requests_is_retried_and_a_client_error_is_not(addok: str) -> None:
    AddokLike.fail_next, AddokLike.fail_status = 2, 429
    geocoder = AddokGeocoder(addok, requests_per_second=100, retries=3, retry_base_s=0.01)
    assert geocoder.geocode_one("700 avenue de Narvik Belley") is not None
    assert len(AddokLike.calls) == 3
    AddokLike.calls, AddokLike.fail_next, AddokLike.fail_status = [], 1, 400
    assert geocoder.geocode(QUERIES[:1]) == [None]  # the same request would be refused again
    assert len(AddokLike.calls) == 1 and geocoder.failures == 1


def test_positioner_falls_back_to_the_commune_when_the_geocoder_fails(tmp_path: Path) -> None:
    unreachable = AddokGeocoder("http://127.0.0.1:9", requests_per_second=100, retries=0, timeout_s=1)
    site = PracticeSite(
        site_id="x",
        practitioner=Practitioner(idnps="81", id_type="RPPS", id="1", last_name="X", profession_code="10"),
        address=Address(street="DE PARIS", number="900", postcode="01440", insee_code="01451"),
    )
    Positioner(geocoder=unreachable).place([site])
    assert site.position is not None and site.position.precision == PositionPrecision.municipality


def test_commune_fallback_resolves_insee_postcode_and_cedex() -> None:
    communes = CommuneGeocoder()
    assert communes.locate("01053", None).precision == PositionPrecision.municipality
    shared = communes.locate(None, "01000")  # Bourg-en-Bresse and Saint-Denis-lès-Bourg
    assert shared is not None and shared.precision == PositionPrecision.postcode
    cedex = communes.locate(None, "87015")  # LIMOGES CEDEX 1
    limoges = gazetteer().commune("87085")
    assert cedex is not None and (cedex.lat, cedex.lon) == (limoges.lat, limoges.lon)
    assert communes.locate(None, None) is None


def test_one_typed_address(addok: str, tmp_path: Path) -> None:
    geocoder = AddokGeocoder(addok, cache_path=tmp_path / "cache.db", requests_per_second=100)
    found = geocoder.geocode_one("700 avenue de Narvik Belley")
    assert found is not None and found.precision == PositionPrecision.housenumber and found.source == "ban"
    assert geocoder.geocode_one("nulle part") is None
    assert geocoder.geocode_one("700 avenue de Narvik Belley") == found  # from the cache
    assert [c["q"] for c in AddokLike.calls] == ["700 avenue de Narvik Belley", "nulle part"]


def test_the_search_api_geocodes_addresses_when_a_geocoder_is_configured(addok: str, loaded, settings) -> None:
    from fastapi.testclient import TestClient
    from support import REG, api_settings

    from api.app import create_app

    configured = api_settings(settings).model_copy(update={"geocoder_url": addok})
    with TestClient(create_app(configured, loaded)) as c:
        body = c.get(
            "/v1/search", params={"address": "700 avenue de Narvik Belley", "verify": "false"}, headers=REG
        ).json()
        assert body["place"]["precision"] == "housenumber" and body["place"]["department"] == "01"
        offline = c.get("/v1/search", params={"address": "rue inconnue 01300", "verify": "false"}, headers=REG).json()
        assert offline["place"]["precision"] == "postcode"  # the geocoder found nothing: the postcode it names
        asked = len(AddokLike.calls)
        again = c.get(
            "/v1/search", params={"address": "700 avenue de Narvik Belley", "verify": "false"}, headers=REG
        ).json()
        assert again["place"] == body["place"] and len(AddokLike.calls) == asked  # remembered, in memory
    # A patient's address and its position are written nowhere: no geocoder cache, no file holding the point.
    point = f"{body['place']['lat']}".encode()
    written = [p for p in settings.data_dir.rglob("*") if p.is_file()]
    assert not any("geocod" in p.name for p in written)
    assert not [p.name for p in written if point in p.read_bytes()]
