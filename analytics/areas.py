"""The areas coverage is counted in: departments, SAS territories and communes, with their population.

Department population = ANCT inhabitants per km² (2020) x the department's area in the agency's radius
table (2025), the two tables the agency itself sizes its radii from. The radius table has no area for
the overseas departments: their land areas (INSEE) are given below. Mayotte has no ANCT density, so no
population here: its rates per 10,000 inhabitants are left empty rather than guessed. The radius table
writes Corsica's departments 20A and 20B; everything else in Dispo says 2A and 2B.
Territories come from the radius table's `territory name` (one per department in 2025).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from core.geo import department_of_insee, gazetteer, radius_code

OVERSEAS_AREA_KM2 = {"971": 1628.0, "972": 1128.0, "973": 83534.0, "974": 2512.0, "976": 374.0}


@dataclass(frozen=True)
class Department:
    code: str
    name: str
    region: str | None
    territory: str
    population: int | None
    area_km2: float | None


@cache
def departments() -> dict[str, Department]:
    data = resources.files("core") / "data"
    radius: dict[str, dict[str, str]] = {}
    with (data / "sas_search_radius_2025.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            radius[radius_code(row["code"])] = row
    out: dict[str, Department] = {}
    with (data / "anct_gp_density_by_department_2020.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            code = row["codgeo"]
            table = radius.get(code, {})
            area = float(table.get("area") or 0) or OVERSEAS_AREA_KM2.get(code)
            try:
                density = float(row["dens_pop_per_km2"])
            except ValueError:
                density = None
            population = round(density * area) if density and area else None
            out[code] = Department(
                code,
                row["libgeo"],
                table.get("region") or None,
                "SAS-" + radius_code((table.get("territory name") or code).removeprefix("SAS-")),
                population,
                area,
            )
    return out


def department(code: str | None) -> Department | None:
    return departments().get(code or "")


def territory_of(department_code: str | None) -> str | None:
    if not department_code:
        return None
    found = departments().get(department_code)
    return found.territory if found else f"SAS-{department_code}"


@cache
def territories() -> dict[str, list[Department]]:
    """Territory -> its departments."""
    out: dict[str, list[Department]] = {}
    for dep in departments().values():
        out.setdefault(dep.territory, []).append(dep)
    return out


def territory_population(territory: str) -> int | None:
    """Sum of its departments' populations; unknown if any of them is unknown."""
    pops = [d.population for d in territories().get(territory, [])]
    return sum(p for p in pops if p is not None) if pops and all(p is not None for p in pops) else None


def commune_of(insee: str | None, lat: float | None, lon: float | None) -> tuple[str | None, str | None]:
    """(INSEE code, department) of a place: its commune code when known, else the nearest commune's."""
    if insee:
        return insee, department_of_insee(insee)
    if lat is None or lon is None:
        return None, None
    nearest = gazetteer().nearest_commune(lat, lon)
    return (nearest.insee, nearest.department) if nearest else (None, None)


def commune_name(insee: str) -> str | None:
    commune = gazetteer().commune(insee)
    return commune.name if commune else None
