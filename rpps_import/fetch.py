"""Fetching a national file: downloaded over HTTPS with progress, resumed where a download stopped, bounded in size and
time, checked (size, checksum when given), unzipped when published as a zip, the latest few kept.

    <data_dir>/downloads/<kind>/<name>.part                 a download under way (resumed by the next try)
    <data_dir>/downloads/<kind>/<YYYYmmddTHHMMSSffffff>-<name>   a download complete (its zip's data file beside it)

A server is asked to resume with a byte range; one that answers the whole file again is read from the start. What
the file is (size, SHA-256, when the extraction was made) goes with the import (`core.report.SourceFile`): the date
comes from the file's name, as both registers date their extractions, else from the server's Last-Modified.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from core.report import SourceFile
from core.settings import Settings

Progress = Callable[[int, int | None], None]  # bytes so far, total when known
DATED = re.compile(r"(20\d{2})(\d{2})(\d{2})(?:[-_T]?(\d{2})(\d{2}))?")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
# The data file inside a published zip: the RPPS extraction's text file, FINESS's CSV.
MEMBERS = {"rpps": re.compile(r"(?i)personne_activite.*\.(txt|csv)$"), "finess": re.compile(r"(?i)\.csv$")}
BLOCK = 1 << 20


class FetchError(Exception):
    """The file could not be fetched or is not what was asked; `hint` says what to do next."""

    def __init__(self, message: str, hint: str | None = None, discard: bool = False) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint
        self.discard = discard  # what was downloaded is no use to a next try

    def __str__(self) -> str:
        return f"{self.message}. {self.hint[:1].upper()}{self.hint[1:]}" if self.hint else self.message


@dataclass(frozen=True)
class Fetched:
    path: Path  # the file to import (unzipped)
    source: SourceFile


def published_from_name(name: str) -> datetime | None:
    """The extraction's date a register's file name carries: `..._202612010845.txt`, `...-20261201-0334.csv`."""
    found = list(DATED.finditer(name))
    if not found:
        return None
    year, month, day, hour, minute = found[-1].groups()
    try:
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), tzinfo=UTC)
    except ValueError:
        return None


def describe(path: Path, url: str | None = None, last_modified: datetime | None = None) -> SourceFile:
    """What a local file is: its size, SHA-256 and extraction date."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return SourceFile(
        name=path.name,
        size=path.stat().st_size,
        sha256=digest.hexdigest(),
        url=url,
        published=published_from_name(path.name) or last_modified,
    )


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK):
        return url
    raise FetchError(
        f"{url}: not an HTTPS address", "the registers publish their files over HTTPS: give its https:// URL"
    )


def _name(url: str, kind: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or f"{kind}.download"


def fetch(
    url: str,
    kind: str,
    settings: Settings,
    sha256: str | None = None,
    progress: Progress | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Fetched:
    """Download `url` (resuming a download left unfinished), check it and unzip it; raises FetchError."""
    _checked_url(url)
    folder = settings.data_dir / "downloads" / kind
    folder.mkdir(parents=True, exist_ok=True)
    name = _name(url, kind)
    part = folder / f"{name}.part"
    try:
        last_modified = _download(url, part, settings, progress, transport)
    except FetchError as exc:
        if exc.discard:
            part.unlink(missing_ok=True)
        raise
    digest = _sha256(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise FetchError(
            f"{name}: its SHA-256 is {digest}, not the {sha256} given", "the download was corrupted or replaced: retry"
        )
    done = folder / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{name}"
    part.rename(done)
    source = SourceFile(
        name=name,
        size=done.stat().st_size,
        sha256=digest,
        url=url,
        published=published_from_name(name) or last_modified,
    )
    path = _unzipped(done, kind, settings) if zipfile.is_zipfile(done) else done
    if path is not done:
        source = source.model_copy(update={"published": published_from_name(path.name) or source.published})
    _prune(folder, settings.import_keep_files)
    return Fetched(path, source)


def _download(
    url: str, part: Path, settings: Settings, progress: Progress | None, transport: httpx.BaseTransport | None
) -> datetime | None:
    """The file into `part`, from where an earlier try stopped; the server's Last-Modified, if it gave one."""
    cap = settings.import_max_bytes
    deadline = time.monotonic() + settings.import_download_timeout_s
    have = part.stat().st_size if part.exists() else 0
    # The file's own bytes (a compressed transfer would make a byte range mean something else).
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={have}-"} if have else {})
    timeout = httpx.Timeout(settings.import_read_timeout_s, connect=10.0)
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True, transport=transport) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code == 416 and have:  # nothing past what we have: it was complete
                total = _range_total(response.headers.get("content-range"))
                if total == have:
                    return _last_modified(response)
                raise FetchError(f"{url}: the server refused to resume", "retry: the download starts again", True)
            if response.status_code not in (200, 206):
                raise FetchError(
                    f"{url}: the server answered {response.status_code}", "check the address, or retry later"
                )
            resumed = response.status_code == 206 and have > 0
            if not resumed:
                have = 0  # the whole file again: start over
            length = response.headers.get("content-length")
            total = have + int(length) if length and length.isdigit() else None
            if total is not None and total > cap:
                raise FetchError(
                    f"{url}: {total:,} bytes, more than the {cap:,} allowed",
                    "raise DISPO_IMPORT_MAX_BYTES if the file is right",
                    discard=True,
                )
            with part.open("ab" if resumed else "wb") as out:
                done = have
                for block in response.iter_bytes():  # as it comes: what arrived before a cut is kept
                    done += len(block)
                    if done > cap:
                        raise FetchError(
                            f"{url}: more than the {cap:,} bytes allowed",
                            "raise DISPO_IMPORT_MAX_BYTES if the file is right",
                            discard=True,
                        )
                    out.write(block)
                    if progress is not None:
                        progress(done, total)
                    if time.monotonic() > deadline:
                        raise FetchError(
                            f"{url}: the download took more than {settings.import_download_timeout_s:.0f} s",
                            "run the import again: it resumes where it stopped",
                        )
            if total is not None and done != total:
                raise FetchError(
                    f"{url}: {done:,} bytes received of {total:,}", "run the import again: it resumes where it stopped"
                )
            return _last_modified(response)
    except httpx.HTTPError as exc:
        raise FetchError(
            f"{url}: {type(exc).__name__}: {exc}", "run the import again: it resumes where it stopped"
        ) from exc


def _range_total(content_range: str | None) -> int | None:
    found = re.fullmatch(r"bytes \*/(\d+)", content_range or "")
    return int(found.group(1)) if found else None


def _last_modified(response: httpx.Response) -> datetime | None:
    value = response.headers.get("last-modified")
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _unzipped(archive: Path, kind: str, settings: Settings) -> Path:
    """The one data file of a published zip, unpacked beside it, its size bounded (what the zip says is not trusted:
    the bytes written are counted)."""
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir() and MEMBERS[kind].search(m.filename)]
        if len(members) != 1:
            names = ", ".join(m.filename for m in zf.infolist()[:10]) or "nothing"
            raise FetchError(
                f"{archive.name}: {len(members)} {kind} data files in the zip ({names})",
                "give the URL of the register's own extraction",
            )
        (member,) = members
        target = archive.with_name(f"{archive.name.split('-', 1)[0]}-{Path(member.filename).name}")
        written = 0
        with zf.open(member) as src, target.open("wb") as out:
            while block := src.read(BLOCK):
                written += len(block)
                if written > settings.import_max_bytes:
                    out.close()
                    target.unlink()
                    raise FetchError(
                        f"{member.filename}: unpacks to more than the {settings.import_max_bytes:,} bytes allowed",
                        "raise DISPO_IMPORT_MAX_BYTES if the file is right",
                    )
                out.write(block)
    return target


def _prune(folder: Path, keep: int) -> None:
    """Keep the latest `keep` downloads (each with the file unpacked from it)."""
    stamps = sorted({p.name.split("-", 1)[0] for p in folder.iterdir() if not p.name.endswith(".part")}, reverse=True)
    for stamp in stamps[keep:]:
        for p in folder.glob(f"{stamp}-*"):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
