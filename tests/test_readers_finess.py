"""The FINESS reader on the real raw and flat samples, and coordinates checked against independent sources."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from support import FINESS_FLAT, FINESS_RAW

from core.geo import gazetteer, haversine_km
from core.records import PositionPrecision, Structure
from core.report import ImportReport
from rpps_import.finess import (
    CoordinateError,
    CoordinateProblem,
    FinessReader,
    coordinate_system,
    insee_code,
    to_wgs84,
)


def read(path: Path, tmp_path: Path) -> tuple[dict[str, Structure], ImportReport]:
    report = ImportReport("finess", str(path), tmp_path / "reports")
    structures = {s.finess: s for chunk in FinessReader(path, report).chunks() for s in chunk}
    report.finish("running")
    return structures, report


def test_samples_are_the_published_ones() -> None:
    assert hashlib.sha256(FINESS_RAW.read_bytes()).hexdigest().startswith("a905483db65cbca3")
    assert hashlib.sha256(FINESS_FLAT.read_bytes()).hexdigest().startswith("099a4785dce8baa2")


def test_raw_file_every_line_accounted_for(tmp_path: Path) -> None:
    structures, report = read(FINESS_RAW, tmp_path)
    s = report.summary
    assert s.format == "finess-etalab-raw"
    assert s.lines_read == 16  # 14 structureet + 2 geolocalisation after the metadata line
    assert len(structures) == 14
    assert s.lines_accepted + s.lines_rejected == s.lines_read
    # 970100012 has coordinates but no establishment line in the excerpt: reported, not fatal.
    assert s.rejected_by_reason == {"geolocalisation without establishment": 1}
    problems = Path(s.report_file or "").read_text(encoding="utf-8")
    assert "17,rejected,geolocalisation without establishment,970100012" in problems


def test_quoted_fields_with_doubled_quotes(tmp_path: Path) -> None:
    structures, _ = read(FINESS_RAW, tmp_path)
    s = structures["980501506"]
    assert s.name == 'LIEU DE VIE "MAVOUNA MEMA 1"'
    assert s.long_name == 'LIEU DE VIE ET D\'ACCUEIL "MAVOUNA MEMA 1"'


def test_overseas_departments_and_insee_codes(tmp_path: Path) -> None:
    structures, _ = read(FINESS_RAW, tmp_path)
    mayotte = structures["980501506"]
    assert mayotte.department_code == "976"
    assert mayotte.address.insee_code == "97606"
    assert gazetteer().commune("97606").name == "CHIRONGUI"  # independent: La Poste names that code
    assert structures["980600027"].department_code == "986"  # Wallis-et-Futuna (9J)
    assert structures["970300026"].address.postcode == "97306"
    assert insee_code("2A", "4") == "2A004"


def test_lambert93_establishment_lands_on_its_commune(tmp_path: Path) -> None:
    structures, _ = read(FINESS_RAW, tmp_path)
    fleyriat = structures["010000024"]  # CH de Fleyriat, 900 route de Paris, Viriat
    assert fleyriat.position is not None
    assert fleyriat.position.precision == PositionPrecision.establishment
    viriat = gazetteer().commune("01451")
    assert viriat is not None
    assert haversine_km(fleyriat.position.lat, fleyriat.position.lon, viriat.lat, viriat.lon) < 5


def test_utm20n_coordinates_land_in_pointe_a_pitre() -> None:
    # The second geolocalisation line of the excerpt (970100012, Guadeloupe), RGAF09 / UTM 20N.
    pos = to_wgs84("657242.9", "1795384.4", "2,ATLASANTE,96,BAN,EPSG:5490 RGAF09/UTM Zone 20N (Antilles)")
    communes = gazetteer().communes.values()
    nearest = min(communes, key=lambda c: haversine_km(pos.lat, pos.lon, c.lat, c.lon))
    assert nearest.insee == "97120"  # Pointe-à-Pitre
    assert haversine_km(pos.lat, pos.lon, nearest.lat, nearest.lon) < 2


def test_flat_file_coordinates_agree_with_la_poste_commune_centroids(tmp_path: Path) -> None:
    structures, report = read(FINESS_FLAT, tmp_path)
    assert report.summary.format == "finess-etalab-flat"
    assert len(structures) == 100 and report.summary.lines_rejected == 0
    gaz = gazetteer()
    far = []
    for s in structures.values():
        assert s.position is not None and s.position.precision == PositionPrecision.establishment
        commune = gaz.commune(s.address.insee_code)
        assert commune is not None, s.finess
        d = haversine_km(s.position.lat, s.position.lon, commune.lat, commune.lon)
        if d > 10:
            far.append((s.finess, d))
    # Communes of the Ain are at most ~15 km across: an establishment 10 km from its commune's
    # centroid would mean a wrong conversion.
    assert far == []


def test_legacy_system_labels_and_epsg_codes() -> None:
    assert coordinate_system("1,ATLASANTE,100,IGN,BD_ADRESSE,V2.2,LAMBERT_93") == 2154
    assert coordinate_system("x,UTM_N20") == 5490
    assert coordinate_system("x,UTM_S40") == 2975
    assert coordinate_system("EPSG:2975 RGR92 / UTM zone 40S") == 2975
    with pytest.raises(CoordinateError, match="unknown coordinate system") as err:
        coordinate_system("1,ATLASANTE,LAMBERT_II_ETENDU")
    assert err.value.problem is CoordinateProblem.UNKNOWN_SYSTEM


@pytest.mark.parametrize(
    ("x", "y", "source", "problem"),
    [
        ("870215.7", "6571590.5", "1,ATLASANTE,LAMBERT_II_ETENDU", CoordinateProblem.UNKNOWN_SYSTEM),
        ("870215,7", "6571590.5", "x,LAMBERT_93", CoordinateProblem.UNREADABLE),  # a decimal comma
        ("870215.7", "6571590.5", "EPSG:99999", CoordinateProblem.UNREADABLE),  # a code no one knows
        ("0", "0", "x,LAMBERT_93", CoordinateProblem.OUTSIDE_FRANCE),  # far off in the Atlantic
    ],
)
def test_coordinates_that_cannot_be_placed_say_why(x: str, y: str, source: str, problem: CoordinateProblem) -> None:
    with pytest.raises(CoordinateError) as err:
        to_wgs84(x, y, source)
    assert err.value.problem is problem


def test_the_report_counts_coordinate_problems_by_their_reason(tmp_path: Path) -> None:
    lines = FINESS_FLAT.read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(";")
    x, y, source = header.index("coordx"), header.index("coordy"), header.index("sourcegeocod")

    def spoil(line: str, **fields: str) -> str:
        row = line.rstrip("\n").split(";")
        for name, value in fields.items():
            row[{"x": x, "y": y, "source": source}[name]] = value
        return ";".join(row) + "\n"

    lines[1] = spoil(lines[1], source="1,ATLASANTE,LAMBERT_II_ETENDU")
    lines[2] = spoil(lines[2], x="0", y="0")
    lines[3] = spoil(lines[3], x="abc")
    spoilt = tmp_path / "spoilt.csv"
    spoilt.write_text("".join(lines), encoding="utf-8")
    structures, report = read(spoilt, tmp_path)
    assert len(structures) == 100
    warned = report.summary.warnings_by_reason
    assert (
        warned["unknown coordinate system"],
        warned["coordinates outside France"],
        warned["unreadable coordinates"],
    ) == (1, 1, 1)


def test_latin1_file_is_read_and_reported(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(FINESS_RAW.read_text(encoding="utf-8").encode("cp1252"))
    structures, report = read(latin, tmp_path)
    assert structures["970210126"].category_label == "Centre Médico-Psycho-Pédagogique (C.M.P.P.)"
    assert report.summary.warnings_by_reason["decoded as Latin-1"] > 0


def test_damaged_characters_are_kept_and_reported(tmp_path: Path) -> None:
    _, report = read(FINESS_FLAT, tmp_path)
    assert report.summary.warnings_by_reason["characters destroyed upstream (U+FFFD)"] == 99
