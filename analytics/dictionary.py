"""The data dictionary of the analysts' tables, from their row models; pure Python, so the API serves it
without the `analytics` extra (pandas, pyarrow, matplotlib)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_args, get_origin

from analytics.tables import TABLES

# Column types as the Parquet exports store them (Arrow's names), from the row models' annotations.
_COLUMN_TYPES = {int: "int64", float: "double", bool: "bool", datetime: "timestamp[s, tz=UTC]"}


def column_type(annotation: Any) -> str:
    """'int64', 'double', 'bool', 'timestamp[s, tz=UTC]' or 'string' for a row model field's annotation."""
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) else [annotation]
    return _COLUMN_TYPES.get(args[0] if args else str, "string")


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
            lines.append(f"| {name} | {column_type(f.annotation)} | {f.description or ''} |")
        lines.append("")
    return "\n".join(lines)
