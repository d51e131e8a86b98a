"""The savoir-faire codes a search may ask for (TRE_R38 / TRE_G15) and their labels, from the shipped table."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from functools import cache
from importlib import resources
from types import MappingProxyType


@cache
def specialty_labels() -> Mapping[str, str]:
    """Savoir-faire code -> label, in the table's order (the first row naming a code gives its label)."""
    labels: dict[str, str] = {}
    with (resources.files("core") / "data" / "correspondance_profession_savoirfaire.csv").open(
        encoding="utf-8-sig"
    ) as fh:
        for row in csv.DictReader(fh):
            code = row["Code savoir-faire"].strip()
            if code and code not in labels:
                labels[code] = row["codeprofession"].strip() or code
    return MappingProxyType(labels)  # cached for every caller: read-only


@cache
def known_specialties() -> frozenset[str]:
    """Every savoir-faire code of the table."""
    return frozenset(specialty_labels())
