"""Deterministic national-scale data in the real formats, for the demo, the tests and the benchmarks.

Model (documented sources, all shipped in the project):
- Department population = ANCT inhabitants per km² x the department's area from the agency's radius
  table; liberal general practitioners = ANCT GPs per 100,000 inhabitants x population. Mayotte and
  Guyane, without published values, use 60 GPs / 100,000 and the population given below.
- Other people of the Personne_activite file in proportion to GPs, with the national shares of the
  RPPS/ADELI registers (order of magnitude): other doctors x1.3, nurses x3.5, physiotherapists x1.1,
  pharmacists x1.0, dentists x0.6, midwives x0.35, other ADELI professions x1.6.
- Practice sites on the real communes of the department (La Poste base), weighted by population where
  known (communes over 20,000 inhabitants) and uniformly over the others, so cities are dense and the
  countryside sparse. 9 % of lines have no structure; 6 % of doctors practise at a second site.
- Participation: a share of GPs (60 %) takes part, spread over vendors of unequal size (Zipf).
The real sample lines are written first, so real and generated records share every code path.
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dispo.geo import department_of_insee, gazetteer

SCALES = {"department": ["01"], "region": ["01", "03", "07", "15", "26", "38", "42", "43", "63", "69", "73", "74"]}
OTHER_PEOPLE = [  # (profession code, label, id type, share per GP, specialty code, specialty label, mode)
    ("10", "Médecin", "8", 1.3, "SM26", "Qualifié en Médecine Générale", "L"),
    ("60", "Infirmier", "0", 3.5, None, None, "L"),
    ("70", "Masseur-Kinésithérapeute", "8", 1.1, None, None, "L"),
    ("21", "Pharmacien", "8", 1.0, None, None, "S"),
    ("40", "Chirurgien-Dentiste", "8", 0.6, None, None, "L"),
    ("50", "Sage-Femme", "8", 0.35, None, None, "L"),
    ("28", "Opticien-Lunetier", "0", 0.8, None, None, "S"),
    ("96", "Psychomotricien", "0", 0.8, None, None, "S"),
]
STREETS = [
    "DE LA REPUBLIQUE",
    "DU GENERAL DE GAULLE",
    "JEAN JAURES",
    "VICTOR HUGO",
    "PASTEUR",
    "DE LA GARE",
    "DES ECOLES",
    "DU MARCHE",
    "NATIONALE",
    "DE L EGLISE",
    "DES TILLEULS",
    "GAMBETTA",
]
STREET_TYPES = [("R", "Rue"), ("AV", "Avenue"), ("BD", "Boulevard"), ("PL", "Place"), ("CHE", "Chemin")]
LAST = [
    "MARTIN",
    "BERNARD",
    "THOMAS",
    "PETIT",
    "ROBERT",
    "RICHARD",
    "DURAND",
    "DUBOIS",
    "MOREAU",
    "LAURENT",
    "SIMON",
    "MICHEL",
    "LEFÈVRE",
    "LEROY",
    "ROUX",
    "DAVID",
    "BERTRAND",
    "MOREL",
    "FOURNIER",
    "GIRARD",
    "BONNET",
    "DUPONT",
    "LAMBERT",
    "FONTAINE",
    "ROUSSEAU",
    "VINCENT",
    "MÜLLER",
    "FAURE",
    "ANDRÉ",
    "MERCIER",
]
FIRST = [
    "Marie",
    "Jean",
    "Anaïs",
    "Pierre",
    "Hélène",
    "Louis",
    "Camille",
    "Éloïse",
    "Thomas",
    "Léa",
    "Nicolas",
    "Zoé",
    "François",
    "Inès",
    "Julien",
    "Chloé",
]
# The real sample shipped with the project: its header is the format's, its lines go first.
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "samples" / "PS_LibreAcces_Personne_activite_sample.txt"
FALLBACK_DENSITY = {"976": (60.0, 320_000), "973": (60.0, 290_000)}


@dataclass(frozen=True)
class Department:
    code: str
    gps: int


def departments(codes: list[str] | None) -> list[Department]:
    data = resources.files("dispo") / "data"
    area = {}
    with (data / "sas_search_radius_2025.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            area[row["code"]] = float(row["area"])
    out = []
    with (data / "anct_gp_density_by_department_2020.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            code = row["codgeo"]
            if codes is not None and code not in codes:
                continue
            try:
                per_100k, per_km2 = float(row["dens_nb_medg_per_100k"]), float(row["dens_pop_per_km2"])
                population = per_km2 * area.get(code, 0.0)
            except ValueError:
                per_100k, population = FALLBACK_DENSITY.get(code, (60.0, 100_000))
            out.append(Department(code, max(1, round(per_100k * population / 100_000))))
    return out


def _commune_weights() -> dict[str, list[tuple[str, float]]]:
    big: dict[str, int] = {}
    with (resources.files("bench") / "data" / "communes_france_2025_over20k.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            big[row["code_insee"]] = int(float(row["population"]))
    by_dep: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for commune in gazetteer().communes.values():
        by_dep[commune.department].append((commune.insee, float(big.get(commune.insee, 1500))))
    return by_dep


def _line(fields: dict[str, str], header: list[str]) -> str:
    return "|".join(fields.get(name, "") for name in header) + "|"


def generate_rpps(
    out: Path, scale: str = "department", seed: int = 0, sample: Path | None = None, only: list[str] | None = None
) -> dict[str, int]:
    """Write a PS_LibreAcces_Personne_activite file; returns counts (lines, GPs, departments)."""
    rng = random.Random(seed)
    codes = only or SCALES.get(scale)  # None = every department (national)
    sample = sample or SAMPLE
    sample_lines = sample.read_text(encoding="utf-8").splitlines()
    header_line = sample_lines[0]
    header = header_line.split("|")[:-1]
    weights = _commune_weights()
    gaz = gazetteer()
    counts = {"lines": 0, "gps": 0, "departments": 0}
    rpps_next, adeli_next, siret_next = 10_000_000_000 + seed * 1_000_000_000 % 9_000_000_000, 100_000_000, 0
    with out.open("w", encoding="utf-8") as fh:
        fh.write(header_line + "\n")
        for line in sample_lines[1:]:
            fh.write(line + "\n")
            counts["lines"] += 1
        for dep in departments(codes):
            communes = weights.get(dep.code) or []
            if not communes:
                continue
            counts["departments"] += 1
            insees = [c for c, _ in communes]
            cum = [w for _, w in communes]
            people: list[tuple[str, str, str, str | None, str | None, str]] = [
                ("10", "Médecin", "8", "SM54", "Médecine générale", "L")
            ] * dep.gps
            for code, label, id_type, share, sp, sp_label, mode in OTHER_PEOPLE:
                people += [(code, label, id_type, sp, sp_label, mode)] * round(dep.gps * share)
            counts["gps"] += dep.gps
            for code, label, id_type, sp, sp_label, mode in people:
                if id_type == "8":
                    pp_id, rpps_next = f"{rpps_next:011d}", rpps_next + 1
                else:
                    pp_id, adeli_next = f"{dep.code[:2]}{adeli_next % 10_000_000:07d}", adeli_next + 1
                person = {
                    "Type d'identifiant PP": id_type,
                    "Identifiant PP": pp_id,
                    "Identification nationale PP": id_type + pp_id,
                    "Code civilité d'exercice": "DR" if code == "10" else "",
                    "Libellé civilité d'exercice": "Docteur" if code == "10" else "",
                    "Nom d'exercice": rng.choice(LAST),
                    "Prénom d'exercice": rng.choice(FIRST),
                    "Code profession": code,
                    "Libellé profession": label,
                    "Code catégorie professionnelle": "C",
                    "Libellé catégorie professionnelle": "Civil",
                    "Code type savoir-faire": "S" if sp else "",
                    "Libellé type savoir-faire": "Spécialité ordinale" if sp else "",
                    "Code savoir-faire": sp or "",
                    "Libellé savoir-faire": sp_label or "",
                    "Code mode exercice": mode,
                    "Libellé mode exercice": "Libéral" if mode == "L" else "Salarié",
                }
                n_sites = 0 if rng.random() < 0.09 else (2 if code == "10" and rng.random() < 0.06 else 1)
                if n_sites == 0:
                    fh.write(_line(person, header) + "\n")
                    counts["lines"] += 1
                    continue
                for _ in range(n_sites):
                    insee = rng.choices(insees, weights=cum)[0]
                    commune = gaz.communes[insee]
                    postcode = commune.postcodes[0] if commune.postcodes else ""
                    siret_next += 1
                    siret = f"{(seed * 7919 + siret_next) % 10**14:014d}"
                    stype, slabel = rng.choice(STREET_TYPES)
                    site = {
                        "Numéro SIRET site": siret,
                        "Identifiant technique de la structure": "C" + siret,
                        "Raison sociale site": "CABINET MEDICAL" if code == "10" else f"CABINET {label.upper()}",
                        "Numéro Voie (coord. structure)": str(rng.randint(1, 120)),
                        "Code type de voie (coord. structure)": stype,
                        "Libellé type de voie (coord. structure)": slabel,
                        "Libellé Voie (coord. structure)": rng.choice(STREETS),
                        "Bureau cedex (coord. structure)": f"{postcode} {commune.name}",
                        "Code postal (coord. structure)": postcode,
                        "Code commune (coord. structure)": insee,
                        "Libellé commune (coord. structure)": commune.name.title(),
                        "Téléphone (coord. structure)": f"0{rng.randint(100000000, 599999999)}",
                        "Code Département (structure)": department_of_insee(insee),
                    }
                    fh.write(_line({**person, **site}, header) + "\n")
                    counts["lines"] += 1
    return counts


def participation_rows(
    idnps: list[str], vendors: list[str], seed: int = 0, share: float = 0.6
) -> Iterator[dict[str, str]]:
    """A share of the given practitioners, each with one vendor; vendor sizes follow Zipf (1, 1/2, 1/3...)."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(vendors))]
    for i in sorted(idnps):
        if rng.random() < share:
            via = rng.choices(["practice", "cpts", "msp", "sos"], weights=[75, 15, 8, 2])[0]
            yield {
                "idnps": i,
                "vendors": rng.choices(vendors, weights=weights)[0],
                "via": via,
                "extra_patients": "oui" if rng.random() < 0.2 else "non",
                "active": "oui",
            }


def generate(
    out_dir: Path, scale: str = "department", seed: int = 0, n_vendors: int = 3, sample: Path | None = None
) -> dict[str, object]:
    """The RPPS file and the participation CSV of a scale, in `out_dir`; returns what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rpps = out_dir / f"PS_LibreAcces_Personne_activite_{scale}_{seed}.txt"
    counts = generate_rpps(rpps, scale, seed, sample)
    gps = []
    with rpps.open(encoding="utf-8") as fh:
        next(fh)
        seen = set()
        for line in fh:
            f = line.split("|")
            if f[15] == "SM54" and f[23] and f[2] not in seen:  # GPs with a practice structure
                seen.add(f[2])
                gps.append(f[2])
    vendors = [f"sandbox-{chr(ord('a') + i)}" for i in range(n_vendors)]
    participations = out_dir / f"participations_{scale}_{seed}.csv"
    with participations.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["idnps", "vendors", "via", "extra_patients", "active"])
        writer.writeheader()
        n = 0
        for row in participation_rows(gps, vendors, seed):
            writer.writerow(row)
            n += 1
    return {
        "rpps": rpps,
        "participations": participations,
        "lines": counts["lines"],
        "gps": counts["gps"],
        "participants": n,
        "vendors": vendors,
    }
