"""Regulator accounts at vendors (flow INT_R02): before a regulator's first booking with a vendor (and on
demand), the platform creates or updates the account with a FrPractitionerRegul resource, identified by
the platform's technical identifier for the regulator. The state per regulator x vendor is kept."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Any

from aggregation.client import make_client
from core.records import Vendor
from indexer.backend import Backend
from indexer.lifecycle import ensure_live

KIND = "regulator_accounts"
TECHNICAL_ID_SYSTEM = "urn:oid:1.2.250.1.213.3.6"  # platform technical identifiers (contract §3)


def practitioner_regul(regulator: str, name: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "meta": {"profile": ["https://interop.esante.gouv.fr/ig/fhir/sas/StructureDefinition/FrPractitionerRegul"]},
        "identifier": [{"system": TECHNICAL_ID_SYSTEM, "value": regulator}],
        "active": True,
    }
    if name:
        resource["name"] = [{"text": name}]
    return resource


async def _push(vendor: Vendor, regulator: str, exists: bool) -> int:
    body = practitioner_regul(regulator)
    async with make_client(vendor) as client:
        base = vendor.base_url.rstrip("/")
        headers = {"Content-Type": "application/fhir+json"}
        if exists:
            response = await client.put(
                f"{base}/Practitioner",
                params={"identifier": f"{TECHNICAL_ID_SYSTEM}|{regulator}"},
                json=body,
                headers=headers,
            )
        else:
            response = await client.post(f"{base}/Practitioner", json=body, headers=headers)
    return response.status_code


def ensure_account(
    backend: Backend, vendor: Vendor, regulator: str, retries: int = 2, force: bool = False
) -> dict[str, Any]:
    """Create (first time) or update (`force`) the regulator's account at the vendor; returns the state."""
    index = ensure_live(backend, KIND)
    account_id = f"{regulator}:{vendor.vendor_id}"
    state = backend.get(KIND, account_id) or {
        "account_id": account_id,
        "regulator": regulator,
        "vendor": vendor.vendor_id,
        "state": "new",
        "attempts": 0,
    }
    if state["state"] in ("created", "updated") and not force:
        return state
    exists = state["state"] in ("created", "updated")
    error = None
    for attempt in range(retries + 1):
        state["attempts"] += 1
        state["last_attempt_at"] = datetime.now(UTC).isoformat()
        try:
            status = asyncio.run(_push(vendor, regulator, exists))
        except Exception as exc:  # network errors: retried, then recorded
            status, error = None, f"{type(exc).__name__}: {exc}"
        if status in (200, 201):
            state.update(state="updated" if exists else "created", last_success_at=state["last_attempt_at"])
            state.pop("last_error", None)
            break
        error = error if status is None else f"HTTP {status}"
        if attempt < retries:
            asyncio.run(asyncio.sleep(0.2 * 2**attempt * (0.5 + random.random())))
    else:
        state.update(state="failed", last_error=error)
    backend.write(index, [state])
    backend.refresh(index)
    return state
