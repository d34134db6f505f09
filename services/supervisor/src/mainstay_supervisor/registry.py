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

    def _event(
        self,
        record: AgentRecord,
        kind: str,
        caused_by: Event[Any] | None,
        *,
        reason: str | None = None,
    ) -> Any:
        event = AgentEvent(
            type=kind,
            name=record.name,
            tenant=record.tenant,
            version=record.latest_version,
            definition=record.definition,
            quarantined=record.quarantined,
            reason=record.quarantine_reason if reason is None else reason,
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

    async def get(
        self, tenant: str, name: str, version: int | None = None, *, tx: Connection | None = None
    ) -> AgentRecord:
        """The latest version of the agent, or ``version``."""
        if tx is not None:
            return await self._get(tx, tenant, name, version)
        async with self._database.pool.acquire() as conn:
            return await self._get(conn, tenant, name, version)

    async def lock(self, tx: Connection, tenant: str, name: str) -> AgentRecord | None:
        """The agent's latest version, its row locked until ``tx`` ends; None if unknown."""
        row = await tx.fetchrow(
            f"{_SELECT} WHERE a.tenant = $1 AND a.name = $2 AND v.version = a.latest_version"
            " FOR UPDATE OF a",
            tenant,
            name,
        )
        return None if row is None else AgentRecord.of(row)

    async def set_quarantine(
        self,
        tenant: str,
        name: str,
        *,
        quarantined: bool,
        reason: str,
        tx: Connection | None = None,
    ) -> tuple[AgentRecord, bool]:
        """Quarantine (new tasks are refused) or release the agent; ``(record, changed)``.

        Announced on the agent topic as ``agent.quarantined`` / ``agent.released``;
        asking for the state the agent is already in changes nothing.
        """
        if tx is None:
            async with self._database.pool.acquire() as conn, conn.transaction():
                return await self.set_quarantine(
                    tenant, name, quarantined=quarantined, reason=reason, tx=conn
                )
        current = await self.lock(tx, tenant, name)
        if current is None:
            raise NotFound(f"name: no agent '{name}' in tenant '{tenant}'")
        if current.quarantined == quarantined:
            return current, False
        await tx.execute(
            "UPDATE agents SET quarantined = $3, quarantine_reason = $4, updated_at = now(),"
            " quarantined_at = CASE WHEN $3 THEN now() ELSE quarantined_at END,"
            " released_at = CASE WHEN $3 THEN released_at ELSE now() END,"
            " restarts_counted_after = CASE WHEN $3 THEN restarts_counted_after ELSE"
            " (SELECT coalesce(max(id), 0) FROM restarts r WHERE r.tenant = $1 AND r.agent = $2)"
            " END WHERE tenant = $1 AND name = $2",
            tenant,
            name,
            quarantined,
            reason if quarantined else "",
        )
        record = await self._get(tx, tenant, name, None)
        kind = "agent.quarantined" if quarantined else "agent.released"
        # A release carries why the agent was let go (the record's reason is cleared).
        await self._outbox.add(tx, self._event(record, kind, None, reason=reason))
        return record, True

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
