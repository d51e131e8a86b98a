"""Regulator search: the nearest practitioners with a free slot in the window, neutral and explained.

A search is a pipeline of small named steps over one `SearchState`, each reading what earlier steps set:

    first page:  check_request -> resolve_place -> choose_radius -> open_window -> draw_seed -> read_freshness
                 -> filter_slots -> gather_candidates -> rank_candidates -> explain -> fill_page -> hand_cursor
    later pages: check_request -> resolve_place -> follow_cursor -> read_freshness -> filter_slots
                 -> gather_sites -> rank_candidates -> recall_explanation -> resume_after_cursor
                 -> fill_page -> hand_cursor

Candidates are sites, found by the backend a row per site (`indexer.availability`); only the sites a page goes
through have their slots read.

Nothing is kept for later pages: a later page ranks the candidates again with the first page's seed, radius and
window, which its cursor carries with the sort key the previous page stopped at (`search.cursor`), and goes on
after that key through the same filtering, paging, verification and cursor steps. The cursor was signed for a
request with the same parameters, so its place is the first page's.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aggregation.availability import Freshness, freshness
from aggregation.unavailability import Period, periods_by_practitioner
from aggregation.verify import VerifyReport
from core.secrets import PROCESS_KEY, derive
from indexer.availability import SlotMatch
from indexer.backend import Backend
from search.candidates import (
    Candidate,
    admit,
    count_in_reach,
    in_circle,
    participations_of,
    read_slots,
    without_slots,
)
from search.cursor import CursorKeys, SearchCursor, request_digest
from search.explanation import RadiusTried, SearchExplanation
from search.page import take_page
from search.place import AddressGeocoder, Place, PlaceError
from search.place import resolve_place as place_of
from search.radius import MIN_WITH_SLOTS, RadiusRule, radius_steps, rule_for
from search.rank import order, rank
from search.request import SearchError, SearchRequest, checked_specialty, search_window, slot_match

# What callers import from here; the request, its error and the radius rule are defined in their own modules.
__all__ = ["SearchError", "SearchRequest", "SearchResult", "SearchState", "rule_for", "run_search"]


@dataclass
class SearchState:
    """What a search knows so far. The inputs are given; each step sets its fields (unset before it runs)."""

    backend: Backend
    req: SearchRequest
    now: datetime
    geocoder: AddressGeocoder | None
    staleness_limit_s: float
    verify_deadline_s: float
    keys: CursorKeys  # sign and open the cursors
    digest: bytes  # of the request's parameters, which the cursors are bound to
    cursor: SearchCursor | None  # a later page's: the first page's seed, radius and window, where the last page stopped
    specialty: str | None = field(init=False)
    place: Place = field(init=False)
    rule: RadiusRule = field(init=False)
    radii: list[float] = field(init=False)  # the radii to try, smallest first
    radius_km: float = field(init=False)  # the radius the candidates come from
    seed: int = field(init=False)
    window: tuple[datetime, datetime] = field(init=False)
    fresh: Freshness = field(init=False)
    match: SlotMatch = field(init=False)  # what a slot shown must be
    candidates: list[Candidate] = field(init=False)  # sites with matching slots in the circle, without their slots
    # The SAS participations of the practitioners met so far, by IDNPS, and every IDNPS already asked for (those
    # without a participation included): read once, whatever the radii tried.
    participations: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    asked: set[str] = field(default_factory=set, init=False)
    # The unavailability periods of those of them who declared some.
    away: dict[str, list[Period]] = field(default_factory=dict, init=False)
    tried: list[RadiusTried] = field(init=False)
    ranked: list[Candidate] = field(init=False)  # in order, from the page's first rank
    offset: int = field(default=0, init=False)  # the rank `ranked` starts at in the whole order
    total: int = field(init=False)  # ranks in the whole order, as it is now
    explanation: SearchExplanation = field(init=False)
    cards: list[Candidate] = field(init=False)
    used: int = field(init=False)  # how many of `ranked` the page went through (those found emptied among them)
    verification: VerifyReport | None = field(init=False)
    next_cursor: str | None = field(init=False)


@dataclass(frozen=True)
class SearchResult:
    place: Place
    radius_km: float
    radius_rule: RadiusRule
    window: tuple[datetime, datetime]
    seed: int
    specialty: str | None
    profession: str | None
    cards: list[Candidate]
    total: int
    offset: int  # the rank (from 0) of the first card
    next_cursor: str | None
    explanation: SearchExplanation
    verification: VerifyReport | None  # None when not re-checked live
    freshness: Freshness
    now: datetime


# -- steps -------------------------------------------------------------------------------------------------


def check_request(state: SearchState) -> None:
    """Refuse what cannot be answered before reading anything; settle the specialty searched."""
    state.specialty = checked_specialty(state.req)


def resolve_place(state: SearchState) -> None:
    """The place searched around, and the agency's radius rule for its department."""
    req = state.req
    try:
        place = place_of(
            lat=req.lat,
            lon=req.lon,
            address=req.address,
            postcode=req.postcode,
            insee=req.insee,
            department=req.department,
            geocoder=state.geocoder,
        )
    except PlaceError as exc:
        raise SearchError(exc.reason) from exc
    if place is None:
        raise SearchError("give a location: address, lat and lon, postcode, INSEE code or department")
    state.place = place
    state.rule = rule_for(place.department)


def choose_radius(state: SearchState) -> None:
    """The radii to try: the asked one, or the rule's from the city radius up to the county radius."""
    state.radii = radius_steps(state.rule, state.req.radius_km, state.place.precision == "department")


def open_window(state: SearchState) -> None:
    """From now (or the asked start) to the asked end, by default the end of the day after tomorrow."""
    state.window = search_window(state.req, state.now)


def draw_seed(state: SearchState) -> None:
    """The seed of the shuffle within distance bands: the asked one makes an answer reproducible."""
    state.seed = state.req.seed if state.req.seed is not None else random.randrange(2**31)


def follow_cursor(state: SearchState) -> None:
    """A later page takes the first page's seed, window and radius: ranked again with them, the candidates fall
    in the first page's order. The radius is the one the first page reached: enlargement is decided there."""
    assert state.cursor is not None  # only on later pages
    state.seed = state.cursor.seed
    state.window = search_window(state.req, state.cursor.issued)
    state.radius_km = state.cursor.radius_km


def read_freshness(state: SearchState) -> None:
    """Which vendors (and practitioners) answered recently enough for their slots to be shown."""
    state.fresh = freshness(state.backend, state.now, state.staleness_limit_s)


def filter_slots(state: SearchState) -> None:
    """What every slot shown must be. A later page's window started when the first page was asked: slots since
    then have passed."""
    fresh = state.fresh
    state.match = slot_match(
        state.req, state.specialty, fresh.fresh_vendors, fresh.stale_practitioners, state.window, state.now
    )


def admitted(state: SearchState, candidates: list[Candidate]) -> list[Candidate]:
    """The candidates the request's participation filters keep (`search.candidates.admitted`), their practitioners'
    participations read by key the first time they are met."""
    new = {c.idnps for c in candidates} - state.asked
    if new:
        state.participations |= participations_of(state.backend, new)
        state.away |= periods_by_practitioner(state.backend, new)
        state.asked |= new
    return admit(candidates, state.participations, state.req, state.away, state.now)


def gather_candidates(state: SearchState) -> None:
    """The candidates of the smallest radius holding enough practitioners with slots (else the largest). Counted
    are the practitioners the whole request keeps: its slot filters, and its participation filters (`via`,
    `extra_patients`), so that asking for SOS Médecins widens the circle until five SOS practitioners are in it."""
    state.tried = []
    for radius in state.radii:
        state.radius_km = radius
        state.candidates = admitted(state, in_circle(state.backend, state.place, radius, state.match))
        practitioners = len({c.idnps for c in state.candidates})
        state.tried.append(RadiusTried(radius, practitioners))
        if practitioners >= MIN_WITH_SLOTS:
            break


def gather_sites(state: SearchState) -> None:
    """A later page's candidates: the sites with matching slots in the first page's circle that the request keeps."""
    state.candidates = admitted(state, in_circle(state.backend, state.place, state.radius_km, state.match))


def rank_candidates(state: SearchState) -> None:
    """The neutral order (see `search.rank`), then the practitioners without slots when asked for (those the
    participation filters keep)."""
    req = state.req
    state.ranked = rank(state.candidates, state.participations, state.place, state.seed, req)
    if req.include_without_slots:
        shown = {c.site_id for c in state.candidates}
        others = without_slots(state.backend, state.place, state.radius_km, state.specialty, req.profession, shown)
        state.ranked += order(admitted(state, others), state.place, state.seed)
    state.total = len(state.ranked)


def explain(state: SearchState) -> None:
    """The radii tried, how many practitioners are in reach and have slots, which vendors are silent."""
    in_reach = count_in_reach(state.backend, state.place, state.radius_km, state.specialty, state.req.profession)
    with_slots = len({c.idnps for c in state.candidates})
    state.explanation = SearchExplanation(
        radius_steps=tuple(state.tried),
        practitioners_in_reach=in_reach,
        practitioners_with_slots=with_slots,
        practitioners_without_slots=max(0, in_reach - with_slots),
        stale_vendors=tuple(sorted(state.fresh.stale_vendors)),
    )


def recall_explanation(state: SearchState) -> None:
    """The first page's explanation, which the cursor carries: the radii tried and who was in reach. The vendors
    silent now are named, as their slots are hidden from this page."""
    cursor = state.cursor
    assert cursor is not None  # only on later pages
    # The radii the first page tried: the rule's, up to the one it reached. Not strict: a cursor handed out before a
    # new radius table came in explains its steps as far as they pair rather than failing the page.
    rule_radii = radius_steps(state.rule, state.req.radius_km, state.place.precision == "department")
    tried = [*rule_radii[: len(cursor.with_slots) - 1], cursor.radius_km]
    with_slots = cursor.with_slots[-1]
    state.explanation = SearchExplanation(
        radius_steps=tuple(RadiusTried(r, n) for r, n in zip(tried, cursor.with_slots, strict=False)),
        practitioners_in_reach=cursor.in_reach,
        practitioners_with_slots=with_slots,
        practitioners_without_slots=max(0, cursor.in_reach - with_slots),
        stale_vendors=tuple(sorted(state.fresh.stale_vendors)),
    )


def resume_after_cursor(state: SearchState) -> None:
    """The candidates ranked after the last one the previous page went through. Those before it that still
    qualify are counted in the offset, not shown again; a site that gained slots meanwhile takes its place."""
    assert state.cursor is not None  # only on later pages
    state.offset = bisect_right(state.ranked, state.cursor.after, key=lambda c: c.key)
    state.ranked = state.ranked[state.offset :]


def fill_page(state: SearchState) -> None:
    """The page's cards with their slots, read for the candidates the page goes through only and re-checked live
    when a deadline is given (see `search.page`); a candidate that lost its last slot since it was ranked no
    longer qualifies and is not counted."""
    dropped = 0

    def load(batch: list[Candidate]) -> list[Candidate]:
        nonlocal dropped
        kept = read_slots(state.backend, batch, state.match, state.fresh, state.away)
        dropped += len(batch) - len(kept)
        return kept

    state.cards, state.used, state.verification = take_page(
        state.backend, state.ranked, state.req.limit, load, state.window, state.now, state.verify_deadline_s
    )
    state.total -= dropped


def hand_cursor(state: SearchState) -> None:
    """A cursor to the next page while ranks remain after this page's last candidate (a request asks for one card
    at least, so a page goes through one candidate at least)."""
    if state.used >= len(state.ranked):
        state.next_cursor = None
        return
    last = state.ranked[state.used - 1].key
    if state.cursor is not None:
        cursor = replace(state.cursor, after=last)
    else:
        cursor = SearchCursor(
            issued=state.now,
            seed=state.seed,
            radius_km=state.radius_km,
            with_slots=tuple(step.practitioners_with_slots for step in state.tried),
            in_reach=state.explanation.practitioners_in_reach,
            after=last,
        )
    state.next_cursor = state.keys.encode(cursor, state.digest)


Step = Callable[[SearchState], None]
FIRST_PAGE: tuple[Step, ...] = (
    check_request,
    resolve_place,
    choose_radius,
    open_window,
    draw_seed,
    read_freshness,
    filter_slots,
    gather_candidates,
    rank_candidates,
    explain,
    fill_page,
    hand_cursor,
)
LATER_PAGE: tuple[Step, ...] = (
    check_request,
    resolve_place,
    follow_cursor,
    read_freshness,
    filter_slots,
    gather_sites,
    rank_candidates,
    recall_explanation,
    resume_after_cursor,
    fill_page,
    hand_cursor,
)


def run_search(
    backend: Backend,
    req: SearchRequest,
    now: datetime | None = None,
    staleness_limit_s: float = 900.0,
    geocoder: AddressGeocoder | None = None,
    verify_deadline_s: float = 0.0,
    cursor_key: bytes | None = None,
) -> SearchResult:
    """The whole search; `verify_deadline_s` > 0 re-checks the page's cards live under that deadline.

    `cursor_key` signs the cursors handed out and opens those given (the deployment's, see
    `search.answer.search_as_configured`); without it, cursors are valid in this process only."""
    now = now or datetime.now(UTC)
    keys = CursorKeys(cursor_key or derive(PROCESS_KEY, "cursor"))
    digest = request_digest(req)
    cursor = keys.decode(req.cursor, digest, now) if req.cursor else None
    state = SearchState(backend, req, now, geocoder, staleness_limit_s, verify_deadline_s, keys, digest, cursor)
    for step in FIRST_PAGE if cursor is None else LATER_PAGE:
        step(state)
    return SearchResult(
        place=state.place,
        radius_km=state.radius_km,
        radius_rule=state.rule,
        window=state.window,
        seed=state.seed,
        specialty=state.specialty,
        profession=state.req.profession,
        cards=state.cards,
        total=state.total,
        offset=state.offset,
        next_cursor=state.next_cursor,
        explanation=state.explanation,
        verification=state.verification,
        freshness=state.fresh,
        now=state.now,
    )
