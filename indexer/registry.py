"""The vendor registry, persisted by the backend like everything else (kind `vendors`)."""

from __future__ import annotations

from dispo.records import Vendor
from indexer.backend import Backend, GeoQuery

KIND = "vendors"


def _live(backend: Backend) -> str:
    live = backend.live_index(KIND)
    if live is None:
        live = backend.create_version(KIND)
        backend.seal(live)
        backend.switch(KIND, live)
    return live


def save_vendor(backend: Backend, vendor: Vendor) -> Vendor:
    index = _live(backend)
    backend.write(index, [vendor.model_dump(mode="json", exclude_none=True)])
    backend.refresh(index)
    return vendor


def get_vendor(backend: Backend, vendor_id: str) -> Vendor | None:
    doc = backend.get(KIND, vendor_id)
    return Vendor.model_validate(doc) if doc else None


def list_vendors(backend: Backend, enabled_only: bool = False) -> list[Vendor]:
    filters = {"enabled": ["true"]} if enabled_only else {}
    page = backend.search(KIND, GeoQuery(filters=filters, limit=1000))
    return [Vendor.model_validate(h.doc) for h in page.hits]


def set_enabled(backend: Backend, vendor_id: str, enabled: bool) -> Vendor | None:
    vendor = get_vendor(backend, vendor_id)
    if vendor is None:
        return None
    return save_vendor(backend, vendor.model_copy(update={"enabled": enabled}))
