"""CSV and Parquet exports of the analysts' tables, with the data dictionary that describes them (pandas, pyarrow).

Columns come from each table's row model, in its field order, so an empty table still has its header
and the Parquet schema keeps its types (integers stay integers, missing rates stay nulls).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from analytics.dictionary import column_type, dictionary_markdown
from analytics.tables import TABLES, Period
from indexer.backend import Backend

Format = Literal["csv", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "parquet")


# The dictionary's column types, as Arrow types.
_ARROW_TYPES = {
    "int64": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "timestamp[s, tz=UTC]": pa.timestamp("s", tz="UTC"),
    "string": pa.string(),
}


def _arrow_type(annotation: Any) -> pa.DataType:
    return _ARROW_TYPES[column_type(annotation)]


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
