"""`dispo sandbox`: vendor sandboxes implementing the vendor side of the SAS contract, to aggregate from."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from dispo.console import INVALID, err, fail, open_backend
from editor_sandbox.agenda import SandboxConfig
from editor_sandbox.app import create_sandbox_app
from editor_sandbox.fleet import DEMO_ASSOCIATIONS, start_fleet


def _read_tokens(path: Path) -> dict[str, str]:
    """`vendor_id:token` lines (anything else is skipped)."""
    return dict(line.split(":", 1) for line in path.read_text().split() if ":" in line)


def _serve_fleet(
    vendors: int,
    port: int,
    latency_ms: float,
    participations: Path | None,
    platform_url: str | None,
    platform_tokens: Path | None,
    sos: bool = False,
) -> None:
    """N vendors over the live directory, registered with their participations, until Ctrl-C."""
    servers = start_fleet(
        open_backend(),
        vendors,
        base_port=port,
        participations=participations,
        associations=DEMO_ASSOCIATIONS if sos else None,
        platform_url=platform_url,
        platform_tokens=_read_tokens(platform_tokens) if platform_tokens else None,
        latency_ms_min=latency_ms / 3,
        latency_ms_max=latency_ms,
    )
    for s in servers:
        err.print(
            f"sandbox {s.config.vendor_id} ({s.config.name}): {len(s.config.practitioners)} practitioners, "
            f"FHIR base {s.fhir_base}"
        )
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    for s in servers:
        s.stop()


def _serve_one(config: Path, host: str, port: int) -> None:
    try:
        cfg = SandboxConfig.model_validate_json(config.read_bytes())
    except (OSError, ValidationError) as exc:
        raise fail(f"cannot read sandbox config {config}: {exc}", INVALID) from exc
    err.print(f"sandbox {cfg.vendor_id}: {len(cfg.practitioners)} practitioners, FHIR base http://{host}:{port}/fhir")
    uvicorn.run(create_sandbox_app(cfg), host=host, port=port, log_level="warning", access_log=False)


def sandbox(
    config: Annotated[
        Path | None, typer.Option(help="JSON SandboxConfig: vendor id, seed, practitioners, knobs")
    ] = None,
    port: Annotated[int, typer.Option(help="port (first port with --vendors)")] = 8100,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    vendors: Annotated[int, typer.Option(help="start this many vendors over the directory and register them")] = 0,
    latency_ms: Annotated[float, typer.Option(help="with --vendors: maximum answer latency")] = 0.0,
    participations: Annotated[Path | None, typer.Option(help="with --vendors: participation CSV to load")] = None,
    platform_url: Annotated[str | None, typer.Option(help="with --vendors: report bookings to this FHIR base")] = None,
    platform_tokens: Annotated[Path | None, typer.Option(help="with --vendors: file of vendor_id:token lines")] = None,
    sos: Annotated[
        bool, typer.Option("--sos", help="with --vendors: the first vendor also serves an SOS Médecins association")
    ] = False,
) -> None:
    """Serve vendor sandboxes implementing the vendor side of the SAS contract (FHIR base: /fhir).

    With --config, one vendor from a JSON description. With --vendors N, N vendors sharing the live
    directory's practitioners, declared in the vendor registry with their participations.
    """
    if vendors > 0:
        _serve_fleet(vendors, port, latency_ms, participations, platform_url, platform_tokens, sos)
    elif config is None:
        raise fail("give --config FILE or --vendors N", INVALID)
    else:
        _serve_one(config, host, port)
