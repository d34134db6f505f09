"""A task's tool calls: sent to the tools gateway over Kafka, waited for durably.

The calls of a step are checkpointed (``tool_calls``) in the transaction that
records the model's reply and puts their ``tools.cmd.invoke-tool.v1`` commands
in the outbox; the task then waits. Each call carries the idempotency key
``<task id>:<step>:<index>``: a re-sent call (after a crash, or a retry) is
answered from the gateway's stored result, so the tool runs once.

Results come back on ``tools.evt.tool-call.v1`` and are recorded here by
whichever instance consumes them. A retryable failure (transient, rate
limited, circuit open) is re-sent by the task's owner after a backoff (or the
``retry_after`` the gateway gave), up to ``tool_max_attempts``; any other
outcome is final and becomes the tool's result for the model: its output, or
a structured error it can act on.

The agent's tools are described to the model from the gateway's registry
(``tools.evt.tool.v1``), and arguments are checked against each tool's input
schema before anything is sent: a call that fails it is malformed output the
model gets back to correct. With memory writes on, the model may also call the
built-in ``remember`` tool, which writes a memory over Kafka
(``memory.cmd.remember.v1``, idempotent by the call's key) at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jsonschema import validators
from jsonschema.exceptions import SchemaError

from mainstay_contracts.memory import REMEMBER, MemoryScope, MemorySource, RememberCommand
from mainstay_contracts.tools import INVOKE_TOOL, InvokeToolCommand
from mainstay_execution.healing import backoff
from mainstay_execution.providers.base import ToolSpec

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import asyncpg

    from mainstay_common.bus import Bus
    from mainstay_common.db import Connection, Database, Outbox
    from mainstay_contracts.tools import ToolCallEvent, ToolEvent
    from mainstay_execution.providers.base import ModelReply, ToolCall
    from mainstay_execution.settings import ExecutionSettings
    from mainstay_execution.tasks import Task

__all__ = ["REMEMBER_TOOL", "Progress", "ToolCalls", "call_key"]

REMEMBER_TOOL = "remember"
"""The built-in tool that writes a memory (offered when the agent remembers anything)."""

RETRYABLE = frozenset({"TRANSIENT", "RATE_LIMITED", "CIRCUIT_OPEN"})
IN_FLIGHT = "CONFLICT"
"""The gateway is still running the first call with this key: its answer will come."""


def call_key(task_id: str, step: int, index: int) -> str:
    return f"{task_id}:{step}:{index}"


@dataclass(frozen=True)
class Progress:
    """Where the calls of a step stand."""

    done: bool
    """Every call has its result."""
    resend: list[asyncpg.Record]
    """Calls whose retry is due."""
    give_up: list[asyncpg.Record]
    """Calls that failed retryably too often: the model gets the failure."""
    wake_at: datetime | None
    """The earliest retry still to come."""


class ToolCalls:
    """Tool calls of tasks, the gateway's answers, and the tools' descriptions."""

    def __init__(
        self,
        database: Database,
        bus: Bus,
        outbox: Outbox,
        settings: ExecutionSettings,
    ) -> None:
        self._database = database
        self._bus = bus
        self._outbox = outbox
        self._settings = settings
        self._memory_writes = settings.memory_target is not None

    # -- what the model is told -----------------------------------------------------

    def _remembers(self, task: Task) -> bool:
        """The built-in ``remember`` is offered: memory writes are on, the agent keeps some
        kind of memory, and has no tool of its own by that name."""
        definition = task.definition
        assert definition is not None
        return (
            self._memory_writes
            and bool(definition.memory.remember)
            and REMEMBER_TOOL not in definition.tools
        )

    def specs(self, task: Task, known: Mapping[str, dict[str, Any]]) -> list[ToolSpec]:
        """The tools the task's model may call, as the gateway describes them in ``known``
        (the specs of the ``tools`` rows of the agent's tools, by name)."""
        definition = task.definition
        assert definition is not None
        specs = [
            ToolSpec(
                name=name,
                description=str(known.get(name, {}).get("description", "")),
                parameters=known.get(name, {}).get("input_schema") or {"type": "object"},
            )
            for name in definition.tools
        ]
        if self._remembers(task):
            kinds = list(definition.memory.remember)
            specs.append(
                ToolSpec(
                    name=REMEMBER_TOOL,
                    description="Keep something worth knowing in later tasks (a fact, a"
                    " preference, a decision).",
                    parameters={
                        "type": "object",
                        "properties": {
                            "content": {"type": "string", "minLength": 1, "maxLength": 32000},
                            "kind": {"type": "string", "enum": kinds},
                            "subject": {"type": "string", "maxLength": 200},
                        },
                        "required": ["content", "kind"],
                        "additionalProperties": False,
                    },
                )
            )
        return specs

    @staticmethod
    def problems(offered: list[ToolSpec], reply: ModelReply) -> dict[str, str]:
        """What is wrong with each tool call, by call id (nothing: all can be sent)."""
        specs = {spec.name: spec for spec in offered}
        problems: dict[str, str] = {}
        for call in reply.tool_calls:
            spec = specs.get(call.name)
            if call.error is not None:
                problems[call.id] = call.error
            elif spec is None:
                known = ", ".join(sorted(specs)) or "none"
                problems[call.id] = f"unknown tool '{call.name}'; the tools you may call: {known}"
            else:
                problem = _schema_problem(spec.parameters, call.arguments or {})
                if problem is not None:
                    problems[call.id] = f"arguments of '{call.name}' {problem}"
        return problems

    # -- sending ----------------------------------------------------------------------

    async def dispatch(
        self, tx: Connection, task: Task, step: int, calls: Sequence[ToolCall]
    ) -> int:
        """Checkpoint the step's calls and send them (``remember`` is answered at once);
        how many were sent."""
        sent = 0
        for index, call in enumerate(calls):
            key = call_key(task.task_id, step, index)
            if call.name == REMEMBER_TOOL and self._remembers(task):
                await self._checkpoint(
                    tx, task, step, index, call, result={"remembered": True}, outcome="OK"
                )
                await self._remember(tx, task, step, key, call.arguments or {})
            else:
                await self._checkpoint(tx, task, step, index, call, result=None, outcome="")
                await self._send(
                    tx,
                    task,
                    step,
                    tool=call.name,
                    arguments=call.arguments or {},
                    key=key,
                    attempt=1,
                )
                sent += 1
        return sent

    async def refuse(
        self,
        tx: Connection,
        task: Task,
        step: int,
        calls: Sequence[ToolCall],
        problems: dict[str, str],
    ) -> None:
        """Checkpoint a step's malformed calls, each answered with what is wrong (none is sent)."""
        for index, call in enumerate(calls):
            error = problems.get(call.id, "not run: another call of this step was malformed")
            await self._checkpoint(
                tx, task, step, index, call, result={"error": error}, outcome="MALFORMED"
            )

    @staticmethod
    async def _checkpoint(
        tx: Connection,
        task: Task,
        step: int,
        index: int,
        call: ToolCall,
        *,
        result: dict[str, Any] | None,
        outcome: str,
    ) -> None:
        """Record one call of the step; with ``result``, it is answered already."""
        await tx.execute(
            "INSERT INTO tool_calls (task_id, step, idx, call_id, tool, arguments,"
            " idempotency_key, result, outcome, completed_at) VALUES ($1, $2, $3, $4, $5,"
            " $6::jsonb, $7, $8::jsonb, $9, CASE WHEN $8::jsonb IS NULL THEN NULL ELSE now() END)"
            " ON CONFLICT DO NOTHING",
            task.task_id,
            step,
            index,
            call.id,
            call.name,
            json.dumps(call.arguments or {}),
            call_key(task.task_id, step, index),
            None if result is None else json.dumps(result),
            outcome,
        )

    async def _send(
        self,
        tx: Connection,
        task: Task,
        step: int,
        *,
        tool: str,
        arguments: dict[str, Any],
        key: str,
        attempt: int,
    ) -> None:
        command = InvokeToolCommand(
            task_id=task.task_id,
            step=step,
            tool=tool,
            arguments=arguments,
            token=task.token,
            idempotency_key=key,
            deadline=task.deadline,
            attempt=attempt,
        )
        message = self._bus.message(
            INVOKE_TOOL, command, tenant=task.tenant, correlation_id=task.task_id
        )
        await self._outbox.add(tx, message)

    async def _remember(
        self, tx: Connection, task: Task, step: int, key: str, arguments: dict[str, Any]
    ) -> None:
        command = RememberCommand(
            token=task.token,
            scope=MemoryScope(tenant=task.tenant, agent_id=task.agent),
            kind=arguments["kind"],
            content=arguments["content"],
            subject=arguments.get("subject", ""),
            source=MemorySource(task_id=task.task_id, step=step),
            idempotency_key=key,
        )
        message = self._bus.message(
            REMEMBER, command, tenant=task.tenant, correlation_id=task.task_id
        )
        await self._outbox.add(tx, message)

    # -- waiting ------------------------------------------------------------------------

    async def progress(
        self,
        task_id: str,
        step: int,
        now: datetime,
        unanswered: Sequence[asyncpg.Record] | None = None,
    ) -> Progress:
        """Where the calls of ``step`` stand; ``unanswered``: its calls without a result,
        when read already (with the task, see :meth:`Tasks.load`)."""
        rows = unanswered
        if rows is None:
            rows = await self._database.fetch(
                "SELECT * FROM tool_calls WHERE task_id = $1 AND step = $2 AND result IS NULL"
                " ORDER BY idx",
                task_id,
                step,
            )
        resend, give_up, waits = [], [], []
        for row in rows:
            if row["failed_attempt"] < row["attempts"]:
                continue  # the latest attempt is not answered yet
            if row["attempts"] >= self._settings.tool_max_attempts:
                give_up.append(row)
            elif row["retry_at"] is None or row["retry_at"] <= now:
                resend.append(row)
            else:
                waits.append(row["retry_at"])
        return Progress(
            done=not rows, resend=resend, give_up=give_up, wake_at=min(waits, default=None)
        )

    async def retry(self, tx: Connection, task: Task, row: asyncpg.Record) -> None:
        """Send the call again, under its key (the gateway answers a finished one from store)."""
        attempt = row["attempts"] + 1
        await tx.execute(
            "UPDATE tool_calls SET attempts = $2, retry_at = NULL WHERE idempotency_key = $1",
            row["idempotency_key"],
            attempt,
        )
        await self._send(
            tx,
            task,
            row["step"],
            tool=row["tool"],
            arguments=json.loads(row["arguments"]),
            key=row["idempotency_key"],
            attempt=attempt,
        )

    async def give_up(self, tx: Connection, row: asyncpg.Record) -> None:
        result = {
            "error": row["outcome"],
            "message": f"the tool failed {row['attempts']} times in a row; not retried again",
        }
        await tx.execute(
            "UPDATE tool_calls SET result = $2::jsonb, completed_at = now()"
            " WHERE idempotency_key = $1 AND result IS NULL",
            row["idempotency_key"],
            json.dumps(result),
        )

    # -- the gateway's answers ------------------------------------------------------------

    async def on_tool_call(self, tx: Connection, event: ToolCallEvent) -> str | None:
        """Record the answer to one of our calls; the task's id, to wake its runner."""
        if not event.idempotency_key or event.outcome == IN_FLIGHT:
            return None
        if event.outcome in RETRYABLE:
            delay = event.retry_after_s
            if delay is None:
                delay = backoff(
                    event.attempt,
                    base_s=self._settings.retry_base_s,
                    max_s=self._settings.retry_max_s,
                )
            status = await tx.execute(
                "UPDATE tool_calls SET outcome = $2, failed_attempt = greatest(failed_attempt,"
                " $3), retry_at = $4 WHERE idempotency_key = $1 AND result IS NULL",
                event.idempotency_key,
                event.outcome,
                event.attempt,
                datetime.now(UTC) + timedelta(seconds=delay),
            )
        else:
            status = await tx.execute(
                "UPDATE tool_calls SET outcome = $2, result = $3::jsonb, cost_micros = $4,"
                " completed_at = now() WHERE idempotency_key = $1 AND result IS NULL",
                event.idempotency_key,
                event.outcome,
                json.dumps(_result(event)),
                0 if event.replayed else event.cost_micros,
            )
        return None if status.endswith(" 0") else event.task_id

    async def on_tool_event(self, tx: Connection, event: ToolEvent) -> None:
        """Keep the registry's descriptions of the tools."""
        if event.type == "registered" and event.tool is not None:
            await tx.execute(
                "INSERT INTO tools (name, spec) VALUES ($1, $2::jsonb) ON CONFLICT (name)"
                " DO UPDATE SET spec = excluded.spec, updated_at = now()",
                event.name,
                event.tool.model_dump_json(),
            )
        elif event.type == "removed":
            await tx.execute("DELETE FROM tools WHERE name = $1", event.name)


def _result(event: ToolCallEvent) -> dict[str, Any]:
    """What the model sees of a final answer: the output (marked untrusted, as the
    gateway marks it: data to reason about, never instructions), or a structured error."""
    if event.outcome == "OK":
        return {"output": event.output, "untrusted": event.untrusted}
    result: dict[str, Any] = {"error": event.outcome, "message": event.message}
    if event.problems:
        result["problems"] = [problem.model_dump() for problem in event.problems]
    if event.suggestions:
        result["suggestions"] = event.suggestions
    return result


def _schema_problem(schema: dict[str, Any], arguments: dict[str, Any]) -> str | None:
    """The first way ``arguments`` fail ``schema``, in words; None when they fit."""
    try:
        validator = validators.validator_for(schema)(schema)
        error = next(iter(sorted(validator.iter_errors(arguments), key=str)), None)
    except SchemaError:
        return None  # the gateway owns the schema and will say what is wrong with it
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"at '{where}': {error.message}" if where else f"{error.message}"
