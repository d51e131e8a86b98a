"""`dispo generate` and `dispo bench`: deterministic data in the real formats, and the benchmarks run on it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from bench.generate import SCALES as GENERATED_SCALES
from bench.generate import generate as generate_files
from bench.generate import mutate_rpps
from bench.report import Row
from bench.report import print_table as print_figures
from bench.run import SCALES, SCENARIOS
from bench.run import run as run_benchmarks
from dispo.console import INVALID, fail, open_backend, out, write_json
from indexer.registry import participants

BACKENDS = (None, "sqlite", "elasticsearch")


def _print_generated(written: dict[str, object], finess: bool) -> None:
    dirty = ", ".join(f"{n} {reason}" for reason, n in sorted(written["dirty"].items())) or "none"  # type: ignore[union-attr]
    out.print(
        f"{written['lines']:,} lines, {written['people']:,} people ({written['gps']:,} liberal GPs) "
        f"-> {written['rpps']}"
    )
    out.print(f"  dirty lines planted (the import rejects them): {dirty}")
    if finess:
        counts = written["finess_counts"]
        out.print(
            f"{counts['establishments']:,} establishments, {counts['geolocalisations']:,} geolocalisations "  # type: ignore[index]
            f"-> {written['finess']}"
        )
    out.print(
        f"{written['participants']:,} participants over {len(written['vendors'])} vendors "
        f"-> {written['participations']}"
    )


def generate(
    out_dir: Annotated[Path, typer.Option("--out", help="output folder")],
    scale: Annotated[str, typer.Option(help="department | region | national")] = "department",
    seed: Annotated[int, typer.Option()] = 0,
    vendors: Annotated[int, typer.Option(help="sandbox vendors the participants are spread over")] = 3,
    finess: Annotated[bool, typer.Option(help="also write a FINESS etalab stock file")] = True,
    next_of: Annotated[
        Path | None,
        typer.Option(
            "--next-of",
            help="instead, write the next extraction of this generated RPPS file: practitioners added, removed, "
            "moved and with another specialty (half the removed and moved among the live index's participants)",
        ),
    ] = None,
    changes: Annotated[int, typer.Option(help="with --next-of: how many of each change")] = 20,
) -> None:
    """Deterministic data in the real formats: PS_LibreAcces, FINESS etalab stock, participation CSV."""
    if next_of is not None:
        if not next_of.is_file():
            raise fail(f"{next_of}: no such file", INVALID, hint="give a file `dispo generate` wrote")
        among = {p.idnps for p in participants(open_backend())}
        out_dir.mkdir(parents=True, exist_ok=True)
        dst = out_dir / f"{next_of.stem}_next.txt"
        done = mutate_rpps(next_of, dst, seed, changes, changes, changes, changes, among=frozenset(among))
        out.print(
            f"{len(done.added)} added, {len(done.removed)} removed ({len(done.removed & among)} taking part), "
            f"{len(done.moved)} sites moved, {len(done.specialties)} specialties changed -> {dst}"
        )
        return
    if scale not in (*GENERATED_SCALES, "national"):
        raise fail(f"unknown scale {scale!r}: department, region or national", INVALID)
    with out.status(f"generating the {scale} scale..."):
        written = generate_files(out_dir, scale, seed, vendors, finess=finess)
    _print_generated(written, finess)


def bench(
    scenario: Annotated[
        list[str] | None,
        typer.Argument(help="import, changes, search, verify, aggregate, embedded, hostile, lrm (default: all)"),
    ] = None,
    scale: Annotated[str, typer.Option(help="department | region | national")] = "department",
    repeat: Annotated[
        int | None, typer.Option(help="searches per search scenario (default 400; 20 for live verification)")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="only this backend: sqlite | elasticsearch (default: every one available)")
    ] = None,
    answer_mb: Annotated[
        float | None, typer.Option(help="hostile: the size of the hostile vendor's answers, in MB (default 115)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="the rows as a JSON array on stdout; tables and progress on stderr")
    ] = False,
) -> None:
    """Run benchmarks and print figures with the ratio to their reference, measured in the same run.

    The embedded index is measured, and Elasticsearch too when DISPO_ES_URL is set; --backend keeps one.
    With --json, stdout carries one JSON array, an object per row of the table (keys in bench/report.py)."""
    names = scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or scale not in SCALES or backend not in BACKENDS:
        raise fail(
            f"scenarios: {', '.join(SCENARIOS)}; scales: {', '.join(SCALES)}; backends: sqlite, elasticsearch", INVALID
        )
    if backend == "elasticsearch" and not os.environ.get("DISPO_ES_URL"):
        raise fail("--backend elasticsearch needs DISPO_ES_URL (scripts/elasticsearch.sh starts one)", INVALID)

    def so_far(rows: list[Row]) -> None:
        # The table so far after each scenario: a long national run shows its figures as they come.
        print_figures(rows, stderr=as_json)

    on_rows = so_far if len(names) > 1 else None
    rows = run_benchmarks(names, scale, on_rows=on_rows, repeat=repeat, backend=backend, answer_mb=answer_mb)
    if as_json:
        write_json([row.as_json() for row in rows])
    else:
        print_figures(rows)


def drill(
    work: Annotated[Path, typer.Option(help="folder of the drill's world, logs and cluster")] = Path(".dispo/drill"),
    down_s: Annotated[float, typer.Option(help="seconds the killed node stays down")] = 20.0,
    lease_s: Annotated[float, typer.Option(help="the schedulers' lease time")] = 10.0,
    heap: Annotated[str, typer.Option(help="each node's heap")] = "512m",
) -> None:
    """Drills on a local Elasticsearch cluster of three nodes, under search load and with two schedulers: a node
    killed and brought back (failed requests, slots lost, time to green), the leading scheduler killed (takeover
    time), then paused (cycles it writes afterwards). Uses the cluster DISPO_ES_STATE records, else starts one."""
    from bench.drills import run_drills  # the drill's imports only when it runs

    write_json(run_drills(work.resolve(), down_s=down_s, lease_s=lease_s, heap=heap))
