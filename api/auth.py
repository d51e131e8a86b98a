"""Bearer tokens of machine clients (vendors, scripts, the command line), each carrying one role. Only SHA-256
digests of tokens are configured and kept in memory.

Entries are `role:sha256hex[:label]`, one per line in `DISPO_TOKENS_FILE` or comma-separated in
`DISPO_TOKENS`. `dispo tokens create --role regulator` makes a token and prints its entry. People sign in through
the provider instead (`api.signin`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from access.roles import TOKEN_ROLES, Principal, Role, machine
from core.settings import Settings

__all__ = ["Principal", "Role", "TokenRegistry", "digest", "new_token"]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(role: Role, label: str) -> tuple[str, str]:
    """A fresh random token and the `role:digest:label` entry to configure."""
    token = f"dsp_{role.value[:3]}_{secrets.token_urlsafe(24)}"
    return token, f"{role.value}:{digest(token)}:{label}"


class TokenRegistry:
    def __init__(self, entries: list[str]) -> None:
        self._by_digest: dict[str, Principal] = {}
        allowed = ", ".join(TOKEN_ROLES)
        for n, entry in enumerate(entries, 1):
            entry = entry.strip()
            if not entry or entry.startswith("#"):
                continue
            parts = entry.split(":", 2)
            if len(parts) < 2:
                raise ValueError(f"token entry {n}: expected role:sha256hex[:label]")
            role, hexdigest = parts[0], parts[1].lower()
            if role not in TOKEN_ROLES:
                raise ValueError(f"token entry {n}: unknown role {role!r} for a token (roles: {allowed})")
            if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
                raise ValueError(f"token entry {n}: the second field must be a SHA-256 hex digest")
            self._by_digest[hexdigest] = machine(Role(role), parts[2] if len(parts) > 2 else f"{role}-{n}")

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenRegistry:
        entries = [e for e in settings.tokens.split(",") if e.strip()]
        path: Path | None = settings.tokens_file
        if path is not None and path.exists():
            entries += path.read_text(encoding="utf-8").splitlines()
        return cls(entries)

    def authenticate(self, token: str) -> Principal | None:
        wanted = digest(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, wanted):
                return principal
        return None

    def __len__(self) -> int:
        return len(self._by_digest)
