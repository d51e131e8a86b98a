"""Reader for the RPPS/ADELI open extraction `PS_LibreAcces_Personne_activite_<timestamp>.txt`.

Format (ANS, "extractions en libre accès"): UTF-8 (a BOM is tolerated), `|`-separated, a trailing `|`
on every line, the header on the first line, no quoting. One line per person × activity; lines of one
person are consecutive in the national file, so activities are grouped per person without holding the
file in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.geo import department_of_insee, department_of_postcode
from core.records import Address, PracticeSite, Practitioner, Specialty
from core.report import FileRejected, ImportReport
from core.text import clean
from rpps_import.lines import BOM, describe_bad_bytes, guess_separator, numbered_lines, open_binary

SEPARATOR = "|"

# Column of the national file -> short key used below. Header names are checked, not positions.
COLUMNS: dict[str, str] = {
    "Type d'identifiant PP": "id_type",
    "Identifiant PP": "id",
    "Identification nationale PP": "idnps",
    "Libellé civilité d'exercice": "title",
    "Libellé civilité": "civility",
    "Nom d'exercice": "last_name",
    "Prénom d'exercice": "first_name",
    "Code profession": "profession_code",
    "Libellé profession": "profession_label",
    "Code catégorie professionnelle": "profession_category",
    "Code type savoir-faire": "specialty_kind",
    "Code savoir-faire": "specialty_code",
    "Libellé savoir-faire": "specialty_label",
    "Code mode exercice": "mode_code",
    "Libellé mode exercice": "mode_label",
    "Numéro SIRET site": "siret",
    "Numéro SIREN site": "siren",
    "Numéro FINESS site": "finess_site",
    "Numéro FINESS établissement juridique": "finess_legal",
    "Identifiant technique de la structure": "structure_technical_id",
    "Raison sociale site": "name",
    "Enseigne commerciale site": "brand",
    "Complément destinataire (coord. structure)": "complement_recipient",
    "Complément point géographique (coord. structure)": "complement_place",
    "Numéro Voie (coord. structure)": "number",
    "Indice répétition voie (coord. structure)": "repetition",
    "Code type de voie (coord. structure)": "street_type_code",
    "Libellé type de voie (coord. structure)": "street_type",
    "Libellé Voie (coord. structure)": "street",
    "Mention distribution (coord. structure)": "distribution",
    "Bureau cedex (coord. structure)": "cedex_office",
    "Code postal (coord. structure)": "postcode",
    "Code commune (coord. structure)": "insee_code",
    "Libellé commune (coord. structure)": "commune",
    "Code pays (coord. structure)": "country_code",
    "Libellé pays (coord. structure)": "country",
    "Téléphone (coord. structure)": "phone",
    "Téléphone 2 (coord. structure)": "phone2",
    "Télécopie (coord. structure)": "fax",
    "Adresse e-mail (coord. structure)": "email",
    "Code Département (structure)": "department_code",
    "Libellé Département (structure)": "department_label",
    "Autorité d'enregistrement": "registration_authority",
    "Code secteur d'activité": "sector_code",
}
ID_TYPES = {"8": "RPPS", "0": "ADELI"}


@dataclass
class _Person:
    idnps: str
    first_line: int
    practitioner: Practitioner
    sites: dict[str, PracticeSite] = field(default_factory=dict)
    lines: int = 0


class RppsReader:
    """Streams a Personne_activite file as chunks of PracticeSite records, reporting every line."""

    def __init__(self, path: Path, report: ImportReport, chunk_size: int = 20_000) -> None:
        self.path = path
        self.report = report
        self.chunk_size = chunk_size
        self.report.summary.format = "PS_LibreAcces_Personne_activite"

    def chunks(self) -> Iterator[list[PracticeSite]]:
        with open_binary(self.path) as fh:
            index = self._read_header(fh.readline())
            n_fields = len(index)
            seen: dict[bytes, int] = {}  # line digest -> first line number, to report duplicates
            person: _Person | None = None
            chunk: list[PracticeSite] = []
            for no, raw, ended in numbered_lines(fh):
                self.report.line_read()
                row = self._split(no, raw, ended, n_fields)
                if row is None:
                    continue
                digest = hashlib.blake2b(raw, digest_size=8).digest()
                if digest in seen:
                    self.report.reject(no, "duplicate line", f"same as line {seen[digest]}")
                    continue
                seen[digest] = no
                values = {key: clean(row[i]) for key, i in index.items()}
                practitioner = self._practitioner(no, values)
                if practitioner is None:
                    continue
                if person is None or person.idnps != practitioner.idnps:
                    if person is not None:
                        chunk.extend(_finish(person))
                    person = _Person(practitioner.idnps, no, practitioner)
                    if len(chunk) >= self.chunk_size:
                        yield chunk
                        chunk = []
                _add_activity(person, practitioner, values)
                self.report.accept()
            if person is not None:
                chunk.extend(_finish(person))
            if chunk:
                yield chunk

    def _read_header(self, first: bytes) -> dict[str, int]:
        if not first.strip():
            raise FileRejected(f"{self.path.name}: the file is empty", "expected a PS_LibreAcces header line")
        if first.startswith(BOM):
            first = first[len(BOM) :]
        try:
            header = first.rstrip(b"\r\n").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileRejected(
                f"{self.path.name}: the header is not UTF-8 ({describe_bad_bytes(first, exc)})",
                "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
            ) from exc
        sep = guess_separator(header, SEPARATOR)
        if sep is not None:
            raise FileRejected(
                f"{self.path.name}: wrong separator: the header is split by '{sep}', expected '|'",
                "use the PS_LibreAcces_Personne_activite file as published",
            )
        names = header.split(SEPARATOR)
        if names and names[-1] == "":
            names = names[:-1]
        positions = {name: i for i, name in enumerate(names)}
        missing = [name for name in COLUMNS if name not in positions]
        if missing:
            raise FileRejected(
                f"{self.path.name}: header is missing {len(missing)} column(s): {', '.join(missing[:6])}"
                + ("..." if len(missing) > 6 else ""),
                "is this a PS_LibreAcces_Personne_activite file?",
            )
        self._n_columns = len(names)
        return {key: positions[name] for name, key in COLUMNS.items()}

    def _split(self, no: int, raw: bytes, ended: bool, n_fields: int) -> list[str] | None:
        if not raw.strip():
            self.report.reject(no, "blank line")
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.report.reject(no, "not UTF-8", describe_bad_bytes(raw, exc))
            return None
        fields = text.split(SEPARATOR)
        if len(fields) == self._n_columns + 1 and fields[-1] == "":
            fields.pop()
        if len(fields) != self._n_columns:
            reason = "truncated line" if not ended and len(fields) < self._n_columns else "wrong number of fields"
            self.report.reject(no, reason, f"expected {self._n_columns} fields, found {len(fields)}")
            return None
        return fields

    def _practitioner(self, no: int, v: dict[str, str | None]) -> Practitioner | None:
        id_type, pp_id, idnps = v["id_type"], v["id"], v["idnps"]
        if id_type not in ID_TYPES:
            self.report.reject(no, "unknown identifier type", f"Type d'identifiant PP={id_type!r}")
            return None
        if not pp_id or not pp_id.isdigit():
            self.report.reject(no, "invalid identifier", f"Identifiant PP={pp_id!r}")
            return None
        if idnps != id_type + pp_id:
            self.report.reject(no, "inconsistent national identifier", f"{idnps!r} != {id_type}+{pp_id}")
            return None
        if not v["last_name"]:
            self.report.reject(no, "missing name", f"IDNPS {idnps}")
            return None
        if not v["profession_code"]:
            self.report.reject(no, "missing profession", f"IDNPS {idnps}")
            return None
        specialties = []
        if v["specialty_code"]:
            specialties.append(
                Specialty(code=v["specialty_code"], label=v["specialty_label"], kind=v["specialty_kind"])
            )
        return Practitioner(
            idnps=idnps,
            id_type=ID_TYPES[id_type],
            id=pp_id,
            civility=v["civility"],
            title=v["title"],
            last_name=v["last_name"],
            first_name=v["first_name"],
            profession_code=v["profession_code"],
            profession_label=v["profession_label"],
            profession_category=v["profession_category"],
            specialties=specialties,
        )


def _structure_key(v: dict[str, str | None]) -> str | None:
    return (
        v["structure_technical_id"]
        or (v["siret"] and "S" + v["siret"])
        or (v["finess_site"] and "F" + v["finess_site"])
    )


def _add_activity(person: _Person, practitioner: Practitioner, v: dict[str, str | None]) -> None:
    person.lines += 1
    for sp in practitioner.specialties:
        if sp not in person.practitioner.specialties:
            person.practitioner.specialties.append(sp)
    key = _structure_key(v) or "none"
    site_id = f"{person.idnps}:{key}:{v['mode_code'] or '-'}"
    if site_id in person.sites:
        return  # same activity listed again with another savoir-faire: specialties merged above
    address = None
    if key != "none":
        postcode = v["postcode"] if v["postcode"] and len(v["postcode"]) == 5 else None
        address = Address(
            number=v["number"],
            repetition=v["repetition"],
            street_type=v["street_type"] or v["street_type_code"],
            street=v["street"],
            complement=v["complement_recipient"] or v["complement_place"],
            distribution=v["distribution"],
            cedex_office=v["cedex_office"],
            postcode=postcode,
            insee_code=v["insee_code"],
            commune=v["commune"],
            country_code=v["country_code"],
            country=v["country"],
        )
    department = v["department_code"]
    if not department and address is not None:
        if address.insee_code:
            department = department_of_insee(address.insee_code)
        elif address.postcode:
            department = department_of_postcode(address.postcode)
    person.sites[site_id] = PracticeSite(
        site_id=site_id,
        practitioner=person.practitioner,
        mode_code=v["mode_code"],
        mode_label=v["mode_label"],
        siret=v["siret"],
        siren=v["siren"],
        finess_site=v["finess_site"],
        finess_legal=v["finess_legal"],
        structure_technical_id=v["structure_technical_id"],
        name=v["name"],
        brand=v["brand"],
        address=address,
        department_code=department,
        department_label=v["department_label"],
        phone=v["phone"],
        phone2=v["phone2"],
        fax=v["fax"],
        email=v["email"],
        sector_code=v["sector_code"],
        registration_authority=v["registration_authority"],
    )


def _finish(person: _Person) -> list[PracticeSite]:
    # Every site shares the person's Practitioner object, which now holds the union of specialties.
    return list(person.sites.values())
