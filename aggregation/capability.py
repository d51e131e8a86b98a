"""What a vendor's CapabilityStatement (`GET [base]/metadata`) must declare for each flow it is registered for.

The requirements are the agency's own statements for booking software (`SAS-GestionnaireAgenda-PsIndiv`, `-CPTS`,
`-SOS` of the guide, shipped unchanged in `core/data/capabilities/`): every resource they name must be searchable,
with each of their `_include`, `_revinclude` and search parameters. A search parameter is recognised by its
definition's canonical URL, or by its code (`start`, `actor`, `identifier`, `_has`, `organization`), since a
vendor names its parameters by the code the request uses where the agency's statements name them by a label.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from core.records import Flow

STATEMENTS = Path(__file__).resolve().parent.parent / "core" / "data" / "capabilities"
FILES = {
    Flow.individual: "CapabilityStatement-SAS-GestionnaireAgenda-PsIndiv.json",
    Flow.cpts: "CapabilityStatement-SAS-GestionnaireAgenda-CPTS.json",
    Flow.sos: "CapabilityStatement-SAS-GestionnaireAgenda-SOS.json",
}


@dataclass(frozen=True)
class Finding:
    """One thing a flow requires of the vendor's statement, and whether the statement declares it."""

    flow: Flow
    resource: str
    required: str  # "search-type", "_include Slot:schedule", "_revinclude Slot:schedule", "parameter start"
    ok: bool

    @property
    def detail(self) -> str:
        return f"{self.flow.value}: {self.resource} {self.required}"


@cache
def agency_statement(flow: Flow) -> dict[str, Any]:
    """The agency's statement of what booking software serving `flow` declares."""
    return orjson.loads((STATEMENTS / FILES[flow]).read_bytes())


def parameter_code(param: dict[str, Any]) -> str:
    """The code a search parameter is used by in requests, from its definition's canonical URL
    (`.../SearchParameter/Schedule-actor` → `actor`, `.../Resource-has` → `_has`, `.../slot-sp-start` → `start`)."""
    definition = str(param.get("definition") or "").rsplit("/", 1)[-1]
    base, _, code = definition.rpartition("-")
    if not base:
        return str(param.get("name") or "")
    return "_" + code if base == "Resource" else code


def _resources(statement: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    rests = statement.get("rest") if isinstance(statement, dict) else None
    for rest in rests if isinstance(rests, list) else []:
        if not isinstance(rest, dict) or rest.get("mode", "server") != "server":
            continue
        for resource in rest.get("resource") or []:
            if isinstance(resource, dict) and isinstance(resource.get("type"), str):
                out.setdefault(resource["type"], resource)
    return out


def _strings(value: Any) -> set[str]:
    return {v for v in value if isinstance(v, str)} if isinstance(value, list) else set()


def _required(flow: Flow) -> Iterator[tuple[str, str, str, str]]:
    """(resource, what, value, label) of everything the agency's statement for `flow` names."""
    for name, resource in _resources(agency_statement(flow)).items():
        yield name, "interaction", "search-type", "search-type"
        for value in resource.get("searchInclude") or []:
            yield name, "searchInclude", value, f"_include {value}"
        for value in resource.get("searchRevInclude") or []:
            yield name, "searchRevInclude", value, f"_revinclude {value}"
        for param in resource.get("searchParam") or []:
            code = parameter_code(param)
            yield name, "searchParam", code, f"parameter {code} ({param.get('definition')})"


def check_capability(statement: Any, flows: Iterable[Flow]) -> list[Finding]:
    """Each requirement of each flow, found or not in the vendor's statement (of any shape: what is not a
    CapabilityStatement declares nothing)."""
    if not isinstance(statement, dict) or statement.get("resourceType") != "CapabilityStatement":
        statement = {}
    declared = _resources(statement)
    findings = []
    for flow in dict.fromkeys(flows):
        for name, what, value, label in _required(flow):
            resource = declared.get(name) or {}
            if what == "interaction":
                codes = {i.get("code") for i in resource.get("interaction") or [] if isinstance(i, dict)}
                ok = value in codes
            elif what == "searchParam":
                params = [p for p in resource.get("searchParam") or [] if isinstance(p, dict)]
                ok = any(parameter_code(p) == value or p.get("name") == value for p in params)
            else:
                ok = value in _strings(resource.get(what))
            findings.append(Finding(flow, name, label, ok))
    return findings


def capability_statement(flows: Iterable[Flow], software: str) -> dict[str, Any]:
    """A server's CapabilityStatement declaring what the agency's statements require for `flows`: the resources of
    all of them, each with the union of their interactions, includes and search parameters."""
    merged: dict[str, dict[str, Any]] = {}
    flows = list(dict.fromkeys(flows))
    for flow in flows:
        for name, resource in _resources(agency_statement(flow)).items():
            into = merged.setdefault(name, {"type": name, "interaction": [], "searchParam": []})
            for code in (i["code"] for i in resource.get("interaction") or []):
                if {"code": code} not in into["interaction"]:
                    into["interaction"].append({"code": code})
            for key in ("searchInclude", "searchRevInclude"):
                for value in resource.get(key) or []:
                    if value not in into.setdefault(key, []):
                        into[key].append(value)
            for param in resource.get("searchParam") or []:
                entry = {"name": parameter_code(param), "definition": param["definition"], "type": param["type"]}
                if entry not in into["searchParam"]:
                    into["searchParam"].append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "software": {"name": software},
        "instantiates": [agency_statement(f)["url"] for f in flows],
        "rest": [{"mode": "server", "resource": list(merged.values())}],
    }
