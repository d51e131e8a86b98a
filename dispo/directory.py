"""`dispo sites`, `dispo show practitioner|structure` and `dispo index status`: the live directory as it is."""

from __future__ import annotations

from typing import Annotated

import typer

from core.settings import Settings
from dispo.console import open_backend, out, print_table, write_json
from mappings import KINDS
from search.directory import SiteResult, cpts_answer, practitioner_answer, site_search, structure_answer

show_app = typer.Typer(help="Show one record of the live directory.", no_args_is_help=True)
index_app = typer.Typer(help="Index versions and aliases.", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]
SITE_COLUMNS = ("km", "practitioner", "profession", "specialty", "site", "address", "phone", "position")


def _site_row(result: SiteResult) -> tuple[str, ...]:
    s, p = result.site, result.site.practitioner
    return (
        f"{result.distance_km:.1f}" if result.distance_km is not None else "",
        p.display_name(),
        p.profession_label or p.profession_code,
        ", ".join(sp.code for sp in p.specialties),
        s.name or "",
        s.address.label() if s.address else "",
        s.phone or "",
        s.position.precision.value if s.position else "none",
    )


def sites(
    lat: Annotated[float | None, typer.Option()] = None,
    lon: Annotated[float | None, typer.Option()] = None,
    postcode: Annotated[str | None, typer.Option()] = None,
    insee: Annotated[str | None, typer.Option()] = None,
    radius: Annotated[float, typer.Option(help="km")] = 10.0,
    specialty: Annotated[list[str] | None, typer.Option(help="savoir-faire code, e.g. SM54")] = None,
    profession: Annotated[list[str] | None, typer.Option(help="profession code, e.g. 10")] = None,
    q: Annotated[str | None, typer.Option(help="name (accents and case ignored)")] = None,
    limit: Annotated[int, typer.Option()] = 20,
    cursor: Annotated[str | None, typer.Option()] = None,
    as_json: AsJson = False,
) -> None:
    """Practice sites nearest first, around a point, a postcode or an INSEE code."""
    settings = Settings()
    answer = site_search(
        open_backend(settings),
        settings,
        lat=lat,
        lon=lon,
        postcode=postcode,
        insee=insee,
        radius_km=radius,
        specialty=specialty,
        profession=profession,
        q=q,
        limit=limit,
        cursor=cursor,
    )
    if as_json:
        write_json(answer)
        return
    within = f" within {answer.radius_km} km" if answer.radius_km else ""
    print_table(f"{answer.total} practice site(s){within}", SITE_COLUMNS, map(_site_row, answer.results))
    if answer.next_cursor:
        out.print(f"more: --cursor {answer.next_cursor}")


@show_app.command("practitioner")
def show_practitioner(idnps: str, as_json: AsJson = False) -> None:
    """A practitioner (by IDNPS) and all their practice sites."""
    answer = practitioner_answer(open_backend(), idnps)
    if as_json:
        write_json(answer)
        return
    p = answer.practitioner
    out.print(f"[bold]{p.display_name()}[/]  IDNPS {p.idnps} ({p.id_type})  {p.profession_label or p.profession_code}")
    for sp in p.specialties:
        out.print(f"  specialty {sp.code} {sp.label or ''}")
    for s in answer.sites:
        where = s.address.label() if s.address else "no practice site"
        pos = (
            f"{s.position.lat:.5f},{s.position.lon:.5f} ({s.position.precision.value})" if s.position else "no position"
        )
        out.print(f"  - {s.name or ''} {where} [{s.mode_label or s.mode_code or ''}] {pos}")


@show_app.command("structure")
def show_structure(finess: str, as_json: AsJson = False) -> None:
    """A FINESS establishment."""
    s = structure_answer(open_backend(), finess)
    if as_json:
        write_json(s)
        return
    out.print(f"[bold]{s.name}[/]  FINESS {s.finess}  {s.category_label or ''}")
    out.print(f"  {s.address.label()}  {s.phone or ''}")
    if s.position:
        out.print(f"  {s.position.lat:.5f},{s.position.lon:.5f} ({s.position.precision.value})")


@show_app.command("cpts")
def show_cpts(idnst: str, as_json: AsJson = False) -> None:
    """A CPTS (by IDNST: 1 + FINESS or 3 + SIRET): name, phone, territory, members, the vendors offering through it."""
    c = cpts_answer(open_backend(), idnst)
    if as_json:
        write_json(c)
        return
    out.print(f"[bold]{c.name or 'CPTS'}[/]  IDNST {c.idnst}  {c.phone or ''}")
    out.print(f"  territory: departments {', '.join(c.territory) or 'unknown'}")
    out.print(
        f"  members named by the participation list: {len(c.members)}; seen in vendors' answers: {len(c.seen_members)}"
    )
    if c.vendors:
        seen = f" (last {c.seen_at:%Y-%m-%d %H:%M} UTC)" if c.seen_at else ""
        out.print(f"  offered through by: {', '.join(c.vendors)}{seen}")


@index_app.command("status")
def index_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Live version and document count of each index."""
    backend = open_backend()
    health = backend.health()
    indices = {}
    if health.reachable:
        for kind in KINDS:
            live = health.live.get(kind)
            indices[kind] = {
                "live": live,
                "documents": backend.count(kind) if live else 0,
                "versions": backend.versions(kind),
            }
    if as_json:
        write_json(
            {"backend": health.backend, "version": health.version, "reachable": health.reachable, "indices": indices}
        )
        return
    out.print(f"{health.backend} {health.version or ''} reachable={health.reachable} {health.detail or ''}")
    for kind, row in indices.items():
        out.print(f"  {kind}: live={row['live']} documents={row['documents']:,} versions={len(row['versions'])}")
