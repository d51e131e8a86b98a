"""The HTTP side of the slot-search contract: one call to one vendor for 1 to 25 practitioners.

The scheduled pull and the live re-check at search time both go through `search_slots`, so the request
sent, the parsing and the error handling are the same on both paths.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from datetime import datetime

import httpx
import orjson

from aggregation.contract import CONTRACT_ACCEPT, MalformedBundle, ParseResult, parse_bundle, slot_search_params
from core.records import Vendor
from core.retry import retryable_status

# Safety cap on the pages of one answer, never a limit on what a conformant vendor may send: 25 practitioners over
# 72 h of 11 opening hours with a slot every 5 minutes is ~10,000 slots, i.e. 1,000 pages of 10. An answer that
# needs more is looping or unbounded, and fails as "incomplete" rather than being cut short.
MAX_PAGES = 1_000
_DEFAULT_PORTS = {"http": 80, "https": 443}


class VendorError(Exception):
    """A failed call, with its kind: timeout, connection, http, malformed, incomplete (the pages read do not make
    the whole answer: more pages than the cap, fewer or more Slots than the Bundle's total, or a total that changed
    between pages)."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    @property
    def retryable(self) -> bool:
        """Worth another try (see `core.retry`): no answer, or an answer saying "later" (429, 5xx). Never an
        incomplete answer: asking again gets the same pages."""
        return self.kind in ("timeout", "connection") or (self.status is not None and retryable_status(self.status))


def make_client(vendor: Vendor) -> httpx.AsyncClient:
    """An HTTP client for one vendor: its timeout, its mutual-TLS identity or bearer token."""
    verify: ssl.SSLContext | bool = True
    if vendor.client_cert or vendor.ca_bundle:
        context = ssl.create_default_context(cafile=vendor.ca_bundle)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if vendor.client_cert:
            context.load_cert_chain(vendor.client_cert, vendor.client_key)
        verify = context
    headers: dict[str, str] = {}
    if vendor.bearer_token:
        headers["Authorization"] = f"Bearer {vendor.bearer_token}"
    limits = httpx.Limits(max_connections=vendor.concurrency, max_keepalive_connections=vendor.concurrency)
    return httpx.AsyncClient(timeout=vendor.timeout_s, verify=verify, headers=headers, limits=limits)


async def search_slots(
    client: httpx.AsyncClient,
    vendor: Vendor,
    idnps: Sequence[str],
    start_ge: datetime,
    start_le: datetime,
    fetched_at: datetime,
    *,
    max_pages: int = MAX_PAGES,
) -> ParseResult:
    """Free slots of up to 25 practitioners in the window, checked and normalised; raises VendorError.

    The whole answer or an error, never part of it: `next` links are followed (on the vendor's own origin
    only: the client carries the vendor's credentials) until there is none; a Slot repeated on several pages
    is kept once; more than `max_pages` pages, or a count of Slots that differs from the Bundle's `total`,
    raise VendorError("incomplete"), since reconciling a partial answer would remove the slots not read."""
    base = httpx.URL(vendor.base_url.rstrip("/") + "/")  # relative next links are relative to the FHIR base
    url: httpx.URL | None = base.join("Slot")
    params: list[tuple[str, str]] | None = slot_search_params(idnps, start_ge, start_le)
    merged = ParseResult(total=None)
    while url is not None:
        if merged.pages >= max_pages:
            raise VendorError(
                "incomplete", f"{vendor.vendor_id}: the answer goes on beyond {max_pages} pages; nothing kept"
            )
        merged.pages += 1
        try:
            response = await client.get(url, params=params, headers={"Accept": CONTRACT_ACCEPT})
        except httpx.TimeoutException as exc:
            raise VendorError("timeout", f"{vendor.vendor_id}: no answer within {vendor.timeout_s} s") from exc
        except httpx.TransportError as exc:
            raise VendorError("connection", f"{vendor.vendor_id}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise VendorError(
                "http",
                f"{vendor.vendor_id}: HTTP {response.status_code}: {_diagnostics(response)}",
                status=response.status_code,
            )
        try:
            page = parse_bundle(
                orjson.loads(response.content), vendor.vendor_id, fetched_at, (start_ge, start_le), merged.slot_ids
            )
        except (orjson.JSONDecodeError, MalformedBundle) as exc:
            raise VendorError("malformed", f"{vendor.vendor_id}: {exc}") from exc
        merged.slots.extend(page.slots)
        merged.rejected.update(page.rejected)
        for reason, examples in page.rejected_examples.items():
            merged.note_rejected(reason, examples)
        merged.slot_entries += page.slot_entries
        merged.slot_ids |= page.slot_ids
        if merged.total is None:  # every page states the total of the whole search
            merged.total = page.total
        elif page.total is not None and page.total != merged.total:
            raise VendorError(
                "incomplete",
                f"{vendor.vendor_id}: the total changed from {merged.total} to {page.total} between pages",
            )
        url = None if page.next_url is None else _same_origin(base, page.next_url, vendor.vendor_id)
        params = None  # a next link carries its own query
    if merged.total is not None and merged.slot_entries != merged.total:
        raise VendorError(
            "incomplete",
            f"{vendor.vendor_id}: the Bundle states {merged.total} Slots, its {merged.pages} page(s) held "
            f"{merged.slot_entries}",
        )
    return merged


def _same_origin(base: httpx.URL, link: str, vendor_id: str) -> httpx.URL:
    """A `next` link resolved against the vendor's base; raises VendorError("malformed") when it leads to another
    origin (scheme, host, port), which must get neither a request nor the vendor's token."""
    try:
        target = base.join(link)
    except httpx.InvalidURL as exc:
        raise VendorError("malformed", f"{vendor_id}: unreadable next link: {exc}") from exc
    if _origin(target) != _origin(base):
        scheme, host, port = _origin(target)
        raise VendorError("malformed", f"{vendor_id}: the next link leads to {scheme}://{host}:{port}, not followed")
    return target


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _diagnostics(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
        issues = body.get("issue") or []
        return "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues) or response.text[:200]
    except (orjson.JSONDecodeError, AttributeError):
        return response.text[:200]
