"""Reader for the SAS participation list: a CSV naming each participating practitioner and their vendors.

Columns (header required, `,` or `;` separated, UTF-8):
    idnps, vendors, via, extra_patients, active, siret, cpts, er_redirection
`vendors` lists vendor ids separated by `|`; `via` is practice, cpts, msp or sos (default practice);
booleans accept true/false, 1/0, oui/non, yes/no (defaults: extra_patients and er_redirection false, active true).
An SOS Médecins association takes part by SIRET: its row has an empty `idnps`, its `siret` and `via` sos (or
empty); it is registered under its structure identifier, 3 + SIRET (`core.records.association_idnst`).
`cpts` names the CPTS the practitioner belongs to (its FINESS, 1 + FINESS or 3 + SIRET), whatever their `via`: the
directory's CPTS get their members from it (`rpps_import.cpts`).
The file is the whole list: loading it writes a new version and switches, like the national imports.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from core.records import Participation, ParticipationVia, association_idnst
from core.report import FileRejected, ImportReport
from rpps_import.cpts import cpts_idnst
from rpps_import.lines import BOM, describe_bad_bytes, numbered_lines, open_binary, split_row

REQUIRED = ("idnps", "vendors")
OPTIONAL = ("via", "extra_patients", "active", "siret", "cpts", "er_redirection")
IDNPS = re.compile(r"^(8\d{11}|0\d{9})$")
SIRET = re.compile(r"^\d{14}$")
TRUE, FALSE = {"true", "1", "oui", "yes", "o", "y"}, {"false", "0", "non", "no", "n"}


def _flag(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise ValueError(f"not a yes/no value: {value!r}")


class ParticipationReader:
    def __init__(self, path: Path, report: ImportReport, known_vendors: set[str], chunk_size: int = 5000) -> None:
        self.path, self.report, self.known_vendors, self.chunk_size = path, report, known_vendors, chunk_size
        report.summary.format = "participations-csv"

    def chunks(self) -> Iterator[list[Participation]]:
        with open_binary(self.path) as fh:
            first = fh.readline()
            if not first.strip():
                raise FileRejected(f"{self.path.name}: the file is empty", "expected a header idnps,vendors,...")
            first = first[len(BOM) :] if first.startswith(BOM) else first
            try:
                header_text = first.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise FileRejected(
                    f"{self.path.name}: the header is not UTF-8 ({describe_bad_bytes(first, exc)})",
                    "re-encode the file as UTF-8",
                ) from exc
            delimiter = ";" if header_text.count(";") > header_text.count(",") else ","
            try:
                header = [h.strip().lower() for h in split_row(header_text, delimiter)]
            except ValueError as exc:
                raise FileRejected(
                    f"{self.path.name}: the header cannot be read ({exc})", "expected a header idnps,vendors,..."
                ) from exc
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise FileRejected(
                    f"{self.path.name}: header is missing column(s) {', '.join(missing)}",
                    f"expected columns {', '.join(REQUIRED + OPTIONAL)}",
                )
            index = {name: i for i, name in enumerate(header)}
            seen: dict[str, int] = {}
            chunk: list[Participation] = []
            for no, raw, _ in numbered_lines(fh):
                self.report.line_read()
                if not raw.strip():
                    self.report.reject(no, "blank line")
                    continue
                try:
                    row = split_row(raw.decode("utf-8"), delimiter)
                except UnicodeDecodeError as exc:
                    self.report.reject(no, "not UTF-8", describe_bad_bytes(raw, exc))
                    continue
                except ValueError as exc:
                    self.report.reject(no, "unreadable line", str(exc))
                    continue
                participation = self._row(no, row, index)
                if participation is None:
                    continue
                if participation.idnps in seen:
                    self.report.reject(no, "duplicate participant", f"first on line {seen[participation.idnps]}")
                    continue
                seen[participation.idnps] = no
                self.report.accept()
                chunk.append(participation)
                if len(chunk) >= self.chunk_size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

    def _row(self, no: int, row: list[str], index: dict[str, int]) -> Participation | None:
        def get(name: str) -> str | None:
            i = index.get(name)
            return row[i].strip() if i is not None and i < len(row) else None

        if len(row) < len(index):
            self.report.reject(no, "wrong number of fields", f"expected {len(index)}, found {len(row)}")
            return None
        idnps, siret = get("idnps") or "", get("siret") or ""
        if idnps and siret:
            why = "a practitioner by IDNPS or an SOS association by SIRET, not both"
            self.report.reject(no, "IDNPS and SIRET", why)
            return None
        if siret:
            if not SIRET.match(siret):
                self.report.reject(no, "invalid SIRET", f"{siret!r}: expected 14 digits")
                return None
            if (get("via") or "sos").lower() != "sos":
                self.report.reject(no, "association not via SOS", "an association by SIRET takes part as SOS Médecins")
                return None
            idnps = association_idnst(siret)
        elif not IDNPS.match(idnps):
            self.report.reject(no, "invalid IDNPS", f"{idnps!r}: expected 8+11 digits (RPPS) or 0+9 digits (ADELI)")
            return None
        vendors = [v.strip() for v in (get("vendors") or "").split("|") if v.strip()]
        if not vendors:
            self.report.reject(no, "no vendor", idnps)
            return None
        unknown = [v for v in vendors if v not in self.known_vendors]
        if unknown:
            self.report.reject(no, "unknown vendor", f"{', '.join(unknown)} (declare it with `dispo vendors add`)")
            return None
        via = (get("via") or ("sos" if siret else "practice")).lower()
        if via not in ParticipationVia.__members__:
            self.report.reject(no, "unknown participation mode", f"{via!r}: practice, cpts, msp or sos")
            return None
        try:
            extra = _flag(get("extra_patients"), False)
            er_redirection = _flag(get("er_redirection"), False)
            active = _flag(get("active"), True)
        except ValueError as exc:
            self.report.reject(no, "invalid yes/no value", str(exc))
            return None
        cpts = get("cpts") or None
        if cpts is not None:
            if siret:
                self.report.reject(no, "association in a CPTS", "an SOS Médecins association belongs to no CPTS")
                return None
            try:
                cpts = cpts_idnst(cpts)
            except ValueError as exc:
                self.report.reject(no, "invalid CPTS", str(exc))
                return None
        return Participation(
            idnps=idnps,
            vendors=vendors,
            via=ParticipationVia(via),
            extra_patients=extra,
            active=active,
            cpts=cpts,
            er_redirection=er_redirection,
        )
