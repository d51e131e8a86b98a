"""Where to search: a point, a department, a commune, a postcode or an address, resolved to a centre.

Shared by the regulator search and the directory's site search. Offline (no geocoder configured), an
address is placed at the postcode or commune it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.errors import InvalidRequest
from core.geo import department_of_postcode, gazetteer
from core.records import Position
from core.text import fold
from search.radius import rule_for


class AddressGeocoder(Protocol):
    """A geocoder of typed addresses (BAN/addok); None where it finds nothing trustworthy."""

    def geocode_one(self, text: str) -> Position | None: ...


@dataclass(frozen=True)
class Place:
    lat: float
    lon: float
    precision: str  # point | address | municipality | postcode | department (or the geocoder's precision)
    zone: bool  # a zone (department, postcode, commune) is ordered by seeded shuffle only
    department: str | None
    label: str | None = None


class PlaceError(InvalidRequest):
    """A place that cannot be resolved. `reason` is the bare sentence ("no commune with postcode '00000'"),
    for callers that frame it in their own error."""

    def __init__(self, title: str, reason: str, slug: str) -> None:
        super().__init__(title, f"{reason[0].upper()}{reason[1:]}.", slug)
        self.reason = reason


def resolve_place(
    *,
    lat: float | None = None,
    lon: float | None = None,
    address: str | None = None,
    postcode: str | None = None,
    insee: str | None = None,
    department: str | None = None,
    geocoder: AddressGeocoder | None = None,
) -> Place | None:
    """The first given of: the point, the department, the commune (INSEE code), the postcode, the address.
    None when none is given; `PlaceError` when the one given is not found."""
    if (lat is None) != (lon is None):
        raise PlaceError("Invalid location", "give both lat and lon, or neither", "invalid-location")
    if lat is not None and lon is not None:
        return Place(lat, lon, "point", False, nearest_department(lat, lon))
    if department:
        return _department(department)
    if insee:
        commune = gazetteer().commune(insee.upper())
        if commune is None:
            raise PlaceError("Unknown INSEE code", f"no commune with INSEE code {insee!r}", "unknown-location")
        return Place(
            commune.lat, commune.lon, "municipality", True, commune.department, f"{commune.name} ({commune.insee})"
        )
    if postcode:
        area = gazetteer().postcode_area(postcode)
        if area is None:
            raise PlaceError("Unknown postcode", f"no commune with postcode {postcode!r}", "unknown-location")
        return Place(area.lat, area.lon, "postcode", True, department_of_postcode(postcode), postcode)
    if address:
        return _address(address, geocoder)
    return None


def nearest_department(lat: float, lon: float) -> str | None:
    """The department of the commune whose centroid is nearest."""
    commune = gazetteer().nearest_commune(lat, lon)
    return commune.department if commune else None


def _department(department: str) -> Place:
    """A whole department, centred on the barycentre the agency's radius table gives it."""
    code = department.upper().zfill(2) if department.isdigit() else department.upper()
    barycentre = rule_for(code).barycentre
    if barycentre is None:
        raise PlaceError("Unknown department", f"unknown department {department!r}", "unknown-location")
    return Place(barycentre[0], barycentre[1], "department", True, code, f"département {code}")


def _address(address: str, geocoder: AddressGeocoder | None) -> Place:
    """The geocoder when configured; offline, or when it finds nothing, the postcode or commune named."""
    if geocoder is not None:
        found = geocoder.geocode_one(address)
        if found is not None:
            return Place(
                found.lat, found.lon, found.precision.value, False, nearest_department(found.lat, found.lon), address
            )
    gaz = gazetteer()
    for word in address.replace(",", " ").split():
        if len(word) == 5 and word.isdigit():
            area = gaz.postcode_area(word)
            if area is not None:
                return Place(area.lat, area.lon, "postcode", False, department_of_postcode(word), address)
    # The longest commune name found as whole words: "Saint-Denis-lès-Bourg" rather than "Saint-Denis".
    wanted = f" {fold(address)} "
    best, best_len = None, 0
    for commune in gaz.communes.values():
        name = fold(commune.name)
        if name and len(name) > best_len and f" {name} " in wanted:
            best, best_len = commune, len(name)
    if best is not None:
        return Place(best.lat, best.lon, "municipality", False, best.department, address)
    raise PlaceError(
        "Unknown address",
        f"the address {address!r} could not be located: add its postcode or commune",
        "unknown-location",
    )
