"""`dispo vendors add|list|disable|status|check`: the vendor registry, its aggregation state (one vendor's last
cycle in detail), and a vendor's answer checked against the agency's test kit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError
from rich.markup import escape

from aggregation.client import make_client
from aggregation.contract import CONTRACT_ACCEPT, slot_search_params
from aggregation.puller import slot_window
from aggregation.status import STATUS, failing_since, vendor_statuses
from api.vendors import VendorView
from core.records import Flow, Vendor
from dispo.console import FAILED, INVALID, fail, open_backend, out, print_listing, write_json
from editor_sandbox.conformance import Check, check_answer
from indexer.registry import get_vendor, list_vendors, participants, save_vendor, set_enabled

vendors_app = typer.Typer(help="The vendor registry.", no_args_is_help=True)

CHECKED_AT_MOST = 25  # practitioners asked for in one check: one slot-search request
STATUS_COLUMNS = (
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
    "pulled by",
)


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
    flow: Annotated[
        list[Flow] | None,
        typer.Option(help="a flow of the agency's guide the vendor serves, repeated for several (default individual)"),
    ] = None,
) -> None:
    """Declare (or update) a vendor."""
    try:
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
            flows=sorted(set(flow or [Flow.individual])),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise fail(problems, INVALID, "invalid vendor", "see `dispo vendors add --help` for each option") from exc
    save_vendor(open_backend(), vendor)
    out.print(f"vendor {vendor_id} saved ({base_url})")


@vendors_app.command("list")
def vendors_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered vendors (credentials are never printed)."""
    views = [VendorView.of(v) for v in list_vendors(open_backend())]
    print_listing(
        as_json,
        [v.model_dump() for v in views],
        f"{len(views)} vendor(s)",
        ("id", "name", "base URL", "auth", "timeout s", "flows", "enabled"),
        (
            (
                v.vendor_id,
                v.name,
                v.base_url,
                v.auth,
                f"{v.timeout_s:g}",
                ", ".join(v.flows),
                "yes" if v.enabled else "no",
            )
            for v in views
        ),
    )


@vendors_app.command("disable")
def vendors_disable(vendor_id: str) -> None:
    """Stop pulling a vendor (its indexed slots age out)."""
    if set_enabled(open_backend(), vendor_id, False) is None:
        raise fail(f"no vendor {vendor_id!r}; see `dispo vendors list`", FAILED)
    out.print(f"vendor {vendor_id} disabled")


async def _ask(vendor: Vendor, asked: list[str], start: datetime, end: datetime) -> httpx.Response:
    """One slot search, as the aggregator sends it."""
    async with make_client(vendor) as client:
        return await client.get(
            vendor.base_url.rstrip("/") + "/Slot",
            params=slot_search_params(asked, start, end, cpts=Flow.cpts in vendor.flows),
            headers={"Accept": CONTRACT_ACCEPT},
        )


def _print_checks(status: int, checks: list[Check]) -> None:
    """The count of checks, then each failed requirement with its first failure."""
    failures: dict[int, list[str]] = {}
    for req_id, ok, detail in checks:
        if not ok:
            failures.setdefault(req_id, []).append(detail)
    failed = sum(len(details) for details in failures.values())
    out.print(
        f"HTTP {status}; {len(checks)} checks on {len({c[0] for c in checks})} "
        f"requirements of agg-psindiv; {failed} failed"
    )
    for req_id in sorted(failures):
        first, more = failures[req_id][0], len(failures[req_id]) - 1
        out.print(f"  [red]requirement {req_id}[/]: {first}" + (f" (+{more} more)" if more else ""))


@vendors_app.command("check")
def vendors_check(
    vendor_id: str,
    idnps: Annotated[
        list[str] | None, typer.Option(help="practitioners to ask for (default: its participants)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check a vendor's slot-search answer against the verifiable requirements of the agency's test kit."""
    backend = open_backend()
    vendor = get_vendor(backend, vendor_id)
    if vendor is None:
        raise fail(f"no vendor {vendor_id!r}; see `dispo vendors list`", INVALID)
    asked = (idnps or [p.idnps for p in participants(backend, vendor_id)])[:CHECKED_AT_MOST]
    if not asked:
        raise fail("no practitioner to ask for: give --idnps or load participations", INVALID)
    start, end = slot_window(datetime.now(UTC), 2)
    try:
        response = asyncio.run(_ask(vendor, asked, start, end))
        bundle = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise fail(str(exc), FAILED, "the vendor did not give a JSON answer") from exc
    checks = check_answer(bundle, asked, start, end)
    failed = [c for c in checks if not c[1]]
    if as_json:
        write_json(
            {
                "status": response.status_code,
                "checks": len(checks),
                "failed": [{"requirement": c[0], "detail": c[2]} for c in failed],
            }
        )
    else:
        _print_checks(response.status_code, checks)
    raise typer.Exit(FAILED if failed or response.status_code != 200 else 0)


def _status_row(r: dict[str, Any]) -> tuple[str, ...]:
    return (
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
        r.get("pulled_by") or "-",
    )


def _print_reasons(what: str, counts: dict[str, int], examples: dict[str, list[str]]) -> None:
    """Slots set aside last cycle, by reason, with the example slot ids the cycle kept (when it kept some)."""
    if not counts:
        out.print(f"{what}: none")
        return
    out.print(f"{what}:")
    for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        shown = examples.get(reason) or []
        out.print(f"  {escape(reason)}: {count}" + (f" (e.g. {escape(', '.join(shown))})" if shown else ""))


def _print_vendor_status(row: dict[str, Any], status: dict[str, Any]) -> None:
    """One vendor's state and its last cycle in detail."""
    out.print(
        f"[bold]{escape(row['vendor_id'])}[/] ({escape(row['name'])}), enabled: {'yes' if row['enabled'] else 'no'}"
    )
    for label, value in (
        ("last success", row.get("last_success_at") or "never"),
        ("last error", f"{row['last_error_at']}: {row['last_error']}" if row.get("last_error_at") else "-"),
        ("slots held", row["slots_held"]),
        ("breaker", row.get("breaker") or "-"),
        ("pulled by", f"{row['pulled_by']} (lease until {row['lease_until']})" if row.get("pulled_by") else "-"),
    ):
        out.print(f"{label}: {escape(str(value))}")
    cycle = row.get("last_cycle")
    if not cycle:
        out.print("no cycle yet")
        return
    c = cycle.get
    out.print(f"last cycle: {c('started_at')}, {c('duration_s', 0)} s, {c('participants', 0)} participant(s)")
    out.print(f"requests: {c('requests', 0)}, pages: {c('pages', 0)}")
    out.print(
        f"batches: {c('batches', 0)}, failed: {c('batches_failed', 0)}, split: {c('batches_split', 0)}, "
        f"skipped: {c('batches_skipped', 0)}"
    )
    out.print(
        f"slots received: {c('slots_received', 0)}, inserted: {c('inserted', 0)}, updated: {c('updated', 0)}, "
        f"removed: {c('removed', 0)}, unchanged: {c('unchanged', 0)}, expired: {c('expired', 0)}"
    )
    if c("vendor_declared_sites") is not None:
        out.print(f"sites the vendor declared: {c('vendor_declared_sites')}")
    examples = c("examples") or {}
    _print_reasons("rejected slots", c("rejected") or {}, examples.get("rejected") or {})
    _print_reasons("unplaced slots", c("unplaced") or {}, examples.get("unplaced") or {})
    if c("errors"):
        out.print("errors: " + ", ".join(f"{kind} {n}" for kind, n in sorted(c("errors").items())))
    since = failing_since(status)
    reasons = c("failing_reasons") or {}
    if since or reasons:
        out.print(f"failing practitioners: {len(set(since) | set(reasons))}")
        for idnps in sorted(set(since) | set(reasons)):
            out.print(f"  {idnps}: since {since.get(idnps, '?')}, {escape(reasons.get(idnps) or 'no reason given')}")


@vendors_app.command("status")
def vendors_status(
    vendor_id: Annotated[str | None, typer.Argument(help="one vendor, its last cycle in detail")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per vendor: last success and error, latency, slots held, staleness, breaker; with a vendor, its last cycle
    in detail (rejected and unplaced slots by reason, failing practitioners), or its status document with --json."""
    backend = open_backend()
    rows = vendor_statuses(backend)
    if vendor_id is None:
        print_listing(as_json, rows, "Vendors", STATUS_COLUMNS, map(_status_row, rows))
        return
    row = next((r for r in rows if r["vendor_id"] == vendor_id), None)
    if row is None:
        raise fail(f"no vendor {vendor_id!r}; see `dispo vendors list`", FAILED)
    status = backend.get(STATUS, vendor_id) or {}
    if as_json:
        write_json({**row, **status})  # the status document as stored, with what the listing derives from it
    else:
        _print_vendor_status(row, status)
