"""The Kafka doors of the ledger: its four commands, approvals' outcomes, tasks' outcomes.

Every handler runs in the transaction that claims its inbox row, so a
redelivered message posts nothing twice, and retries in place (blocking,
bounded) instead of through retry topics: a task's usage is posted in the
order it was published. A malformed command, or one the ledger's rules refuse
(an unknown hold, usage for a closed hold, a currency mismatch, an item
without a price), goes to the DLQ with the reason and posts nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_contracts.execution import TASK_EVENTS
from mainstay_contracts.identity import APPROVAL_EVENTS
from mainstay_contracts.ledger import CLOSE_HOLD, EXTEND_HOLD, OPEN_HOLD, RECORD_USAGE

if TYPE_CHECKING:
    from mainstay_common.bus import Bus, Event
    from mainstay_common.db import Connection, Database
    from mainstay_contracts.execution import TaskEvent
    from mainstay_contracts.identity import ApprovalEvent
    from mainstay_contracts.ledger import (
        CloseHoldCommand,
        ExtendHoldCommand,
        OpenHoldCommand,
        RecordUsageCommand,
    )
    from mainstay_ledger.holds import Ledger

__all__ = ["register_kafka_handlers"]


def register_kafka_handlers(bus: Bus, database: Database, ledger: Ledger) -> None:
    @bus.transactional_subscriber(OPEN_HOLD, handler="open-hold", database=database, blocking=True)
    async def open_hold(event: Event[OpenHoldCommand], tx: Connection) -> None:
        await ledger.open_hold(tx, event.payload, caused_by=event)

    @bus.transactional_subscriber(
        RECORD_USAGE, handler="record-usage", database=database, blocking=True
    )
    async def record_usage(event: Event[RecordUsageCommand], tx: Connection) -> None:
        await ledger.record_usage(tx, event.payload, caused_by=event)

    @bus.transactional_subscriber(
        CLOSE_HOLD, handler="close-hold", database=database, blocking=True
    )
    async def close_hold(event: Event[CloseHoldCommand], tx: Connection) -> None:
        await ledger.close_hold(tx, event.payload, caused_by=event)

    @bus.transactional_subscriber(
        EXTEND_HOLD, handler="extend-hold", database=database, blocking=True
    )
    async def extend_hold(event: Event[ExtendHoldCommand], tx: Connection) -> None:
        await ledger.request_extension(tx, event.payload, caused_by=event)

    @bus.transactional_subscriber(
        APPROVAL_EVENTS, handler="approvals", database=database, blocking=True
    )
    async def approvals(event: Event[ApprovalEvent], tx: Connection) -> None:
        await ledger.on_approval(tx, event.payload, caused_by=event)

    @bus.transactional_subscriber(
        TASK_EVENTS, handler="task-outcomes", database=database, blocking=True
    )
    async def task_outcomes(event: Event[TaskEvent], tx: Connection) -> None:
        await ledger.on_task(tx, event.payload, caused_by=event)
