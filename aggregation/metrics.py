"""Prometheus metrics of the aggregation, per vendor (one registry, exported by the API and `dispo aggregate`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter("dispo_vendor_requests", "Slot searches sent to a vendor", ["vendor"], registry=REGISTRY)
ERRORS = Counter("dispo_vendor_errors", "Failed slot searches by kind", ["vendor", "kind"], registry=REGISTRY)
LATENCY = Histogram(
    "dispo_vendor_latency_seconds",
    "Slot search latency",
    ["vendor"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 3.5, 5.0, 7.0, 10.0),
)
SLOTS_HELD = Gauge("dispo_vendor_slots_held", "Slots of a vendor in the index", ["vendor"], registry=REGISTRY)
STALENESS = Gauge(
    "dispo_vendor_staleness_seconds",
    "Seconds since the vendor's last successful batch",
    ["vendor"],
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge(
    "dispo_vendor_breaker_open", "1 when the vendor's circuit breaker is open", ["vendor"], registry=REGISTRY
)
# Per scheduler (each is its own scrape target, which Prometheus labels by instance): 1 for the vendors it pulls now.
LEASE_HELD = Gauge(
    "dispo_vendor_lease_held", "1 when this scheduler holds the vendor's lease", ["vendor"], registry=REGISTRY
)

# Messages to the SAMU's regulation software (`booking.hub_outbox`), from the stored outbox whichever process sends.
LRM_MESSAGES = Gauge(
    "dispo_lrm_messages", "Messages to the SAMU's regulation software by state", ["state"], registry=REGISTRY
)
LRM_OLDEST = Gauge(
    "dispo_lrm_oldest_unacknowledged_seconds",
    "Age of the oldest message not yet acknowledged (queued or sent); 0 when there is none",
    registry=REGISTRY,
)
