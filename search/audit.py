"""Neutrality audit: does any vendor get more first-page exposure than its practitioners' distances earn?

For each search at a random point (weighted by population), the first page shows every candidate of the
nearer distance bands and a seeded-shuffle draw from the last band it reaches. Under a vendor-blind
ranking each member of that last band is equally likely to be drawn, so a vendor's *expected* exposure is
its share of the fully shown bands plus its share of the last band times the places left; the draw's
variance is hypergeometric. The audit compares observed and expected exposures per vendor (z-score), and
reports the average position of each vendor's practitioners within their tie band (0 = first, 1 = last).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass

from core.geo import gazetteer
from indexer.backend import Backend
from indexer.lifecycle import iterate_all
from search.candidates import Candidate, Group
from search.engine import SearchRequest, run_search
from search.rank import BAND_KM


@dataclass
class VendorNeutrality:
    vendor: str
    eligible: float  # candidate appearances in the searches' reach (nearer bands + last band)
    exposures: float  # appearances on first pages
    expected: float
    variance: float
    tie_positions: list[float]

    @property
    def z(self) -> float:
        return (self.exposures - self.expected) / math.sqrt(self.variance) if self.variance > 0 else 0.0

    @property
    def mean_tie_position(self) -> float | None:
        return sum(self.tie_positions) / len(self.tie_positions) if self.tie_positions else None


def _vendor_of(card: Candidate) -> str:
    vendors = sorted({d["vendor"] for d in card.slots})
    return vendors[0] if vendors else "-"


def sample_points(backend: Backend, n: int, rng: random.Random) -> list[tuple[float, float]]:
    """Commune centroids of the departments the index covers, weighted by the practitioners placed there
    (the directory follows population)."""

    weights: dict[str, int] = defaultdict(int)
    for doc in iterate_all(backend, "practice_sites", filters={"specialty": ["SM54"]}):
        insee = (doc.get("address") or {}).get("insee_code")
        if insee:
            weights[insee] += 1
    gaz = gazetteer()
    communes = [gaz.communes[i] for i in sorted(weights) if i in gaz.communes]
    if not communes:
        return []
    chosen = rng.choices(communes, weights=[weights[c.insee] for c in communes], k=n)
    return [(c.lat + rng.uniform(-0.02, 0.02), c.lon + rng.uniform(-0.02, 0.02)) for c in chosen]


def audit_neutrality(
    backend: Backend, searches: int, seed: int, limit: int = 10, staleness_limit_s: float = 900.0
) -> list[VendorNeutrality]:
    rng = random.Random(seed)
    stats: dict[str, VendorNeutrality] = {}

    def row(vendor: str) -> VendorNeutrality:
        return stats.setdefault(vendor, VendorNeutrality(vendor, 0.0, 0.0, 0.0, 0.0, []))

    for lat, lon in sample_points(backend, searches, rng):
        req = SearchRequest(lat=lat, lon=lon, seed=rng.randrange(2**31), limit=10_000)
        ranked = run_search(backend, req, staleness_limit_s=staleness_limit_s).cards
        ranked = [c for c in ranked if c.group in (Group.participant, Group.other)]
        if not ranked:
            continue
        page = ranked[:limit]
        last_band = int(page[-1].distance_km // BAND_KM)
        nearer = [c for c in ranked if int(c.distance_km // BAND_KM) < last_band]
        band = [c for c in ranked if int(c.distance_km // BAND_KM) == last_band]
        drawn = limit - len(nearer) if len(ranked) > limit else len(band)
        for c in nearer:
            r = row(_vendor_of(c))
            r.eligible += 1
            r.expected += 1
        by_vendor: dict[str, int] = defaultdict(int)
        for c in band:
            by_vendor[_vendor_of(c)] += 1
        n = len(band)
        for vendor, k in by_vendor.items():
            r = row(vendor)
            r.eligible += k
            r.expected += drawn * k / n
            if n > 1:
                r.variance += drawn * (k / n) * (1 - k / n) * (n - drawn) / (n - 1)
        for c in page:
            row(_vendor_of(c)).exposures += 1
        # Position inside tie bands of the first page.
        bands: dict[int, list[Candidate]] = defaultdict(list)
        for c in ranked:
            bands[int(c.distance_km // BAND_KM)].append(c)
        for members in bands.values():
            if len(members) > 1 and int(members[0].distance_km // BAND_KM) <= last_band:
                for i, c in enumerate(members):
                    row(_vendor_of(c)).tie_positions.append(i / (len(members) - 1))
    return sorted(stats.values(), key=lambda r: r.vendor)
