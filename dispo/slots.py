"""`dispo slots list`: the slots the index holds for a vendor, earliest first, with their freshness."""

from __future__ import annotations

from typing import Annotated

import typer

from aggregation.holdings import HeldSlot, vendor_holdings
from core.geo import PARIS
from core.settings import Settings
from dispo.console import INVALID, fail, open_backend, out, print_listing
from indexer.backend import InvalidCursor

slots_app = typer.Typer(help="The slots the index holds.", no_args_is_help=True)

SLOT_COLUMNS = ("slot id", "practitioner", "start (Paris)", "types", "modality", "site", "fetched (Paris)")


def _slot_row(held: HeldSlot) -> tuple[str, ...]:
    s = held.slot
    fetched = s.fetched_at.astimezone(PARIS).strftime("%Y-%m-%d %H:%M:%S")
    return (
        s.slot_id,
        s.practitioner_name or s.idnps or "-",
        s.start.astimezone(PARIS).strftime("%Y-%m-%d %H:%M"),
        " ".join(s.types),
        " ".join(s.modalities),
        s.site_id or "-",
        fetched + ("" if held.fresh else " (stale)"),
    )


@slots_app.command("list")
def slots_list(
    vendor: Annotated[str, typer.Option(help="vendor id, as in `dispo vendors list`")],
    idnps: Annotated[str | None, typer.Option(help="only this practitioner's slots")] = None,
    limit: Annotated[int, typer.Option(help="slots per page")] = 50,
    cursor: Annotated[str | None, typer.Option(help="the next page, as the previous one printed it")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A vendor's indexed slots (of one practitioner with --idnps), earliest first; stale ones are marked."""
    settings = Settings()
    try:
        page = vendor_holdings(open_backend(settings), settings, vendor, idnps=idnps, limit=limit, cursor=cursor)
    except InvalidCursor as exc:
        raise fail(str(exc), INVALID, "invalid cursor") from exc
    freshness = "fresh" if page.vendor_fresh else "stale"
    title = f"{vendor}: {page.total} slot(s) held, vendor {freshness}"
    print_listing(as_json, page, title, SLOT_COLUMNS, map(_slot_row, page.results))
    if not as_json and page.next_cursor:
        out.print(f"more: --cursor {page.next_cursor}")
