"""Signing keys in PostgreSQL, private halves encrypted, with rotation.

One key is ``active`` and signs every new token. Rotation makes a new key
active and keeps the old one published as ``retired`` until every token it
signed has expired (``retire_after``), so a verifier never meets a token whose
key it cannot find. Each instance re-reads the active key every
``refresh_s``; a token signed meanwhile with the previous key still verifies,
since that key stays published.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mainstay_common.auth import TokenSigner, parse_jwks
from mainstay_common.errors import PermanentError, map_asyncpg_errors

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from mainstay_common.db import Database

__all__ = ["KeyStore", "KeysLocked"]

_RELOAD_ON_MISS_S = 1.0


class KeysLocked(PermanentError):
    """No key secret is configured, or none opens a stored signing key."""


class KeyStore:
    def __init__(
        self,
        database: Database,
        secrets: Sequence[str],
        *,
        issuer: str,
        audience: str,
        retire_after: timedelta,
        refresh_s: float = 30.0,
    ) -> None:
        if not secrets:
            raise KeysLocked(
                "no key secret: set IDENTITY_KEY_SECRETS or IDENTITY_KEY_SECRET_FILE"
                " (Fernet keys that encrypt the signing keys at rest)"
            )
        try:
            self._fernet = MultiFernet([Fernet(s.strip().encode()) for s in secrets])
        except ValueError as exc:
            raise KeysLocked(
                "a key secret is not a Fernet key (urlsafe base64 of 32 bytes)"
            ) from exc
        self._database = database
        self._issuer = issuer
        self._audience = audience
        self._retire_after = retire_after
        self._refresh_s = refresh_s
        self._signer: TokenSigner | None = None
        self._loaded_at = 0.0
        self._public: dict[str, Ed25519PublicKey] = {}
        self._public_loaded_at = float("-inf")

    def _signer_of(self, kid: str, encrypted: bytes) -> TokenSigner:
        try:
            pem = self._fernet.decrypt(encrypted)
        except InvalidToken as exc:
            raise KeysLocked(f"signing key {kid} cannot be decrypted with the key secrets") from exc
        return TokenSigner.from_pem(pem, kid=kid, issuer=self._issuer, audience=self._audience)

    async def signer(self) -> TokenSigner:
        """The active signer (created on first use, re-read every ``refresh_s``)."""
        if self._signer is None or time.monotonic() - self._loaded_at >= self._refresh_s:
            await self._load_active()
        assert self._signer is not None
        return self._signer

    async def _load_active(self) -> None:
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                # One instance creates the first key; the others wait and read it.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('identity:keys'))")
                row = await conn.fetchrow(
                    "SELECT kid, private_key FROM signing_keys WHERE state = 'active'"
                )
                if row is None:
                    signer = await self._insert_active(conn)
                else:
                    signer = self._signer_of(row["kid"], bytes(row["private_key"]))
        self._signer = signer
        self._loaded_at = time.monotonic()
        self._public[signer.kid] = signer.private_key.public_key()

    async def _insert_active(self, conn: Any) -> TokenSigner:
        signer = TokenSigner.generate(issuer=self._issuer, audience=self._audience)
        await conn.execute(
            "INSERT INTO signing_keys (kid, private_key, public_jwk, state)"
            " VALUES ($1, $2, $3::jsonb, 'active')",
            signer.kid,
            self._fernet.encrypt(signer.private_pem()),
            json.dumps(signer.public_jwk()),
        )
        return signer

    async def rotate(self) -> tuple[str, str]:
        """Make a new key active; the old one stays published until its tokens expire.

        Returns ``(old kid, new kid)``.
        """
        retire_at = datetime.now(UTC) + self._retire_after
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('identity:keys'))")
                old = await conn.fetchval(
                    "UPDATE signing_keys SET state = 'retired', retire_after = $1"
                    " WHERE state = 'active' RETURNING kid",
                    retire_at,
                )
                signer = await self._insert_active(conn)
        self._signer = signer
        self._loaded_at = time.monotonic()
        self._public[signer.kid] = signer.private_key.public_key()
        return old or "", signer.kid

    async def get_key(self, kid: str) -> Ed25519PublicKey | None:
        """A published public key by ``kid`` (for verifying tokens this service issued)."""
        key = self._public.get(kid)
        if key is None and time.monotonic() - self._public_loaded_at >= _RELOAD_ON_MISS_S:
            # A key rotated in by another instance; unknown kids (other issuers' tokens)
            # cost at most one query per interval.
            self._public = parse_jwks(await self.jwks())
            self._public_loaded_at = time.monotonic()
            key = self._public.get(kid)
        return key

    async def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The active key and every retired key whose tokens may still be alive."""
        rows = await self._database.fetch(
            "SELECT public_jwk FROM signing_keys"
            " WHERE state = 'active' OR retire_after > now() ORDER BY created_at DESC"
        )
        if not rows:
            await self.signer()
            return await self.jwks()
        return {"keys": [json.loads(r["public_jwk"]) for r in rows]}
