"""Vendor status as maintainers read it: persisted aggregation state plus what the index holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aggregation import metrics
from indexer.backend import Backend
from indexer.lease import leases, vendor_key
from indexer.registry import list_vendors

STATUS = "vendor_status"


def failing_groups(status: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """A vendor's failing practitioners as stored, (since, IDNPS) by the instant their calls started failing: a batch's
    practitioners fail together, so a search reads a few hundred instants, not tens of thousands of entries. A status
    of an earlier release held IDNPS -> since: it is grouped here."""
    stored = status.get("failing") or {}
    if all(isinstance(v, list) for v in stored.values()):
        return list(stored.items())
    grouped: dict[str, list[str]] = {}
    for key, value in stored.items():
        if isinstance(value, str):
            grouped.setdefault(value, []).append(key)
        else:
            grouped.setdefault(key, []).extend(value)
    return list(grouped.items())


def group_failing(since: dict[str, str]) -> dict[str, list[str]]:
    """IDNPS -> since, as a status stores it: since -> IDNPS (sorted)."""
    grouped: dict[str, list[str]] = {}
    for idnps, instant in sorted(since.items()):
        grouped.setdefault(instant, []).append(idnps)
    return grouped


def failing_since(status: dict[str, Any]) -> dict[str, str]:
    """IDNPS -> when its calls started failing."""
    return {idnps: since for since, ids in failing_groups(status) for idnps in ids}


def vendor_statuses(backend: Backend, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    held_by = leases(backend)
    rows = []
    for vendor in list_vendors(backend):
        lease = held_by.get(vendor_key(vendor.vendor_id))
        pulled_by = lease if lease is not None and lease.held(now.timestamp()) else None
        status = backend.get(STATUS, vendor.vendor_id) or {}
        held = backend.count("slots", {"vendor": [vendor.vendor_id]})
        success = status.get("last_success_at")
        staleness = (now - datetime.fromisoformat(success)).total_seconds() if success else None
        row = {
            "vendor_id": vendor.vendor_id,
            "name": vendor.name,
            "enabled": vendor.enabled,
            "last_success_at": success,
            "last_attempt_at": status.get("last_attempt_at"),
            "last_error_at": status.get("last_error_at"),
            "last_error": status.get("last_error"),
            "latency_p50_ms": status.get("latency_p50_ms"),
            "latency_p95_ms": status.get("latency_p95_ms"),
            "requests": status.get("requests", 0),
            "errors_by_kind": status.get("errors_by_kind", {}),
            "breaker": status.get("breaker"),
            "failing_practitioners": sum(len(ids) for _, ids in failing_groups(status)),
            "slots_held": held,
            "staleness_s": staleness,
            "last_cycle": status.get("last_cycle"),
            # The scheduler holding the vendor's lease (`indexer.lease`), None when no scheduler pulls it now.
            "pulled_by": pulled_by.holder if pulled_by else None,
            "lease_until": datetime.fromtimestamp(pulled_by.expires_at, UTC).isoformat() if pulled_by else None,
        }
        metrics.SLOTS_HELD.labels(vendor.vendor_id).set(held)
        if staleness is not None:
            metrics.STALENESS.labels(vendor.vendor_id).set(staleness)
        rows.append(row)
    return rows
