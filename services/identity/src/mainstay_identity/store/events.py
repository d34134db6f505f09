"""The audit of credential events, which also counts failed attempts for rate limiting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mainstay_common.db import Database

__all__ = ["CredentialLog"]


class CredentialLog:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def record(
        self, *, tenant: str, principal: str, event: str, jti: str = "", detail: str = ""
    ) -> None:
        await self._database.execute(
            "INSERT INTO credential_events (tenant, principal, event, jti, detail)"
            " VALUES ($1, $2, $3, $4, $5)",
            tenant,
            principal,
            event,
            jti,
            detail,
        )

    async def recent_failures(self, *, tenant: str, principal: str, within_s: float) -> int:
        rows = await self._database.fetch(
            "SELECT count(*) AS n FROM credential_events WHERE tenant = $1 AND principal = $2"
            " AND event = 'failed' AND at > now() - make_interval(secs => $3)",
            tenant,
            principal,
            within_s,
        )
        return int(rows[0]["n"])

    async def list(self, *, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._database.fetch(
            "SELECT at, principal, event, jti, detail FROM credential_events"
            " WHERE tenant = $1 ORDER BY at DESC, id DESC LIMIT $2",
            tenant,
            limit,
        )
        return [{**dict(r), "at": r["at"].isoformat()} for r in rows]
