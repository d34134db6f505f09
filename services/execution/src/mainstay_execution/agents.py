"""The agents this service runs: every version seen on ``supervisor.evt.agent.v1``.

The supervisor owns the definitions; the execution service keeps its own copy
of every version (a task runs the version it started with) and of each
agent's quarantine, from the compacted agent topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mainstay_contracts.supervisor import AgentDefinition

if TYPE_CHECKING:
    from mainstay_common.db import Connection
    from mainstay_contracts.supervisor import AgentEvent

__all__ = ["AgentBook", "KnownAgent"]


@dataclass(frozen=True)
class KnownAgent:
    version: int
    definition: AgentDefinition
    quarantined: bool
    quarantine_reason: str


class AgentBook:
    """Agent definitions by tenant, name and version."""

    async def on_agent_event(self, tx: Connection, event: AgentEvent) -> None:
        await tx.execute(
            "INSERT INTO agent_versions (tenant, name, version, definition)"
            " VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT DO NOTHING",
            event.tenant,
            event.name,
            event.version,
            json.dumps(event.definition.model_dump(mode="json")),
        )
        await tx.execute(
            "INSERT INTO agents (tenant, name, latest_version, quarantined, quarantine_reason)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, name) DO UPDATE SET"
            " latest_version = greatest(agents.latest_version, excluded.latest_version),"
            " quarantined = excluded.quarantined,"
            " quarantine_reason = excluded.quarantine_reason, updated_at = now()",
            event.tenant,
            event.name,
            event.version,
            event.quarantined,
            event.reason if event.quarantined else "",
        )

    async def get(
        self, tx: Connection, tenant: str, name: str, version: int | None = None
    ) -> KnownAgent | None:
        """The latest version (or ``version``) of the agent; None if never seen."""
        row = await tx.fetchrow(
            "SELECT v.version, v.definition, a.quarantined, a.quarantine_reason"
            " FROM agents a JOIN agent_versions v ON v.tenant = a.tenant AND v.name = a.name"
            " WHERE a.tenant = $1 AND a.name = $2"
            " AND v.version = coalesce($3, a.latest_version)",
            tenant,
            name,
            version,
        )
        if row is None:
            return None
        return KnownAgent(
            version=row["version"],
            definition=AgentDefinition.model_validate(json.loads(row["definition"])),
            quarantined=row["quarantined"],
            quarantine_reason=row["quarantine_reason"],
        )
