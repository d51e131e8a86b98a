"""Vendor status as maintainers read it: persisted aggregation state plus what the index holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aggregation import metrics
from indexer.backend import Backend
from indexer.registry import list_vendors

STATUS = "vendor_status"


def vendor_statuses(backend: Backend, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    rows = []
    for vendor in list_vendors(backend):
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
            "failing_practitioners": len(status.get("failing", {})),
            "slots_held": held,
            "staleness_s": staleness,
            "last_cycle": status.get("last_cycle"),
        }
        metrics.SLOTS_HELD.labels(vendor.vendor_id).set(held)
        if staleness is not None:
            metrics.STALENESS.labels(vendor.vendor_id).set(staleness)
        rows.append(row)
    return rows
