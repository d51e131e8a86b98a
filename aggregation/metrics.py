"""Prometheus metrics of the aggregation, per vendor (one registry, exported by the API and `dispo aggregate`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

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


class StoredCounter(Collector):
    """A counter kept in the index rather than in a process (whichever process counted, the API exports the sum):
    set from the stored values before each scrape."""

    def __init__(self, name: str, documentation: str, labels: list[str], registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def set(self, values: Mapping[tuple[str, ...], float]) -> None:
        self.values = dict(values)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in sorted(self.values.items()):
            family.add_metric(list(key), value)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labels)


# SAS alerts raised by the national files' imports that switched (`rpps_import.history`), by import kind and alert.
IMPORT_SAS_ALERTS = StoredCounter(
    "dispo_import_sas_alerts",
    "SAS alerts raised by imports of the national files (participants gone or moved, CPTS closed)",
    ["kind", "alert"],
    REGISTRY,
)
