"""Retrying a call to another service: which failures deserve another try, and how long to wait between tries.

One policy for every outbound call that retries (a vendor's slot search, a regulator account pushed to a
vendor, the address geocoder), on `stamina`: a few more tries after the first, each after a jittered
exponential backoff, synchronous or async.

A failure is retryable when it may pass by itself: a timeout or a lost connection, an HTTP 429 or 5xx
answer, or an exception that says so with a boolean `retryable` attribute. Anything else (a 4xx, an answer
that cannot be read) fails at once: asking again would get the same answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import httpx
import stamina

from core.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")
C = TypeVar("C", stamina.RetryingCaller, stamina.AsyncRetryingCaller)


def retryable_status(status: int) -> bool:
    """An HTTP status that says "try again later": too many requests, or a server error."""
    return status == 429 or status >= 500


def is_retryable(exc: Exception) -> bool:
    """Whether another try may succeed where `exc` failed."""
    flag = getattr(exc, "retryable", None)
    if isinstance(flag, bool):
        return flag
    if isinstance(exc, httpx.HTTPStatusError):
        return retryable_status(exc.response.status_code)
    return isinstance(exc, httpx.TransportError)  # timeouts, refused or dropped connections


@dataclass(frozen=True)
class Retry:
    """Up to `retries` more tries after the first; the k-th retry waits `base_s` * 2**(k-1) plus up to `base_s`
    of jitter, never more than `max_s`. When every try fails, the last failure is raised as it came."""

    retries: int
    base_s: float
    max_s: float = 30.0

    @classmethod
    def for_vendors(cls, settings: Settings) -> Retry:
        """The policy of calls to vendors: `batch_retries` retries, backoff from `retry_base_s`."""
        return cls(settings.batch_retries, settings.retry_base_s)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)`, tried again while it fails in a retryable way."""
        return self._caller(stamina.RetryingCaller)(is_retryable, fn, *args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`await fn(*args, **kwargs)`, tried again while it fails in a retryable way."""
        return await self._caller(stamina.AsyncRetryingCaller)(is_retryable, fn, *args, **kwargs)

    def _caller(self, kind: type[C]) -> C:
        base = max(0.0, self.base_s)
        return kind(
            attempts=max(0, self.retries) + 1,
            timeout=None,  # bounded by the number of tries alone, as the settings say
            wait_initial=base,
            wait_max=max(base, self.max_s),
            wait_jitter=base,
        )
