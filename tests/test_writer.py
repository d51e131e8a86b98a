"""The embedded index's background writer process: it starts safely from a busy process and never hangs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from indexer.writer import ProcessWriter, WriterFailed

# A lock of this module, held by the test process while the writer starts: a child forked from the test process
# would inherit it held, and wait for it forever.
HELD = threading.Lock()


@dataclass(frozen=True)
class CountUnderLock:
    def __call__(self) -> Callable[[list[dict[str, Any]]], int]:
        with HELD:
            pass
        return len


@dataclass(frozen=True)
class DieOnFirstBatch:
    def __call__(self) -> Callable[[list[dict[str, Any]]], int]:
        def write(docs: list[dict[str, Any]]) -> int:
            os._exit(3)

        return write


def test_a_writer_starts_while_its_parent_holds_a_lock_and_writes_everything() -> None:
    with HELD:
        writer = ProcessWriter(CountUnderLock(), finish_timeout_s=30)
        writer.put([{"id": "a"}, {"id": "b"}])
        writer.put([{"id": "c"}])
        assert writer.close() == 3


def test_a_writer_process_that_dies_fails_the_import_at_once() -> None:
    writer = ProcessWriter(DieOnFirstBatch(), finish_timeout_s=600)
    started = time.monotonic()
    with pytest.raises(WriterFailed, match="died"):
        writer.put([{"id": "a"}])
        writer.close()
    assert time.monotonic() - started < 30  # noticed by polling, not after the finish timeout
