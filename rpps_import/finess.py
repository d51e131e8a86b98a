"""Reader for FINESS establishments: the etalab stock file, raw or re-flattened.

- raw (`etalab-cs1100507-stock-<date>.csv`): a metadata line `finess;etalab;<n>;<date>`, then
  `structureet` records and `geolocalisation` records (projected coordinates whose system is named in
  `sourcecoordet`), `;`-separated, fields possibly quoted with doubled quotes, UTF-8 or (older) Latin-1;
- flat: one 42-column table with a header, coordinates in the same row (third-party re-flattening).

Coordinates are converted to WGS84 with pyproj from the system the file names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from pyproj import Transformer

from core.geo import department_of_insee, in_france
from core.records import Address, Position, PositionPrecision, Structure
from core.report import FileRejected, ImportReport
from core.text import clean
from rpps_import.lines import BOM, guess_separator, numbered_lines, open_binary, split_row

RAW_STRUCTURE_FIELDS = [
    "nofinesset",
    "nofinessej",
    "rs",
    "rslongue",
    "complrs",
    "compldistrib",
    "numvoie",
    "typvoie",
    "voie",
    "compvoie",
    "lieuditbp",
    "commune",
    "departement",
    "libdepartement",
    "ligneacheminement",
    "telephone",
    "telecopie",
    "categetab",
    "libcategetab",
    "categagretab",
    "libcategagretab",
    "siret",
    "codeape",
    "codemft",
    "libmft",
    "codesph",
    "libsph",
    "dateouv",
    "dateautor",
    "datemaj",
]
RAW_GEO_FIELDS = ["nofinesset", "coordxet", "coordyet", "sourcecoordet", "datemaj"]
FLAT_REQUIRED = [
    "nofinesset",
    "nofinessej",
    "rs",
    "rslongue",
    "numvoie",
    "typvoie",
    "voie",
    "departement",
    "libdepartement",
    "cog",
    "codepostal",
    "ligneacheminement",
    "telephone",
    "categetab",
    "libcategetab",
    "siret",
    "coordx",
    "coordy",
    "sourcegeocod",
    "datemaj",
]

# FINESS department field -> INSEE department code for the overseas territories.
OVERSEAS_DEPARTMENTS = {
    "9A": "971",
    "9B": "972",
    "9C": "973",
    "9D": "974",
    "9E": "975",
    "9F": "976",
    "9J": "986",
}
# Older files name the system instead of its EPSG code.
LEGACY_SYSTEMS = {
    "LAMBERT_93": 2154,  # RGF93 / Lambert-93, metropolitan France
    "UTM_N20": 5490,  # RGAF09 / UTM 20N, Guadeloupe and Martinique
    "UTM_N21": 4467,  # RGSPM06 / UTM 21N, Saint-Pierre-et-Miquelon
    "UTM_N22": 2972,  # RGFG95 / UTM 22N, Guyane
    "UTM_S38": 4471,  # RGM04 / UTM 38S, Mayotte
    "UTM_S40": 2975,  # RGR92 / UTM 40S, La Réunion
}
_EPSG = re.compile(r"EPSG:(\d{4,5})")


class CoordinateProblem(StrEnum):
    """Why an establishment's coordinates were not used: the reason the import report counts."""

    UNKNOWN_SYSTEM = "unknown coordinate system"
    OUTSIDE_FRANCE = "coordinates outside France"
    UNREADABLE = "unreadable coordinates"


class CoordinateError(ValueError):
    """Coordinates that cannot be placed: the `problem` to count, and a message with the values at fault."""

    def __init__(self, problem: CoordinateProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@cache
def _transformer(epsg: int) -> Transformer:
    return Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)


def coordinate_system(source: str | None) -> int:
    """The EPSG code a `sourcecoordet` names: '...,EPSG:2154 RGF93 / Lambert-93' or '...,LAMBERT_93'."""
    if source:
        m = _EPSG.search(source)
        if m:
            return int(m.group(1))
        for part in source.split(","):
            if part.strip().upper() in LEGACY_SYSTEMS:
                return LEGACY_SYSTEMS[part.strip().upper()]
    raise CoordinateError(CoordinateProblem.UNKNOWN_SYSTEM, f"unknown coordinate system {source!r}")


def to_wgs84(x: str | None, y: str | None, source: str | None) -> Position:
    """Projected FINESS coordinates -> WGS84 position; raises CoordinateError with a readable reason."""
    epsg = coordinate_system(source)
    try:
        fx, fy = float(x or ""), float(y or "")
    except ValueError as exc:
        raise CoordinateError(CoordinateProblem.UNREADABLE, f"coordinates are not numbers ({x!r}, {y!r})") from exc
    try:
        lon, lat = _transformer(epsg).transform(fx, fy)
    except Exception as exc:  # pyproj raises CRSError for codes it does not know
        raise CoordinateError(CoordinateProblem.UNREADABLE, f"cannot convert from EPSG:{epsg}: {exc}") from exc
    if not (abs(lat) <= 90 and abs(lon) <= 180) or not in_france(lat, lon):
        raise CoordinateError(
            CoordinateProblem.OUTSIDE_FRANCE,
            f"coordinates outside France (EPSG:{epsg} {fx}, {fy} -> {lat:.4f}, {lon:.4f})",
        )
    return Position(lat=round(lat, 6), lon=round(lon, 6), precision=PositionPrecision.establishment, source="finess")


def insee_code(departement: str | None, commune: str | None) -> str | None:
    """FINESS department + 3-digit commune -> INSEE code ('01','451' -> '01451'; '9A','123' -> '97123')."""
    if not departement or not commune:
        return None
    if departement in OVERSEAS_DEPARTMENTS:
        return OVERSEAS_DEPARTMENTS[departement][:2] + commune.zfill(3)
    return departement.zfill(2) + commune.zfill(3)


def department_code(departement: str | None) -> str | None:
    if not departement:
        return None
    return OVERSEAS_DEPARTMENTS.get(departement, departement)


def split_routing(ligne: str | None) -> tuple[str | None, str | None]:
    """'01440 VIRIAT' -> ('01440', 'VIRIAT'); '97306 CAYENNE CEDEX' -> ('97306', 'CAYENNE CEDEX')."""
    if not ligne:
        return None, None
    head, _, tail = ligne.partition(" ")
    if len(head) == 5 and head.isdigit():
        return head, clean(tail)
    return None, ligne


def digits(phone: str | None) -> str | None:
    return clean("".join(c for c in phone if c.isdigit())) if phone else None


@dataclass
class _Pending:
    line: int
    structure: Structure


class FinessReader:
    """Reads a FINESS file (raw or flat, detected from its first line) into Structure records."""

    def __init__(self, path: Path, report: ImportReport, chunk_size: int = 20_000) -> None:
        self.path = path
        self.report = report
        self.chunk_size = chunk_size

    def chunks(self) -> Iterator[list[Structure]]:
        with open_binary(self.path) as fh:
            first = fh.readline()
            if not first.strip():
                raise FileRejected(f"{self.path.name}: the file is empty", "expected a FINESS etalab file")
            if first.startswith(BOM):
                first = first[len(BOM) :]
            text = self._decode(1, first).rstrip("\r\n")
            try:
                head = split_row(text, ";")
            except ValueError as exc:
                raise FileRejected(
                    f"{self.path.name}: the first line cannot be read ({exc})", "expected a FINESS etalab file"
                ) from exc
            if head[:2] == ["finess", "etalab"]:
                self.report.summary.format = "finess-etalab-raw"
                yield from self._raw(fh)
            elif head and head[0] == "nofinesset":
                missing = [c for c in FLAT_REQUIRED if c not in head]
                if missing:
                    raise FileRejected(
                        f"{self.path.name}: header is missing column(s) {', '.join(missing)}",
                        "expected the flattened etalab table",
                    )
                self.report.summary.format = "finess-etalab-flat"
                yield from self._flat(fh, head)
            else:
                sep = next(
                    (
                        other
                        for other in (",", "\t", "|")
                        if text.split(other)[:2] == ["finess", "etalab"] or text.split(other)[0] == "nofinesset"
                    ),
                    None,
                ) or guess_separator(text, ";")
                if sep is not None:
                    raise FileRejected(
                        f"{self.path.name}: wrong separator: the first line is split by '{sep}', expected ';'",
                        "use the etalab stock file as published",
                    )
                raise FileRejected(
                    f"{self.path.name}: not a FINESS etalab file (first line {text[:60]!r})",
                    "expected a first line 'finess;etalab;<n>;<date>' or a flat header starting with 'nofinesset'",
                )

    def _decode(self, no: int, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # Older stock files are Latin-1 (Windows-1252): read them, but say so.
            self.report.warn(no, "decoded as Latin-1")
            return raw.decode("cp1252", errors="replace")

    def _rows(self, fh) -> Iterator[tuple[int, list[str]]]:
        for no, raw, ended in numbered_lines(fh):
            self.report.line_read()
            if not raw.strip():
                self.report.reject(no, "blank line")
                continue
            try:
                row = split_row(self._decode(no, raw), ";")
            except ValueError as exc:
                self.report.reject(no, "unreadable line", str(exc))
                continue
            if not ended and row and row[0] == "structureet" and len(row) < len(RAW_STRUCTURE_FIELDS) + 1:
                self.report.reject(no, "truncated line", f"{len(row)} fields")
                continue
            yield no, row

    def _raw(self, fh) -> Iterator[list[Structure]]:
        structures: dict[str, _Pending] = {}
        geos: dict[str, tuple[int, dict[str, str | None]]] = {}
        for no, row in self._rows(fh):
            kind = row[0]
            if kind == "structureet":
                values = self._fields(no, row[1:], RAW_STRUCTURE_FIELDS)
                if values is None:
                    continue
                structure = self._structure(no, values, raw=True)
                if structure is None:
                    continue
                if structure.finess in structures:
                    self.report.reject(
                        no,
                        "duplicate establishment",
                        f"{structure.finess} first on line {structures[structure.finess].line}",
                    )
                    continue
                structures[structure.finess] = _Pending(no, structure)
                self.report.accept()
            elif kind == "geolocalisation":
                values = self._fields(no, row[1:], RAW_GEO_FIELDS)
                if values is None:
                    continue
                finess = values["nofinesset"] or ""
                if finess in geos:
                    self.report.reject(no, "duplicate geolocalisation", f"{finess} first on line {geos[finess][0]}")
                    continue
                geos[finess] = (no, values)
            else:
                self.report.reject(no, "unknown record type", f"{kind[:40]!r}")
        # Join establishments and their coordinates; either side alone is reported, not fatal.
        for finess, (no, values) in geos.items():
            pending = structures.get(finess)
            if pending is None:
                self.report.reject(no, "geolocalisation without establishment", finess)
                continue
            self.report.accept()
            try:
                position = to_wgs84(values["coordxet"], values["coordyet"], values["sourcecoordet"])
            except CoordinateError as exc:
                self.report.warn(no, exc.problem.value, f"{finess}: {exc}")
                continue
            pending.structure.position = position
        chunk: list[Structure] = []
        for finess, pending in structures.items():
            if finess not in geos:
                self.report.warn(pending.line, "establishment without geolocalisation", finess)
            chunk.append(pending.structure)
            if len(chunk) >= self.chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _flat(self, fh, header: list[str]) -> Iterator[list[Structure]]:
        index = {name: i for i, name in enumerate(header)}
        seen: dict[str, int] = {}
        chunk: list[Structure] = []
        for no, row in self._rows(fh):
            if len(row) != len(header):
                self.report.reject(no, "wrong number of fields", f"expected {len(header)}, found {len(row)}")
                continue
            values = {name: clean(row[i]) for name, i in index.items()}
            values["commune"] = None
            structure = self._structure(no, values, raw=False)
            if structure is None:
                continue
            if structure.finess in seen:
                self.report.reject(
                    no,
                    "duplicate establishment",
                    f"{structure.finess} first on line {seen[structure.finess]}",
                )
                continue
            seen[structure.finess] = no
            if any("\ufffd" in (v or "") for v in values.values()):
                self.report.warn(no, "characters destroyed upstream (U+FFFD)", structure.finess)
            if values.get("coordx") or values.get("coordy"):
                try:
                    structure.position = to_wgs84(values["coordx"], values["coordy"], values["sourcegeocod"])
                except CoordinateError as exc:
                    self.report.warn(no, exc.problem.value, f"{structure.finess}: {exc}")
            else:
                self.report.warn(no, "establishment without geolocalisation", structure.finess)
            self.report.accept()
            chunk.append(structure)
            if len(chunk) >= self.chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _fields(self, no: int, row: list[str], names: list[str]) -> dict[str, str | None] | None:
        if row and row[-1] == "" and len(row) == len(names) + 1:
            row = row[:-1]
        if len(row) != len(names):
            self.report.reject(no, "wrong number of fields", f"expected {len(names)}, found {len(row)}")
            return None
        return {name: clean(value) for name, value in zip(names, row, strict=True)}

    def _structure(self, no: int, v: dict[str, str | None], raw: bool) -> Structure | None:
        finess = v["nofinesset"]
        if not finess or len(finess) != 9:
            self.report.reject(no, "invalid FINESS number", repr(finess))
            return None
        if not v["rs"]:
            self.report.reject(no, "missing name", finess)
            return None
        postcode, office = split_routing(v["ligneacheminement"])
        insee = insee_code(v["departement"], v["commune"]) if raw else v.get("cog")
        if not raw and v.get("codepostal"):
            postcode = v["codepostal"].zfill(5)
        department = department_code(v["departement"]) or (department_of_insee(insee) if insee else None)
        return Structure(
            finess=finess,
            finess_legal=v["nofinessej"],
            name=v["rs"],
            long_name=v["rslongue"],
            address=Address(
                number=v["numvoie"],
                repetition=v["compvoie"],
                street_type=v["typvoie"],
                street=v["voie"],
                complement=v.get("complrs"),
                distribution=" ".join(p for p in (v.get("compldistrib"), v.get("lieuditbp")) if p) or None,
                cedex_office=v["ligneacheminement"],
                postcode=postcode,
                insee_code=insee,
                commune=office,
            ),
            department_code=department,
            department_label=v["libdepartement"],
            phone=digits(v["telephone"]),
            fax=digits(v.get("telecopie")),
            category_code=v["categetab"],
            category_label=v["libcategetab"],
            category_group_code=v.get("categagretab") or v.get("categretab"),
            category_group_label=v.get("libcategagretab") or v.get("libcategretab"),
            siret=v["siret"],
            ape_code=v.get("codeape"),
            opened_on=v.get("dateouv") or v.get("dateouvert"),
            authorised_on=v.get("dateautor"),
            updated_on=v["datemaj"],
        )
