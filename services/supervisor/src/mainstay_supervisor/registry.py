"""The agent registry: versioned definitions, announced on the compacted agent topic.

Registering a definition equal to the latest version changes nothing (a
repeat is answered with that version); any other definition becomes the next
version. Every version is kept, so a task runs the version it started with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mainstay_common.errors import NotFound
from mainstay_contracts.supervisor import AGENT_EVENTS, AgentDefinition, AgentEvent

if TYPE_CHECKING:
    import asyncpg

    from mainstay_common.bus import Bus, Event
    from mainstay_common.db import Connection, Database, Outbox

__all__ = ["AgentRecord", "Registry"]


@dataclass(frozen=True)
class AgentRecord:
    """One version of an agent, and the agent's state now."""

    tenant: str
    name: str
    version: int
    latest_version: int
    definition: AgentDefinition
    quarantined: bool
    quarantine_reason: str
    registered_by: str
    registered_at: datetime

    @classmethod
    def of(cls, row: asyncpg.Record) -> AgentRecord:
        return cls(
            tenant=row["tenant"],
            name=row["name"],
            version=row["version"],
            latest_version=row["latest_version"],
            definition=AgentDefinition.model_validate(json.loads(row["definition"])),
            quarantined=row["quarantined"],
            quarantine_reason=row["quarantine_reason"],
            registered_by=row["registered_by"],
            registered_at=row["registered_at"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "name": self.name,
            "version": self.version,
            "latest_version": self.latest_version,
            "quarantined": self.quarantined,
            "quarantine_reason": self.quarantine_reason,
            "registered_by": self.registered_by,
            "registered_at": self.registered_at.isoformat(),
            "definition": self.definition.model_dump(mode="json"),
        }


_SELECT = (
    "SELECT v.*, a.latest_version, a.quarantined, a.quarantine_reason"
    " FROM agent_versions v JOIN agents a ON a.tenant = v.tenant AND a.name = v.name"
)


class Registry:
    """Agent definitions over the supervisor's database."""

    def __init__(self, database: Database, bus: Bus, outbox: Outbox) -> None:
        self._database = database
        self._bus = bus
        self._outbox = outbox

    async def register(
        self,
        definition: AgentDefinition,
        *,
        by: str,
        tx: Connection | None = None,
        caused_by: Event[Any] | None = None,
    ) -> tuple[AgentRecord, bool]:
        """Register ``definition``; ``(the version now in force, whether it is new)``."""
        if tx is None:
            async with self._database.pool.acquire() as conn, conn.transaction():
                return await self.register(definition, by=by, tx=conn, caused_by=caused_by)
        tenant, name = definition.tenant, definition.name
        document = definition.model_dump(mode="json")
        latest = await tx.fetchrow(
            f"{_SELECT} WHERE a.tenant = $1 AND a.name = $2 AND v.version = a.latest_version"
            " FOR UPDATE OF a",
            tenant,
            name,
        )
        if latest is not None and json.loads(latest["definition"]) == document:
            return AgentRecord.of(latest), False
        version = 1 if latest is None else latest["latest_version"] + 1
        await tx.execute(
            "INSERT INTO agents (tenant, name, latest_version) VALUES ($1, $2, $3)"
            " ON CONFLICT (tenant, name) DO UPDATE SET latest_version = excluded.latest_version,"
            " updated_at = now()",
            tenant,
            name,
            version,
        )
        await tx.execute(
            "INSERT INTO agent_versions (tenant, name, version, definition, registered_by)"
            " VALUES ($1, $2, $3, $4::jsonb, $5)",
            tenant,
            name,
            version,
            json.dumps(document),
            by,
        )
        record = await self._get(tx, tenant, name, version)
        await self._outbox.add(tx, self._event(record, "agent.registered", caused_by))
        return record, True

    def _event(self, record: AgentRecord, kind: str, caused_by: Event[Any] | None) -> Any:
        event = AgentEvent(
            type=kind,
            name=record.name,
            tenant=record.tenant,
            version=record.latest_version,
            definition=record.definition,
            quarantined=record.quarantined,
            reason=record.quarantine_reason,
            occurred_at=datetime.now(UTC),
        )
        return self._bus.message(
            AGENT_EVENTS,
            event,
            caused_by=caused_by,
            event_type=f"mainstay.supervisor.{kind}",
            tenant=record.tenant,
            subject=record.name,
        )

    async def _get(
        self, conn: Connection, tenant: str, name: str, version: int | None
    ) -> AgentRecord:
        row = await conn.fetchrow(
            f"{_SELECT} WHERE a.tenant = $1 AND a.name = $2"
            " AND v.version = coalesce($3, a.latest_version)",
            tenant,
            name,
            version,
        )
        if row is None:
            what = f"agent '{name}'" + (f" version {version}" if version else "")
            raise NotFound(f"name: no {what} in tenant '{tenant}'")
        return AgentRecord.of(row)

    async def get(self, tenant: str, name: str, version: int | None = None) -> AgentRecord:
        """The latest version of the agent, or ``version``."""
        async with self._database.pool.acquire() as conn:
            return await self._get(conn, tenant, name, version)

    async def latest(self, tenant: str) -> list[AgentRecord]:
        """The latest version of every agent of ``tenant``."""
        rows = await self._database.fetch(
            f"{_SELECT} WHERE a.tenant = $1 AND v.version = a.latest_version ORDER BY a.name",
            tenant,
        )
        return [AgentRecord.of(row) for row in rows]

    async def versions(self, tenant: str, name: str) -> list[AgentRecord]:
        rows = await self._database.fetch(
            f"{_SELECT} WHERE a.tenant = $1 AND a.name = $2 ORDER BY v.version",
            tenant,
            name,
        )
        if not rows:
            raise NotFound(f"name: no agent '{name}' in tenant '{tenant}'")
        return [AgentRecord.of(row) for row in rows]
