"""How far to search: the agency's radius table by department and the radii a search tries in turn.

The SAS table gives, per department, a city radius, an enlargement step, a county radius and a barycentre;
a search starts at the city radius and enlarges step by step up to the county radius until about five
practitioners have slots.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from core.geo import radius_code

MIN_WITH_SLOTS = 5  # the agency's radii aim at about five practitioners with slots


@dataclass(frozen=True)
class RadiusRule:
    city_km: float
    step_km: float
    county_km: float
    barycentre: tuple[float, float] | None
    source: str  # "sas-2025" or "fallback"


# Departments the agency published no radius for (zeros in the table) or that are missing from it.
# Mayotte is ~40 km across, Guyane's population lives along a 300 km coast: radii sized accordingly.
FALLBACK_RULES = {
    "976": RadiusRule(10, 10, 40, (-12.7806, 45.2279), "fallback"),
    "973": RadiusRule(30, 30, 300, (4.9372, -52.3260), "fallback"),
}
DEFAULT_RULE = RadiusRule(20, 10, 100, None, "fallback")


@cache
def radius_table() -> dict[str, RadiusRule]:
    """The agency's published rules by department code (those with a radius of zero left out)."""
    rules: dict[str, RadiusRule] = {}
    with (resources.files("core") / "data" / "sas_search_radius_2025.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            city, county = float(row["cityDefaultRadius"]), float(row["countyRadius"])
            if city <= 0 or county <= 0:
                continue
            rules[radius_code(row["code"])] = RadiusRule(
                city,
                float(row["enlargementValue"]) or city,
                county,
                (float(row["barycentreCityLat"]), float(row["barycentreCityLon"])),
                "sas-2025",
            )
    return rules


def rule_for(department: str | None) -> RadiusRule:
    """The department's rule: the agency's, else a fallback sized for the territory, else the default."""
    if department is None:
        return DEFAULT_RULE
    return radius_table().get(department) or FALLBACK_RULES.get(department) or DEFAULT_RULE


def radius_steps(rule: RadiusRule, asked_km: float | None, whole_department: bool) -> list[float]:
    """The radii to try, smallest first: the asked one alone; the county radius for a whole department;
    otherwise from the city radius by enlargement steps up to the county radius."""
    if asked_km is not None:
        return [asked_km]
    if whole_department:
        return [rule.county_km]
    steps, r = [], rule.city_km
    while r < rule.county_km:
        steps.append(r)
        r += rule.step_km
    steps.append(rule.county_km)
    return steps
