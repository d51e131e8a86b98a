"""Geographic reference data shipped with Dispo, and distance arithmetic shared by every backend.

- commune centroids by INSEE code and by postcode (La Poste postcode base),
- CEDEX codes resolved to INSEE codes,
- the department of an INSEE code or postcode,
- whether a point lies in France (metropolitan and overseas),
- great-circle distance computed exactly as Elasticsearch does, so both backends agree.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from zoneinfo import ZoneInfo

# Elasticsearch's GeoUtils.EARTH_MEAN_RADIUS, in km: the embedded index uses the same sphere.
EARTH_RADIUS_KM = 6371.0087714

# Bounding boxes (lat_min, lat_max, lon_min, lon_max) of French territory, generous by a few km.
FRANCE_BOXES: dict[str, tuple[float, float, float, float]] = {
    "metropole": (41.2, 51.2, -5.4, 9.8),
    "antilles": (14.3, 18.2, -63.3, -60.7),  # Guadeloupe, Martinique, Saint-Martin, Saint-Barthélemy
    "guyane": (2.0, 6.0, -54.8, -51.4),
    "reunion": (-21.5, -20.8, 55.1, 56.0),
    "mayotte": (-13.1, -12.5, 44.9, 45.4),
    "saint-pierre-et-miquelon": (46.7, 47.2, -56.6, -56.0),
    "wallis-et-futuna": (-14.5, -13.0, -178.3, -176.0),
    "polynesie": (-28.0, -7.5, -155.0, -134.0),
    "nouvelle-caledonie": (-23.0, -19.0, 163.0, 169.0),
}

# Metropolitan France's time zone: days ("today", "tomorrow") and opening hours are counted in it.
PARIS = ZoneInfo("Europe/Paris")
# The instants Dispo deals in (slots, appointments, query windows), in UTC: far enough either side of any real agenda,
# and clear of the years (1, 9999) where date arithmetic overflows. Anything outside is refused where it comes in.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2101, 1, 1, tzinfo=UTC)  # excluded


def in_france(lat: float, lon: float) -> bool:
    return any(a <= lat <= b and c <= lon <= d for a, b, c, d in FRANCE_BOXES.values())


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dlat, dlon = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dlat / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


# Lucene stores geo points as 32-bit integers: positions quantised the same way give Elasticsearch's distances.
_LAT_STEP = 180.0 / 2**32
_LON_STEP = 360.0 / 2**32


def lucene_quantise(lat: float, lon: float) -> tuple[float, float]:
    return math.floor(lat / _LAT_STEP) * _LAT_STEP, math.floor(lon / _LON_STEP) * _LON_STEP


def bounding_box(lat: float, lon: float, radius_km: float) -> tuple[float, float, float, float]:
    """A box (lat_min, lat_max, lon_min, lon_max) that contains the circle; used to pre-filter R*Tree hits."""
    dlat = math.degrees(radius_km / EARTH_RADIUS_KM)
    coslat = max(math.cos(math.radians(min(89.9, abs(lat) + dlat))), 1e-6)
    dlon = min(180.0, math.degrees(radius_km / (EARTH_RADIUS_KM * coslat)))
    return lat - dlat, lat + dlat, lon - dlon, lon + dlon


def department_of_insee(insee: str) -> str:
    """'01053' -> '01', '2A004' -> '2A', '97411' -> '974', '98613' -> '986'."""
    return insee[:3] if insee[:2] in ("97", "98") else insee[:2]


def department_of_postcode(postcode: str) -> str:
    """Best-effort department of a postcode: '20000' is Corsica, which postcodes do not split (2A/2B)."""
    if postcode[:2] in ("97", "98"):
        return postcode[:3]
    if postcode[:2] == "20":
        return "2A" if postcode < "20200" else "2B"
    return postcode[:2]


def radius_code(code: str) -> str:
    """A department code of the agency's radius table as Dispo writes it: the table says 20A/20B for 2A/2B."""
    return {"20A": "2A", "20B": "2B"}.get(code, code)


@dataclass(frozen=True, slots=True)
class Commune:
    insee: str
    name: str
    postcodes: tuple[str, ...]
    lat: float
    lon: float

    @property
    def department(self) -> str:
        return department_of_insee(self.insee)


@dataclass(frozen=True, slots=True)
class PostcodeArea:
    postcode: str
    communes: tuple[str, ...]  # INSEE codes
    lat: float
    lon: float


class Gazetteer:
    """Commune centroids by INSEE code and postcode, CEDEX resolution. Loaded once, read-only."""

    def __init__(self) -> None:
        data = resources.files("core") / "data"
        points: dict[str, list[tuple[float, float]]] = {}
        names: dict[str, str] = {}
        postcodes: dict[str, list[str]] = {}
        with (data / "laposte_hexasmal.csv").open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter=";"):
                insee, postcode, gps = row["Code_commune_INSEE"], row["Code_postal"], row["coordonnees_gps"]
                names.setdefault(insee, row["Nom_commune"])
                postcodes.setdefault(postcode, [])
                if insee not in postcodes[postcode]:
                    postcodes[postcode].append(insee)
                if gps:
                    lat, lon = (float(v) for v in gps.split(","))
                    points.setdefault(insee, []).append((lat, lon))
        by_insee_postcodes: dict[str, list[str]] = {}
        for pc, insees in postcodes.items():
            for i in insees:
                by_insee_postcodes.setdefault(i, []).append(pc)
        self.communes: dict[str, Commune] = {}
        for insee, pts in points.items():
            # Several rows (one per postcode or hamlet) may carry the same commune: average them.
            lat = sum(p[0] for p in pts) / len(pts)
            lon = sum(p[1] for p in pts) / len(pts)
            self.communes[insee] = Commune(insee, names[insee], tuple(sorted(by_insee_postcodes[insee])), lat, lon)
        self.postcodes: dict[str, PostcodeArea] = {}
        for pc, insees in postcodes.items():
            located = [self.communes[i] for i in insees if i in self.communes]
            if located:
                self.postcodes[pc] = PostcodeArea(
                    pc,
                    tuple(c.insee for c in located),
                    sum(c.lat for c in located) / len(located),
                    sum(c.lon for c in located) / len(located),
                )
        self.cedex: dict[str, str] = {}
        with (data / "liste_des_cedex.csv").open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter=";"):
                self.cedex.setdefault(row["cedex"].strip(), row["insee"].strip())

    _CELL = 0.1  # degrees: grid cell of the nearest-commune index

    def nearest_commune(self, lat: float, lon: float) -> Commune | None:
        """The commune whose centroid is nearest, from a grid of cells searched in growing rings."""
        grid = self._grid()
        ci, cj = math.floor(lat / self._CELL), math.floor(lon / self._CELL)
        best: tuple[float, Commune] | None = None
        for ring in range(0, 60):
            for i in range(ci - ring, ci + ring + 1):
                for j in range(cj - ring, cj + ring + 1):
                    if max(abs(i - ci), abs(j - cj)) != ring:
                        continue
                    for commune in grid.get((i, j), ()):
                        d = haversine_km(lat, lon, commune.lat, commune.lon)
                        if best is None or d < best[0]:
                            best = (d, commune)
            # Every unseen commune is at least `ring` cells away (~11 km each in latitude): stop when the
            # best found is nearer than that.
            if best is not None and best[0] < ring * self._CELL * 111.0 * 0.5:
                return best[1]
        return best[1] if best else None

    def _grid(self) -> dict[tuple[int, int], list[Commune]]:
        grid = getattr(self, "_grid_cache", None)
        if grid is None:
            grid = {}
            for commune in self.communes.values():
                key = (math.floor(commune.lat / self._CELL), math.floor(commune.lon / self._CELL))
                grid.setdefault(key, []).append(commune)
            self._grid_cache = grid
        return grid

    def commune(self, insee: str | None) -> Commune | None:
        return self.communes.get(insee) if insee else None

    def postcode_area(self, postcode: str | None) -> PostcodeArea | None:
        """A postcode's communes; a CEDEX code resolves to its commune."""
        if not postcode:
            return None
        area = self.postcodes.get(postcode)
        if area is None and postcode in self.cedex:
            commune = self.communes.get(self.cedex[postcode])
            if commune:
                area = PostcodeArea(postcode, (commune.insee,), commune.lat, commune.lon)
        return area


@cache
def gazetteer() -> Gazetteer:
    return Gazetteer()
