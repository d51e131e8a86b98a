"""CSV and Parquet exports of the analysts' tables, with the data dictionary that describes them.

Columns come from each table's row model, in its field order, so an empty table still has its header
and the Parquet schema keeps its types (integers stay integers, missing rates stay nulls).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from analytics.tables import TABLES, Period
from indexer.backend import Backend

Format = Literal["csv", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "parquet")


def _arrow_type(annotation: Any) -> pa.DataType:
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) else [annotation]
    base = args[0] if args else str
    from datetime import datetime

    return {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), datetime: pa.timestamp("s", tz="UTC")}.get(
        base, pa.string()
    )


def schema(model: type[BaseModel]) -> pa.Schema:
    return pa.schema(
        [pa.field(name, _arrow_type(f.annotation), nullable=True) for name, f in model.model_fields.items()]
    )


def frame(model: type[BaseModel], rows: list[BaseModel]) -> pd.DataFrame:
    table = pa.Table.from_pylist([r.model_dump() for r in rows], schema=schema(model))
    return table.to_pandas()


def to_bytes(model: type[BaseModel], rows: list[BaseModel], fmt: Format) -> bytes:
    if fmt == "csv":
        return frame(model, rows).to_csv(index=False).encode("utf-8")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([r.model_dump() for r in rows], schema=schema(model)), buffer)
    return buffer.getvalue()


def read_back(path: Path) -> pd.DataFrame:
    """An exported file as a frame (what an analyst's pandas would read)."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def dictionary_markdown() -> str:
    lines = [
        "# Data dictionary of the coverage exports",
        "",
        "Every table is exported as `<table>.csv` (UTF-8, comma-separated, header line) and `<table>.parquet`",
        "(the same columns, typed). Times are UTC. Free slots are those of vendors fresh at snapshot time.",
        "",
    ]
    for table in TABLES.values():
        lines += [f"## {table.name}", "", table.about + " " + (table.model.__doc__ or "").strip(), ""]
        lines += ["| column | type | meaning |", "|---|---|---|"]
        for name, f in table.model.model_fields.items():
            lines.append(f"| {name} | {_arrow_type(f.annotation)} | {f.description or ''} |")
        lines.append("")
    return "\n".join(lines)


def export_all(
    backend: Backend, out_dir: Path, period: Period, formats: tuple[Format, ...] = FORMATS
) -> dict[str, list[Path]]:
    """Write every table in each format, and `data_dictionary.md`; returns table -> files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for table in TABLES.values():
        rows = table.build(backend, period)
        for fmt in formats:
            path = out_dir / f"{table.name}.{fmt}"
            path.write_bytes(to_bytes(table.model, rows, fmt))
            written.setdefault(table.name, []).append(path)
    (out_dir / "data_dictionary.md").write_text(dictionary_markdown(), encoding="utf-8")
    return written
