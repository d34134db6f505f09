"""Revoked tokens and clients, and the feed every verifier reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from mainstay_common.auth import client_digest

if TYPE_CHECKING:
    from mainstay_common.auth import Principal
    from mainstay_common.db import Database

__all__ = ["RevocationStore"]

_PAGE = 1000


class RevocationStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def revoke(
        self, *, tenant: str, kind: Literal["jti", "client"], value: str, reason: str, by: str
    ) -> int:
        digest = value if kind == "jti" else client_digest(tenant, value)
        rows = await self._database.fetch(
            "INSERT INTO revocations (tenant, kind, value, digest, reason, revoked_by)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            tenant,
            kind,
            value,
            digest,
            reason,
            by,
        )
        return int(rows[0]["id"])

    async def feed(self, after: int) -> list[dict[str, Any]]:
        """What verifiers need, after id ``after``: jtis, and client digests with a time."""
        rows = await self._database.fetch(
            "SELECT id, kind, digest, extract(epoch FROM revoked_at) AS at FROM revocations"
            " WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            _PAGE,
        )
        return [
            {"id": r["id"], "jti": r["digest"]}
            if r["kind"] == "jti"
            else {"id": r["id"], "client_digest": r["digest"], "revoked_at_epoch": float(r["at"])}
            for r in rows
        ]

    async def is_revoked(self, principal: Principal) -> bool:
        """The same rule as :class:`~mainstay_common.auth.RevocationFeed`, read directly."""
        issued = principal.claims.get("iat")
        names = [principal.subject, *principal.actor_chain]
        rows = await self._database.fetch(
            "SELECT 1 FROM revocations WHERE (kind = 'jti' AND digest = $1)"
            " OR (kind = 'client' AND digest = ANY($2::text[])"
            " AND extract(epoch FROM revoked_at) >= $3) LIMIT 1",
            principal.token_id,
            [client_digest(principal.tenant, n) for n in names],
            float(issued) if isinstance(issued, int | float) else 0.0,
        )
        return bool(rows)
