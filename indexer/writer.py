"""Bulk writes that overlap with the reading of the next chunk.

An import is CPU-bound Python on both sides: parsing records and turning documents into index rows.
A `BackgroundWriter` hands each batch to a worker (a thread for Elasticsearch, whose indexing happens in
its own JVM; a process for the embedded index, whose row building is Python) through a bounded queue,
so at most `depth` batches are in flight and memory stays flat. The first failure of the worker is
raised by the next `put` or by `close`, and nothing more is written after it.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

Batch = list[dict[str, Any]]
_STOP = None


class WriterFailed(Exception):
    pass


class BackgroundWriter:
    """Synchronous by default: `put` writes at once (for backends without a faster way)."""

    def __init__(self, write: Callable[[Batch], int]) -> None:
        self._write = write
        self.written = 0

    def put(self, docs: Batch) -> None:
        self.written += self._write(docs)

    def close(self) -> int:
        return self.written

    def abort(self) -> None:
        pass

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()


class ThreadWriter(BackgroundWriter):
    def __init__(self, write: Callable[[Batch], int], depth: int = 2) -> None:
        super().__init__(write)
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bulk-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (docs := self._queue.get()) is not _STOP:
            if self._error is None:
                try:
                    self.written += self._write(docs)
                except BaseException as exc:
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, docs: Batch) -> None:
        self._check()
        self._queue.put(docs)

    def close(self) -> int:
        self._queue.put(_STOP)
        self._thread.join()
        self._check()
        return self.written

    def abort(self) -> None:
        self._error = self._error or WriterFailed("aborted")
        self._queue.put(_STOP)
        self._thread.join()


def _process_main(make_write: Callable[[], Callable[[Batch], int]], jobs: Any, results: Any) -> None:
    write = make_write()
    written = 0
    try:
        while (docs := jobs.get()) is not _STOP:
            written += write(docs)
    except BaseException as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        return
    results.put(("done", written))


class ProcessWriter(BackgroundWriter):
    """Writes in a child process; `make_write` runs there and returns the write function to use.

    The child comes from a fork server, never from a fork of this process: a process with threads (an API
    serving searches while an import runs) may hold a lock, SQLite's among them, at the instant of a fork, and
    the child would wait for it forever. `make_write` must be picklable; its module is loaded once into the
    fork server so each writer starts in milliseconds. Every wait is bounded: a dead or stuck child fails the
    import with a message instead of hanging it.
    """

    def __init__(
        self, make_write: Callable[[], Callable[[Batch], int]], depth: int = 3, finish_timeout_s: float = 3600.0
    ) -> None:
        super().__init__(lambda docs: 0)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([type(make_write).__module__])
        self._jobs = ctx.Queue(maxsize=depth)
        self._results = ctx.Queue()
        self._process = ctx.Process(target=_process_main, args=(make_write, self._jobs, self._results), daemon=True)
        self._process.start()
        self._outcome: tuple[str, Any] | None = None
        self._finish_timeout_s = finish_timeout_s

    def _poll(self) -> None:
        if self._outcome is None:
            try:
                self._outcome = self._results.get_nowait()
            except queue.Empty:
                if not self._process.is_alive():
                    self._outcome = ("error", f"the writer process died (exit code {self._process.exitcode})")
        if self._outcome is not None and self._outcome[0] == "error":
            raise WriterFailed(self._outcome[1])

    def put(self, docs: Batch | None) -> None:
        while True:
            self._poll()
            try:
                self._jobs.put(docs, timeout=1.0)
                return
            except queue.Full:
                continue

    def close(self) -> int:
        self.put(_STOP)
        deadline = time.monotonic() + self._finish_timeout_s
        while self._outcome is None:
            try:
                self._outcome = self._results.get(timeout=1.0)
            except queue.Empty:
                if not self._process.is_alive():
                    self._poll()  # its last word may have arrived just before it ended
                elif time.monotonic() > deadline:
                    self._outcome = ("error", f"the writer process did not finish in {self._finish_timeout_s:g} s")
        if self._outcome[0] == "error":
            self.abort()
            raise WriterFailed(self._outcome[1])
        self._process.join(timeout=60)
        self.written = int(self._outcome[1])
        return self.written

    def abort(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=10)
