"""The Kafka doors of the execution service: tasks submitted, cancelled, resumed; agents.

Submissions are order-sensitive per task and idempotent by task id, so they
retry in place. A malformed command goes to the DLQ; a well-formed one that
cannot run (bad token, unknown or quarantined agent) fails its task at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_contracts.execution import CANCEL_TASK, RESUME_TASK, SUBMIT_TASK
from mainstay_contracts.supervisor import AGENT_EVENTS

if TYPE_CHECKING:
    from mainstay_common.bus import Bus, Event
    from mainstay_common.db import Connection, Database
    from mainstay_contracts.execution import (
        CancelTaskCommand,
        ResumeTaskCommand,
        SubmitTaskCommand,
    )
    from mainstay_contracts.supervisor import AgentEvent
    from mainstay_execution.agents import AgentBook
    from mainstay_execution.service import Execution

__all__ = ["SUBMIT_HANDLER", "register_kafka_handlers"]

SUBMIT_HANDLER = "submit"


def register_kafka_handlers(
    bus: Bus, database: Database, execution: Execution, agents: AgentBook
) -> None:
    @bus.transactional_subscriber(
        SUBMIT_TASK, handler=SUBMIT_HANDLER, database=database, blocking=True
    )
    async def submit(event: Event[SubmitTaskCommand], tx: Connection) -> None:
        await execution.submit(tx, event)

    @bus.transactional_subscriber(CANCEL_TASK, handler="cancel", database=database, blocking=True)
    async def cancel(event: Event[CancelTaskCommand], tx: Connection) -> None:
        await execution.on_cancel(tx, event)

    @bus.transactional_subscriber(RESUME_TASK, handler="resume", database=database, blocking=True)
    async def resume(event: Event[ResumeTaskCommand], tx: Connection) -> None:
        await execution.on_resume(tx, event)

    @bus.transactional_subscriber(AGENT_EVENTS, handler="agents", database=database, blocking=True)
    async def agent(event: Event[AgentEvent], tx: Connection) -> None:
        await agents.on_agent_event(tx, event.payload)
