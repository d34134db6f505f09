"""Development credentials: a signing key, its JWKS and an admin token under one folder.

``./dev up`` calls :func:`ensure_dev_credentials` before it starts the services,
so that on one machine, with no identity service running yet, every service can
verify tokens (``AuthSettings.jwks_file`` defaults to ``.mainstay/jwks.json``)
and the CLI has a token to send. It is idempotent: the key is reused, the JWKS
is rewritten only when it does not publish exactly that key, and the admin
token is re-minted only when it no longer verifies or is within a day of expiry.

This module is synchronous on purpose: it runs once in a CLI before any event
loop, and blocking file I/O is what it does.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from mainstay_common.auth._jwk import ALGORITHM
from mainstay_common.auth._signer import TokenSigner

__all__ = [
    "ADMIN_TOKEN_TTL",
    "DevCredentials",
    "ensure_dev_credentials",
]

ADMIN_TOKEN_TTL = timedelta(days=30)
_RENEW_BEFORE = timedelta(days=1)
_KEY_FILE = "signing-key.pem"
_JWKS_FILE = "jwks.json"
_TOKEN_FILE = "admin.token"  # noqa: S105  # a file name, not a secret
VAULT_KEY_FILE = "vault.key"
"""The tools gateway's development vault key (``TOOLS_GATEWAY_VAULT_KEY_FILE``)."""
IDENTITY_KEY_FILE = "identity.key"
"""What encrypts the identity service's signing keys at rest (``IDENTITY_KEY_SECRET_FILE``)."""


@dataclass(frozen=True)
class DevCredentials:
    """Where the development credentials live, plus the loaded signer and token."""

    home: Path
    private_key_path: Path
    jwks_path: Path
    admin_token_path: Path
    vault_key_path: Path
    kid: str
    signer: TokenSigner = field(repr=False)
    admin_token: str = field(repr=False)


def _write_temp(directory: Path, name: str, data: bytes, mode: int) -> str:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        Path(tmp).unlink()
        raise
    return tmp


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    # Readers (services starting in parallel) see the old or the new file, never half of one.
    tmp = _write_temp(path.parent, path.name, data, mode)
    try:
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink()
        raise


def _load_or_create_signer(path: Path) -> TokenSigner:
    if not path.exists():
        tmp = _write_temp(path.parent, path.name, TokenSigner.generate().private_pem(), 0o600)
        try:
            # link() never replaces: when two processes race, both end up reading
            # the winner's complete key instead of each trusting its own.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            Path(tmp).unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # a private key readable by others is a leak waiting to happen
    return TokenSigner.from_pem(path.read_bytes())


def _ensure_jwks(path: Path, signer: TokenSigner) -> None:
    wanted = signer.jwks()
    try:
        if json.loads(path.read_bytes()) == wanted:
            return
    except (OSError, ValueError):
        pass
    # Only this key is published: a key whose private half is gone must stop verifying.
    _write_atomically(path, json.dumps(wanted, indent=2).encode() + b"\n", 0o644)


def _still_valid(token: str, signer: TokenSigner, now: datetime) -> bool:
    try:
        claims = jwt.decode(
            token,
            signer.private_key.public_key(),
            algorithms=[ALGORITHM],
            audience=signer.audience,
            issuer=signer.issuer,
            options={"require": ["exp"]},
        )
    except jwt.InvalidTokenError:
        return False
    return datetime.fromtimestamp(int(claims["exp"]), tz=UTC) - now > _RENEW_BEFORE


def _ensure_admin_token(path: Path, signer: TokenSigner, now: datetime) -> str:
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if token and _still_valid(token, signer, now):
        return token
    token = signer.mint(
        subject="admin", tenant="default", scopes=["*"], ttl=ADMIN_TOKEN_TTL, now=now
    )
    _write_atomically(path, token.encode() + b"\n", 0o600)
    return token


def _ensure_fernet_key(path: Path) -> None:
    if path.is_file() and path.read_text().strip():
        return
    from cryptography.fernet import Fernet  # noqa: PLC0415 - only the first start needs it

    _write_atomically(path, Fernet.generate_key() + b"\n", 0o600)


def ensure_dev_credentials(home: Path, *, now: datetime | None = None) -> DevCredentials:
    """Create (or reuse) the development key, JWKS, admin token and Fernet keys under ``home``.

    The admin token has issuer ``mainstay-identity``, audience ``mainstay``,
    subject ``admin``, tenant ``default`` and scope ``*``, and lives 30 days.
    ``now`` exists so tests can check renewal without waiting a month.
    """
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path, jwks_path, token_path = home / _KEY_FILE, home / _JWKS_FILE, home / _TOKEN_FILE
    signer = _load_or_create_signer(key_path)
    _ensure_jwks(jwks_path, signer)
    token = _ensure_admin_token(token_path, signer, now or datetime.now(UTC))
    _ensure_fernet_key(home / VAULT_KEY_FILE)
    _ensure_fernet_key(home / IDENTITY_KEY_FILE)
    return DevCredentials(
        home=home,
        private_key_path=key_path,
        jwks_path=jwks_path,
        admin_token_path=token_path,
        vault_key_path=home / VAULT_KEY_FILE,
        kid=signer.kid,
        signer=signer,
        admin_token=token,
    )
