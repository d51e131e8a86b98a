"""One page of cards from the ranked candidates, optionally re-checked live with the vendors.

Paging and verification are one step: a card the vendors empty is replaced by the next candidates while
the deadline allows, so the page still holds `limit` cards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from aggregation.verify import VerifyReport, verify_cards
from indexer.backend import Backend
from indexer.registry import list_vendors
from search.candidates import Candidate

MIN_VERIFY_S = 0.02  # below this, a round of calls cannot finish: the rest of the page stays unverified


def take_page(
    backend: Backend,
    ranked: list[Candidate],
    limit: int,
    load: Callable[[list[Candidate]], list[Candidate]],
    window: tuple[datetime, datetime],
    now: datetime,
    deadline_s: float,
) -> tuple[list[Candidate], int, VerifyReport | None]:
    """The first `limit` cards to show of `ranked`, their slots read by `load` (which returns those of a batch still
    to show) a batch at a time; with a deadline, re-checked live, emptied cards replaced by the next candidates while
    time remains. Returns the page, how many candidates it went through, and what was verified (None without a
    deadline)."""
    if deadline_s <= 0:
        page, position = [], 0
        while len(page) < limit and position < len(ranked):
            batch = ranked[position : position + limit - len(page)]
            position += len(batch)
            page += load(batch)
        return page, position, None
    vendors = {v.vendor_id: v for v in list_vendors(backend, enabled_only=True)}
    total = VerifyReport()
    page = []
    position = 0
    t_end = time.monotonic() + deadline_s
    while len(page) < limit and position < len(ranked):
        taken = ranked[position : position + limit - len(page)]
        position += len(taken)
        batch = load(taken)
        remaining = t_end - time.monotonic()
        if remaining > MIN_VERIFY_S:
            total.add(verify_cards(backend, [c for c in batch if c.slots], vendors, window, now, remaining))
        page += [c for c in batch if c.shown]
    return page, position, total
