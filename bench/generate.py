"""Deterministic national-scale data in the real formats, for the demo, the tests and the benchmarks.

Model (documented sources, all shipped in the project):
- Department population = ANCT inhabitants per km² x the department's area (`analytics.areas`, the
  agency's own tables); liberal general practitioners = ANCT GPs per 100,000 inhabitants x population.
  Mayotte, without published values, uses 60 GPs / 100,000 and 320,000 inhabitants.
- Everybody else of the Personne_activite file in proportion to liberal GPs, with the orders of
  magnitude of the RPPS/ADELI registers (DREES 2023, rounded): other doctors (specialists and salaried
  GPs) x3.3 with the specialty mix below, nurses x12.3, physiotherapists x1.9, pharmacists x1.4, dentists
  x0.9, midwives x0.45, ADELI professions (opticians, speech therapists, psychomotor therapists,
  radiographers, podiatrists...) x3.4; a liberal (L), salaried (S) or voluntary (B) mode per profession.
  About 1.3 million people nationally.
- Activities: 9 % of people have no structure (one line without a site); 30 % of the others practise at
  a second site and 10 % at a third, each site a line of its own, so ~2 million lines nationally.
- Sites on the real communes of the department (La Poste base), weighted by population where known
  (communes over 20,000 inhabitants) and uniformly over the others: cities dense, countryside sparse.
- Dirty lines, 1 in 2,000, of the kinds the importer reports: truncated lines, an identifier that is
  not one, a missing name, an exact duplicate of the previous line. Their counts are returned.
- Participation: 65 % of GPs with a site and 25 % of liberal specialists with a site take part (60,000
  nationally), spread over vendors of unequal size (Zipf).
- FINESS: establishments in proportion to population (~100,000 nationally) over the communes, in the
  etalab stock format (`structureet` then `geolocalisation` lines), coordinates projected in each
  territory's system (Lambert-93, UTM 20N/22N/40S/38S); 1 % without geolocalisation.
The real sample lines are written first, so real and generated records share every code path.
"""

from __future__ import annotations

import contextlib
import csv
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from analytics.areas import departments as known
from core.geo import department_of_insee, gazetteer, haversine_km

SCALES = {"department": ["01"], "region": ["01", "03", "07", "15", "26", "38", "42", "43", "63", "69", "73", "74"]}
# (profession code, label, id type, people per liberal GP, share liberal); ADELI professions have id type 0.
OTHER_PEOPLE = [
    ("10", "Médecin", "8", 3.3, 0.5),
    ("60", "Infirmier", "8", 12.3, 0.15),
    ("70", "Masseur-Kinésithérapeute", "8", 1.9, 0.8),
    ("21", "Pharmacien", "8", 1.4, 0.35),
    ("40", "Chirurgien-Dentiste", "8", 0.9, 0.9),
    ("50", "Sage-Femme", "8", 0.45, 0.3),
    ("28", "Opticien-Lunetier", "0", 0.75, 0.3),
    ("91", "Orthophoniste", "0", 0.55, 0.8),
    ("96", "Psychomotricien", "0", 0.3, 0.4),
    ("80", "Pédicure-Podologue", "0", 0.3, 0.9),
    ("98", "Manipulateur ERM", "0", 0.8, 0.05),
    ("94", "Ergothérapeute", "0", 0.3, 0.2),
    ("86", "Diététicien", "0", 0.25, 0.4),
    ("95", "Orthoptiste", "0", 0.15, 0.5),
]
# Specialties of the "other doctors" (weights ~ DREES counts); nuclear medicine (SM28) is left out on
# purpose so that the tests have a specialty nobody practises.
SPECIALTIES = [
    ("SM26", "Qualifié en Médecine Générale", 30),
    ("SM42", "Psychiatrie", 9),
    ("SM02", "Anesthésie-réanimation", 7),
    ("SM44", "Radio-diagnostic", 5.5),
    ("SM40", "Pédiatrie", 5),
    ("SM04", "Cardiologie et Maladies vasculaires", 4.5),
    ("SM38", "Ophtalmologie", 3.5),
    ("SM20", "Gynécologie-obstétrique", 3.5),
    ("SM25", "Médecine du travail", 3),
    ("SM15", "Dermatologie et Vénéréologie", 2.4),
    ("SM24", "Gastro-entérologie et Hépatologie", 2.4),
    ("SM08", "Chirurgie orthopédique et Traumatologie", 2.2),
    ("SM41", "Pneumologie", 2),
    ("SM32", "Neurologie", 1.8),
    ("SM34", "ORL et Chirurgie cervico-faciale", 1.8),
    ("SM59", "Médecine d'urgence", 1.8),
    ("SM48", "Rhumatologie", 1.6),
    ("SM27", "Médecine interne", 1.6),
    ("SM03", "Biologie médicale", 1.8),
    ("SM19", "Gynécologie médicale", 1),
    ("SM62", "Endocrinologie diabétologie nutrition", 1.2),
    ("SM30", "Néphrologie", 1.1),
    ("SM18", "Gériatrie", 1.2),
    ("SM12", "Chirurgie urologique", 0.8),
]
MODE_LABELS = {"L": "Libéral", "S": "Salarié", "B": "Bénévole"}
DIRTY_EVERY = 2000  # one dirty line in this many
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
FALLBACK = {"976": (60.0, 320_000)}  # GPs per 100,000, inhabitants: Mayotte has no published figure


@dataclass(frozen=True)
class Department:
    code: str
    gps: int
    population: int


def departments(codes: list[str] | None) -> list[Department]:

    density: dict[str, float] = {}
    with (resources.files("core") / "data" / "anct_gp_density_by_department_2020.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            with contextlib.suppress(ValueError):
                density[row["codgeo"]] = float(row["dens_nb_medg_per_100k"])
    out = []
    for code, dep in known().items():
        if codes is not None and code not in codes:
            continue
        per_100k, population = density.get(code) or FALLBACK.get(code, (60.0, 0))[0], dep.population
        if not population or not per_100k:
            per_100k, population = FALLBACK.get(code, (60.0, 100_000))
        out.append(Department(code, max(1, round(per_100k * population / 100_000)), population))
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


@dataclass
class Generated:
    lines: int = 0
    people: int = 0
    gps: int = 0
    departments: int = 0
    dirty: Counter[str] | None = None
    gp_ids: list[str] | None = None  # GPs with a site
    specialist_ids: list[str] | None = None  # liberal specialists with a site


def _dirty(line: str, kind: str, header: list[str]) -> str:
    """A copy of a good line broken the way real extracts are."""
    fields = line.split("|")
    if kind == "wrong number of fields":
        return "|".join(fields[: len(header) // 2]) + "|"
    if kind == "invalid identifier":
        fields[1], fields[2] = "ABC", fields[0] + "ABC"  # Identifiant PP, Identification nationale PP
    elif kind == "missing name":
        fields[7] = ""  # Nom d'exercice
    return "|".join(fields)


def generate_rpps(
    out: Path, scale: str = "department", seed: int = 0, sample: Path | None = None, only: list[str] | None = None
) -> Generated:
    """Write a PS_LibreAcces_Personne_activite file; returns what was written, dirty lines by reason."""
    rng = random.Random(seed)
    codes = only or SCALES.get(scale)  # None = every department (national)
    sample = sample or SAMPLE
    sample_lines = sample.read_text(encoding="utf-8").splitlines()
    header_line = sample_lines[0]
    header = header_line.split("|")[:-1]
    weights = _commune_weights()
    gaz = gazetteer()
    done = Generated(dirty=Counter(), gp_ids=[], specialist_ids=[])
    dirty_kinds = ["wrong number of fields", "invalid identifier", "missing name", "duplicate line"]
    sp_codes = [(c, lbl) for c, lbl, _ in SPECIALTIES]
    sp_weights = [w for _, _, w in SPECIALTIES]
    rpps_next, adeli_next, siret_next = 10_000_000_000 + seed * 1_000_000_000 % 9_000_000_000, 100_000_000, 0
    with out.open("w", encoding="utf-8") as fh:
        fh.write(header_line + "\n")
        for line in sample_lines[1:]:
            fh.write(line + "\n")
            done.lines += 1
        for dep in departments(codes):
            communes = weights.get(dep.code) or []
            if not communes:
                continue
            done.departments += 1
            insees = [c for c, _ in communes]
            cum = [w for _, w in communes]
            people: list[tuple[str, str, str, float]] = [("10", "Médecin", "8", 1.0)] * dep.gps
            for code, label, id_type, per_gp, liberal in OTHER_PEOPLE:
                people += [(code, label, id_type, liberal)] * round(dep.gps * per_gp)
            done.gps += dep.gps
            for i, (code, label, id_type, liberal) in enumerate(people):
                is_gp = i < dep.gps
                if id_type == "8":
                    pp_id, rpps_next = f"{rpps_next:011d}", rpps_next + 1
                else:
                    # ADELI numbers are digits, the department first (Corsica's 2A/2B number as 20).
                    prefix = "20" if dep.code in ("2A", "2B") else dep.code[:2]
                    pp_id, adeli_next = f"{prefix}{adeli_next % 10_000_000:07d}", adeli_next + 1
                mode = "L" if rng.random() < liberal else ("B" if rng.random() < 0.02 else "S")
                sp, sp_label = ("SM54", "Médecine générale") if is_gp else (None, None)
                if code == "10" and not is_gp:
                    sp, sp_label = rng.choices(sp_codes, weights=sp_weights)[0]
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
                    "Libellé mode exercice": MODE_LABELS[mode],
                }
                done.people += 1
                draw = rng.random()
                n_sites = 0 if draw < 0.09 else (3 if draw > 0.9 else (2 if draw > 0.6 else 1))
                if is_gp and n_sites:
                    done.gp_ids.append(id_type + pp_id)
                elif code == "10" and mode == "L" and n_sites:
                    done.specialist_ids.append(id_type + pp_id)
                lines = []
                if n_sites == 0:
                    lines.append(_line(person, header))
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
                    lines.append(_line({**person, **site}, header))
                for line in lines:
                    fh.write(line + "\n")
                    done.lines += 1
                    if rng.randrange(DIRTY_EVERY) == 0:
                        kind = rng.choice(dirty_kinds)
                        fh.write((line if kind == "duplicate line" else _dirty(line, kind, header)) + "\n")
                        done.lines += 1
                        done.dirty[kind] += 1
    return done


@dataclass
class Mutation:
    """What `mutate_rpps` changed: the change report an import of the new file after the old one must give."""

    added: set[str]  # IDNPS of practitioners new to the register
    removed: set[str]
    moved: dict[str, float]  # site id -> distance between the two communes' centres (km)
    specialties: dict[str, tuple[str, str]]  # IDNPS -> (savoir-faire before, after)


def mutate_rpps(
    src: Path,
    dst: Path,
    seed: int = 0,
    added: int = 5,
    removed: int = 5,
    moved: int = 5,
    specialties: int = 5,
    among: set[str] | frozenset[str] = frozenset(),
) -> Mutation:
    """The next extraction of a generated RPPS file: some practitioners added (copies of others under new RPPS
    numbers), some removed, some sites moved to another commune of their department more than 5 km away, some
    specialties changed; each set drawn among distinct practitioners, half the removed and moved ones `among` these
    (the participants, whose changes the SAS must hear of). Lines that do not read stay as they were."""
    rng = random.Random(seed)
    lines = src.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("|")[:-1]
    col = {name: i for i, name in enumerate(header)}
    by_person: dict[str, list[int]] = defaultdict(list)
    for no, line in enumerate(lines[1:], start=1):
        fields = line.split("|")
        if len(fields) == len(header) + 1 and fields[col["Nom d'exercice"]] and fields[col["Identifiant PP"]].isdigit():
            by_person[fields[col["Identification nationale PP"]]].append(no)
    people = sorted(by_person)
    rng.shuffle(people)
    gaz = gazetteer()

    def field(no: int, name: str) -> str:
        return lines[no].split("|")[col[name]]

    def single_site(idnps: str) -> bool:
        (no,) = by_person[idnps] if len(by_person[idnps]) == 1 else (None,)
        return no is not None and bool(field(no, "Numéro SIRET site")) and not field(no, "Numéro FINESS site")

    def half_among(candidates: list[str], n: int) -> list[str]:
        inside = [p for p in candidates if p in among][: (n + 1) // 2 if among else 0]
        return inside + [p for p in candidates if p not in among][: n - len(inside)]

    commune = "Code commune (coord. structure)"
    movable = [p for p in people if single_site(p) and field(by_person[p][0], commune) in gaz.communes]
    chosen_moves = half_among(movable, moved)
    rest = [p for p in people if p not in set(chosen_moves)]
    gone = half_among(rest, removed)
    rest = [p for p in rest if p not in set(gone)]
    changed = [p for p in rest if field(by_person[p][0], "Code savoir-faire")][:specialties]
    copied = [p for p in rest if p.startswith("8") and p not in set(changed)][:added]

    out = Mutation(set(), set(gone), {}, {})
    for idnps in chosen_moves:
        (no,) = by_person[idnps]
        fields = lines[no].split("|")
        here = gaz.communes[fields[col["Code commune (coord. structure)"]]]
        far = [
            c
            for c in gaz.communes.values()
            if c.department == here.department and c.postcodes and haversine_km(here.lat, here.lon, c.lat, c.lon) > 5
        ]
        there = rng.choice(sorted(far, key=lambda c: c.insee))
        fields[col["Code commune (coord. structure)"]] = there.insee
        fields[col["Code postal (coord. structure)"]] = there.postcodes[0]
        fields[col["Libellé commune (coord. structure)"]] = there.name.title()
        fields[col["Bureau cedex (coord. structure)"]] = f"{there.postcodes[0]} {there.name}"
        lines[no] = "|".join(fields)
        site_id = f"{idnps}:C{fields[col['Numéro SIRET site']]}:{fields[col['Code mode exercice']] or '-'}"
        out.moved[site_id] = round(haversine_km(here.lat, here.lon, there.lat, there.lon), 3)
    codes = sorted({c for c, _, _ in SPECIALTIES})
    for idnps in changed:
        before = field(by_person[idnps][0], "Code savoir-faire")
        after = next(c for c in codes[rng.randrange(len(codes)) :] + codes if c != before)
        for no in by_person[idnps]:
            fields = lines[no].split("|")
            fields[col["Code savoir-faire"]] = after
            fields[col["Libellé savoir-faire"]] = dict((c, lbl) for c, lbl, _ in SPECIALTIES)[after]
            lines[no] = "|".join(fields)
        out.specialties[idnps] = (before, after)
    extra = []
    for n, idnps in enumerate(copied):
        pp_id = f"99{seed % 100:02d}{n:07d}"
        out.added.add("8" + pp_id)
        for no in by_person[idnps]:
            fields = lines[no].split("|")
            fields[col["Identifiant PP"]], fields[col["Identification nationale PP"]] = pp_id, "8" + pp_id
            extra.append("|".join(fields))
    dropped = {no for idnps in gone for no in by_person[idnps]}
    kept = [line for no, line in enumerate(lines) if no not in dropped]
    dst.write_text("\n".join(kept + extra) + "\n", encoding="utf-8")
    return out


def participation_rows(
    gps: list[str],
    specialists: list[str],
    vendors: list[str],
    seed: int = 0,
    gp_share: float = 0.65,
    specialist_share: float = 0.25,
) -> Iterator[dict[str, str]]:
    """A share of GPs and liberal specialists, each with one vendor; vendor sizes follow Zipf (1, 1/2...)."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(vendors))]
    chosen = [i for i in gps if rng.random() < gp_share] + [i for i in specialists if rng.random() < specialist_share]
    for i in sorted(chosen):
        via = rng.choices(["practice", "cpts", "msp", "sos"], weights=[75, 15, 8, 2])[0]
        yield {
            "idnps": i,
            "vendors": rng.choices(vendors, weights=weights)[0],
            "via": via,
            "extra_patients": "oui" if rng.random() < 0.2 else "non",
            "active": "oui",
        }


# FINESS: categories of establishments (code, label, aggregate code, aggregate label, weight per 100,000
# inhabitants) and the coordinate system each territory's geolocalisation uses.
CATEGORIES = [
    ("620", "Pharmacie d'Officine", "3401", "Pharmacies d'Officine", 31.0),
    ("500", "Etablissement d'hébergement pour personnes âgées dépendantes", "4401", "EHPAD", 11.0),
    ("611", "Laboratoire d'Analyses Médicales", "3201", "Laboratoires de Biologie Médicale", 6.0),
    ("124", "Centre de Santé", "1301", "Centres de Santé", 4.0),
    ("603", "Maison de santé (L.6223-3)", "1302", "Maisons de Santé", 3.0),
    ("223", "Protection Maternelle et Infantile (P.M.I.)", "2202", "Etablissements de PMI", 7.0),
    ("355", "Centre Hospitalier (C.H.)", "1102", "Centres Hospitaliers", 1.5),
    ("365", "Etablissement de Soins Pluridisciplinaire", "1106", "Etablissements de soins", 1.5),
    ("460", "Service d'aide et d'accompagnement à domicile", "4602", "Services à domicile", 10.0),
    ("390", "Etablissement pour enfants ou adolescents handicapés", "4302", "Enfance handicapée", 12.0),
    ("182", "Service de Soins Infirmiers A Domicile (S.S.I.A.D)", "4601", "SSIAD", 8.0),
    ("430", "Centre Médico-Psychologique (C.M.P.)", "2206", "Psychiatrie ambulatoire", 4.5),
    ("252", "Foyer de Vie pour Adultes Handicapés", "4301", "Adultes handicapés", 14.0),
    ("246", "Etablissement et Service d'Aide par le Travail (E.S.A.T.)", "4303", "Travail protégé", 5.0),
    ("214", "Centre d'Hébergement et de Réinsertion Sociale (C.H.R.S.)", "4501", "Hébergement social", 5.0),
    ("228", "Centre de Planification ou d'Education Familiale", "2204", "Planification familiale", 2.5),
    ("165", "Appartement de Coordination Thérapeutique (A.C.T.)", "4701", "Soins résidentiels", 4.0),
    ("698", "Autre Etablissement Loisirs Social", "4699", "Autres établissements sociaux", 17.5),
]
SYSTEMS = {
    "971": (5490, "2,ATLASANTE,96,BAN,EPSG:5490 RGAF09/UTM Zone 20N (Antilles)"),
    "972": (5490, "2,ATLASANTE,96,BAN,EPSG:5490 RGAF09/UTM Zone 20N (Antilles)"),
    "973": (2972, "3,ATLASANTE,96,BAN,EPSG:2972 RGFG95 / UTM zone 22N (Guyane)"),
    "974": (2975, "4,ATLASANTE,96,BAN,EPSG:2975 RGR92 / UTM zone 40S (Réunion)"),
    "976": (4471, "6,ATLASANTE,96,BAN,EPSG:4471 RGM04 / UTM zone 38S (Mayotte)"),
}
LAMBERT = (2154, "1,ATLASANTE,96,BAN,EPSG:2154 RGF93 / Lambert-93 (Métropole)")
FINESS_DEPARTMENT = {"971": "9A", "972": "9B", "973": "9C", "974": "9D", "976": "9F"}


def generate_finess(out: Path, scale: str = "department", seed: int = 0) -> dict[str, int]:
    """Write an etalab FINESS stock file (structureet then geolocalisation records); returns counts."""
    from pyproj import Transformer

    rng = random.Random(seed + 101)
    codes = SCALES.get(scale)
    weights = _commune_weights()
    gaz = gazetteer()
    transformers: dict[int, Transformer] = {}
    counts = Counter()
    total_weight = sum(c[4] for c in CATEGORIES)
    geos: list[str] = []
    with out.open("w", encoding="utf-8") as fh:
        fh.write("finess;etalab;111;2026-11-26\n")
        serial = 0
        for dep in departments(codes):
            communes = weights.get(dep.code) or []
            if not communes:
                continue
            insees, cum = [c for c, _ in communes], [w for _, w in communes]
            n = max(1, round(dep.population * total_weight / 100_000))
            epsg, source = SYSTEMS.get(dep.code, LAMBERT)
            transformer = transformers.setdefault(
                epsg, Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
            )
            fdep = FINESS_DEPARTMENT.get(dep.code, dep.code)
            for _ in range(n):
                serial += 1
                category = rng.choices(CATEGORIES, weights=[c[4] for c in CATEGORIES])[0]
                insee = rng.choices(insees, weights=cum)[0]
                commune = gaz.communes[insee]
                finess = f"{fdep[:2]}{serial % 10_000_000:07d}"
                legal = f"{fdep[:2]}{(serial + 5_000_000) % 10_000_000:07d}"
                postcode = commune.postcodes[0] if commune.postcodes else ""
                name = f"{category[1].upper()[:30]} {commune.name}"[:60]
                stype, _ = rng.choice(STREET_TYPES)
                row = [
                    "structureet",
                    finess,
                    legal,
                    name[:38],
                    name,
                    "",
                    "",
                    str(rng.randint(1, 90)),
                    stype,
                    rng.choice(STREETS),
                    "",
                    "",
                    insee[-3:],
                    fdep,
                    "",
                    f"{postcode} {commune.name}",
                    f"0{rng.randint(100000000, 599999999)}",
                    "",
                    category[0],
                    category[1],
                    category[2],
                    category[3],
                    f"{rng.randint(10**13, 10**14 - 1)}",
                    "",
                    "01",
                    "Tarif libre",
                    "",
                    "",
                    "2001-01-01",
                    "2001-01-01",
                    "2026-01-15",
                ]
                fh.write(";".join(row) + ";\n")
                counts["establishments"] += 1
                if rng.random() < 0.01:
                    counts["without geolocalisation"] += 1
                    continue
                # Within ~1 km of the commune centroid: establishments are in town, not in the fields.
                lat = commune.lat + rng.uniform(-0.008, 0.008)
                lon = commune.lon + rng.uniform(-0.011, 0.011)
                x, y = transformer.transform(lon, lat)
                geos.append(f"geolocalisation;{finess};{x:.1f};{y:.1f};{source};2026-11-20")
        for line in geos:
            fh.write(line + "\n")
            counts["geolocalisations"] += 1
        # One orphan geolocalisation, as real extracts have: the importer rejects it and says why.
        fh.write(f"geolocalisation;019999999;870262.2;6571540.8;{LAMBERT[1]};2026-11-20\n")
        counts["orphan geolocalisations"] += 1
    return dict(counts)


def generate(
    out_dir: Path,
    scale: str = "department",
    seed: int = 0,
    n_vendors: int = 3,
    sample: Path | None = None,
    finess: bool = False,
) -> dict[str, object]:
    """The RPPS file, the participation CSV (and with `finess`, a FINESS stock file) of a scale."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rpps = out_dir / f"PS_LibreAcces_Personne_activite_{scale}_{seed}.txt"
    done = generate_rpps(rpps, scale, seed, sample)
    vendors = [f"sandbox-{chr(ord('a') + i)}" if i < 26 else f"sandbox-{i}" for i in range(n_vendors)]
    participations = out_dir / f"participations_{scale}_{seed}.csv"
    with participations.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["idnps", "vendors", "via", "extra_patients", "active"])
        writer.writeheader()
        n = 0
        for row in participation_rows(done.gp_ids or [], done.specialist_ids or [], vendors, seed):
            writer.writerow(row)
            n += 1
    written: dict[str, object] = {
        "rpps": rpps,
        "participations": participations,
        "lines": done.lines,
        "people": done.people,
        "gps": done.gps,
        "dirty": dict(done.dirty or {}),
        "participants": n,
        "vendors": vendors,
    }
    if finess:
        path = out_dir / f"etalab-cs1100507-stock-{scale}-{seed}.csv"
        written["finess"] = path
        written["finess_counts"] = generate_finess(path, scale, seed)
    return written
