"""A task's money: its budget hold and its usage, kept with the ledger over Kafka.

A task with a cost cap (the submitter's or the agent's) opens a hold for it
before its first step and waits for ``hold.opened``; ``hold.denied`` fails it.
Every model reply is recorded as usage in the transaction that checkpoints it
(usage id ``<task>:<step>:model``, so a repeat is charged once); the tools
gateway records the usage of priced tools itself. When the hold runs out the
ledger answers ``hold.exhausted`` and asks the agent's escalation contacts for
an extension: the task waits, goes on after ``hold.extended`` and fails cleanly
after ``hold.extension-denied`` or ``hold.expired``.

A task ends only once the ledger confirmed its usage (``usage.recorded``), or
after ``usage_confirm_s``: then its cost is exact, and its hold is closed after
the last charge instead of racing it.

The ledger's events are facts recorded here by whichever instance consumes
them; the task's owner reads them on its next turn.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from mainstay_contracts.ledger import (
    CLOSE_HOLD,
    OPEN_HOLD,
    RECORD_USAGE,
    CloseHoldCommand,
    OpenHoldCommand,
    RecordUsageCommand,
)

if TYPE_CHECKING:
    from mainstay_common.bus import Bus, OutgoingMessage
    from mainstay_common.db import Connection, Database, Outbox
    from mainstay_contracts import TopicSpec
    from mainstay_contracts.ledger import LedgerEvent
    from mainstay_execution.providers.base import ModelReply
    from mainstay_execution.tasks import Task

__all__ = ["HOLD_FAILURES", "Budget", "model_usage_id"]

P = TypeVar("P", bound=BaseModel)

HOLD_FAILURES = {
    "denied": "budget: the ledger denied the hold",
    "extension-denied": "budget: the hold ran out and no extension was approved",
    "expired": "budget: the hold expired",
}
"""Hold states that end the task, with the reason it fails."""

_STATES = {
    "hold.opened": "open",
    "hold.extended": "open",
    "hold.denied": "denied",
    "hold.exhausted": "exhausted",
    "hold.extension-denied": "extension-denied",
    "hold.expired": "expired",
    "hold.closed": "closed",
}
_UNCONFIRMED = (
    "((SELECT count(*) FROM model_calls m WHERE m.task_id = $1 AND m.reply IS NOT NULL)"
    " + (SELECT count(*) FROM tool_calls t WHERE t.task_id = $1 AND t.cost_micros > 0)"
    " - (SELECT count(*) FROM charges c WHERE c.task_id = $1))"
)
"""Usage sent for a task (``$1``) that the ledger has not confirmed yet."""
_HOLD_TIMEOUT_MARGIN_S = 600
_MAX_HOLD_S = 30 * 86_400


class Budget:
    """Holds and usage of tasks (nothing when the ledger is off)."""

    def __init__(self, database: Database, bus: Bus, outbox: Outbox, *, enabled: bool) -> None:
        self._database = database
        self._bus = bus
        self._outbox = outbox
        self.enabled = enabled

    def needs_hold(self, task: Task) -> bool:
        return self.enabled and task.cap_micros is not None

    async def open(self, tx: Connection, task: Task) -> None:
        """Ask the ledger for the task's hold (its cap, released after the deadline)."""
        assert task.cap_micros is not None
        assert task.definition is not None
        timeout_s = _MAX_HOLD_S
        if task.deadline is not None:
            left = (task.deadline - datetime.now(UTC)).total_seconds()
            timeout_s = min(_MAX_HOLD_S, max(1, int(left)) + _HOLD_TIMEOUT_MARGIN_S)
        command = OpenHoldCommand(
            tenant=task.tenant,
            task_id=task.task_id,
            agent=task.agent,
            amount=task.cap_micros,
            timeout_s=timeout_s,
            approvers=task.definition.escalation,
        )
        await self._outbox.add(tx, self._message(OPEN_HOLD, command, task))

    async def usage(self, tx: Connection, task: Task, step: int, reply: ModelReply) -> None:
        """Record the model call of ``step`` (idempotent by its usage id)."""
        if not self.enabled:
            return
        command = RecordUsageCommand(
            usage_id=model_usage_id(task.task_id, step),
            tenant=task.tenant,
            agent=task.agent,
            task_id=task.task_id,
            step=step,
            kind="model",
            resource=reply.model,
            input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens,
            cached_tokens=reply.usage.cached_tokens,
            occurred_at=datetime.now(UTC),
        )
        await self._outbox.add(tx, self._message(RECORD_USAGE, command, task))

    async def close(self, tx: Connection, task: Task, reason: str) -> None:
        """Release what the hold did not spend (when there is a hold)."""
        if task.hold_state in ("none", "closed", "denied"):
            return
        command = CloseHoldCommand(tenant=task.tenant, task_id=task.task_id, reason=reason[:500])
        await self._outbox.add(tx, self._message(CLOSE_HOLD, command, task))
        await tx.execute("UPDATE tasks SET hold_state = 'closed' WHERE task_id = $1", task.task_id)

    async def unconfirmed(self, task_id: str, *, tx: Connection | None = None) -> int:
        """Usage sent for the task that the ledger has not confirmed yet."""
        if not self.enabled:
            return 0
        value = await (tx or self._database).fetchval(f"SELECT {_UNCONFIRMED}", task_id)
        return max(0, int(value or 0))

    async def may_spend(self, task: Task) -> bool:
        """Whether the ledger confirmed all the task's usage and its hold is as ``task`` says.

        Both are read in one statement: a charge that runs the hold out is recorded
        together with the hold's new state, so a turn that read the task before that
        charge cannot see it confirmed and take a step the hold no longer covers.
        """
        return bool(
            await self._database.fetchval(
                f"SELECT hold_state = $2 AND {_UNCONFIRMED} <= 0 FROM tasks"  # noqa: S608 - a constant
                " WHERE task_id = $1",
                task.task_id,
                task.hold_state,
            )
        )

    async def on_ledger_event(self, tx: Connection, event: LedgerEvent) -> str | None:
        """Record what the ledger did for one of our tasks; its id, to wake its runner."""
        if not event.task_id:
            return None
        if event.type == "usage.recorded" and event.usage is not None:
            status = await tx.execute(
                "INSERT INTO charges (usage_id, task_id, cost_micros)"
                " SELECT $1, task_id, $3 FROM tasks WHERE task_id = $2 AND tenant = $4"
                " ON CONFLICT DO NOTHING",
                event.usage.usage_id,
                event.task_id,
                event.usage.cost,
                event.tenant,
            )
            if status.endswith(" 0"):
                return None
            # The hold as this usage left it: ran out, the task must not take another step.
            exhausted = event.hold is not None and event.hold.state == "exhausted"
            await tx.execute(
                "UPDATE tasks SET cost_micros = cost_micros + $2, hold_state = CASE"
                " WHEN $3 AND hold_state = 'open' THEN 'exhausted' ELSE hold_state END"
                " WHERE task_id = $1",
                event.task_id,
                event.usage.cost,
                exhausted,
            )
            return event.task_id
        state = _STATES.get(event.type)
        if state is None:
            return None
        status = await tx.execute(
            "UPDATE tasks SET hold_state = $3, hold_reason = $4 WHERE task_id = $1"
            " AND tenant = $2 AND hold_state <> 'closed'",
            event.task_id,
            event.tenant,
            state,
            event.reason[:4000],
        )
        return None if status.endswith(" 0") else event.task_id

    def _message(self, spec: TopicSpec[P], payload: P, task: Task) -> OutgoingMessage:
        return self._bus.message(spec, payload, tenant=task.tenant, correlation_id=task.task_id)


def model_usage_id(task_id: str, step: int) -> str:
    return f"{task_id}:{step}:model"
