"""Neutral ranking: by group, then by 300 m distance band, then by a seeded shuffle; never by vendor.

Within a band practitioners are "at the same distance", so their order is a shuffle drawn from the
search's seed: the same seed gives the same order, and no vendor is favoured on average (see `search.audit`).
A zone (department, postcode, commune) has no meaningful distance: it is one band.

Each site's place in the order is its sort key (`RankKey`), a function of the site, its group and band, and the
seed: a later page ranks the candidates again and starts after the previous page's last key (`search.cursor`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from search.candidates import Candidate, Group
from search.place import Place
from search.request import SearchRequest

BAND_KM = 0.3  # practitioners within the same 300 m band are "at the same distance": shuffled, not sorted

RankKey = tuple[int, int, str, str]  # group, distance band, seeded tie-break, site id


def shuffle_key(seed: int, site_id: str) -> str:
    """A site's place in the seeded shuffle of its band."""
    return hashlib.blake2b(f"{seed}:{site_id}".encode(), digest_size=8).hexdigest()


def band_of(distance_km: float) -> int:
    return int(distance_km // BAND_KM)


def rank_key(group: int, band: int, seed: int, site_id: str) -> RankKey:
    """A site's place in the order. The site id settles equal tie-breaks (two sites drawing the same 64 bits), so
    no two sites share a place and a page can start right after any of them."""
    return (int(group), band, shuffle_key(seed, site_id), site_id)


def rank(
    candidates: list[Candidate],
    participations: dict[str, dict[str, Any]],
    place: Place,
    seed: int,
    req: SearchRequest,
) -> list[Candidate]:
    """Candidates with slots (those the request keeps, `search.candidates.admit`) in ranking order; each gets its
    group and its slots earliest first."""
    kept = []
    for c in candidates:
        p = participations.get(c.idnps)
        if req.preferred and c.idnps == req.preferred:
            c.group = Group.preferred
        else:
            c.group = Group.participant if p and p.get("active") else Group.other
        c.slots.sort(key=lambda d: (d["start"], d["slot_id"]))
        kept.append(c)
    return order(kept, place, seed)


def order(candidates: list[Candidate], place: Place, seed: int) -> list[Candidate]:
    """Sorted by group, distance band (none in a zone), then seeded shuffle."""
    for c in candidates:
        c.key = rank_key(c.group, 0 if place.zone else band_of(c.distance_km), seed, c.site_id)
    return sorted(candidates, key=lambda c: c.key)
