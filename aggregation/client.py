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

MAX_PAGES = 20  # a vendor paging beyond this is answering something other than 25 practitioners' 72 h


class VendorError(Exception):
    """A failed call, with its kind: timeout, connection, http, malformed."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    @property
    def retryable(self) -> bool:
        """Worth another try (see `core.retry`): no answer, or an answer saying "later" (429, 5xx)."""
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
) -> ParseResult:
    """Free slots of up to 25 practitioners in the window, checked and normalised; raises VendorError."""
    url: str | None = vendor.base_url.rstrip("/") + "/Slot"
    params: list[tuple[str, str]] | None = slot_search_params(idnps, start_ge, start_le)
    merged = ParseResult(total=None)
    for _ in range(MAX_PAGES):
        if url is None:
            break
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
            page = parse_bundle(orjson.loads(response.content), vendor.vendor_id, fetched_at, (start_ge, start_le))
        except (orjson.JSONDecodeError, MalformedBundle) as exc:
            raise VendorError("malformed", f"{vendor.vendor_id}: {exc}") from exc
        merged.slots.extend(page.slots)
        merged.rejected.update(page.rejected)
        if merged.total is None:  # every page states the total of the whole search
            merged.total = page.total
        url, params = page.next_url, None  # a next link carries its own query
    return merged


def _diagnostics(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
        issues = body.get("issue") or []
        return "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues) or response.text[:200]
    except (orjson.JSONDecodeError, AttributeError):
        return response.text[:200]
