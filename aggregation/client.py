"""The HTTP side of the slot-search contract: one call to one vendor for 1 to 25 practitioners.

The scheduled pull and the live re-check at search time both go through `search_slots`, so the request
sent, the parsing and the error handling are the same on both paths.

A vendor's answer is untrusted input, bounded before it is trusted: each page is read as it streams and given up
past a size cap, each page request has the vendor's timeout as a deadline (not per read: bytes dribbled slowly
still run out of time), the whole call has a deadline too, and pages are parsed in worker threads, two at a
time, so that one vendor's huge answer neither stalls the event loop every vendor shares nor is held decoded
many times over.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import orjson

from aggregation.contract import (
    CONTRACT_ACCEPT,
    MalformedBundle,
    ParseResult,
    association_idnst,
    parse_bundle,
    schedule_search_params,
    slot_search_params,
)
from core.records import Flow, Vendor, is_association
from core.retry import retryable_status

# Safety cap on the pages of one answer, never a limit on what a conformant vendor may send: 25 practitioners over
# 72 h of 11 opening hours with a slot every 5 minutes is ~10,000 slots, i.e. 1,000 pages of 10. An answer that
# needs more is looping or unbounded, and fails as "incomplete" rather than being cut short.
MAX_PAGES = 1_000
# The defaults of the settings `vendor_max_answer_bytes` and `vendor_call_deadline_s`, for callers without settings.
MAX_ANSWER_BYTES = 16_000_000
CALL_DEADLINE_S = 30.0
# Pages parsed at once in the process, whatever the number of vendors: a page being parsed is held decoded (several
# times its bytes), so huge answers arriving together wait for a parser rather than all being held decoded at once.
# Threads rather than worker processes: beside a vendor answering pages of 14 MB the other vendors' cycles were no
# faster with processes, and the aggregator with its workers was half as large again (a process pays for pickling
# every Slot back, and for an interpreter of its own); see BENCHMARKS.md.
PARSERS = 2
_DIAGNOSTICS_BYTES = 64_000  # of an error answer, read for its OperationOutcome
_DEFAULT_PORTS = {"http": 80, "https": 443}
_parsers = ThreadPoolExecutor(max_workers=PARSERS, thread_name_prefix="bundle-parser")


class VendorError(Exception):
    """A failed call, with its kind: timeout (a page, or the whole call, past its deadline), connection, http,
    too-large (a page bigger than the cap), malformed, incomplete (the pages read do not make the whole answer:
    more pages than the cap, fewer or more Slots than the Bundle's total, or a total that changed between pages)."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status

    @property
    def retryable(self) -> bool:
        """Worth another try (see `core.retry`): no answer, or an answer saying "later" (429, 5xx). Never an
        incomplete or too large answer: asking again gets the same pages."""
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
    max_answer_bytes: int = MAX_ANSWER_BYTES,
    call_deadline_s: float = CALL_DEADLINE_S,
) -> ParseResult:
    """Free slots of up to 25 practitioners in the window, checked and normalised; raises VendorError.

    The whole answer or an error, never part of it: `next` links are followed (on the vendor's own origin
    only: the client carries the vendor's credentials) until there is none; a Slot repeated on several pages
    is kept once; more than `max_pages` pages, or a count of Slots that differs from the Bundle's `total`,
    raise VendorError("incomplete"), since reconciling a partial answer would remove the slots not read.

    Bounded: a page larger than `max_answer_bytes` raises VendorError("too-large") as soon as it passes the cap;
    a page not wholly received within the vendor's `timeout_s`, or a call (all its pages, parsed) not done within
    `call_deadline_s`, raises VendorError("timeout")."""
    window = (start_ge, start_le)
    search = Search("Slot", slot_search_params(idnps, *window, cpts=Flow.cpts in vendor.flows), frozenset(idnps))
    return await _bounded(client, vendor, search, window, fetched_at, max_pages, max_answer_bytes, call_deadline_s)


async def search_schedules(
    client: httpx.AsyncClient,
    vendor: Vendor,
    sirets: Sequence[str],
    start_ge: datetime,
    start_le: datetime,
    fetched_at: datetime,
    *,
    max_pages: int = MAX_PAGES,
    max_answer_bytes: int = MAX_ANSWER_BYTES,
    call_deadline_s: float = CALL_DEADLINE_S,
) -> ParseResult:
    """Free slots of up to 10 SOS Médecins associations (by SIRET) in the window, through their consultation places'
    schedules (`GET [base]/Schedule`), checked and normalised; raises VendorError. Bounded and whole as
    `search_slots` is; a slot of an association not asked for is rejected."""
    window = (start_ge, start_le)
    asked = frozenset(association_idnst(s) for s in sirets)
    search = Search("Schedule", schedule_search_params(sirets, *window), asked)
    return await _bounded(client, vendor, search, window, fetched_at, max_pages, max_answer_bytes, call_deadline_s)


async def search_participants(
    client: httpx.AsyncClient,
    vendor: Vendor,
    participants: Sequence[str],
    start_ge: datetime,
    start_le: datetime,
    fetched_at: datetime,
    **bounds: Any,
) -> ParseResult:
    """The contract's search for a group of participants of one kind: practitioners by IDNPS (`search_slots`), or
    SOS Médecins associations by their IDNST (`search_schedules`), whose places' slots are the association's: each
    slot's participant (`idnps`) is the association."""
    if not participants or not is_association(participants[0]):
        return await search_slots(client, vendor, participants, start_ge, start_le, fetched_at, **bounds)
    sirets = [p[1:] for p in participants]
    result = await search_schedules(client, vendor, sirets, start_ge, start_le, fetched_at, **bounds)
    for slot in result.slots:
        slot.idnps = slot.structure_idnst
    return result


@dataclass(frozen=True)
class Search:
    """One search of the contract: the resource searched, its parameters, and who its slots may be for (IDNPS, or
    associations' IDNST)."""

    resource: str
    params: list[tuple[str, str]]
    asked: frozenset[str]


async def _bounded(
    client: httpx.AsyncClient,
    vendor: Vendor,
    search: Search,
    window: tuple[datetime, datetime],
    fetched_at: datetime,
    max_pages: int,
    max_bytes: int,
    call_deadline_s: float,
) -> ParseResult:
    try:
        async with asyncio.timeout(call_deadline_s):
            return await _read_answer(client, vendor, search, window, fetched_at, max_pages, max_bytes)
    except TimeoutError as exc:
        raise VendorError(
            "timeout", f"{vendor.vendor_id}: the answer, all its pages, took more than {call_deadline_s} s"
        ) from exc


async def _read_answer(
    client: httpx.AsyncClient,
    vendor: Vendor,
    search: Search,
    window: tuple[datetime, datetime],
    fetched_at: datetime,
    max_pages: int,
    max_bytes: int,
) -> ParseResult:
    """Every page of the answer, merged (see `search_slots`)."""
    base = httpx.URL(vendor.base_url.rstrip("/") + "/")  # relative next links are relative to the FHIR base
    url: httpx.URL | None = base.join(search.resource)
    params: list[tuple[str, str]] | None = search.params
    asked = search.asked  # a Slot of anyone else is rejected: the vendor answers only for these
    merged = ParseResult(total=None)
    loop = asyncio.get_running_loop()
    while url is not None:
        if merged.pages >= max_pages:
            raise VendorError(
                "incomplete", f"{vendor.vendor_id}: the answer goes on beyond {max_pages} pages; nothing kept"
            )
        merged.pages += 1
        body = await _page(client, vendor, url, params, max_bytes)
        try:
            # In a worker thread: parsing a large page takes long enough to stall every other vendor's calls.
            page = await loop.run_in_executor(
                _parsers, _parse_page, body, vendor.vendor_id, fetched_at, window, merged.slot_ids, asked
            )
        except (orjson.JSONDecodeError, MalformedBundle) as exc:
            raise VendorError("malformed", f"{vendor.vendor_id}: {exc}") from exc
        del body  # not held while the next page is read
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


async def _page(
    client: httpx.AsyncClient,
    vendor: Vendor,
    url: httpx.URL,
    params: list[tuple[str, str]] | None,
    max_bytes: int,
) -> bytearray:
    """The body of one page, received whole within the vendor's timeout and no larger than `max_bytes`; raises
    VendorError."""
    vendor_id = vendor.vendor_id
    answering = False  # the status line and headers came: the body is what is late
    try:
        async with (
            asyncio.timeout(vendor.timeout_s),
            client.stream("GET", url, params=params, headers={"Accept": CONTRACT_ACCEPT}) as response,
        ):
            answering = True
            if response.status_code != 200:
                body = await _read(response, min(max_bytes, _DIAGNOSTICS_BYTES), vendor_id, cut=True)
                raise VendorError(
                    "http",
                    f"{vendor_id}: HTTP {response.status_code}: {_diagnostics(body)}",
                    status=response.status_code,
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise VendorError(
                    "too-large",
                    f"{vendor_id}: a page of {int(declared):,} bytes announced, above {max_bytes:,}; not read",
                )
            return await _read(response, max_bytes, vendor_id)
    except (TimeoutError, httpx.TimeoutException) as exc:
        late = ", the page was still coming in" if answering else ""
        raise VendorError("timeout", f"{vendor_id}: no answer within {vendor.timeout_s} s{late}") from exc
    except httpx.TransportError as exc:
        raise VendorError("connection", f"{vendor_id}: {type(exc).__name__}: {exc}") from exc


async def _read(response: httpx.Response, max_bytes: int, vendor_id: str, cut: bool = False) -> bytearray:
    """The body as it streams, counted (decoded bytes: a compressed answer counts at its real size); past
    `max_bytes`, raises VendorError("too-large"), or with `cut` returns what came so far."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        if len(body) + len(chunk) > max_bytes:
            if cut:
                return body + chunk[: max_bytes - len(body)]
            raise VendorError("too-large", f"{vendor_id}: a page above {max_bytes:,} bytes; the rest not read")
        body += chunk
    return body


def _parse_page(
    body: bytearray,
    vendor_id: str,
    fetched_at: datetime,
    window: tuple[datetime, datetime],
    already_read: set[str],
    asked: frozenset[str],
) -> ParseResult:
    """One page decoded and checked (run in a parser thread)."""
    return parse_bundle(orjson.loads(body), vendor_id, fetched_at, window, already_read, asked)


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


def _diagnostics(body: bytes | bytearray) -> str:
    """What an error answer says: its OperationOutcome's diagnostics, or the start of its text."""
    text = bytes(body[:200]).decode("utf-8", "replace")
    try:
        issues = orjson.loads(body).get("issue") or []
        return "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues) or text
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return text
