"""The RPPS/ADELI Personne_activite reader on the real sample."""

from __future__ import annotations

import hashlib
from pathlib import Path

from support import RPPS_SAMPLE

from core.records import PracticeSite
from core.report import ImportReport
from rpps_import.rpps import RppsReader


def read(path: Path, tmp_path: Path) -> tuple[list[PracticeSite], ImportReport]:
    report = ImportReport("rpps", str(path), tmp_path / "reports")
    sites = [s for chunk in RppsReader(path, report, chunk_size=5).chunks() for s in chunk]
    report.finish("running")
    return sites, report


def test_sample_is_the_published_one() -> None:
    assert hashlib.sha256(RPPS_SAMPLE.read_bytes()).hexdigest().startswith("da38a07b8246f64b")


def test_every_line_of_the_sample_is_accounted_for(tmp_path: Path) -> None:
    sites, report = read(RPPS_SAMPLE, tmp_path)
    data_lines = len(RPPS_SAMPLE.read_text(encoding="utf-8").splitlines()) - 1
    s = report.summary
    assert s.lines_read == data_lines == 22
    assert s.lines_accepted + s.lines_rejected == s.lines_read
    assert s.lines_rejected == 0
    assert len(sites) == 22  # one activity per line, all distinct persons


def test_rpps_doctor_has_idnps_profession_and_ordinal_specialty(tmp_path: Path) -> None:
    sites, _ = read(RPPS_SAMPLE, tmp_path)
    (doc,) = [s for s in sites if s.practitioner.id_type == "RPPS"]
    p = doc.practitioner
    assert p.idnps == "810106476764"
    assert p.id == "10106476764"
    assert (p.last_name, p.first_name, p.title) == ("BENHOUCHAME", "Zakaria", "Docteur")
    assert (p.profession_code, p.profession_label) == ("10", "Médecin")
    assert [(sp.code, sp.label, sp.kind) for sp in p.specialties] == [("SM20", "Gynécologie-obstétrique", "S")]
    assert doc.mode_code == "S"
    assert doc.address is None and not doc.has_structure


def test_structure_address_and_ids_are_read_by_column_name(tmp_path: Path) -> None:
    sites, _ = read(RPPS_SAMPLE, tmp_path)
    site = next(s for s in sites if s.practitioner.idnps == "0019402726")
    assert site.practitioner.last_name == "CHEPY"
    assert site.siret == "26010003700068"
    assert site.finess_site == "010000032"
    assert site.structure_technical_id == "F010000032"
    assert site.address is not None
    assert site.address.street_line() == "700 Avenue DE NARVIK"
    assert site.address.distribution == "BP 139"
    assert (site.address.postcode, site.address.insee_code, site.address.commune) == ("01300", "01034", "Belley")
    assert site.department_code == "01"
    assert site.phone == "0479425959"


def test_department_is_derived_from_postcode_when_the_file_has_none(tmp_path: Path) -> None:
    sites, _ = read(RPPS_SAMPLE, tmp_path)
    site = next(s for s in sites if s.practitioner.idnps == "0012600631")
    assert site.address is not None and site.address.insee_code is None
    assert site.address.postcode == "25300"
    assert site.department_code == "25"


def test_people_without_a_practice_structure_stay_in_the_directory(tmp_path: Path) -> None:
    sites, _ = read(RPPS_SAMPLE, tmp_path)
    without = [s for s in sites if not s.has_structure]
    assert len(without) == 9
    assert all(s.address is None for s in without)


def test_a_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + RPPS_SAMPLE.read_bytes())
    sites, report = read(path, tmp_path)
    assert len(sites) == 22 and report.summary.lines_rejected == 0


def test_activities_of_one_person_are_grouped_and_specialties_merged(tmp_path: Path) -> None:
    lines = RPPS_SAMPLE.read_text(encoding="utf-8").splitlines()
    header, doctor = lines[0], lines[-1]
    # The same doctor, same activity, with a second savoir-faire; and at a second structure.
    second_specialty = doctor.replace("|SM20|Gynécologie-obstétrique|", "|SM54|Médecine générale|")
    fields = doctor.split("|")
    fields[19], fields[23] = "26010004500012", "C26010004500012"
    second_site = "|".join(fields)
    path = tmp_path / "grouped.txt"
    path.write_text("\n".join([header, doctor, second_specialty, second_site]) + "\n", encoding="utf-8")
    sites, report = read(path, tmp_path)
    assert report.summary.lines_accepted == 3
    assert len(sites) == 2
    for s in sites:
        assert [sp.code for sp in s.practitioner.specialties] == ["SM20", "SM54"]
