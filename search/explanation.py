"""Why an answer is what it is: the radii tried, who is in reach, who has slots, which vendors are silent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RadiusTried:
    radius_km: float
    practitioners_with_slots: int


@dataclass(frozen=True)
class SearchExplanation:
    radius_steps: tuple[RadiusTried, ...]
    practitioners_in_reach: int
    practitioners_with_slots: int
    practitioners_without_slots: int
    stale_vendors: tuple[str, ...]  # vendors silent for longer than the staleness limit: their slots are hidden
