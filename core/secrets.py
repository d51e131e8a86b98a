"""The server's secret key, and what it protects: vendor credentials sealed at rest, search cursors signed.

The key comes from `DISPO_SECRET_KEY` (any text of at least 32 characters; every API instance sharing an index must
be given the same) or, when unset, from `<data_dir>/secret.key`, made at first use with random bytes and readable by
its owner only. Sub-keys are derived per purpose, so a cursor signature never helps to open a sealed credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from core.settings import Settings

KEY_FILE = "secret.key"
MIN_KEY_CHARS = 32
SEALED_PREFIX = "sealed:v1:"  # what a sealed value starts with, so a value in clear is never taken for one


class SecretKeyError(ValueError):
    """The configured key is unusable, or a sealed value was sealed with another key."""


def server_key(settings: Settings) -> bytes:
    """The server's secret key: the setting, else the data folder's key file (made now if missing)."""
    if settings.secret_key is not None:
        value = settings.secret_key.get_secret_value()
        if len(value) < MIN_KEY_CHARS:
            raise SecretKeyError(f"DISPO_SECRET_KEY must have at least {MIN_KEY_CHARS} characters")
        return value.encode()
    return _key_file(settings.data_dir / KEY_FILE)


def _key_file(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:  # created owner-only, and never overwritten: a second process racing here reads the first one's key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex())
    return key


def derive(key: bytes, purpose: str) -> bytes:
    """A 32-byte sub-key of `key` for one purpose ("cursor", "vendor-credentials", ...)."""
    return hmac.new(key, b"dispo:" + purpose.encode(), hashlib.sha256).digest()


class Sealer:
    """Seals short secrets (a vendor's bearer token) for storage, and opens them again."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(derive(key, "vendor-credentials")))

    def seal(self, value: str) -> str:
        return SEALED_PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, stored: str) -> str:
        """The value in clear; a value stored before sealing existed is returned as it is."""
        if not stored.startswith(SEALED_PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(SEALED_PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyError(
                "a vendor credential was sealed with another secret key: set DISPO_SECRET_KEY to the key it was "
                "sealed with, or register the vendor's token again"
            ) from exc


# A backend opened without settings (a test, a tool) seals with a key of this process only.
PROCESS_KEY = secrets.token_bytes(32)
