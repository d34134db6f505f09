"""The Kafka doors of the supervisor: agent registrations, heartbeats, task progress.

``register-agent`` carries the caller's token, checked as over HTTP (the
``supervisor:admin`` scope in the agent's tenant); a bad token or definition
is a permanent failure (DLQ, with the reason). Heartbeats need no token: they
only say an instance is alive. Task events are the execution service's; the
supervisor reads them to see progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_contracts.execution import TASK_EVENTS
from mainstay_contracts.supervisor import HEARTBEAT, REGISTER_AGENT, AgentDefinition
from mainstay_supervisor.handlers.http import ADMIN_SCOPE

if TYPE_CHECKING:
    from mainstay_common.auth import TokenVerifier
    from mainstay_common.bus import Bus, Event
    from mainstay_common.db import Connection, Database
    from mainstay_contracts.execution import TaskEvent
    from mainstay_contracts.supervisor import HeartbeatCommand, RegisterAgentCommand
    from mainstay_supervisor.fleet import Fleet
    from mainstay_supervisor.progress import Supervision
    from mainstay_supervisor.registry import Registry

__all__ = ["register_kafka_handlers"]


def register_kafka_handlers(
    bus: Bus,
    database: Database,
    registry: Registry,
    fleet: Fleet,
    verifier: TokenVerifier,
    *,
    supervision: Supervision,
) -> None:
    @bus.transactional_subscriber(REGISTER_AGENT, handler="register-agent", database=database)
    async def register_agent(event: Event[RegisterAgentCommand], tx: Connection) -> None:
        command = event.payload
        caller = await verifier.verify(command.token)
        caller.require_scope(ADMIN_SCOPE)
        caller.require_tenant(command.tenant, doing="registering agents of another tenant")
        definition = AgentDefinition.model_validate(command.model_dump(exclude={"token"}))
        await registry.register(definition, by=caller.subject, tx=tx, caused_by=event)

    @bus.transactional_subscriber(HEARTBEAT, handler="heartbeat", database=database)
    async def heartbeat(event: Event[HeartbeatCommand], tx: Connection) -> None:
        await fleet.heartbeat(tx, event.payload)

    @bus.transactional_subscriber(TASK_EVENTS, handler="task-progress", database=database)
    async def task_progress(event: Event[TaskEvent], tx: Connection) -> None:
        await supervision.on_task_event(tx, event)
