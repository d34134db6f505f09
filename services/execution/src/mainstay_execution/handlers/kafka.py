"""The Kafka doors of the execution service.

In: tasks submitted, cancelled, resumed; agents (``supervisor.evt.agent.v1``);
and what tasks wait for from the rest of the mesh: tool results
(``tools.evt.tool-call.v1``), the tools' descriptions (``tools.evt.tool.v1``),
holds and charges (``ledger.evt.ledger.v1``) and escalation decisions
(``identity.evt.approval.v1``). Each is recorded in the consuming transaction
and wakes the task's runner when it runs on this instance (its owner elsewhere
finds the fact on its next poll).

Everything here is order-sensitive per key and idempotent, so it retries in
place. A malformed command goes to the DLQ; a well-formed one that cannot run
(bad token, unknown or quarantined agent) fails its task at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_contracts.execution import CANCEL_TASK, RESUME_TASK, SUBMIT_TASK, TASK_EVENTS
from mainstay_contracts.identity import APPROVAL_EVENTS, SEND_MAIL
from mainstay_contracts.ledger import CLOSE_HOLD, LEDGER_EVENTS, OPEN_HOLD, RECORD_USAGE
from mainstay_contracts.memory import REMEMBER
from mainstay_contracts.supervisor import AGENT_EVENTS
from mainstay_contracts.tools import INVOKE_TOOL, TOOL_CALLS, TOOL_EVENTS

if TYPE_CHECKING:
    from mainstay_common.bus import Bus, Event
    from mainstay_common.db import Connection, Database
    from mainstay_contracts.execution import (
        CancelTaskCommand,
        ResumeTaskCommand,
        SubmitTaskCommand,
    )
    from mainstay_contracts.identity import ApprovalEvent
    from mainstay_contracts.ledger import LedgerEvent
    from mainstay_contracts.supervisor import AgentEvent
    from mainstay_contracts.tools import ToolCallEvent, ToolEvent
    from mainstay_execution.agents import AgentBook
    from mainstay_execution.budget import Budget
    from mainstay_execution.escalations import Escalations
    from mainstay_execution.service import Execution
    from mainstay_execution.toolcalls import ToolCalls

__all__ = ["PUBLISHES", "SUBMIT_HANDLER", "register_kafka_handlers"]

SUBMIT_HANDLER = "submit"
PUBLISHES = (TASK_EVENTS, INVOKE_TOOL, OPEN_HOLD, RECORD_USAGE, CLOSE_HOLD, SEND_MAIL, REMEMBER)
"""What the service sends (through its outbox), besides heartbeats."""


def register_kafka_handlers(
    bus: Bus,
    database: Database,
    execution: Execution,
    *,
    agents: AgentBook,
    tools: ToolCalls,
    budget: Budget,
    escalations: Escalations,
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

    @bus.transactional_subscriber(TOOL_EVENTS, handler="tools", database=database, blocking=True)
    async def tool(event: Event[ToolEvent], tx: Connection) -> None:
        await tools.on_tool_event(tx, event.payload)

    @bus.transactional_subscriber(
        TOOL_CALLS, handler="tool-calls", database=database, blocking=True
    )
    async def tool_call(event: Event[ToolCallEvent], tx: Connection) -> None:
        execution.wake_after_commit(await tools.on_tool_call(tx, event.payload))

    @bus.transactional_subscriber(LEDGER_EVENTS, handler="ledger", database=database, blocking=True)
    async def ledger(event: Event[LedgerEvent], tx: Connection) -> None:
        execution.wake_after_commit(await budget.on_ledger_event(tx, event.payload))

    @bus.transactional_subscriber(
        APPROVAL_EVENTS, handler="approvals", database=database, blocking=True
    )
    async def approval(event: Event[ApprovalEvent], tx: Connection) -> None:
        execution.wake_after_commit(await escalations.on_approval(tx, event.payload))
