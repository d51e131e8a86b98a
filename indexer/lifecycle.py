"""Index lifecycle: write a new version, validate it against the live one, switch the alias or refuse.

A failed or refused import drops its own version and never touches the live index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from core.report import ChangeReport, ImportReport, ImportSummary
from indexer.backend import Backend, GeoQuery, Hit


class ImportRefused(Exception):
    def __init__(self, summary: ImportSummary) -> None:
        super().__init__(summary.message)
        self.summary = summary


def publish(
    backend: Backend,
    kind: str,
    batches: Iterable[list[dict[str, Any]]],
    report: ImportReport,
    max_drop_ratio: float = 0.10,
    force: bool = False,
    on_batch: Callable[[int], None] | None = None,
    compare: Callable[[str, str], ChangeReport] | None = None,
    guard: Callable[[], None] | None = None,
) -> ImportSummary:
    """Load `batches` into a new version of `kind` and make it live if it passes validation.

    `compare(live, new)`, when there is a live version, gives what the new one changes: kept in the report before
    the validation, so that a refused import tells what it would have changed too. A comparison that fails is a
    warning of the report, not a failed import. `guard()` raises when the import may no longer switch (its lease
    lost to another import of the kind): called before the comparison and before the switch.

    Raises ImportRefused (after dropping the new version) when validation fails; any other error is
    re-raised after dropping it. Reading the first batch happens before anything is created, so a file
    rejected as a whole leaves no trace.
    """
    iterator: Iterator[list[dict[str, Any]]] = iter(batches)
    try:
        first = next(iterator, None)
    except Exception as exc:
        report.finish("failed", str(exc))
        raise
    live = backend.live_index(kind)
    live_count = backend.count(kind) if live else 0
    report.summary.live_records_before = live_count if live else None
    index = backend.create_version(kind)
    report.summary.index = index
    try:
        pending = [first] if first is not None else []
        with backend.bulk_writer(index) as writer:
            handed = 0
            for docs in _chain(pending, iterator):
                writer.put(docs)
                handed += len(docs)
                if on_batch is not None:
                    on_batch(handed)
            writer.close()
        backend.seal(index)
        count = backend.count(kind, index=index)
        report.summary.records_written = count
        if guard is not None:
            guard()
        if compare is not None and live is not None:
            try:
                report.summary.changes = compare(live, index)
            except Exception as exc:  # the import stands; its maintainers are told the comparison is missing
                report.warn(0, "change report failed", f"{type(exc).__name__}: {exc}")
    except BaseException as exc:
        backend.drop(index)
        report.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    problem = _validate(count, live_count if live else None, max_drop_ratio, force)
    if problem is not None:
        backend.drop(index)
        summary = report.finish("refused", problem)
        raise ImportRefused(summary)
    try:
        if guard is not None:
            guard()
    except BaseException as exc:
        backend.drop(index)
        report.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    previous = backend.switch(kind, index)
    note = f"live index is now {index}" + (f" (was {previous})" if previous else "")
    return report.finish("switched", note)


def _chain(first: list[list[dict[str, Any]]], rest: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    yield from first
    yield from rest


def _validate(count: int, live_count: int | None, max_drop_ratio: float, force: bool) -> str | None:
    if count == 0:
        return "no record was accepted: the live index is kept"
    if live_count and not force:
        drop = (live_count - count) / live_count
        if drop > max_drop_ratio:
            return (
                f"the new index has {count} records against {live_count} live ({drop:.0%} fewer, more than "
                f"the {max_drop_ratio:.0%} allowed): the live index is kept; re-run with --force if the drop "
                "is expected"
            )
    return None


def ensure_live(backend: Backend, kind: str) -> str:
    """The live index of a kind that is edited in place (slots, registries), created empty on first use."""
    live = backend.live_index(kind)
    if live is None:
        # A fixed first version: concurrent first uses (threads or processes) all land on the same index.
        live = backend.create_version(kind, version="1")
        backend.seal(live)
        backend.switch(kind, live)
    return live


def scan(backend: Backend, kind: str, query: GeoQuery, page: int = 5000) -> Iterator[Hit]:
    """Every hit of a query, in its order, a page at a time (search_after), without counting them."""
    after = None
    while True:
        result = backend.search(kind, replace(query, limit=page, after=after, count_total=False))
        yield from result.hits
        if len(result.hits) < page:
            return
        after = result.next_after


def iterate_all(
    backend: Backend, kind: str, filters: dict[str, list[str]] | None = None, page: int = 5000
) -> Iterator[dict[str, Any]]:
    """Every live document of a kind, in id order, a page at a time."""
    return (hit.doc for hit in scan(backend, kind, GeoQuery(filters=filters or {}), page))
