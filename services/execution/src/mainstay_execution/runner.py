"""The loop of one task, resumable from its checkpoints at any point.

Each turn: the task's state is read back from PostgreSQL; a stored wake-up
time is waited for (waits are stored, not sleeps: a restarted runner waits
for what is left); the step's model reply is taken from its checkpoint or,
only if there is none, requested; then the reply ends the task, or its
malformed tool calls are handed back to the model to correct. Every write is
fenced by the partition's lease, so a runner whose instance lost the
partition stops at its next write.

Model failures follow :mod:`mainstay_execution.healing`; every retry,
fallback and correction is an event on ``execution.evt.task.v1``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mainstay_execution.healing import backoff, decide
from mainstay_execution.ownership import Fenced
from mainstay_execution.providers.base import Message, ModelError, ModelReply
from mainstay_execution.tasks import TaskEnded

if TYPE_CHECKING:
    from mainstay_common.db import Database
    from mainstay_execution.healing import Circuits
    from mainstay_execution.ownership import Leases
    from mainstay_execution.providers.base import Provider
    from mainstay_execution.settings import ExecutionSettings
    from mainstay_execution.tasks import Task, Tasks

__all__ = ["Runner"]

_log = logging.getLogger("mainstay.execution.runner")


class Runner:
    """Runs tasks to their end; one ``run(task_id)`` per live task of a held partition."""

    def __init__(
        self,
        *,
        database: Database,
        tasks: Tasks,
        leases: Leases,
        provider: Provider,
        circuits: Circuits,
        settings: ExecutionSettings,
        api_keys: dict[str, str],
    ) -> None:
        self._database = database
        self._tasks = tasks
        self._leases = leases
        self._provider = provider
        self._circuits = circuits
        self._settings = settings
        self._keys = api_keys

    async def run(self, task_id: str) -> None:
        """Advance the task until it ends or this instance loses its partition."""
        try:
            while True:
                task = await self._tasks.load(task_id)
                if task is None or task.final:
                    return
                now = datetime.now(UTC)
                if task.wake_at is not None and task.wake_at > now:
                    await asyncio.sleep((task.wake_at - now).total_seconds())
                    continue
                await self._turn(task, now)
        except (Fenced, TaskEnded) as exc:
            _log.info("task %s: stopped, %s", task_id, exc)

    async def _turn(self, task: Task, now: datetime) -> None:
        definition = task.definition
        assert definition is not None, "an accepted task has its definition"
        if task.deadline is not None and now >= task.deadline:
            await self._fail(task, f"deadline: passed at {task.deadline.isoformat()}")
            return
        step = task.steps + 1
        if step > definition.limits.max_steps:
            await self._fail(
                task, f"max_steps: {definition.limits.max_steps} steps without a final answer"
            )
            return
        reply = await self._reply(task, step)
        if reply is None:
            return  # the task changed (a retry timer, a fallback, an end): read it again
        problems = self._problems(task, reply)
        if not reply.tool_calls:
            async with self._leases.fenced(task.partition) as tx:
                await self._tasks.finish(tx, task, "completed", answer=reply.text or "")
        elif problems:
            await self._correct(task, step, reply, problems)
        else:
            await self._fail(
                task, "tools: calling tools is not available in this version of the service"
            )

    # -- the model ---------------------------------------------------------------

    async def _reply(self, task: Task, step: int) -> ModelReply | None:
        """The step's reply: from its checkpoint, else from the model (then checkpointed)."""
        recorded = await self._recorded(task.task_id, step)
        if recorded is not None:
            return recorded
        definition = task.definition
        assert definition is not None
        chain = definition.models
        if task.model_index >= len(chain):
            await self._fail(task, "models: every model of the agent's chain failed")
            return None
        ref = chain[task.model_index]
        if not self._circuits.allows(ref.provider, ref.model):
            await self._fall_back(task, f"the circuit of {ref.provider}/{ref.model} is open")
            return None
        attempt = await self._attempts(task.task_id, step, ref.model) + 1
        messages = await self._conversation(task)
        key = self._keys.get(ref.credential) if ref.credential else None
        try:
            reply = await self._provider.complete(ref, messages, [], api_key=key)
        except ModelError as exc:
            self._circuits.failed(ref.provider, ref.model)
            await self._failed_call(task, step, attempt, exc)
            return None
        self._circuits.succeeded(ref.provider, ref.model)
        async with self._leases.fenced(task.partition) as tx:
            await tx.execute(
                "INSERT INTO model_calls (task_id, step, attempt, provider, model, reply, usage_id)"
                " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
                task.task_id,
                step,
                await self._next_attempt_row(tx, task.task_id, step),
                reply.provider,
                reply.model,
                reply.to_json(),
                f"{task.task_id}:{step}:model",
            )
            updated = await self._tasks.update(tx, task.task_id, steps=step)
            await self._tasks.emit(
                tx,
                "step.completed",
                updated,
                step=step,
                model=reply.model,
                details={
                    "input_tokens": reply.usage.input_tokens,
                    "output_tokens": reply.usage.output_tokens,
                    "cached_tokens": reply.usage.cached_tokens,
                    "tool_calls": [call.name for call in reply.tool_calls],
                },
            )
        return reply

    async def _recorded(self, task_id: str, step: int) -> ModelReply | None:
        document = await self._database.fetchval(
            "SELECT reply FROM model_calls WHERE task_id = $1 AND step = $2"
            " AND reply IS NOT NULL ORDER BY attempt DESC LIMIT 1",
            task_id,
            step,
        )
        return None if document is None else ModelReply.from_json(document)

    async def _attempts(self, task_id: str, step: int, model: str) -> int:
        count = await self._database.fetchval(
            "SELECT count(*) FROM model_calls WHERE task_id = $1 AND step = $2 AND model = $3",
            task_id,
            step,
            model,
        )
        return int(count or 0)

    @staticmethod
    async def _next_attempt_row(tx: Any, task_id: str, step: int) -> int:
        value = await tx.fetchval(
            "SELECT coalesce(max(attempt), 0) + 1 FROM model_calls WHERE task_id = $1"
            " AND step = $2",
            task_id,
            step,
        )
        return int(value)

    async def _failed_call(self, task: Task, step: int, attempt: int, exc: ModelError) -> None:
        settings = self._settings
        action = decide(exc.kind, attempt=attempt, max_attempts=settings.max_attempts)
        if action == "fallback":
            await self._record_failure(task, step, exc)
            await self._fall_back(task, f"{exc.kind}: {exc}")
            return
        if action == "escalate":
            await self._record_failure(task, step, exc)
            await self._fail(task, f"permanent: {exc}")
            return
        delay = backoff(attempt, base_s=settings.retry_base_s, max_s=settings.retry_max_s)
        if action == "wait" and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        wake_at = datetime.now(UTC) + timedelta(seconds=delay)
        async with self._leases.fenced(task.partition) as tx:
            await self._insert_failure(tx, task, step, exc)
            updated = await self._tasks.update(tx, task.task_id, wake_at=wake_at)
            await self._tasks.emit(
                tx,
                "task.retrying",
                updated,
                step=step,
                model=exc.model,
                reason=f"{exc.kind}: {exc}"[:4000],
                details={
                    "attempt": attempt,
                    "delay_s": round(delay, 3),
                    "retry_after_s": exc.retry_after,
                },
            )

    async def _record_failure(self, task: Task, step: int, exc: ModelError) -> None:
        async with self._leases.fenced(task.partition) as tx:
            await self._insert_failure(tx, task, step, exc)

    async def _insert_failure(self, tx: Any, task: Task, step: int, exc: ModelError) -> None:
        await tx.execute(
            "INSERT INTO model_calls (task_id, step, attempt, provider, model, error,"
            " error_kind, usage_id) VALUES ($1, $2, $3, $4, $5, $6, $7, '')",
            task.task_id,
            step,
            await self._next_attempt_row(tx, task.task_id, step),
            exc.provider,
            exc.model,
            str(exc)[:4000],
            exc.kind,
        )

    async def _fall_back(self, task: Task, why: str) -> None:
        """The next model of the chain (each switch is an event), or the end of the task."""
        definition = task.definition
        assert definition is not None
        chain = definition.models
        current = chain[task.model_index] if task.model_index < len(chain) else None
        following = task.model_index + 1
        if following >= len(chain):
            await self._fail(task, f"models: every model of the agent's chain failed; last: {why}")
            return
        async with self._leases.fenced(task.partition) as tx:
            updated = await self._tasks.update(
                tx, task.task_id, model_index=following, corrections=0
            )
            await self._tasks.emit(
                tx,
                "task.retrying",
                updated,
                step=task.steps + 1,
                model=chain[following].model,
                reason=why[:4000],
                details={
                    "fallback_from": current.model if current else "",
                    "fallback_to": chain[following].model,
                },
            )

    # -- malformed output ----------------------------------------------------------

    def _problems(self, task: Task, reply: ModelReply) -> dict[str, str]:
        """What is wrong with each tool call, by call id (nothing: all usable)."""
        definition = task.definition
        assert definition is not None
        allowed = set(definition.tools)
        problems: dict[str, str] = {}
        for call in reply.tool_calls:
            if call.error is not None:
                problems[call.id] = call.error
            elif call.name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                problems[call.id] = f"unknown tool '{call.name}'; the tools you may call: {known}"
        return problems

    async def _correct(
        self, task: Task, step: int, reply: ModelReply, problems: dict[str, str]
    ) -> None:
        """Hand the model its errors as tool results; after too many, the next model."""
        corrections = task.corrections + 1
        if corrections > self._settings.max_corrections:
            await self._fall_back(
                task,
                f"malformed output {corrections} times in a row: {next(iter(problems.values()))}",
            )
            return
        async with self._leases.fenced(task.partition) as tx:
            for index, call in enumerate(reply.tool_calls):
                error = problems.get(call.id, "not run: another call of this step was malformed")
                await tx.execute(
                    "INSERT INTO tool_calls (task_id, step, idx, call_id, tool, arguments,"
                    " idempotency_key, result, completed_at) VALUES ($1, $2, $3, $4, $5,"
                    " $6::jsonb, $7, $8::jsonb, now()) ON CONFLICT DO NOTHING",
                    task.task_id,
                    step,
                    index,
                    call.id,
                    call.name,
                    json.dumps(call.arguments or {}),
                    f"{task.task_id}:{step}:{index}",
                    json.dumps({"error": error}),
                )
            updated = await self._tasks.update(tx, task.task_id, corrections=corrections)
            await self._tasks.emit(
                tx,
                "step.failed",
                updated,
                step=step,
                model=reply.model,
                reason=f"malformed output: {'; '.join(problems.values())}"[:4000],
                details={"correction": corrections},
            )

    # -- the conversation ------------------------------------------------------------

    async def _conversation(self, task: Task) -> list[Message]:
        """The messages so far, rebuilt from the checkpoints."""
        definition = task.definition
        assert definition is not None
        messages = []
        if definition.system_prompt:
            messages.append(Message(role="system", content=definition.system_prompt))
        messages.append(Message(role="user", content=task.input))
        replies = await self._database.fetch(
            "SELECT DISTINCT ON (step) step, reply FROM model_calls WHERE task_id = $1"
            " AND reply IS NOT NULL ORDER BY step, attempt DESC",
            task.task_id,
        )
        results = await self._database.fetch(
            "SELECT step, idx, call_id, result FROM tool_calls WHERE task_id = $1"
            " ORDER BY step, idx",
            task.task_id,
        )
        by_step: dict[int, list[Any]] = {}
        for row in results:
            by_step.setdefault(row["step"], []).append(row)
        for row in replies:
            reply = ModelReply.from_json(row["reply"])
            messages.append(
                Message(role="assistant", content=reply.text or "", tool_calls=reply.tool_calls)
            )
            messages.extend(
                Message(
                    role="tool", content=result["result"] or "{}", tool_call_id=result["call_id"]
                )
                for result in by_step.get(row["step"], [])
            )
        return messages

    async def _fail(self, task: Task, reason: str) -> None:
        async with self._leases.fenced(task.partition) as tx:
            await self._tasks.finish(tx, task, "failed", reason=reason)
