"""Fetching a national file: downloaded over HTTPS with progress, resumed where a download stopped, bounded in size and
time, checked (size, checksum when given), unzipped when published as a zip, the latest few kept.

    <data_dir>/downloads/<kind>/<name>.part                 a download under way (resumed by the next try), and
    <data_dir>/downloads/<kind>/<name>.part.validator       which file it is (ETag or Last-Modified)
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
STAMP = re.compile(r"^\d{8}T\d{12}-")  # the download's own stamp before a kept file's name (not the extraction's)
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
    found = list(DATED.finditer(STAMP.sub("", name)))
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
            part.with_name(part.name + ".validator").unlink(missing_ok=True)
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
    if zipfile.is_zipfile(done):
        path, member = _unzipped(done, kind, settings)
        source = source.model_copy(update={"published": published_from_name(member) or source.published})
    else:
        path = done
    _prune(folder, settings.import_keep_files)
    return Fetched(path, source)


def _download(
    url: str, part: Path, settings: Settings, progress: Progress | None, transport: httpx.BaseTransport | None
) -> datetime | None:
    """The file into `part`, from where an earlier try stopped; the server's Last-Modified, if it gave one.

    A resumed download asks for the rest only if the file is still the one begun (`If-Range` with its ETag or
    Last-Modified, kept beside the part): a file replaced since (the registers publish at a fixed address) comes
    whole, and the part is started over."""
    cap = settings.import_max_bytes
    deadline = time.monotonic() + settings.import_download_timeout_s
    validator_file = part.with_name(part.name + ".validator")
    validator = validator_file.read_text(encoding="utf-8").strip() if validator_file.exists() else ""
    have = part.stat().st_size if part.exists() and validator else 0
    # The file's own bytes (a compressed transfer would make a byte range mean something else).
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers |= {"Range": f"bytes={have}-", "If-Range": validator}
    timeout = httpx.Timeout(settings.import_read_timeout_s, connect=10.0)
    again = "run the import again: it resumes where it stopped"
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True, transport=transport) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code == 416 and have:  # nothing past what we have: it was complete
                if _range_total(response.headers.get("content-range")) == have:
                    return _last_modified(response)
                raise FetchError(f"{url}: the server refused to resume", "retry: the download starts again", True)
            if response.status_code not in (200, 206):
                raise FetchError(
                    f"{url}: the server answered {response.status_code}", "check the address, or retry later"
                )
            if response.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
                raise FetchError(f"{url}: the server compressed the transfer", "retry later", True)
            resumed = response.status_code == 206 and have > 0
            if resumed and _range_start(response.headers.get("content-range")) != have:
                raise FetchError(f"{url}: the server resumed elsewhere than asked", "retry: it starts again", True)
            if not resumed:
                have = 0  # the whole file: start over, and remember which file it is
                found = response.headers.get("etag") or response.headers.get("last-modified") or ""
                validator_file.write_text(found if not found.startswith("W/") else "", encoding="utf-8")
            length = response.headers.get("content-length")
            total = have + int(length) if length and length.isdigit() else None
            too_big = f"raise DISPO_IMPORT_MAX_BYTES if the file is right (the limit is {cap:,} bytes)"
            if total is not None and total > cap:
                raise FetchError(f"{url}: {total:,} bytes, more than the {cap:,} allowed", too_big, True)
            with part.open("ab" if resumed else "wb") as out:
                done = have
                for block in response.iter_raw():  # as it comes: what arrived before a cut is kept
                    done += len(block)
                    if done > cap:
                        raise FetchError(f"{url}: more than the {cap:,} bytes allowed", too_big, True)
                    out.write(block)
                    if progress is not None:
                        progress(done, total)
                    if time.monotonic() > deadline:
                        limit = settings.import_download_timeout_s
                        raise FetchError(f"{url}: the download took more than {limit:.0f} s", again)
            if total is not None and done != total:
                raise FetchError(f"{url}: {done:,} bytes received of {total:,}", again)
            validator_file.unlink(missing_ok=True)
            return _last_modified(response)
    except httpx.HTTPError as exc:
        raise FetchError(f"{url}: {type(exc).__name__}: {exc}", again) from exc


def _range_start(content_range: str | None) -> int | None:
    found = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", content_range or "")
    return int(found.group(1)) if found else None


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


def _unzipped(archive: Path, kind: str, settings: Settings) -> tuple[Path, str]:
    """The one data file of a published zip, unpacked beside it, its size bounded (what the zip says is not trusted:
    the bytes written are counted); with its name in the zip."""
    target: Path | None = None
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and MEMBERS[kind].search(m.filename)]
            if len(members) != 1:
                names = ", ".join(m.filename for m in zf.infolist()[:10]) or "nothing"
                raise FetchError(
                    f"{archive.name}: {len(members)} {kind} data files in the zip ({names})",
                    "give the URL of the register's own extraction",
                )
            (member,) = members
            # The member's own name only, never its folders: nothing is written outside the downloads' folder.
            target = archive.with_name(f"{archive.name.split('-', 1)[0]}-{Path(member.filename).name}")
            written = 0
            with zf.open(member) as src, target.open("wb") as out:
                while block := src.read(BLOCK):
                    written += len(block)
                    if written > settings.import_max_bytes:
                        raise FetchError(
                            f"{member.filename}: unpacks to more than the {settings.import_max_bytes:,} bytes allowed",
                            "raise DISPO_IMPORT_MAX_BYTES if the file is right",
                        )
                    out.write(block)
            return target, Path(member.filename).name
    except FetchError:
        if target is not None:
            target.unlink(missing_ok=True)
        raise
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, OSError) as exc:
        if target is not None:
            target.unlink(missing_ok=True)
        archive.unlink(missing_ok=True)
        raise FetchError(
            f"{archive.name}: the zip cannot be read ({exc})", "run the import again: it downloads anew"
        ) from exc


def _prune(folder: Path, keep: int) -> None:
    """Keep the latest `keep` downloads (each with the file unpacked from it)."""
    stamps = sorted({p.name.split("-", 1)[0] for p in folder.iterdir() if STAMP.match(p.name)}, reverse=True)
    for stamp in stamps[keep:]:
        for p in folder.glob(f"{stamp}-*"):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
