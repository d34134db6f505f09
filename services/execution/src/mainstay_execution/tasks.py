"""Tasks in PostgreSQL: accepting them, their checkpoints, and their events.

Every transition is an event on ``execution.evt.task.v1``, written to the
outbox in the same transaction as the state it announces, so the events and
the state never disagree, whatever crashes when.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mainstay_common.telemetry import inject_trace_headers
from mainstay_contracts.execution import TASK_EVENTS, TaskEvent
from mainstay_contracts.supervisor import AgentDefinition

if TYPE_CHECKING:
    from collections.abc import Iterable

    import asyncpg

    from mainstay_common.bus import Bus, Event, OutgoingMessage
    from mainstay_common.db import Connection, Database, Outbox
    from mainstay_contracts.execution import SubmitTaskCommand

__all__ = ["FINAL_STATES", "Task", "TaskEnded", "Tasks"]

FINAL_STATES = frozenset({"completed", "failed", "cancelled"})


class TaskEnded(Exception):
    """The task ended meanwhile (cancelled, say): nothing more may be written for it."""


@dataclass(frozen=True)
class Task:
    """A task as stored; ``definition`` is the agent version it runs."""

    task_id: str
    tenant: str
    agent: str
    agent_version: int | None
    partition: int
    definition: AgentDefinition | None
    input: str
    token: str
    principal: str
    cap_micros: int | None
    deadline: datetime | None
    state: str
    model_index: int
    corrections: int
    degraded: bool
    wake_at: datetime | None
    waiting_for: str
    steps: int
    cost_micros: int
    answer: str | None
    reason: str
    started_at: datetime | None
    hold_state: str
    hold_reason: str
    recalled: list[str] | None
    escalation: dict[str, Any] | None
    ending: dict[str, Any] | None
    ending_at: datetime | None
    unanswered: tuple[asyncpg.Record, ...] | None = None
    """The calls of its last step without a result, when loaded with them
    (:meth:`Tasks.load`); None otherwise."""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def of(cls, row: asyncpg.Record) -> Task:
        definition = row["definition"]
        return cls(
            task_id=row["task_id"],
            tenant=row["tenant"],
            agent=row["agent"],
            agent_version=row["agent_version"],
            partition=row["partition"],
            definition=AgentDefinition.model_validate(json.loads(definition))
            if definition
            else None,
            input=row["input"],
            token=row["token"],
            principal=row["principal"],
            cap_micros=row["cap_micros"],
            deadline=row["deadline"],
            state=row["state"],
            model_index=row["model_index"],
            corrections=row["corrections"],
            degraded=row["degraded"],
            wake_at=row["wake_at"],
            waiting_for=row["waiting_for"],
            steps=row["steps"],
            cost_micros=row["cost_micros"],
            answer=row["answer"],
            reason=row["reason"],
            started_at=row["started_at"],
            hold_state=row["hold_state"],
            hold_reason=row["hold_reason"],
            recalled=_json(row["recalled"]),
            escalation=_json(row["escalation"]),
            ending=_json(row["ending"]),
            ending_at=row["ending_at"],
            unanswered=tuple(calls) if (calls := row.get("unanswered")) is not None else None,
        )


def _json(document: str | None) -> Any:
    return None if document is None else json.loads(document)


class Tasks:
    """The task table and the task events."""

    def __init__(self, database: Database, bus: Bus, outbox: Outbox) -> None:
        self._database = database
        self._bus = bus
        self._outbox = outbox

    async def insert(
        self,
        tx: Connection,
        command: SubmitTaskCommand,
        *,
        partition: int,
        version: int | None,
        definition: AgentDefinition | None,
        principal: str,
        deadline: datetime | None,
        cap_micros: int | None,
    ) -> Task | None:
        """Store a new task as running; None when the id is known (a repeat submission)."""
        row = await tx.fetchrow(
            "INSERT INTO tasks (task_id, tenant, agent, agent_version, partition, definition,"
            " input, token, principal, cap_micros, deadline, priority, labels, traceparent,"
            " state) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11, $12,"
            " $13::jsonb, $14, 'running') ON CONFLICT (task_id) DO NOTHING RETURNING *",
            command.task_id,
            command.tenant,
            command.agent,
            version,
            partition,
            json.dumps(definition.model_dump(mode="json")) if definition else None,
            command.input,
            command.token,
            principal,
            cap_micros,
            deadline,
            command.priority,
            json.dumps(command.labels),
            _traceparent(),
        )
        return None if row is None else Task.of(row)

    async def load(self, task_id: str, *, tx: Connection | None = None) -> Task | None:
        """The task as stored; outside a transaction, with the calls of its last step that
        have no result yet (:attr:`Task.unanswered`), in the same round trip."""
        if tx is not None:
            row = await tx.fetchrow("SELECT * FROM tasks WHERE task_id = $1", task_id)
        else:
            row = await self._database.fetchrow(
                "SELECT t.*, ARRAY(SELECT c FROM tool_calls AS c WHERE c.task_id = t.task_id"
                " AND c.step = t.steps AND c.result IS NULL ORDER BY c.idx) AS unanswered"
                " FROM tasks AS t WHERE t.task_id = $1",
                task_id,
            )
        return None if row is None else Task.of(row)

    async def live(self, partitions: Iterable[int]) -> list[tuple[str, int, str]]:
        """The unfinished tasks of ``partitions`` with their partition and the traceparent
        they were submitted in, by priority, then age."""
        rows = await self._database.fetch(
            "SELECT task_id, partition, traceparent FROM tasks WHERE partition = ANY($1::int[])"
            " AND state IN ('running', 'waiting') ORDER BY priority, created_at",
            list(partitions),
        )
        return [(row["task_id"], row["partition"], row["traceparent"]) for row in rows]

    async def update(self, tx: Connection, task_id: str, **changes: Any) -> Task:
        """Change columns of a live task (names are this module's own, never input).

        Raises :class:`TaskEnded` (rolling back what ``tx`` did) once the task has ended.
        """
        update, args = self.update_statement(task_id, first_param=1, **changes)
        row = await tx.fetchrow(f"{update} RETURNING *", *args)
        if row is None:
            raise TaskEnded(f"task {task_id} has ended")
        return Task.of(row)

    @staticmethod
    def update_statement(
        task_id: str, *, first_param: int, **changes: Any
    ) -> tuple[str, list[Any]]:
        """The ``UPDATE`` of :meth:`update` (no ``RETURNING``; it ends with its ``WHERE``
        clause) and its arguments, numbered from ``$first_param``."""
        n = first_param
        columns = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=n + 1))
        sql = (
            f"UPDATE tasks SET {columns}, updated_at = now() WHERE task_id = ${n}"  # noqa: S608 - column names are this module's
            " AND state IN ('running', 'waiting')"
        )
        return sql, [task_id, *changes.values()]

    async def finish(
        self,
        tx: Connection,
        task: Task,
        state: str,
        *,
        reason: str = "",
        answer: str | None = None,
        details: dict[str, Any] | None = None,
        caused_by: Event[Any] | None = None,
    ) -> Task:
        """End the task (completed, failed or cancelled) and announce it."""
        finished = await self.update(
            tx,
            task.task_id,
            state=state,
            reason=reason[:4000],
            answer=answer,
            finished_at=datetime.now(UTC),
            wake_at=None,
            waiting_for="",
            ending=None,
        )
        await self.emit(
            tx,
            f"task.{state}",
            finished,
            reason=reason[:4000],
            answer=answer,
            cost_micros=finished.cost_micros,
            details=details or {},
            caused_by=caused_by,
        )
        return finished

    async def emit(
        self,
        tx: Connection,
        kind: str,
        task: Task,
        *,
        caused_by: Event[Any] | None = None,
        **fields: Any,
    ) -> None:
        """Announce a transition of ``task`` on ``execution.evt.task.v1`` (via the outbox)."""
        await self._outbox.add(tx, self.event_message(kind, task, caused_by=caused_by, **fields))

    def event_message(
        self, kind: str, task: Task, *, caused_by: Event[Any] | None = None, **fields: Any
    ) -> OutgoingMessage:
        """The message of :meth:`emit`, for a caller that stages it itself."""
        event = TaskEvent(
            type=kind,
            task_id=task.task_id,
            tenant=task.tenant,
            agent=task.agent,
            agent_version=task.agent_version,
            degraded=task.degraded,
            occurred_at=datetime.now(UTC),
            **fields,
        )
        return self._bus.message(
            TASK_EVENTS,
            event,
            caused_by=caused_by,
            event_type=f"mainstay.execution.{kind}",
            tenant=task.tenant,
            correlation_id=task.task_id,
        )


def _traceparent() -> str:
    """The current span's W3C traceparent ('' outside a trace)."""
    for name, value in inject_trace_headers():
        if name == "traceparent":
            return value.decode("ascii")
    return ""
