"""The credentials vault: secrets encrypted at rest with Fernet (``cryptography``).

Keys come from configuration, never from the database. The first key
encrypts; every key decrypts, so a key is rotated by putting the new one first
and re-saving credentials (:meth:`Vault.rotate`) before dropping the old one.
Plaintext exists only in memory, for the call that uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mainstay_common.errors import InvalidArgument, PermanentError, map_asyncpg_errors

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mainstay_common.db import Database

__all__ = ["Vault", "VaultLocked"]


class VaultLocked(PermanentError):
    """No key is configured, or no configured key opens a stored credential."""


class Vault:
    def __init__(self, database: Database, keys: Sequence[str]) -> None:
        self._database = database
        fernets: list[Fernet] = []
        for index, key in enumerate(keys):
            try:
                fernets.append(Fernet(key.strip().encode()))
            except ValueError as exc:
                raise ValueError(
                    f"vault key #{index + 1} is not a Fernet key (urlsafe base64 of 32 bytes)"
                ) from exc
        self._fernet = MultiFernet(fernets) if fernets else None

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()

    def _require(self) -> MultiFernet:
        if self._fernet is None:
            raise VaultLocked(
                "the credentials vault has no key: set TOOLS_GATEWAY_VAULT_KEYS"
                " or TOOLS_GATEWAY_VAULT_KEY_FILE"
            )
        return self._fernet

    async def put(
        self, *, tool: str, name: str, value: str, tenant: str = "", agent: str = ""
    ) -> None:
        if not value:
            raise InvalidArgument("a credential value must not be empty")
        if agent and not tenant:
            raise InvalidArgument("a credential for an agent must name the agent's tenant")
        ciphertext = self._require().encrypt(value.encode())
        await self._database.execute(
            "INSERT INTO credentials (tool, name, tenant, agent, ciphertext) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (tool, name, tenant, agent)"
            " DO UPDATE SET ciphertext = EXCLUDED.ciphertext, updated_at = now()",
            tool,
            name,
            tenant,
            agent,
            ciphertext,
        )

    async def delete(self, *, tool: str, name: str, tenant: str = "", agent: str = "") -> bool:
        status = await self._database.execute(
            "DELETE FROM credentials WHERE tool = $1 AND name = $2 AND tenant = $3 AND agent = $4",
            tool,
            name,
            tenant,
            agent,
        )
        return status.endswith(" 1")

    async def get(self, *, tool: str, name: str, tenant: str, agent: str) -> str | None:
        """The most specific credential: the agent's, else the tenant's, else the tool's."""
        rows = await self._database.fetch(
            "SELECT ciphertext FROM credentials WHERE tool = $1 AND name = $2"
            " AND ((tenant = $3 AND agent IN ($4, '')) OR (tenant = '' AND agent = ''))"
            " ORDER BY (tenant <> '')::int + (agent <> '')::int DESC LIMIT 1",
            tool,
            name,
            tenant,
            agent,
        )
        if not rows:
            return None
        try:
            return self._require().decrypt(bytes(rows[0]["ciphertext"])).decode()
        except InvalidToken as exc:
            raise VaultLocked(
                f"credential '{name}' of tool '{tool}' cannot be decrypted with the configured"
                " vault keys"
            ) from exc

    async def list(self, *, tool: str) -> list[dict[str, str]]:
        """Which credentials exist for ``tool`` (names and owners, never values)."""
        rows = await self._database.fetch(
            "SELECT name, tenant, agent, updated_at FROM credentials WHERE tool = $1"
            " ORDER BY name, tenant, agent",
            tool,
        )
        return [
            {
                "name": r["name"],
                "tenant": r["tenant"],
                "agent": r["agent"],
                "updated_at": r["updated_at"].isoformat(),
            }
            for r in rows
        ]

    async def rotate(self) -> int:
        """Re-encrypt every credential with the first key; returns how many."""
        fernet = self._require()
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "SELECT tool, name, tenant, agent, ciphertext FROM credentials FOR UPDATE"
                )
                for row in rows:
                    await conn.execute(
                        "UPDATE credentials SET ciphertext = $5"
                        " WHERE tool = $1 AND name = $2 AND tenant = $3 AND agent = $4",
                        row["tool"],
                        row["name"],
                        row["tenant"],
                        row["agent"],
                        fernet.rotate(bytes(row["ciphertext"])),
                    )
        return len(rows)
