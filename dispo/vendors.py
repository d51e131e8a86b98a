"""`dispo vendors add|list|disable|status|check`: the vendor registry, its aggregation state (one vendor's last
cycle in detail), and a vendor's answer checked against the agency's test kit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError
from rich.markup import escape

from aggregation.capability import check_capability
from aggregation.client import VendorError, make_client, search_participants
from aggregation.contract import CONTRACT_ACCEPT, MAX_ASSOCIATIONS, ParseResult, slot_search_params
from aggregation.puller import slot_window
from aggregation.status import STATUS, failing_since, vendor_statuses
from api.vendors import VendorView
from core.records import Flow, Vendor, is_association
from dispo.console import FAILED, INVALID, fail, open_backend, out, print_listing, write_json
from editor_sandbox.conformance import Check, check_answer, check_cpts
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


@dataclass
class _Answers:
    """What `dispo vendors check` asked a vendor, and what it answered."""

    metadata: httpx.Response | None = None
    slots: httpx.Response | None = None
    schedules: ParseResult | VendorError | None = None


async def _ask(
    vendor: Vendor, practitioners: list[str], associations: list[str], start: datetime, end: datetime
) -> _Answers:
    """The vendor's CapabilityStatement, one slot search and one schedule search, each as the aggregator sends it."""
    answers = _Answers()
    base = vendor.base_url.rstrip("/")
    async with make_client(vendor) as client:
        answers.metadata = await client.get(base + "/metadata", headers={"Accept": CONTRACT_ACCEPT})
        if practitioners:
            answers.slots = await client.get(
                base + "/Slot",
                params=slot_search_params(practitioners, start, end, cpts=Flow.cpts in vendor.flows),
                headers={"Accept": CONTRACT_ACCEPT},
            )
        if associations:
            try:
                answers.schedules = await search_participants(client, vendor, associations, start, end, start)
            except VendorError as exc:
                answers.schedules = exc
    return answers


def _json(response: httpx.Response | None) -> Any:
    try:
        return None if response is None else response.json()
    except ValueError:
        return None


def _sos_findings(answer: ParseResult | VendorError | None) -> list[tuple[bool, str]]:
    """The SOS Médecins schedule search: a whole answer, every slot kept, each place with its address."""
    if answer is None:
        return []
    if isinstance(answer, VendorError):
        return [(False, f"schedule search: {answer.kind}: {answer}")]
    out = [(True, f"schedule search: {len(answer.slots)} slot(s)")]
    out += [(False, f"schedule search: {n} slot(s) dropped: {reason}") for reason, n in answer.rejected.items()]
    places = {(s.structure_idnst, s.place.place_id if s.place else None): s.place for s in answer.slots}
    for (association, place_id), place in places.items():
        complete = place is not None and bool(place.line and place.city and place.postcode)
        out.append((complete, f"association {association} place {place_id}: address line, city and postcode"))
    return out


def _print_checks(name: str, checks: list[tuple[bool, str]], requirement: dict[str, int] | None = None) -> None:
    """A section's count of checks, then each failure (the first of each requirement, with how many more)."""
    failures: dict[str, list[str]] = {}
    for ok, detail in checks:
        if not ok:
            key = f"requirement {requirement[detail]}" if requirement else detail
            failures.setdefault(key, []).append(detail)
    failed = sum(len(details) for details in failures.values())
    out.print(f"{name}: {len(checks)} checks; {failed} failed")
    for key, details in failures.items():
        more = len(details) - 1
        out.print(
            f"  [red]{escape(key)}[/]"
            + (f": {escape(details[0])}" if requirement else "")
            + (f" (+{more} more)" if more else "")
        )


@vendors_app.command("check")
def vendors_check(
    vendor_id: str,
    idnps: Annotated[
        list[str] | None, typer.Option(help="participants to ask for: IDNPS, or 3 + SIRET (default: its participants)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check a vendor against the agency's requirements for the flows it is registered for: its CapabilityStatement
    (the search parameters and includes of the individual, CPTS and SOS Médecins statements), a slot-search answer
    (the test kit's verifiable requirements; the CPTS includes) and, for SOS Médecins, a schedule-search answer."""
    backend = open_backend()
    vendor = get_vendor(backend, vendor_id)
    if vendor is None:
        raise fail(f"no vendor {vendor_id!r}; see `dispo vendors list`", INVALID)
    asked = idnps or [p.idnps for p in participants(backend, vendor_id)]
    practitioners = [i for i in asked if not is_association(i)][:CHECKED_AT_MOST]
    associations = [i for i in asked if is_association(i)][:MAX_ASSOCIATIONS] if Flow.sos in vendor.flows else []
    if not practitioners and not associations:
        raise fail("no participant to ask for: give --idnps or load participations", INVALID)
    start, end = slot_window(datetime.now(UTC), 2)
    try:
        answers = asyncio.run(_ask(vendor, practitioners, associations, start, end))
    except httpx.HTTPError as exc:
        raise fail(str(exc), FAILED, "the vendor could not be reached; check its base URL") from exc
    assert answers.metadata is not None
    sections: dict[str, list[tuple[bool, str]]] = {
        "capability": [(f.ok, f.detail) for f in check_capability(_json(answers.metadata), vendor.flows)]
    }
    kit: list[Check] = []
    if answers.slots is not None:
        bundle = _json(answers.slots)
        if bundle is None:
            raise fail(
                "the vendor's slot search did not give a JSON answer", FAILED, f"HTTP {answers.slots.status_code}"
            )
        kit = check_answer(bundle, practitioners, start, end)
        sections["slot search"] = [(ok, detail) for _, ok, detail in kit]
        if Flow.cpts in vendor.flows:
            sections["cpts"] = check_cpts(bundle)
    if associations:
        sections["sos"] = _sos_findings(answers.schedules)
    statuses = {"metadata": answers.metadata.status_code}
    if answers.slots is not None:
        statuses["slot search"] = answers.slots.status_code
    failed = {name: [detail for ok, detail in checks if not ok] for name, checks in sections.items()}
    if as_json:
        write_json(
            {
                "flows": [f.value for f in vendor.flows],
                "status": statuses,
                "checks": {name: len(checks) for name, checks in sections.items()},
                "failed": [{"requirement": req, "detail": detail} for req, ok, detail in kit if not ok],
                "failed_by_section": failed,
            }
        )
    else:
        out.print(", ".join(f"{name}: HTTP {status}" for name, status in statuses.items()))
        requirement = {detail: req for req, _, detail in kit}
        for name, checks in sections.items():
            _print_checks(name, checks, requirement if name == "slot search" else None)
    bad_status = any(status != 200 for status in statuses.values())
    raise typer.Exit(FAILED if bad_status or any(failed.values()) else 0)


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
