"""Why an answer is what it is: the radii tried, who is in reach, who has slots, which vendors are silent."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchExplanation:
        return cls(
            radius_steps=tuple(RadiusTried(**step) for step in data["radius_steps"]),
            practitioners_in_reach=data["practitioners_in_reach"],
            practitioners_with_slots=data["practitioners_with_slots"],
            practitioners_without_slots=data["practitioners_without_slots"],
            stale_vendors=tuple(data["stale_vendors"]),
        )
