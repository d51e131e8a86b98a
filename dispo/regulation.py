"""`dispo search` and `dispo audit neutrality`: the regulator search, and the audit of its neutrality."""

from __future__ import annotations

from typing import Annotated

import typer

from core.geo import PARIS
from core.settings import Settings
from dispo.console import INVALID, fail, open_backend, out, print_listing, print_table, write_json
from indexer.backend import InvalidCursor
from search.answer import Card, SearchAnswer, search_as_configured
from search.audit import VendorNeutrality, audit_neutrality
from search.engine import SearchError, SearchRequest

audit_app = typer.Typer(help="Audits of the service's promises.", no_args_is_help=True)

CARD_COLUMNS = ("#", "km", "practitioner", "site", "phone", "today", "tomorrow", "day after", "group")
NEUTRALITY_COLUMNS = ("vendor", "eligible share", "exposure share", "expected", "observed", "z", "mean tie position")


def _answer(settings: Settings, req: SearchRequest, verify: bool) -> SearchAnswer:
    """Runs the search (re-checking the page with the vendors if `verify`); bad input exits 2."""
    backend = open_backend(settings)
    try:
        return search_as_configured(backend, settings, req, verify)[1]
    except (SearchError, InvalidCursor) as exc:
        raise fail(str(exc), INVALID, "invalid search") from exc


def _card_row(card: Card) -> tuple[str, ...]:
    def times(day: str) -> str:  # the first four start times, Paris time
        return " ".join(s.start.astimezone(PARIS).strftime("%H:%M") for s in card.slots[day][:4])

    return (
        str(card.rank),
        f"{card.distance_km:.1f}",
        card.practitioner.name,
        card.site.address or "",
        card.site.phone or "",
        times("today"),
        times("tomorrow"),
        times("day_after"),
        card.group,
    )


def _print_answer(answer: SearchAnswer) -> None:
    place, e = answer.place, answer.explanation
    out.print(
        f"[bold]{place.label or f'{place.lat:.4f},{place.lon:.4f}'}[/] "
        f"({place.precision}), radius {answer.radius_km:g} km ({e.radius_source}), seed {answer.seed}"
    )
    print_table(f"{answer.total} practitioner(s) with a free slot", CARD_COLUMNS, map(_card_row, answer.cards))
    if e.message:
        out.print(e.message)
    if answer.next_cursor:
        out.print(f"more: --cursor {answer.next_cursor}")


def search(
    address: Annotated[str | None, typer.Option(help="the patient's address")] = None,
    lat: Annotated[float | None, typer.Option()] = None,
    lon: Annotated[float | None, typer.Option()] = None,
    postcode: Annotated[str | None, typer.Option()] = None,
    insee: Annotated[str | None, typer.Option()] = None,
    department: Annotated[str | None, typer.Option()] = None,
    specialty: Annotated[str | None, typer.Option(help="savoir-faire code (default SM54)")] = None,
    profession: Annotated[str | None, typer.Option()] = None,
    within: Annotated[list[str] | None, typer.Option(help="0-4h, 4-8h, ..., 48-72h")] = None,
    modality: Annotated[list[str] | None, typer.Option(help="practice, home, tele")] = None,
    slot_type: Annotated[list[str] | None, typer.Option(help="PUBLIC, PRO, SNP, CPTS")] = None,
    preferred: Annotated[str | None, typer.Option(help="the patient's doctor (IDNPS)")] = None,
    radius: Annotated[float | None, typer.Option(help="km (default: the SAS table)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 10,
    cursor: Annotated[str | None, typer.Option()] = None,
    verify: Annotated[bool, typer.Option(help="re-check the page's slots with their vendors")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The regulator search: nearest practitioners with a free slot, neutral and explained."""
    req = SearchRequest(
        address=address,
        lat=lat,
        lon=lon,
        postcode=postcode,
        insee=insee,
        department=department,
        specialty=specialty,
        profession=profession,
        within=within or [],
        modalities=modality or [],
        slot_types=slot_type or [],
        preferred=preferred,
        radius_km=radius,
        seed=seed,
        limit=limit,
        cursor=cursor,
    )
    answer = _answer(Settings(), req, verify)
    if as_json:
        write_json(answer)
    else:
        _print_answer(answer)


def _neutrality_row(r: VendorNeutrality, total_eligible: float, total_exposures: float) -> tuple[str, ...]:
    return (
        r.vendor,
        f"{r.eligible / total_eligible:.1%}",
        f"{r.exposures / total_exposures:.1%}",
        f"{r.expected:.1f}",
        f"{r.exposures:.0f}",
        f"{r.z:+.2f}",
        f"{r.mean_tie_position:.2f}" if r.mean_tie_position is not None else "-",
    )


@audit_app.command("neutrality")
def audit_neutrality_cmd(
    searches: Annotated[int, typer.Option(help="searches at random points weighted by population")] = 200,
    seed: Annotated[int, typer.Option()] = 0,
    limit: Annotated[int, typer.Option(help="first-page size")] = 10,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per vendor: first-page exposure against what distances earn, and rank within equal-distance ties."""
    settings = Settings()
    rows = audit_neutrality(open_backend(settings), searches, seed, limit, settings.staleness_limit_s)
    data = [
        {
            "vendor": r.vendor,
            "eligible": r.eligible,
            "exposures": r.exposures,
            "expected": round(r.expected, 2),
            "z": round(r.z, 2),
            "mean_tie_position": r.mean_tie_position,
        }
        for r in rows
    ]
    total_eligible = sum(r.eligible for r in rows) or 1
    total_exposures = sum(r.exposures for r in rows) or 1
    table_rows = (_neutrality_row(r, total_eligible, total_exposures) for r in rows)
    print_listing(as_json, data, f"Neutrality over {searches} searches (seed {seed})", NEUTRALITY_COLUMNS, table_rows)
    if not as_json:
        out.print("|z| < 3 for every vendor: no vendor departs from what distances earn it (3 standard deviations).")
