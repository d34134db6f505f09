"""Development secrets: the Fernet keys ``./dev up`` writes under its home folder.

``./dev up`` calls :func:`ensure_dev_secrets` before it starts the services:

- ``identity.key`` encrypts the identity service's signing keys at rest
  (``IDENTITY_KEY_SECRET_FILE``);
- ``vault.key`` encrypts the tools gateway's credential vault
  (``TOOLS_GATEWAY_VAULT_KEY_FILE``).

Token signing is not done here. The identity service creates and keeps the
signing keys (encrypted with ``identity.key``), publishes them at
``/.well-known/jwks.json`` and signs ``admin.token`` through
``python -m mainstay_identity.bootstrap admin-token``; the other services verify
tokens against that JWKS URL and honour its revocation feed.

Earlier versions wrote a local signing key (``signing-key.pem``) and its
``jwks.json`` into the home; :func:`ensure_dev_secrets` deletes them, so no
service keeps trusting a key that the identity service does not manage.

It is idempotent and synchronous on purpose: it runs once in a CLI, and
blocking file I/O is what it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mainstay_common.files import write_atomically

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "IDENTITY_KEY_FILE",
    "VAULT_KEY_FILE",
    "DevSecrets",
    "ensure_dev_secrets",
]

VAULT_KEY_FILE = "vault.key"
"""The tools gateway's development vault key (``TOOLS_GATEWAY_VAULT_KEY_FILE``)."""
IDENTITY_KEY_FILE = "identity.key"
"""What encrypts the identity service's signing keys at rest (``IDENTITY_KEY_SECRET_FILE``)."""
_LEGACY_FILES = ("signing-key.pem", "jwks.json")


@dataclass(frozen=True)
class DevSecrets:
    """Where the development secrets of one home folder live."""

    home: Path
    vault_key_path: Path
    identity_key_path: Path
    removed: tuple[Path, ...] = ()
    """Files of the former local signing key deleted by this call."""


def _ensure_fernet_key(path: Path) -> None:
    if path.is_file() and path.read_text().strip():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # a key readable by others is a leak waiting to happen
        return
    from cryptography.fernet import Fernet  # noqa: PLC0415 - only the first start needs it

    write_atomically(path, Fernet.generate_key() + b"\n", mode=0o600)


def _remove_legacy(home: Path) -> tuple[Path, ...]:
    removed: list[Path] = []
    for name in _LEGACY_FILES:
        path = home / name
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return tuple(removed)


def ensure_dev_secrets(home: Path) -> DevSecrets:
    """Create (or keep) ``identity.key`` and ``vault.key`` under ``home``, mode 0600.

    A key file that exists and is not empty is never replaced: the identity
    service's stored signing keys and the gateway's vault stay readable.
    """
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    vault_key, identity_key = home / VAULT_KEY_FILE, home / IDENTITY_KEY_FILE
    _ensure_fernet_key(vault_key)
    _ensure_fernet_key(identity_key)
    return DevSecrets(
        home=home,
        vault_key_path=vault_key,
        identity_key_path=identity_key,
        removed=_remove_legacy(home),
    )
