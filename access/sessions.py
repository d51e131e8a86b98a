"""People's sign-in sessions, kept by the server: the browser holds a random value in a cookie, the index holds its
SHA-256 (a stolen index opens no session), whose session it is, the CSRF token its state-changing calls must echo,
and when it ends — at its absolute end or after a time without use, whichever comes first."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from indexer.backend import Backend, GeoQuery
from indexer.lifecycle import ensure_live

KIND = "sessions"
TOUCH_AFTER = timedelta(seconds=60)  # a session in use is written at most once a minute, not on every call


@dataclass(frozen=True)
class Opened:
    value: str  # for the cookie only: never stored nor logged
    session_id: str
    csrf: str
    expires_at: datetime


def session_id(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def open_session(
    backend: Backend,
    account: str,
    lifetime: timedelta,
    idle: timedelta,
    now: datetime | None = None,
    logout_hint: str | None = None,
) -> Opened:
    """A new session; `logout_hint` (sealed by the caller) is what the provider wants back at sign-out."""
    at = now or datetime.now(UTC)
    value, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    ends = at + lifetime
    doc = {
        "session_id": session_id(value),
        "account": account,
        "csrf": csrf,
        "created_at": at.isoformat(),
        "last_seen_at": at.isoformat(),
        "expires_at": ends.isoformat(),
        "idle_expires_at": min(ends, at + idle).isoformat(),
    }
    if logout_hint is not None:
        doc["logout_hint"] = logout_hint
    index = ensure_live(backend, KIND)
    backend.write(index, [doc])
    backend.refresh(index)
    return Opened(value, doc["session_id"], csrf, ends)


def find(backend: Backend, value: str, idle: timedelta, now: datetime | None = None) -> dict[str, Any] | None:
    """The live session a cookie's value opens; an ended one is deleted and None returned."""
    if not value or backend.live_index(KIND) is None:
        return None
    at = now or datetime.now(UTC)
    key = session_id(value)
    doc = backend.get(KIND, key)
    if doc is None:
        return None
    if at >= datetime.fromisoformat(doc["expires_at"]) or at >= datetime.fromisoformat(doc["idle_expires_at"]):
        close(backend, key)
        return None
    if at - datetime.fromisoformat(doc["last_seen_at"]) >= TOUCH_AFTER:
        ends = datetime.fromisoformat(doc["expires_at"])

        def touch(stored: dict[str, Any] | None) -> dict[str, Any] | None:
            if stored is None:
                return None
            return {**stored, "last_seen_at": at.isoformat(), "idle_expires_at": min(ends, at + idle).isoformat()}

        _, written = backend.update(KIND, key, touch)
        doc = written or doc
    return doc


def close(backend: Backend, key: str) -> bool:
    index = backend.live_index(KIND)
    if index is None:
        return False
    gone = backend.delete(index, [key]) > 0
    backend.refresh(index)
    return gone


def close_all(backend: Backend, account: str) -> int:
    """End every session of an account (its last role revoked, or the person signing out everywhere)."""
    index = backend.live_index(KIND)
    if index is None:
        return 0
    keys = [
        h.doc["session_id"] for h in backend.search(KIND, GeoQuery(filters={"account": [account]}, limit=1000)).hits
    ]
    gone = backend.delete(index, keys)
    backend.refresh(index)
    return gone


def purge(backend: Backend, now: datetime | None = None) -> int:
    """Delete sessions past their absolute end (those idle are deleted when next presented, or here once ended)."""
    index = backend.live_index(KIND)
    if index is None:
        return 0
    at = (now or datetime.now(UTC)).timestamp()
    hits = backend.search(KIND, GeoQuery(ranges={"expires_at": (None, at)}, limit=1000)).hits
    gone = backend.delete(index, [h.doc["session_id"] for h in hits])
    backend.refresh(index)
    return gone
