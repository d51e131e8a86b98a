"""Line-level reading shared by the readers: bytes in, numbered decoded lines out, problems reported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from core.report import FileRejected

BOM = b"\xef\xbb\xbf"


def open_binary(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError as exc:
        raise FileRejected(f"{path}: no such file", "check the path") from exc


def numbered_lines(fh: BinaryIO, first_line_no: int = 2) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (line number, raw line without its end of line, whether it ended with a newline)."""
    no = first_line_no
    for raw in fh:
        ended = raw.endswith(b"\n")
        yield no, raw.rstrip(b"\r\n"), ended
        no += 1


def describe_bad_bytes(raw: bytes, exc: UnicodeDecodeError) -> str:
    bad = raw[exc.start : exc.start + 4]
    return f"byte {bad[:1].hex()} at column {exc.start + 1} is not valid UTF-8 ({bad!r})"


def guess_separator(header: str, expected: str) -> str | None:
    """Name the separator a header seems to use when it is not the expected one."""
    counts = {sep: header.count(sep) for sep in ("|", ";", ",", "\t") if sep != expected}
    sep, n = max(counts.items(), key=lambda kv: kv[1])
    if n > 3 and header.count(expected) < 3:
        return {"\t": "tab"}.get(sep, sep)
    return None
