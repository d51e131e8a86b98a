"""The `dispo` command line: imports, searches, lookups, the API server, tokens."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.geo import PARIS
from core.settings import Settings

app = typer.Typer(help="Dispo: national directory and availability index for the SAS.", no_args_is_help=True)
import_app = typer.Typer(
    help="Import a national file into a new index version, then switch to it.", no_args_is_help=True
)
show_app = typer.Typer(help="Show one record of the live directory.", no_args_is_help=True)
tokens_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)
index_app = typer.Typer(help="Index versions and aliases.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(show_app, name="show")
app.add_typer(tokens_app, name="tokens")
vendors_app = typer.Typer(help="The vendor registry.", no_args_is_help=True)
participations_app = typer.Typer(help="SAS participation: who takes part, through which vendor.", no_args_is_help=True)
app.add_typer(participations_app, name="participations")
app.add_typer(index_app, name="index")
app.add_typer(vendors_app, name="vendors")

console = Console()
err = Console(stderr=True)


def _backend(settings: Settings):
    from indexer.factory import make_backend

    try:
        return make_backend(settings)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def _count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
    return max(n - 1, 0)


def _run_import(kind: str, path: Path, force: bool) -> None:
    from core.report import FileRejected
    from indexer.backend import BackendUnavailable
    from indexer.lifecycle import ImportRefused
    from rpps_import.pipeline import import_finess, import_rpps, load_participations

    settings = Settings()
    backend = _backend(settings)
    if not path.exists():
        err.print(f"[red]error:[/] {path}: no such file")
        raise typer.Exit(2)
    total = _count_lines(path)
    with Progress(
        TextColumn(f"[bold]{kind}[/] {path.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task("import", total=total)

        def advance(lines: int) -> None:
            progress.update(task, completed=lines)

        try:
            loader = {"rpps": import_rpps, "finess": import_finess, "participations": load_participations}[kind]
            summary = loader(path, backend, settings, force=force, progress=advance)
            progress.update(task, completed=summary.lines_read)
        except ImportRefused as exc:
            _print_summary(exc.summary)
            err.print(f"[red]import refused:[/] {exc.summary.message}")
            raise typer.Exit(3) from exc
        except FileRejected as exc:
            err.print(f"[red]file rejected:[/] {exc}")
            err.print("the live index is unchanged")
            raise typer.Exit(2) from exc
        except BackendUnavailable as exc:
            err.print(f"[red]backend unavailable:[/] {exc}")
            err.print("the live index is unchanged; check DISPO_ES_URL / DISPO_BACKEND and retry")
            raise typer.Exit(4) from exc
    _print_summary(summary)


def _print_summary(summary) -> None:
    table = Table(title=f"Import report: {summary.kind} ({summary.format or 'unknown format'})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("source", summary.source)
    table.add_row("lines read", f"{summary.lines_read:,}")
    table.add_row("accepted", f"{summary.lines_accepted:,}")
    table.add_row("rejected", f"{summary.lines_rejected:,}")
    for reason, n in summary.rejected_by_reason.items():
        table.add_row("  rejected: " + reason, f"{n:,}")
    for reason, n in summary.warnings_by_reason.items():
        table.add_row("  warning: " + reason, f"{n:,}")
    table.add_row("records written", f"{summary.records_written:,}")
    for precision, n in summary.positions_by_precision.items():
        table.add_row("  position: " + precision, f"{n:,}")
    if summary.live_records_before is not None:
        table.add_row("live records before", f"{summary.live_records_before:,}")
    table.add_row("duration", f"{summary.duration_s:.2f} s ({summary.rows_per_second:,.0f} lines/s)")
    table.add_row("outcome", f"{summary.outcome}: {summary.message or ''}")
    if summary.report_file:
        table.add_row("line-level report", summary.report_file)
    console.print(table)


@import_app.command("rpps")
def import_rpps_cmd(
    file: Annotated[Path, typer.Argument(help="PS_LibreAcces_Personne_activite_*.txt")],
    force: Annotated[bool, typer.Option(help="switch even if far fewer records than the live index")] = False,
) -> None:
    """Import the RPPS/ADELI Personne_activite file (import FINESS first for establishment positions)."""
    _run_import("rpps", file, force)


@import_app.command("finess")
def import_finess_cmd(
    file: Annotated[Path, typer.Argument(help="etalab-cs1100507-stock-*.csv (raw or flat)")],
    force: Annotated[bool, typer.Option(help="switch even if far fewer records than the live index")] = False,
) -> None:
    """Import the FINESS establishments file."""
    _run_import("finess", file, force)


@app.command("sites")
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
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Practice sites nearest first, around a point, a postcode or an INSEE code."""
    from core.errors import DispoError
    from search.directory import site_search

    settings = Settings()
    try:
        answer = site_search(
            _backend(settings),
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
    except DispoError as exc:
        err.print(f"[red]{exc.title}:[/] {exc.detail}")
        raise typer.Exit(2) from exc
    if as_json:
        sys.stdout.write(answer.model_dump_json(indent=2) + "\n")
        return
    table = Table(
        title=f"{answer.total} practice site(s)" + (f" within {answer.radius_km} km" if answer.radius_km else "")
    )
    for col in ("km", "practitioner", "profession", "specialty", "site", "address", "phone", "position"):
        table.add_column(col)
    for r in answer.results:
        s, p = r.site, r.site.practitioner
        table.add_row(
            f"{r.distance_km:.1f}" if r.distance_km is not None else "",
            p.display_name(),
            p.profession_label or p.profession_code,
            ", ".join(sp.code for sp in p.specialties),
            s.name or "",
            s.address.label() if s.address else "",
            s.phone or "",
            s.position.precision.value if s.position else "none",
        )
    console.print(table)
    if answer.next_cursor:
        console.print(f"more: --cursor {answer.next_cursor}")


@show_app.command("practitioner")
def show_practitioner(idnps: str, as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """A practitioner (by IDNPS) and all their practice sites."""
    from core.errors import DispoError
    from search.directory import practitioner_answer

    try:
        answer = practitioner_answer(_backend(Settings()), idnps)
    except DispoError as exc:
        err.print(f"[red]{exc.title}:[/] {exc.detail}")
        raise typer.Exit(1) from exc
    if as_json:
        sys.stdout.write(answer.model_dump_json(indent=2) + "\n")
        return
    p = answer.practitioner
    console.print(
        f"[bold]{p.display_name()}[/]  IDNPS {p.idnps} ({p.id_type})  {p.profession_label or p.profession_code}"
    )
    for sp in p.specialties:
        console.print(f"  specialty {sp.code} {sp.label or ''}")
    for s in answer.sites:
        where = s.address.label() if s.address else "no practice site"
        pos = (
            f"{s.position.lat:.5f},{s.position.lon:.5f} ({s.position.precision.value})" if s.position else "no position"
        )
        console.print(f"  - {s.name or ''} {where} [{s.mode_label or s.mode_code or ''}] {pos}")


@show_app.command("structure")
def show_structure(finess: str, as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """A FINESS establishment."""
    from core.errors import DispoError
    from search.directory import structure_answer

    try:
        s = structure_answer(_backend(Settings()), finess)
    except DispoError as exc:
        err.print(f"[red]{exc.title}:[/] {exc.detail}")
        raise typer.Exit(1) from exc
    if as_json:
        sys.stdout.write(s.model_dump_json(indent=2) + "\n")
        return
    console.print(f"[bold]{s.name}[/]  FINESS {s.finess}  {s.category_label or ''}")
    console.print(f"  {s.address.label()}  {s.phone or ''}")
    if s.position:
        console.print(f"  {s.position.lat:.5f},{s.position.lon:.5f} ({s.position.precision.value})")


@index_app.command("status")
def index_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Live version and document count of each index."""
    from mappings import KINDS

    backend = _backend(Settings())
    health = backend.health()
    rows = (
        {
            kind: {
                "live": health.live.get(kind),
                "documents": backend.count(kind) if health.live.get(kind) else 0,
                "versions": backend.versions(kind),
            }
            for kind in KINDS
        }
        if health.reachable
        else {}
    )
    if as_json:
        sys.stdout.write(
            orjson.dumps(
                {
                    "backend": health.backend,
                    "version": health.version,
                    "reachable": health.reachable,
                    "indices": rows,
                }
            ).decode()
            + "\n"
        )
        return
    console.print(f"{health.backend} {health.version or ''} reachable={health.reachable} {health.detail or ''}")
    for kind, row in rows.items():
        console.print(f"  {kind}: live={row['live']} documents={row['documents']:,} versions={len(row['versions'])}")


@tokens_app.command("create")
def tokens_create(
    role: Annotated[str, typer.Option(help="regulator | maintainer | analyst | vendor")],
    label: Annotated[str, typer.Option(help="who holds it")] = "",
    file: Annotated[Path | None, typer.Option(help="append the entry to this tokens file")] = None,
) -> None:
    """Make a token: prints the token once, and the hashed entry to configure."""
    from api.auth import Role, new_token

    if role not in Role.__members__:
        err.print(f"[red]error:[/] unknown role {role!r}; roles: {', '.join(Role)}")
        raise typer.Exit(2)
    token, entry = new_token(Role(role), label or role)
    target = file or Settings().tokens_file
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as fh:
            fh.write(entry + "\n")
        err.print(f"entry appended to {target}")
    else:
        err.print(f"add to DISPO_TOKENS or a tokens file: {entry}")
    sys.stdout.write(token + "\n")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from api.app import create_app

    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level="info",
        access_log=False,
    )


@participations_app.command("load")
def participations_load(
    file: Annotated[Path, typer.Argument(help="CSV: idnps,vendors,via,extra_patients,active")],
    force: Annotated[bool, typer.Option(help="switch even if far fewer participants than now")] = False,
) -> None:
    """Replace the participation registry with a CSV list (row-level report)."""
    _run_import("participations", file, force)


@vendors_app.command("add")
def vendors_add(
    vendor_id: Annotated[str, typer.Argument()],
    base_url: Annotated[str, typer.Option(help="FHIR base URL; the slot search is GET <base>/Slot")],
    name: Annotated[str, typer.Option()] = "",
    bearer_token: Annotated[str | None, typer.Option(envvar="DISPO_VENDOR_TOKEN")] = None,
    client_cert: Annotated[str | None, typer.Option(help="PEM client certificate (mutual TLS)")] = None,
    client_key: Annotated[str | None, typer.Option()] = None,
    ca_bundle: Annotated[str | None, typer.Option()] = None,
    concurrency: Annotated[int, typer.Option()] = 4,
    timeout: Annotated[float, typer.Option(help="seconds per request")] = 7.0,
    rps: Annotated[float, typer.Option(help="requests per second")] = 20.0,
) -> None:
    """Declare (or update) a vendor."""
    from core.records import Vendor
    from indexer.registry import save_vendor

    vendor = Vendor(
        vendor_id=vendor_id,
        name=name or vendor_id,
        base_url=base_url,
        bearer_token=bearer_token,
        client_cert=client_cert,
        client_key=client_key,
        ca_bundle=ca_bundle,
        concurrency=concurrency,
        timeout_s=timeout,
        requests_per_second=rps,
    )
    save_vendor(_backend(Settings()), vendor)
    console.print(f"vendor {vendor_id} saved ({base_url})")


@vendors_app.command("list")
def vendors_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered vendors (credentials are never printed)."""
    from api.vendors import VendorView
    from indexer.registry import list_vendors

    views = [VendorView.of(v) for v in list_vendors(_backend(Settings()))]
    if as_json:
        sys.stdout.write(orjson.dumps([v.model_dump() for v in views]).decode() + "\n")
        return
    table = Table(title=f"{len(views)} vendor(s)")
    for col in ("id", "name", "base URL", "auth", "timeout s", "enabled"):
        table.add_column(col)
    for v in views:
        table.add_row(v.vendor_id, v.name, v.base_url, v.auth, f"{v.timeout_s:g}", "yes" if v.enabled else "no")
    console.print(table)


@vendors_app.command("disable")
def vendors_disable(vendor_id: str) -> None:
    """Stop pulling a vendor (its indexed slots age out)."""
    from indexer.registry import set_enabled

    if set_enabled(_backend(Settings()), vendor_id, False) is None:
        err.print(f"[red]error:[/] no vendor {vendor_id!r}; see `dispo vendors list`")
        raise typer.Exit(1)
    console.print(f"vendor {vendor_id} disabled")


@app.command()
def aggregate(
    once: Annotated[bool, typer.Option("--once", help="run one cycle of every vendor and exit")] = False,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus metrics on this port")] = None,
) -> None:
    """Pull every participating practitioner's free slots from the vendors, on a schedule."""
    import asyncio
    import logging

    from aggregation.scheduler import Aggregator
    from analytics.snapshots import snapshot_now

    settings = Settings()
    backend = _backend(settings)
    aggregator = Aggregator(backend, settings, snapshot=snapshot_now)
    if metrics_port:
        from prometheus_client import start_http_server

        from aggregation.metrics import REGISTRY

        start_http_server(metrics_port, addr=settings.host, registry=REGISTRY)
    if once:
        reports = asyncio.run(aggregator.run_once())
        if not reports:
            err.print("no enabled vendor: declare one with `dispo vendors add`")
            raise typer.Exit(1)
        table = Table(title="Aggregation cycle")
        for col in (
            "vendor",
            "participants",
            "batches",
            "failed",
            "slots",
            "inserted",
            "updated",
            "removed",
            "unchanged",
            "rejected",
            "unplaced",
            "errors",
            "seconds",
        ):
            table.add_column(col)
        for r in reports:
            table.add_row(
                r.vendor_id,
                str(r.participants),
                str(r.batches),
                str(r.batches_failed + r.batches_skipped),
                str(r.slots_received),
                str(r.stats.inserted),
                str(r.stats.updated),
                str(r.stats.removed),
                str(r.stats.unchanged),
                str(sum(r.rejected.values())),
                str(sum(r.unplaced.values())),
                ", ".join(f"{k} {v}" for k, v in r.errors.items()) or "-",
                f"{r.duration_s:.2f}",
            )
        console.print(table)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    err.print(f"aggregating every {settings.aggregation_interval_s:g} s; Ctrl-C stops")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(aggregator.run_forever())


@vendors_app.command("check")
def vendors_check(
    vendor_id: str,
    idnps: Annotated[
        list[str] | None, typer.Option(help="practitioners to ask for (default: its participants)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check a vendor's slot-search answer against the verifiable requirements of the agency's test kit."""
    import asyncio
    from datetime import UTC, datetime

    import httpx

    from aggregation.client import make_client
    from aggregation.contract import CONTRACT_ACCEPT, slot_search_params
    from aggregation.puller import slot_window
    from editor_sandbox.conformance import check_answer
    from indexer.registry import get_vendor, participants

    backend = _backend(Settings())
    vendor = get_vendor(backend, vendor_id)
    if vendor is None:
        err.print(f"[red]error:[/] no vendor {vendor_id!r}; see `dispo vendors list`")
        raise typer.Exit(2)
    asked = (idnps or [p.idnps for p in participants(backend, vendor_id)])[:25]
    if not asked:
        err.print("[red]error:[/] no practitioner to ask for: give --idnps or load participations")
        raise typer.Exit(2)
    start, end = slot_window(datetime.now(UTC), 2)

    async def call() -> httpx.Response:
        async with make_client(vendor) as client:
            return await client.get(
                vendor.base_url.rstrip("/") + "/Slot",
                params=slot_search_params(asked, start, end),
                headers={"Accept": CONTRACT_ACCEPT},
            )

    try:
        response = asyncio.run(call())
        bundle = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        err.print(f"[red]the vendor did not give a JSON answer:[/] {exc}")
        raise typer.Exit(1) from exc
    checks = check_answer(bundle, asked, start, end)
    failed = [c for c in checks if not c[1]]
    if as_json:
        sys.stdout.write(
            orjson.dumps(
                {
                    "status": response.status_code,
                    "checks": len(checks),
                    "failed": [{"requirement": c[0], "detail": c[2]} for c in failed],
                }
            ).decode()
            + "\n"
        )
    else:
        by_requirement: dict[int, list[str]] = {}
        for req_id, ok, detail in checks:
            if not ok:
                by_requirement.setdefault(req_id, []).append(detail)
        console.print(
            f"HTTP {response.status_code}; {len(checks)} checks on {len({c[0] for c in checks})} "
            f"requirements of agg-psindiv; {len(failed)} failed"
        )
        for req_id in sorted(by_requirement):
            console.print(
                f"  [red]requirement {req_id}[/]: {by_requirement[req_id][0]}"
                + (f" (+{len(by_requirement[req_id]) - 1} more)" if len(by_requirement[req_id]) > 1 else "")
            )
    raise typer.Exit(1 if failed or response.status_code != 200 else 0)


@vendors_app.command("status")
def vendors_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Per vendor: last success and error, latency, slots held, staleness, breaker."""
    from aggregation.status import vendor_statuses

    rows = vendor_statuses(_backend(Settings()))
    if as_json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        return
    table = Table(title="Vendors")
    for col in (
        "vendor",
        "enabled",
        "last success",
        "staleness s",
        "last error",
        "p50 ms",
        "p95 ms",
        "slots",
        "failing",
        "breaker",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["vendor_id"],
            "yes" if r["enabled"] else "no",
            r.get("last_success_at") or "never",
            f"{r['staleness_s']:.0f}" if r.get("staleness_s") is not None else "-",
            (r.get("last_error") or "-")[:60],
            str(r.get("latency_p50_ms") or "-"),
            str(r.get("latency_p95_ms") or "-"),
            str(r["slots_held"]),
            str(r["failing_practitioners"]),
            r.get("breaker") or "-",
        )
    console.print(table)


@app.command()
def sandbox(
    config: Annotated[
        Path | None, typer.Option(help="JSON SandboxConfig: vendor id, seed, practitioners, knobs")
    ] = None,
    port: Annotated[int, typer.Option(help="port (first port with --vendors)")] = 8100,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    vendors: Annotated[int, typer.Option(help="start this many vendors over the directory and register them")] = 0,
    latency_ms: Annotated[float, typer.Option(help="with --vendors: maximum answer latency")] = 0.0,
    participations: Annotated[Path | None, typer.Option(help="with --vendors: participation CSV to load")] = None,
    platform_url: Annotated[str | None, typer.Option(help="with --vendors: report bookings to this FHIR base")] = None,
    platform_tokens: Annotated[Path | None, typer.Option(help="with --vendors: file of vendor_id:token lines")] = None,
) -> None:
    """Serve vendor sandboxes implementing the vendor side of the SAS contract (FHIR base: /fhir).

    With --config, one vendor from a JSON description. With --vendors N, N vendors sharing the live
    directory's practitioners, declared in the vendor registry with their participations.
    """
    import threading

    import uvicorn
    from pydantic import ValidationError

    from editor_sandbox.agenda import SandboxConfig
    from editor_sandbox.app import create_sandbox_app

    if vendors > 0:
        from editor_sandbox.fleet import start_fleet

        servers = start_fleet(
            _backend(Settings()),
            vendors,
            base_port=port,
            participations=participations,
            platform_url=platform_url,
            platform_tokens=dict(line.split(":", 1) for line in platform_tokens.read_text().split() if ":" in line)
            if platform_tokens
            else None,
            latency_ms_min=latency_ms / 3,
            latency_ms_max=latency_ms,
        )
        for s in servers:
            err.print(
                f"sandbox {s.config.vendor_id} ({s.config.name}): {len(s.config.practitioners)} practitioners, "
                f"FHIR base {s.fhir_base}"
            )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
        for s in servers:
            s.stop()
        return
    if config is None:
        err.print("[red]error:[/] give --config FILE or --vendors N")
        raise typer.Exit(2)
    try:
        cfg = SandboxConfig.model_validate_json(config.read_bytes())
    except (OSError, ValidationError) as exc:
        err.print(f"[red]error:[/] cannot read sandbox config {config}: {exc}")
        raise typer.Exit(2) from exc
    err.print(f"sandbox {cfg.vendor_id}: {len(cfg.practitioners)} practitioners, FHIR base http://{host}:{port}/fhir")
    uvicorn.run(create_sandbox_app(cfg), host=host, port=port, log_level="warning", access_log=False)


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="output folder")],
    scale: Annotated[str, typer.Option(help="department | region | national")] = "department",
    seed: Annotated[int, typer.Option()] = 0,
    vendors: Annotated[int, typer.Option(help="sandbox vendors the participants are spread over")] = 3,
    finess: Annotated[bool, typer.Option(help="also write a FINESS etalab stock file")] = True,
) -> None:
    """Deterministic data in the real formats: PS_LibreAcces, FINESS etalab stock, participation CSV."""
    from bench.generate import SCALES
    from bench.generate import generate as run

    if scale not in (*SCALES, "national"):
        err.print(f"[red]error:[/] unknown scale {scale!r}: department, region or national")
        raise typer.Exit(2)
    with console.status(f"generating the {scale} scale..."):
        written = run(out, scale, seed, vendors, finess=finess)
    dirty = ", ".join(f"{n} {reason}" for reason, n in sorted(written["dirty"].items())) or "none"  # type: ignore[union-attr]
    console.print(
        f"{written['lines']:,} lines, {written['people']:,} people ({written['gps']:,} liberal GPs) "
        f"-> {written['rpps']}"
    )
    console.print(f"  dirty lines planted (the import rejects them): {dirty}")
    if finess:
        counts = written["finess_counts"]
        console.print(
            f"{counts['establishments']:,} establishments, {counts['geolocalisations']:,} geolocalisations "  # type: ignore[index]
            f"-> {written['finess']}"
        )
    console.print(
        f"{written['participants']:,} participants over {len(written['vendors'])} vendors "
        f"-> {written['participations']}"
    )


@app.command()
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
    from search.answer import address_geocoder, build_answer
    from search.engine import SearchError, SearchRequest, run_search

    settings = Settings()
    backend = _backend(settings)
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
    try:
        answer = build_answer(
            backend,
            settings,
            run_search(
                backend,
                req,
                geocoder=address_geocoder(settings),
                staleness_limit_s=settings.staleness_limit_s,
                verify_deadline_s=settings.verify_deadline_s if verify else 0.0,
            ),
            req,
        )
    except SearchError as exc:
        err.print(f"[red]invalid search:[/] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        sys.stdout.write(answer.model_dump_json(indent=2) + "\n")
        return
    e = answer.explanation
    console.print(
        f"[bold]{answer.place.label or f'{answer.place.lat:.4f},{answer.place.lon:.4f}'}[/] "
        f"({answer.place.precision}), radius {answer.radius_km:g} km ({e.radius_source}), seed {answer.seed}"
    )
    table = Table(title=f"{answer.total} practitioner(s) with a free slot")
    for col in ("#", "km", "practitioner", "site", "phone", "today", "tomorrow", "day after", "group"):
        table.add_column(col)
    for c in answer.cards:

        def times(day: str, card=c) -> str:
            return " ".join(s.start.astimezone(PARIS).strftime("%H:%M") for s in card.slots[day][:4])

        table.add_row(
            str(c.rank),
            f"{c.distance_km:.1f}",
            c.practitioner.name,
            c.site.address or "",
            c.site.phone or "",
            times("today"),
            times("tomorrow"),
            times("day_after"),
            c.group,
        )
    console.print(table)
    if e.message:
        console.print(e.message)
    if answer.next_cursor:
        console.print(f"more: --cursor {answer.next_cursor}")


@app.command()
def bench(
    scenario: Annotated[
        list[str] | None, typer.Argument(help="import, search, verify, aggregate, embedded (default: all)")
    ] = None,
    scale: Annotated[str, typer.Option(help="department | region | national")] = "department",
    repeat: Annotated[
        int | None, typer.Option(help="searches per search scenario (default 400; 20 for live verification)")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="only this backend: sqlite | elasticsearch (default: every one available)")
    ] = None,
) -> None:
    """Run benchmarks and print figures with the ratio to their reference, measured in the same run.

    The embedded index is measured, and Elasticsearch too when DISPO_ES_URL is set; --backend keeps one."""
    from bench.run import SCALES, SCENARIOS, print_table, run

    names = scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or scale not in SCALES or backend not in (None, "sqlite", "elasticsearch"):
        err.print(
            f"[red]error:[/] scenarios: {', '.join(SCENARIOS)}; scales: {', '.join(SCALES)}; "
            "backends: sqlite, elasticsearch"
        )
        raise typer.Exit(2)
    if backend == "elasticsearch" and not os.environ.get("DISPO_ES_URL"):
        err.print("[red]error:[/] --backend elasticsearch needs DISPO_ES_URL (scripts/elasticsearch.sh starts one)")
        raise typer.Exit(2)
    # The table so far after each scenario: a long national run shows its figures as they come.
    rows = run(names, scale, on_rows=print_table if len(names) > 1 else None, repeat=repeat, backend=backend)
    print_table(rows)


appointments_app = typer.Typer(help="Appointments reported by vendors.", no_args_is_help=True)
app.add_typer(appointments_app, name="appointments")


@appointments_app.command("list")
def appointments_list(
    regulator: Annotated[str | None, typer.Option(help="the regulator (operator) identifier")] = None,
    status: Annotated[str | None, typer.Option(help="booked, fulfilled, noshow, cancelled")] = None,
    department: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Appointments with their statuses (no patient data is ever stored)."""
    from core.records import Appointment
    from indexer.backend import GeoQuery

    filters = {k: [v] for k, v in (("operator", regulator), ("status", status), ("department", department)) if v}
    hits = _backend(Settings()).search("appointments", GeoQuery(filters=filters, limit=10_000)).hits
    rows = sorted((Appointment.model_validate(h.doc) for h in hits), key=lambda a: a.start)
    if as_json:
        sys.stdout.write(orjson.dumps([a.model_dump(mode="json") for a in rows]).decode() + "\n")
        return
    table = Table(title=f"{len(rows)} appointment(s)")
    for col in ("start", "practitioner", "vendor", "regulator", "status", "history", "department"):
        table.add_column(col)
    for a in rows:
        table.add_row(
            a.start.astimezone(PARIS).strftime("%d/%m %H:%M"),
            a.idnps,
            a.vendor,
            a.operator,
            a.status.value,
            " > ".join(h.status.value for h in a.history),
            a.department_code or "",
        )
    console.print(table)


audit_app = typer.Typer(help="Audits of the service's promises.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("neutrality")
def audit_neutrality_cmd(
    searches: Annotated[int, typer.Option(help="searches at random points weighted by population")] = 200,
    seed: Annotated[int, typer.Option()] = 0,
    limit: Annotated[int, typer.Option(help="first-page size")] = 10,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per vendor: first-page exposure against what distances earn, and rank within equal-distance ties."""
    from search.audit import audit_neutrality

    settings = Settings()
    rows = audit_neutrality(_backend(settings), searches, seed, limit, settings.staleness_limit_s)
    if as_json:
        sys.stdout.write(
            orjson.dumps(
                [
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
            ).decode()
            + "\n"
        )
        return
    total_exp = sum(r.exposures for r in rows) or 1
    total_eli = sum(r.eligible for r in rows) or 1
    table = Table(title=f"Neutrality over {searches} searches (seed {seed})")
    for col in ("vendor", "eligible share", "exposure share", "expected", "observed", "z", "mean tie position"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.vendor,
            f"{r.eligible / total_eli:.1%}",
            f"{r.exposures / total_exp:.1%}",
            f"{r.expected:.1f}",
            f"{r.exposures:.0f}",
            f"{r.z:+.2f}",
            f"{r.mean_tie_position:.2f}" if r.mean_tie_position is not None else "-",
        )
    console.print(table)
    console.print("|z| < 3 for every vendor: no vendor departs from what distances earn it (3 standard deviations).")


coverage_app = typer.Typer(help="Coverage for analysts: tables, exports, map and chart.", no_args_is_help=True)
app.add_typer(coverage_app, name="coverage")
Days = Annotated[float, typer.Option(help="period: the last N days")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")]


def _print_rows(rows: list, columns: list[str], title: str, as_json: bool) -> None:
    if as_json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row.model_dump(mode="json")).decode() + "\n")
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(
            col, justify="left" if col in ("code", "name", "territory", "vendor_id", "status") else "right"
        )
    for row in rows:
        values = row.model_dump()
        table.add_row(
            *(
                "" if values[c] is None else f"{values[c]:.3g}" if isinstance(values[c], float) else str(values[c])
                for c in columns
            )
        )
    console.print(table)


def _period(days: float):
    from analytics.tables import Period

    return Period.last(days)


@coverage_app.command("snapshot")
def coverage_snapshot() -> None:
    """Take a coverage snapshot now (the scheduler takes them on its own)."""
    from analytics.snapshots import snapshot_now

    settings = Settings()
    with console.status("counting participants and free slots per area..."):
        s = snapshot_now(_backend(settings), settings)
    console.print(
        f"snapshot {s.snapshot}: {s.rows} rows, {s.participants} participants, {s.slots_72h} free slots within 72 h "
        f"({s.pruned} old rows pruned) in {s.duration_s:.1f} s"
    )


@coverage_app.command("show")
def coverage_show(
    level: Annotated[str, typer.Option(help="national, territory, department or commune")] = "department",
    horizon: Annotated[int, typer.Option(help="24, 48 or 72 hours")] = 48,
    as_json: AsJson = False,
) -> None:
    """Coverage of every area of a level at the last snapshot (absolute and per 10,000 inhabitants)."""
    from analytics.tables import coverage

    try:
        rows = coverage(_backend(Settings()), level, horizon)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if not rows and not as_json:
        err.print("no coverage snapshot yet: run `dispo coverage snapshot` (or `dispo aggregate --once`)")
        raise typer.Exit(1)
    columns = ["code", "name", "population", "participants", "practitioners_with_slots", "slots", "slots_per_10k"]
    _print_rows(
        rows, columns, f"Coverage by {level} at {horizon} h, snapshot {rows[0].snapshot if rows else '-'}", as_json
    )


@coverage_app.command("evolution")
def coverage_evolution(
    level: Annotated[str, typer.Option()] = "national",
    code: Annotated[str | None, typer.Option(help="area code (all areas of the level if absent)")] = None,
    horizon: Annotated[int, typer.Option()] = 48,
    days: Days = 7,
    as_json: AsJson = False,
) -> None:
    """An area's coverage over a period, snapshot by snapshot."""
    from analytics.tables import evolution

    try:
        rows = evolution(_backend(Settings()), level, code, horizon, _period(days))
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    columns = ["snapshot", "code", "participants", "practitioners_with_slots", "slots", "slots_per_10k"]
    _print_rows(rows, columns, f"Evolution ({level} {code or ''}, {horizon} h, last {days:g} days)", as_json)


@coverage_app.command("under-served")
def coverage_under_served(days: Days = 7, as_json: AsJson = False) -> None:
    """Regulator searches with fewer than 5 cards with slots, by territory and hour of day."""
    from analytics.tables import under_served

    rows = under_served(_backend(Settings()), _period(days))
    columns = ["territory", "hour", "searches", "under_served", "under_served_share", "median_radius_km"]
    _print_rows(rows, columns, f"Under-served searches, last {days:g} days", as_json)


@coverage_app.command("vendors")
def coverage_vendors(days: Days = 7, as_json: AsJson = False) -> None:
    """Participants, slots held, share, error rate, p95 latency and staleness per vendor over a period."""
    from analytics.tables import vendors

    rows = vendors(_backend(Settings()), _period(days))
    columns = [
        "vendor_id",
        "participants",
        "slots_72h",
        "share_of_slots",
        "requests",
        "error_rate",
        "latency_p95_ms",
        "staleness_max_s",
    ]
    _print_rows(rows, columns, f"Vendors, last {days:g} days", as_json)


@coverage_app.command("appointments")
def coverage_appointments(days: Days = 7, as_json: AsJson = False) -> None:
    """Appointments starting in the period, by territory and status."""
    from analytics.tables import appointments

    rows = appointments(_backend(Settings()), _period(days))
    _print_rows(
        rows, ["territory", "department", "status", "appointments"], f"Appointments, last {days:g} days", as_json
    )


@coverage_app.command("export")
def coverage_export(
    out: Annotated[Path, typer.Option(help="directory to write the tables into")],
    fmt: Annotated[list[str] | None, typer.Option("--format", help="csv and/or parquet (both by default)")] = None,
    days: Days = 7,
) -> None:
    """Every table as CSV and Parquet, with data_dictionary.md."""
    from analytics.exports import FORMATS, export_all

    formats = tuple(fmt or FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        err.print(f"[red]error:[/] unknown format {', '.join(unknown)}: use csv or parquet")
        raise typer.Exit(2)
    with console.status("building the tables..."):
        written = export_all(_backend(Settings()), out, _period(days), formats)  # type: ignore[arg-type]
    for table, paths in written.items():
        console.print(f"{table}: " + ", ".join(f"{p.name} ({p.stat().st_size:,} bytes)" for p in paths))
    console.print(f"data dictionary: {out / 'data_dictionary.md'}")


def _picture_format(out: Path) -> str:
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        err.print(f"[red]error:[/] {out.name}: the file must end in .png or .svg")
        raise typer.Exit(2)
    return fmt


@coverage_app.command("map")
def coverage_map(
    out: Annotated[Path, typer.Option(help="file to write: .png or .svg")],
    horizon: Annotated[int, typer.Option()] = 48,
    width: Annotated[int, typer.Option(help="pixels")] = 1000,
    height: Annotated[int, typer.Option(help="pixels")] = 1000,
) -> None:
    """Map of France by department coloured by free slots per 10,000 inhabitants, at the last snapshot."""
    from analytics.pictures import render_map
    from analytics.tables import coverage

    fmt = _picture_format(out)
    rows = coverage(_backend(Settings()), "department", horizon)
    if not rows:
        err.print("no coverage snapshot yet: run `dispo coverage snapshot` first; the map shows every department grey")
    try:
        body = render_map(rows, fmt, width, height, f"Créneaux libres à {horizon} h pour 10 000 habitants")  # type: ignore[arg-type]
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    out.write_bytes(body)
    console.print(f"{out} ({len(body):,} bytes, {width}x{height})")


@coverage_app.command("chart")
def coverage_chart(
    out: Annotated[Path, typer.Option(help="file to write: .png or .svg")],
    days: Days = 7,
    horizon: Annotated[int, typer.Option()] = 48,
    width: Annotated[int, typer.Option(help="pixels")] = 1200,
    height: Annotated[int, typer.Option(help="pixels")] = 500,
) -> None:
    """National free slots over the period and under-served searches per hour."""
    from analytics.pictures import render_chart
    from analytics.tables import evolution, search_activity

    fmt = _picture_format(out)
    backend = _backend(Settings())
    period = _period(days)
    try:
        body = render_chart(
            evolution(backend, "national", None, horizon, period),
            search_activity(backend, period),
            fmt,  # type: ignore[arg-type]
            width,
            height,
            (period.start, period.end),
        )
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    out.write_bytes(body)
    console.print(f"{out} ({len(body):,} bytes, {width}x{height})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
