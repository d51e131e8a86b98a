"""Vendor registry routes (maintainers): declare, list, enable or disable a vendor, read the slots the index holds
for it. Secrets never leave."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from aggregation.holdings import VendorHoldings, vendor_holdings
from api.deps import ADMINS, get_backend, get_settings, require
from api.params import VendorId
from api.problems import Problem, problems
from core.records import Flow, Vendor
from core.settings import Settings
from indexer.backend import Backend
from indexer.registry import list_vendors, save_vendor, set_enabled

router = APIRouter(prefix="/v1/vendors", tags=["vendors"], responses=problems(401, 403, 503))
ADMIN = Depends(require(*ADMINS))


class VendorView(BaseModel):
    """A vendor as shown: whether credentials are configured, never the credentials themselves."""

    vendor_id: str
    name: str
    base_url: str
    auth: str  # mtls | bearer | none
    concurrency: int
    timeout_s: float
    requests_per_second: float
    flows: list[Flow]
    enabled: bool

    @classmethod
    def of(cls, v: Vendor) -> VendorView:
        auth = "mtls" if v.client_cert else "bearer" if v.bearer_token else "none"
        return cls(**v.model_dump(include=set(cls.model_fields) - {"auth"}), auth=auth)


@router.get("", response_model=list[VendorView], summary="Registered vendors")
def vendors(backend: Annotated[Backend, Depends(get_backend)], _: Annotated[Any, ADMIN]) -> list[VendorView]:
    return [VendorView.of(v) for v in list_vendors(backend)]


@router.put(
    "/{vendor_id}", response_model=VendorView, summary="Declare or update a vendor", responses=problems(400, 422)
)
def put_vendor(
    vendor_id: VendorId,
    vendor: Vendor,
    backend: Annotated[Backend, Depends(get_backend)],
    _: Annotated[Any, ADMIN],
) -> VendorView:
    if vendor.vendor_id != vendor_id:
        raise Problem(422, "Inconsistent vendor id", "The body's vendor_id must match the URL.", "invalid-request")
    return VendorView.of(save_vendor(backend, vendor))


@router.get(
    "/{vendor_id}/slots",
    response_model=VendorHoldings,
    summary="Slots the index holds for a vendor",
    description="Earliest first, each with its freshness (shown to regulators or hidden as stale); 404 for a "
    "vendor not in the registry.",
    responses=problems(400, 404, 422),
)
def vendor_slots(
    vendor_id: VendorId,
    backend: Annotated[Backend, Depends(get_backend)],
    settings: Annotated[Settings, Depends(get_settings)],
    _: Annotated[Any, ADMIN],
    idnps: Annotated[str | None, Query(description="only this practitioner's slots")] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: str | None = None,
) -> VendorHoldings:
    return vendor_holdings(backend, settings, vendor_id, idnps=idnps, limit=limit, cursor=cursor)


@router.post(
    "/{vendor_id}/disable", response_model=VendorView, summary="Stop pulling a vendor", responses=problems(404, 422)
)
def disable(
    vendor_id: VendorId, backend: Annotated[Backend, Depends(get_backend)], _: Annotated[Any, ADMIN]
) -> VendorView:
    return _toggle(backend, vendor_id, False)


@router.post(
    "/{vendor_id}/enable", response_model=VendorView, summary="Resume pulling a vendor", responses=problems(404, 422)
)
def enable(
    vendor_id: VendorId, backend: Annotated[Backend, Depends(get_backend)], _: Annotated[Any, ADMIN]
) -> VendorView:
    return _toggle(backend, vendor_id, True)


def _toggle(backend: Backend, vendor_id: str, enabled: bool) -> VendorView:
    vendor = set_enabled(backend, vendor_id, enabled)
    if vendor is None:
        raise Problem(404, "Not found", f"No vendor {vendor_id!r}; declare it with PUT first.", "not-found")
    return VendorView.of(vendor)
