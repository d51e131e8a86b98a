"""Canonical records -> index documents: the record's JSON plus the derived search fields of `mappings/`."""

from __future__ import annotations

from typing import Any

from core.records import PracticeSite, Structure
from core.text import fold


def site_document(site: PracticeSite) -> dict[str, Any]:
    doc = site.model_dump(mode="json", exclude_none=True)
    p = site.practitioner
    doc["search_text"] = fold(" ".join(x for x in (p.last_name, p.first_name, site.name, site.brand) if x))
    if site.position is not None:
        doc["location"] = {"lat": site.position.lat, "lon": site.position.lon}
    return doc


def structure_document(structure: Structure) -> dict[str, Any]:
    doc = structure.model_dump(mode="json", exclude_none=True)
    doc["search_text"] = fold(
        " ".join(x for x in (structure.name, structure.long_name, structure.address.commune) if x)
    )
    if structure.position is not None:
        doc["location"] = {"lat": structure.position.lat, "lon": structure.position.lon}
    return doc


def field_values(doc: dict[str, Any], path: str) -> list[str]:
    """All scalar values at a dotted path, descending through lists: 'practitioner.specialties.code'."""
    current: list[Any] = [doc]
    for part in path.split("."):
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict) and part in item:
                value = item[part]
                nxt.extend(value if isinstance(value, list) else [value])
        current = nxt
    # Booleans as JSON writes them, so a filter on "true" means the same on every backend.
    return [
        ("true" if v else "false") if isinstance(v, bool) else str(v)
        for v in current
        if v is not None and not isinstance(v, dict | list)
    ]
