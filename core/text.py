"""Text normalisation done in Python, because the Elasticsearch distribution has no folding analyzers.

Both backends index and query the output of `fold`, so "lefevre" finds "LEFÈVRE" identically.
"""

from __future__ import annotations

import re
import unicodedata

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
# Ligatures that NFKD does not decompose.
_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae", "ß": "ss", "ø": "o", "đ": "d", "ł": "l"})


def fold(text: str | None) -> str:
    """Lower-case, strip accents, punctuation to spaces: 'Lebrun-Carpentier Anaïs' -> 'lebrun carpentier anais'."""
    if not text:
        return ""
    lowered = text.lower().translate(_LIGATURES)
    decomposed = unicodedata.normalize("NFKD", lowered)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_ALNUM.sub(" ", stripped).strip()


def tokens(text: str | None) -> list[str]:
    return fold(text).split()


def clean(value: str | None) -> str | None:
    """Trim a raw field; empty becomes None so records never carry blank strings."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def split_codes(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated parameters alike: ['SM54,SM26', 'SM01'] -> ['SM54', 'SM26', 'SM01']."""
    out: list[str] = []
    for value in values or []:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out
