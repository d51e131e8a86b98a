"""Regulator accounts at vendors (flow INT_R02): before a regulator's first booking with a vendor (and on
demand), the platform creates or updates the account with a FrPractitionerRegul resource, identified by
the platform's technical identifier for the regulator. The state per regulator x vendor is kept, and says
which regulators a vendor knows (`account_pushed`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx

from aggregation.client import make_client
from core.records import Vendor
from core.retry import Retry
from indexer.backend import Backend
from indexer.lifecycle import ensure_live

KIND = "regulator_accounts"
TECHNICAL_ID_SYSTEM = "urn:oid:1.2.250.1.213.3.6"  # platform technical identifiers (contract §3)


def account_id(regulator: str, vendor_id: str) -> str:
    """The id of the state of a regulator's account at a vendor."""
    return f"{regulator}:{vendor_id}"


def account_pushed(backend: Backend, regulator: str, vendor_id: str) -> bool:
    """Whether the vendor has accepted the regulator's account at least once: a later failed update does not
    undo that."""
    state = backend.get(KIND, account_id(regulator, vendor_id))
    if state is None:
        return False
    return state.get("state") in ("created", "updated") or state.get("last_success_at") is not None


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


async def _push(vendor: Vendor, regulator: str, exists: bool, name: str | None) -> None:
    """One try: POST the account (first time) or PUT it by identifier; raises httpx.HTTPError on a failure."""
    body = practitioner_regul(regulator, name)
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
    response.raise_for_status()


async def ensure_account(
    backend: Backend,
    vendor: Vendor,
    regulator: str,
    retries: int = 2,
    force: bool = False,
    retry_base_s: float = 0.2,
    name: str | None = None,
) -> dict[str, Any]:
    """Create (first time) or update (`force`, or the regulator's name changed in their Dispo account since it was
    pushed) the regulator's account at the vendor; returns the state.

    Timeouts, lost connections, 429 and 5xx answers are retried up to `retries` times (`core.retry`); the
    state says `failed`, with the last error, when the vendor still refuses."""
    index = await asyncio.to_thread(ensure_live, backend, KIND)
    key = account_id(regulator, vendor.vendor_id)
    state = await asyncio.to_thread(backend.get, KIND, key) or {
        "account_id": key,
        "regulator": regulator,
        "vendor": vendor.vendor_id,
        "state": "new",
        "attempts": 0,
    }
    if state["state"] in ("created", "updated") and not force and state.get("name") == name:
        return state
    exists = state["state"] in ("created", "updated")

    async def attempt() -> None:
        state["attempts"] += 1
        state["last_attempt_at"] = datetime.now(UTC).isoformat()
        await _push(vendor, regulator, exists, name)

    try:
        await Retry(retries, retry_base_s).acall(attempt)
    except httpx.HTTPStatusError as exc:
        state.update(state="failed", last_error=f"HTTP {exc.response.status_code}")
    except Exception as exc:  # network and TLS errors, a vendor answering nonsense: recorded, not raised
        state.update(state="failed", last_error=f"{type(exc).__name__}: {exc}")
    else:
        state.update(state="updated" if exists else "created", last_success_at=state["last_attempt_at"], name=name)
        if name is None:
            state.pop("name", None)
        state.pop("last_error", None)
    await asyncio.to_thread(_save, backend, index, state)
    return state


def _save(backend: Backend, index: str, state: dict[str, Any]) -> None:
    backend.write(index, [state])
    backend.refresh(index)
