"""The vendor registry, persisted by the backend like everything else (kind `vendors`).

A vendor's bearer token is sealed before it is stored and opened when read (`core.secrets.Sealer`, with the key
the backend was opened with): the index never holds it in clear.
"""

from __future__ import annotations

from typing import Any

from core.records import Participation, Vendor
from core.secrets import PROCESS_KEY, Sealer
from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live, iterate_all

KIND = "vendors"


_PROCESS_SEALER = Sealer(PROCESS_KEY)


def _sealer(backend: Backend) -> Sealer:
    return backend.sealer or _PROCESS_SEALER


def save_vendor(backend: Backend, vendor: Vendor) -> Vendor:
    index = ensure_live(backend, KIND)
    doc = vendor.model_dump(mode="json", exclude_none=True)
    if vendor.bearer_token is not None:
        doc["bearer_token"] = _sealer(backend).seal(vendor.bearer_token)
    backend.write(index, [doc])
    backend.refresh(index)
    return vendor


def _vendor(backend: Backend, doc: dict[str, Any]) -> Vendor:
    if doc.get("bearer_token") is not None:
        doc = {**doc, "bearer_token": _sealer(backend).open(doc["bearer_token"])}
    return Vendor.model_validate(doc)


def get_vendor(backend: Backend, vendor_id: str) -> Vendor | None:
    doc = backend.get(KIND, vendor_id)
    return _vendor(backend, doc) if doc else None


def list_vendors(backend: Backend, enabled_only: bool = False) -> list[Vendor]:
    filters = {"enabled": ["true"]} if enabled_only else {}
    page = backend.search(KIND, GeoQuery(filters=filters, limit=1000))
    return [_vendor(backend, h.doc) for h in page.hits]


def set_enabled(backend: Backend, vendor_id: str, enabled: bool) -> Vendor | None:
    vendor = get_vendor(backend, vendor_id)
    if vendor is None:
        return None
    return save_vendor(backend, vendor.model_copy(update={"enabled": enabled}))


PARTICIPATIONS = "participations"


def save_participation(backend: Backend, participation: Participation) -> Participation:
    index = ensure_live(backend, PARTICIPATIONS)
    backend.write(index, [participation.model_dump(mode="json")])
    backend.refresh(index)
    return participation


def get_participation(backend: Backend, idnps: str) -> Participation | None:
    doc = backend.get(PARTICIPATIONS, idnps)
    return Participation.model_validate(doc) if doc else None


def participants(backend: Backend, vendor_id: str | None = None, active_only: bool = True) -> list[Participation]:
    """Participations, optionally of one vendor, in IDNPS order."""
    filters: dict[str, list[str]] = {}
    if vendor_id is not None:
        filters["vendor"] = [vendor_id]
    if active_only:
        filters["active"] = ["true"]
    return [Participation.model_validate(doc) for doc in iterate_all(backend, PARTICIPATIONS, filters)]
