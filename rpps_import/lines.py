"""Line-level reading shared by the readers: bytes in, numbered decoded lines out, problems reported."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from core.report import FileRejected

BOM = b"\xef\xbb\xbf"
# What a national file may come as before it is unpacked: its first bytes tell.
_PACKED = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"7z\xbc\xaf": "7z"}
_SNIFF = 64 * 1024  # bytes looked at to tell a text file from a binary one


def open_binary(path: Path) -> BinaryIO:
    """The file, opened to read bytes; raises FileRejected for a missing, unreadable, packed or binary file, so an
    import stops with what to do rather than a trace."""
    try:
        fh = path.open("rb")
    except FileNotFoundError as exc:
        raise FileRejected(f"{path}: no such file", "check the path") from exc
    except OSError as exc:  # a folder, no permission...
        raise FileRejected(f"{path}: cannot be read ({exc.strerror})", "give the path of the file itself") from exc
    head = fh.peek(_SNIFF)[:_SNIFF] if hasattr(fh, "peek") else b""
    packed = next((kind for magic, kind in _PACKED.items() if head.startswith(magic)), None)
    if packed is not None:
        fh.close()
        raise FileRejected(
            f"{path.name}: a {packed} archive, not a text file",
            f"unpack it first ({packed}) and import the file inside",
        )
    if b"\x00" in head:
        fh.close()
        raise FileRejected(
            f"{path.name}: a binary file (NUL bytes in its first {len(head):,} bytes), not text",
            "import the text file as published (UTF-8, or Latin-1 for older FINESS files)",
        )
    return fh


def split_row(text: str, delimiter: str) -> list[str]:
    """One line's fields (quotes understood); raises ValueError for a line the CSV rules cannot read, such as a bare
    carriage return inside an unquoted field."""
    try:
        return next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error as exc:
        raise ValueError(str(exc)) from exc


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
