"""Index definitions as data: the single source of truth for indexed fields.

Each `<kind>.json` holds the Elasticsearch mappings; `_meta` names the id field, the geo field, the folded
text field and the filterable fields, which the embedded backend reads too. Index settings (shards, replicas,
refresh) are the deployment's, from `core.settings` (see `indexer.es_backend.IndexSettings`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

KINDS = (
    "practice_sites",
    "structures",
    "slots",
    "vendors",
    "participations",
    "cpts",
    "vendor_status",
    "leases",
    "appointments",
    "hub_recipients",
    "booking_attempts",
    "regulator_accounts",
    "coverage",
    "search_outcomes",
    "accounts",
    "audit_log",
    "sessions",
    "unavailability",
    "sas_calendars",
    "sas_bookings",
    "orientations",
    "imports",
)


@dataclass(frozen=True)
class IndexDefinition:
    kind: str
    mappings: dict[str, Any]

    @property
    def meta(self) -> dict[str, Any]:
        return self.mappings["_meta"]

    @property
    def id_field(self) -> str:
        return self.meta["id"]

    @property
    def location_field(self) -> str | None:
        return self.meta.get("location")

    @property
    def text_field(self) -> str | None:
        return self.meta.get("text")

    @property
    def filters(self) -> dict[str, str]:
        """Filter name -> dotted field path."""
        return dict(self.meta["filters"])

    @property
    def ranges(self) -> dict[str, str]:
        """Range name -> dotted path of a date field (filtered in epoch seconds)."""
        return dict(self.meta.get("ranges") or {})

    def field_paths(self) -> set[str]:
        """Every leaf field path the mapping declares."""
        out: set[str] = set()

        def walk(props: dict[str, Any], prefix: str) -> None:
            for name, spec in props.items():
                path = f"{prefix}{name}"
                if "properties" in spec:
                    walk(spec["properties"], path + ".")
                else:
                    out.add(path)

        walk(self.mappings["properties"], "")
        return out


@cache
def definition(kind: str) -> IndexDefinition:
    if kind not in KINDS:
        raise KeyError(f"unknown index kind {kind!r}; known: {', '.join(KINDS)}")
    raw = json.loads((resources.files("mappings") / f"{kind}.json").read_text(encoding="utf-8"))
    return IndexDefinition(kind=kind, mappings=raw["mappings"])
