"""Errors the caller can act on, raised by the domain packages and told to people by the outer layers.

The API turns each kind into an RFC 9457 problem (or a FHIR OperationOutcome) with its status code; the
command line prints the title and detail and exits with its code. The domain never speaks HTTP.
"""

from __future__ import annotations

from typing import Any


class DispoError(Exception):
    """What went wrong (`title`), what to do next (`detail`), a stable `slug` and any extra fields."""

    status = 400  # the HTTP status the API answers with; a kind of error, not a transport detail

    def __init__(self, title: str, detail: str, slug: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.title, self.detail, self.slug, self.extra = title, detail, slug, extra


class InvalidRequest(DispoError):
    """The question cannot be answered as asked (unknown code, bad range, inconsistent fields)."""

    status = 422


class NotFound(DispoError):
    """The record asked for does not exist (any more)."""

    status = 404


class Conflict(DispoError):
    """The record changed meanwhile (a slot taken elsewhere)."""

    status = 409
