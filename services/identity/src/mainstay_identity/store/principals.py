"""Agents, users and services of a tenant, and their client secrets (argon2 hashes)."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mainstay_common.errors import NotFound

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncpg

    from mainstay_common.db import Database

__all__ = ["PrincipalRecord", "PrincipalStore"]

PrincipalKind = Literal["agent", "user", "service"]
_hasher = PasswordHasher()


@dataclass(frozen=True)
class PrincipalRecord:
    tenant: str
    name: str
    kind: PrincipalKind
    owner: str
    description: str
    scopes: tuple[str, ...]
    has_secret: bool
    disabled: bool
    email: str = ""


def _record(row: asyncpg.Record) -> PrincipalRecord:
    return PrincipalRecord(
        tenant=row["tenant"],
        name=row["name"],
        kind=row["kind"],
        owner=row["owner"],
        description=row["description"],
        scopes=tuple(row["scopes"]),
        has_secret=row["secret_hash"] is not None,
        disabled=row["disabled"],
        email=row["email"],
    )


class PrincipalStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def put(
        self,
        *,
        tenant: str,
        name: str,
        kind: PrincipalKind,
        owner: str,
        description: str,
        scopes: Sequence[str],
        disabled: bool = False,
        email: str = "",
    ) -> tuple[PrincipalRecord, bool]:
        """Register or update; ``True`` when it is new. The secret is never touched here."""
        row = await self._database.fetchrow(
            "INSERT INTO principals"
            " (tenant, name, kind, owner, description, scopes, disabled, email)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (tenant, name) DO UPDATE SET kind = EXCLUDED.kind,"
            " owner = EXCLUDED.owner, description = EXCLUDED.description,"
            " scopes = EXCLUDED.scopes, disabled = EXCLUDED.disabled,"
            " email = EXCLUDED.email, updated_at = now()"
            " RETURNING *, (xmax = 0) AS created",
            tenant,
            name,
            kind,
            owner,
            description,
            list(scopes),
            disabled,
            email,
        )
        assert row is not None
        return _record(row), bool(row["created"])

    async def get(self, tenant: str, name: str) -> PrincipalRecord | None:
        rows = await self._database.fetch(
            "SELECT * FROM principals WHERE tenant = $1 AND name = $2", tenant, name
        )
        return _record(rows[0]) if rows else None

    async def new_secret(self, tenant: str, name: str) -> str:
        """A fresh client secret, returned once; only its argon2 hash is kept."""
        secret = secrets.token_urlsafe(32)
        hashed = await asyncio.to_thread(_hasher.hash, secret)
        status = await self._database.execute(
            "UPDATE principals SET secret_hash = $3, updated_at = now()"
            " WHERE tenant = $1 AND name = $2",
            tenant,
            name,
            hashed,
        )
        if not status.endswith(" 1"):
            raise NotFound(f"tenant '{tenant}' has no principal '{name}'")
        return secret

    async def authenticate(self, tenant: str, name: str, secret: str) -> PrincipalRecord | None:
        """The principal when ``secret`` is its current client secret, else ``None``.

        A missing principal costs a hash too, so timing does not tell which
        names exist.
        """
        rows = await self._database.fetch(
            "SELECT * FROM principals WHERE tenant = $1 AND name = $2", tenant, name
        )
        stored = rows[0]["secret_hash"] if rows else None
        try:
            await asyncio.to_thread(_hasher.verify, stored or _DUMMY_HASH, secret)
        except (VerificationError, InvalidHashError):
            return None
        if not rows or stored is None:
            return None
        record = _record(rows[0])
        return None if record.disabled else record


_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
