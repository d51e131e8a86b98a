"""Several sandbox vendors at once, built from the live directory, for the demo and the benchmarks.

Practitioners of the directory who have a practice structure are spread over the vendors (each one
exactly once, round robin in IDNPS order); each vendor is declared in the registry with its loopback URL
and every practitioner's participation names the vendor that serves them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

from aggregation.contract import association_idnst
from core.geo import department_of_postcode
from core.records import Flow, Participation, ParticipationVia, Vendor
from core.settings import Settings
from editor_sandbox.agenda import (
    SandboxAssociation,
    SandboxConfig,
    SandboxCpts,
    SandboxPlace,
    SandboxPractitioner,
    SandboxSite,
)
from editor_sandbox.server import SandboxServer, bound_socket
from indexer.backend import Backend
from indexer.lifecycle import iterate_all
from indexer.registry import participants, save_participation, save_vendor
from rpps_import.pipeline import load_participations

VENDOR_NAMES = ["Agenda Alpha", "Bêta Santé", "Cabinet Connect", "Doc Delta", "Epsilon RDV"]


def _idnst(site: dict) -> str:
    if site.get("finess_site"):
        return "1" + site["finess_site"]
    if site.get("siret"):
        return "3" + site["siret"]
    return site.get("structure_technical_id") or site["site_id"]


def international_phone(phone: str | None) -> str | None:
    """'0479425959' -> '+33479425959', the contract's telecom format."""
    digits = "".join(c for c in phone or "" if c.isdigit())
    return "+33" + digits[1:] if len(digits) == 10 and digits.startswith("0") else None


def _sites(backend: Backend, only: list[str] | None) -> Iterator[dict]:
    if only is None:
        yield from iterate_all(backend, "practice_sites")
        return
    for i in range(0, len(only), 500):
        yield from iterate_all(backend, "practice_sites", {"idnps": only[i : i + 500]})


def directory_practitioners(backend: Backend, only: list[str] | None = None) -> list[SandboxPractitioner]:
    """Practitioners with at least one placed practice site with a postcode, with those sites, in IDNPS order
    (only those of `only` when given: at national scale the directory has two million sites).

    The contract names practitioners by RPPS; the demo directory also holds ADELI professionals, who are
    served the same way so that the sample data shows slots."""
    by_idnps: dict[str, SandboxPractitioner] = {}
    for doc in _sites(backend, only):
        if not doc.get("location") or not (doc.get("address") or {}).get("postcode"):
            continue
        p = doc["practitioner"]
        address = doc.get("address") or {}
        site = SandboxSite(
            idnst=_idnst(doc),
            line=" ".join(x for x in (address.get("number"), address.get("street_type"), address.get("street")) if x)
            or None,
            city=address.get("commune") or address.get("cedex_office", "").partition(" ")[2] or None,
            postcode=address.get("postcode"),
        )
        entry = by_idnps.setdefault(
            p["idnps"],
            SandboxPractitioner(
                idnps=p["idnps"],
                family=p["last_name"],
                given=p.get("first_name"),
                phone=doc.get("phone"),
                specialties=[s["code"] for s in p.get("specialties", [])] or ["SM54"],
                sites=[],
            ),
        )
        entry.sites.append(site)
    return [by_idnps[k] for k in sorted(by_idnps)]


def territory_cpts(practitioner: SandboxPractitioner) -> SandboxCpts | None:
    """The CPTS of a practitioner taking part through one, in the sandbox's made-up territories: one per department
    (the department of the practitioner's first site), with an identifier of the form 1 + FINESS."""
    postcode = next((site.postcode for site in practitioner.sites if site.postcode), None)
    if postcode is None:
        return None
    department = department_of_postcode(postcode)
    finess = f"{department:0>3}006040"[-9:]
    phone = f"+3347{zlib.crc32(department.encode()) % 10**7:07d}"
    return SandboxCpts(idnst="1" + finess, name=f"CPTS du territoire {department}", phone=phone)


# A made-up SOS Médecins association of the Ain with two consultation places, for the demo (`dispo sandbox --sos`).
DEMO_ASSOCIATIONS = [
    SandboxAssociation(
        siret="30000000100012",
        name="SOS Médecins de l'Ain (démo)",
        places=[
            SandboxPlace(
                place_id="lfc-bourg",
                name="Centre de consultation Bourg-en-Bresse",
                line="2 avenue Alsace Lorraine",
                city="BOURG EN BRESSE",
                postcode="01000",
                phone="+33474000001",
            ),
            SandboxPlace(
                place_id="lfc-amberieu",
                name="Centre de consultation Ambérieu-en-Bugey",
                line="1 place Sémard",
                city="AMBERIEU EN BUGEY",
                postcode="01500",
                phone="+33474000002",
                hours=[{"daysOfWeek": ["sat", "sun"], "openingTime": "09:00:00", "closingTime": "19:00:00"}],
            ),
        ],
    )
]


def start_fleet(
    backend: Backend,
    n_vendors: int,
    seed: int = 0,
    base_port: int | None = None,
    participations: Path | None = None,
    settings: Settings | None = None,
    platform_url: str | None = None,
    platform_tokens: dict[str, str] | None = None,
    associations: list[SandboxAssociation] | None = None,
    **knobs: float,
) -> list[SandboxServer]:
    """Start `n_vendors` sandboxes (`sandbox-a`, `sandbox-b`, ...) and register them; returns the servers.

    With a participation CSV, it is loaded (with its report) once the vendors exist and each vendor serves
    its participants; without one, the directory's placed practitioners are dealt round robin."""
    vendor_ids = [f"sandbox-{chr(ord('a') + i)}" for i in range(n_vendors)]
    sockets = [bound_socket(base_port + i if base_port else 0) for i in range(n_vendors)]
    ports = [sock.getsockname()[1] for sock in sockets]
    names = {v: VENDOR_NAMES[i % len(VENDOR_NAMES)] for i, v in enumerate(vendor_ids)}
    for vendor_id, port in zip(vendor_ids, ports, strict=True):
        # Sandboxes serve the CPTS flow: their Slot searches are asked with the CPTS includes.
        url = f"http://127.0.0.1:{port}/fhir"
        flows = [Flow.individual, Flow.cpts, Flow.sos]
        save_vendor(backend, Vendor(vendor_id=vendor_id, name=names[vendor_id], base_url=url, flows=flows))
    serving: dict[str, list[SandboxPractitioner]] = {v: [] for v in vendor_ids}
    if participations is not None:
        load_participations(participations, backend, settings or Settings(), force=True)
        practitioners = {p.idnps: p for p in directory_practitioners(backend, [p.idnps for p in participants(backend)])}
        for vendor_id in vendor_ids:
            for p in participants(backend, vendor_id):
                if p.idnps not in practitioners:
                    continue
                served = practitioners[p.idnps]
                if p.via == ParticipationVia.cpts:  # its CPTS-typed slots are offered through its CPTS
                    served = served.model_copy(update={"cpts": territory_cpts(served)})
                serving[vendor_id].append(served)
    else:
        practitioners = {p.idnps: p for p in directory_practitioners(backend)}
        ordered = [practitioners[k] for k in sorted(practitioners)]
        for i, vendor_id in enumerate(vendor_ids):
            serving[vendor_id] = ordered[i::n_vendors]
            for p in serving[vendor_id]:
                save_participation(backend, Participation(idnps=p.idnps, vendors=[vendor_id]))
    # SOS Médecins associations take part by SIRET, through the first vendor.
    for association in associations or []:
        idnst = association_idnst(association.siret)
        save_participation(backend, Participation(idnps=idnst, vendors=[vendor_ids[0]], via=ParticipationVia.sos))
    servers = []
    for i, (vendor_id, sock) in enumerate(zip(vendor_ids, sockets, strict=True)):
        config = SandboxConfig(
            vendor_id=vendor_id,
            name=names[vendor_id],
            seed=seed + i,
            practitioners=serving[vendor_id],
            associations=(associations or []) if i == 0 else [],
            platform_url=platform_url,
            platform_token=(platform_tokens or {}).get(vendor_id),
            **knobs,
        )
        servers.append(SandboxServer(config, sock=sock).start())
    return servers
