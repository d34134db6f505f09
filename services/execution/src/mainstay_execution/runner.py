"""The loop of one task, resumable from its checkpoints at any point.

Each turn reads the task back from PostgreSQL and takes the one action its
state calls for:

1. its budget hold: ask the ledger for it, wait for it, or fail when denied;
   wait for an approved extension when it ran out;
2. start: recall memories over gRPC (continuing *degraded* without them when
   the memory service is down) and announce ``task.started``;
3. a pending escalation: wait for the human's decision, then act on it;
4. the tool calls of the last step: re-send the ones due for a retry, or wait
   for their results;
5. the next step: call the model (never again once its reply is recorded) and,
   in the one transaction that checkpoints the reply and records its usage,
   end the task, hand malformed calls back to the model to correct, or send
   the tool calls;
6. an ending: once the ledger confirmed the task's usage, close its hold and
   announce how the task ended.

Waits are stored, not slept: a retry timer is a wake-up time in the task's
row, and everything else the task waits for is a fact another consumer
records. A runner sleeps until that time, a local notice, or the next poll,
whichever comes first; a restarted runner just reads where the task is.
Every write is fenced by the partition's lease, so a runner whose instance
lost the partition stops at its next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from mainstay_common.lifecycle import within
from mainstay_execution.budget import HOLD_FAILURES, model_usage_id
from mainstay_execution.healing import backoff, decide
from mainstay_execution.memory import MemoryUnavailable
from mainstay_execution.ownership import Fenced
from mainstay_execution.providers.base import Message, ModelError, ModelReply
from mainstay_execution.tasks import TaskEnded

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mainstay_common.db import Connection, Database, Outbox
    from mainstay_contracts.supervisor import ModelRef
    from mainstay_execution.budget import Budget
    from mainstay_execution.escalations import Escalations
    from mainstay_execution.healing import Circuits
    from mainstay_execution.memory import MemoryClient
    from mainstay_execution.ownership import Leases
    from mainstay_execution.providers.base import Provider, ToolSpec
    from mainstay_execution.settings import ExecutionSettings
    from mainstay_execution.tasks import Task, Tasks
    from mainstay_execution.toolcalls import ToolCalls

__all__ = ["Runner", "Wakeups"]


class _Next(enum.Enum):
    GO_ON = "go on"


GO_ON = _Next.GO_ON
"""A phase of the turn has nothing to do: the next phase decides."""
Outcome = datetime | None | Literal[_Next.GO_ON]
"""When to look at the task again (None: at once), or GO_ON."""

_log = logging.getLogger("mainstay.execution.runner")


class Wakeups:
    """Local notices that something a task waits for was recorded."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def wake(self, task_id: str) -> None:
        event = self._events.get(task_id)
        if event is not None:
            event.set()

    def watch(self, task_id: str) -> None:
        """Keep the notices for ``task_id`` from now on (until :meth:`forget`), so that
        one given while its runner is busy ends the runner's next wait at once."""
        self._events.setdefault(task_id, asyncio.Event())

    async def wait(self, task_id: str, seconds: float) -> None:
        event = self._events.setdefault(task_id, asyncio.Event())
        try:
            await within(event.wait(), timeout=max(seconds, 0.0))
        except TimeoutError:
            pass
        finally:
            event.clear()

    def forget(self, task_id: str) -> None:
        self._events.pop(task_id, None)


class Runner:
    """Runs tasks to their end; one ``run(task_id)`` per live task of a held partition."""

    def __init__(
        self,
        *,
        database: Database,
        outbox: Outbox,
        tasks: Tasks,
        leases: Leases,
        provider: Provider,
        circuits: Circuits,
        budget: Budget,
        tools: ToolCalls,
        escalations: Escalations,
        memory: MemoryClient | None,
        wakeups: Wakeups,
        settings: ExecutionSettings,
        api_keys: dict[str, str],
    ) -> None:
        self._database = database
        self._outbox = outbox
        self._tasks = tasks
        self._leases = leases
        self._provider = provider
        self._circuits = circuits
        self._budget = budget
        self._tools = tools
        self._escalations = escalations
        self._memory = memory
        self._wakeups = wakeups
        self._settings = settings
        self._keys = api_keys

    async def run(self, task_id: str) -> None:
        """Advance the task until it ends or this instance loses its partition."""
        self._wakeups.watch(task_id)
        try:
            while True:
                task = await self._tasks.load(task_id)
                if task is None or task.final:
                    return
                until = await self._turn(task, datetime.now(UTC))
                if until is not None:
                    seconds = (until - datetime.now(UTC)).total_seconds()
                    await self._wakeups.wait(task_id, seconds)
        except (Fenced, TaskEnded) as exc:
            _log.info("task %s: stopped, %s", task_id, exc)
        finally:
            self._wakeups.forget(task_id)

    @contextlib.asynccontextmanager
    async def _fenced(self, partition: int) -> AsyncIterator[Connection]:
        """A transaction fenced by the partition's lease; its outgoing messages are
        inserted at its end, with the lease check, in one statement."""
        async with self._leases.fenced(partition, self._outbox) as tx:
            yield tx

    def _poll(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self._settings.wait_poll_s)

    async def _turn(self, task: Task, now: datetime) -> datetime | None:
        """Take the task's next action; when to look again (None: at once)."""
        if task.wake_at is not None and task.wake_at > now:
            return task.wake_at
        if task.ending is not None:
            return await self._settle(task, now)
        if task.deadline is not None and now >= task.deadline:
            await self._end(task, "failed", f"deadline: passed at {task.deadline.isoformat()}")
            return None
        for phase in (self._hold, self._start, self._escalated, self._tool_results):
            outcome = await phase(task, now)
            if not isinstance(outcome, _Next):
                return outcome
        return await self._step(task, task.steps + 1)

    async def _wait_for(
        self, tx: Connection, task: Task, what: str, reason: str, **changes: Any
    ) -> None:
        """Record that the task waits for ``what``, and announce it."""
        updated = await self._tasks.update(
            tx, task.task_id, state="waiting", waiting_for=what, **changes
        )
        await self._tasks.emit(
            tx, "task.waiting", updated, reason=reason[:4000], details={"waiting_for": what}
        )

    # -- budget, start, ending -------------------------------------------------------

    async def _hold(self, task: Task, now: datetime) -> Outcome:
        """Ask for the hold, wait for it, or fail when the ledger will not cover the task."""
        if not self._budget.needs_hold(task):
            return GO_ON
        state = task.hold_state
        assert task.definition is not None
        failure = HOLD_FAILURES.get(state)
        if state == "exhausted" and not task.definition.escalation:
            failure = "budget: the hold ran out and the agent has no escalation contacts to ask"
        elif failure and task.hold_reason:
            failure = f"{failure}: {task.hold_reason}"
        if failure:
            await self._end(task, "failed", failure)
            return None
        if state == "none":
            async with self._fenced(task.partition) as tx:
                await self._budget.open(tx, task)
                await self._wait_for(
                    tx,
                    task,
                    "hold",
                    "budget: waiting for the ledger to open the hold",
                    hold_state="requested",
                )
        elif state == "exhausted" and task.waiting_for != "budget":
            async with self._fenced(task.partition) as tx:
                await self._wait_for(
                    tx,
                    task,
                    "budget",
                    "budget: the hold ran out; waiting for an approved extension",
                )
        elif state in ("requested", "exhausted") or not await self._budget.may_spend(task):
            # Spending goes on only once the ledger has seen what was spent: a hold that
            # ran out stops the task before its next step, not after it.
            return self._poll(now)
        elif task.waiting_for in ("hold", "budget"):
            async with self._fenced(task.partition) as tx:
                await self._tasks.update(tx, task.task_id, state="running", waiting_for="")
        else:
            return GO_ON
        return None

    async def _start(self, task: Task, now: datetime) -> Outcome:
        """Recall memories (degraded without them) and announce the start."""
        if task.started_at is not None:
            return GO_ON
        definition = task.definition
        assert definition is not None
        memories: list[str] = []
        trouble = ""
        policy = definition.memory
        if self._memory is not None and policy.recall and policy.recall_limit > 0:
            try:
                memories = await self._memory.recall(
                    token=task.token,
                    tenant=task.tenant,
                    agent=task.agent,
                    query=task.input,
                    limit=policy.recall_limit,
                    task_id=task.task_id,
                )
            except MemoryUnavailable as exc:
                trouble = str(exc)
        async with self._fenced(task.partition) as tx:
            updated = await self._tasks.update(
                tx,
                task.task_id,
                started_at=now,
                state="running",
                waiting_for="",
                recalled=json.dumps(memories),
                degraded=task.degraded or bool(trouble),
            )
            details: dict[str, Any] = {"memories": len(memories)}
            if trouble:
                details["memory"] = f"continuing without memory: {trouble}"[:2000]
            await self._tasks.emit(tx, "task.started", updated, details=details)
            await self._tasks.emit(tx, "step.started", updated, step=1)
        return None

    async def _end(self, task: Task, state: str, reason: str, answer: str | None = None) -> None:
        async with self._fenced(task.partition) as tx:
            await self._end_in(tx, task, state, reason, answer, pending=True)

    async def _end_in(
        self,
        tx: Connection,
        task: Task,
        state: str,
        reason: str,
        answer: str | None,
        *,
        pending: bool,
    ) -> None:
        """End the task now, or once the ledger confirmed its usage (``pending``: it may
        have unconfirmed usage)."""
        if pending and await self._budget.unconfirmed(task.task_id, tx=tx):
            ending = {"state": state, "reason": reason[:4000], "answer": answer}
            await self._tasks.update(
                tx,
                task.task_id,
                ending=json.dumps(ending),
                ending_at=datetime.now(UTC),
                state="waiting",
                waiting_for="usage",
            )
            return
        await self._budget.close(tx, task, reason or state)
        await self._tasks.finish(tx, task, state, reason=reason, answer=answer)

    async def _settle(self, task: Task, now: datetime) -> datetime | None:
        """End the task once its usage is confirmed (or confirming took too long)."""
        assert task.ending is not None
        assert task.ending_at is not None
        unconfirmed = await self._budget.unconfirmed(task.task_id)
        give_up_at = task.ending_at + timedelta(seconds=self._settings.usage_confirm_s)
        if unconfirmed and now < give_up_at:
            return min(self._poll(now), give_up_at)
        if unconfirmed:
            _log.warning(
                "task %s: ending with %d usage(s) the ledger did not confirm in %.0fs",
                task.task_id,
                unconfirmed,
                self._settings.usage_confirm_s,
            )
        async with self._fenced(task.partition) as tx:
            current = await self._tasks.load(task.task_id, tx=tx)
            assert current is not None
            ending = task.ending
            await self._budget.close(tx, current, ending["reason"] or ending["state"])
            await self._tasks.finish(
                tx,
                current,
                ending["state"],
                reason=ending["reason"],
                answer=ending["answer"],
                details={"unconfirmed_usage": unconfirmed} if unconfirmed else None,
            )
        return None

    # -- escalations --------------------------------------------------------------

    async def _escalated(self, task: Task, now: datetime) -> Outcome:
        """Wait for the human's decision on the task's escalation, then act on it."""
        escalation = task.escalation
        if escalation is None:
            return GO_ON
        decision = escalation.get("decision")
        if decision is None:
            return self._poll(now)
        who = escalation.get("decided_by", "")
        if decision == "abort":
            note = f": {escalation['note']}" if escalation.get("note") else ""
            await self._end(task, "failed", f"aborted by {who}{note}; {escalation['reason']}")
            return None
        if decision == "skip":
            await self._fall_back(task, f"skipped by {who}: {escalation['reason']}")
            return None
        async with self._fenced(task.partition) as tx:
            updated = await self._tasks.update(
                tx, task.task_id, escalation=None, state="running", waiting_for=""
            )
            await self._tasks.emit(
                tx,
                "task.retrying",
                updated,
                step=escalation.get("step"),
                reason=f"retry approved by {who}"[:4000],
                details={"escalation": escalation["approval_id"], "decision": decision},
            )
        return None

    async def _escalate(self, task: Task, step: int, reason: str) -> None:
        """A human decides (retry, skip, abort); without one to ask, the task fails."""
        token = await self._escalations.sender_token(task)
        if token is None:
            await self._end(task, "failed", reason)
            return
        async with self._fenced(task.partition) as tx:
            pending = await self._escalations.escalate(
                tx, task, step=step, reason=reason, token=token
            )
            updated = await self._tasks.update(
                tx,
                task.task_id,
                escalation=json.dumps(pending),
                state="waiting",
                waiting_for="escalation",
            )
            await self._tasks.emit(
                tx,
                "task.escalated",
                updated,
                step=step,
                reason=reason[:4000],
                details={"approval_id": pending["approval_id"], "to": pending["to"]},
            )

    # -- tools ---------------------------------------------------------------------

    async def _tool_results(self, task: Task, now: datetime) -> Outcome:
        """Re-send or give up the last step's due tool calls, or wait for their results;
        GO_ON once they are all in."""
        progress = await self._tools.progress(task.task_id, task.steps, now, task.unanswered)
        if progress.resend or progress.give_up:
            async with self._fenced(task.partition) as tx:
                for row in progress.give_up:
                    await self._tools.give_up(tx, row)
                for row in progress.resend:
                    await self._tools.retry(tx, task, row)
                if progress.resend:
                    await self._tasks.emit(
                        tx,
                        "task.retrying",
                        task,
                        step=task.steps,
                        tool=progress.resend[0]["tool"],
                        reason=f"tool {progress.resend[0]['outcome']}"[:4000],
                        details={
                            "tools": [row["tool"] for row in progress.resend],
                            "attempt": progress.resend[0]["attempts"] + 1,
                        },
                    )
            return None
        if progress.done:
            return GO_ON  # the next step, in this turn (it announces itself, see _step)
        waits = [self._poll(now)]
        if progress.wake_at is not None:
            waits.append(progress.wake_at)
        return min(waits)

    # -- a step ---------------------------------------------------------------------

    async def _step(self, task: Task, step: int) -> datetime | None:
        definition = task.definition
        assert definition is not None
        if step > definition.limits.max_steps:
            await self._end(
                task,
                "failed",
                f"max_steps: {definition.limits.max_steps} steps without a final answer",
            )
            return None
        chain = definition.models
        if task.model_index >= len(chain):
            await self._end(task, "failed", "models: every model of the agent's chain failed")
            return None
        ref = chain[task.model_index]
        if not self._circuits.allows(ref.provider, ref.model):
            await self._fall_back(task, f"the circuit of {ref.provider}/{ref.model} is open")
            return None
        # The step's announcement commits while the model is asked (it is fenced like
        # the checkpoint, which waits for it: a runner that lost the task wastes one call).
        announcing = asyncio.ensure_future(self._announce(task, step))
        try:
            reply, specs = await self._ask(task, ref)
        finally:
            await announcing
        if isinstance(reply, ModelError):
            self._circuits.failed(ref.provider, ref.model)
            attempt = await self._attempts(task.task_id, step, ref.model) + 1
            await self._failed_call(task, step, attempt, reply)
            return None
        self._circuits.succeeded(ref.provider, ref.model)
        problems = self._tools.problems(specs, reply) if reply.tool_calls else {}
        until: datetime | None = None
        async with self._fenced(task.partition) as tx:
            await self._checkpoint(tx, task, step, reply)
            if not reply.tool_calls or problems:
                updated = await self._tasks.update(tx, task.task_id, steps=step)
                if problems:
                    await self._correct(tx, updated, step, reply, problems=problems, ref=ref)
                else:
                    await self._end_in(tx, updated, "completed", "", reply.text or "", pending=True)
            else:
                waiting = await self._tasks.update(
                    tx,
                    task.task_id,
                    steps=step,
                    state="waiting",
                    waiting_for="tools",
                    corrections=0,
                )
                if await self._tools.dispatch(tx, waiting, step, reply.tool_calls):
                    # Sent calls are answered no sooner than a round trip through the
                    # gateway: wait for the results' wake-up rather than look at once.
                    until = self._poll(datetime.now(UTC))
                names = [call.name for call in reply.tool_calls]
                await self._tasks.emit(
                    tx,
                    "task.waiting",
                    waiting,
                    step=step,
                    tool=names[0],
                    reason=f"tools: waiting for {', '.join(names)}"[:4000],
                    details={"waiting_for": "tools", "tools": names},
                )
        return until

    async def _ask(
        self, task: Task, ref: ModelRef
    ) -> tuple[ModelReply | ModelError, list[ToolSpec]]:
        """The model's reply to the conversation so far (or how it failed), and the tools
        it was offered."""
        async with self._database.pool.acquire() as conn:  # one, however many tasks run
            messages, known = await self._conversation(conn, task)
        specs = self._tools.specs(task, known)
        key = self._keys.get(ref.credential) if ref.credential else None
        try:
            return await self._provider.complete(ref, messages, specs, api_key=key), specs
        except ModelError as exc:
            return exc, specs

    async def _announce(self, task: Task, step: int) -> None:
        """``step.started`` for a step after tool results (other steps are announced by
        what led to them)."""
        if task.waiting_for != "tools":
            return
        # One statement (it runs alongside the model call, and every round trip of it
        # competes with that call's).
        change, args = self._tasks.update_statement(
            task.task_id, first_param=4, state="running", waiting_for=""
        )
        started = self._tasks.event_message("step.started", task, step=step)
        if not await self._leases.fenced_change(
            task.partition, self._outbox, change, args, [started]
        ):
            raise TaskEnded(f"task {task.task_id} has ended")

    async def _checkpoint(self, tx: Connection, task: Task, step: int, reply: ModelReply) -> None:
        """Record the reply (never requested again) and its usage; announce the step."""
        await tx.execute(
            "INSERT INTO model_calls (task_id, step, attempt, provider, model, reply, usage_id)"
            " SELECT $1, $2, coalesce(max(attempt), 0) + 1, $3, $4, $5::jsonb, $6"
            " FROM model_calls WHERE task_id = $1 AND step = $2",
            task.task_id,
            step,
            reply.provider,
            reply.model,
            reply.to_json(),
            model_usage_id(task.task_id, step),
        )
        await self._budget.usage(tx, task, step, reply)
        await self._tasks.emit(
            tx,
            "step.completed",
            task,
            step=step,
            model=reply.model,
            details={
                "input_tokens": reply.usage.input_tokens,
                "output_tokens": reply.usage.output_tokens,
                "cached_tokens": reply.usage.cached_tokens,
                "tool_calls": [call.name for call in reply.tool_calls],
            },
        )

    async def _attempts(self, task_id: str, step: int, model: str) -> int:
        count = await self._database.fetchval(
            "SELECT count(*) FROM model_calls WHERE task_id = $1 AND step = $2 AND model = $3",
            task_id,
            step,
            model,
        )
        return int(count or 0)

    async def _failed_call(self, task: Task, step: int, attempt: int, exc: ModelError) -> None:
        settings = self._settings
        action = decide(exc.kind, attempt=attempt, max_attempts=settings.max_attempts)
        if action in ("fallback", "escalate"):
            async with self._fenced(task.partition) as tx:
                await self._insert_failure(tx, task, step, exc)
            if action == "fallback":
                await self._fall_back(task, f"{exc.kind}: {exc}")
            else:
                await self._escalate(task, step, f"permanent: {exc}")
            return
        delay = backoff(attempt, base_s=settings.retry_base_s, max_s=settings.retry_max_s)
        if action == "wait" and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        wake_at = datetime.now(UTC) + timedelta(seconds=delay)
        async with self._fenced(task.partition) as tx:
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

    async def _insert_failure(self, tx: Connection, task: Task, step: int, exc: ModelError) -> None:
        await tx.execute(
            "INSERT INTO model_calls (task_id, step, attempt, provider, model, error,"
            " error_kind, usage_id) SELECT $1, $2, coalesce(max(attempt), 0) + 1, $3, $4, $5,"
            " $6, '' FROM model_calls WHERE task_id = $1 AND step = $2",
            task.task_id,
            step,
            exc.provider,
            exc.model,
            str(exc)[:4000],
            exc.kind,
        )

    async def _fall_back(self, task: Task, why: str) -> None:
        async with self._fenced(task.partition) as tx:
            await self._fall_back_in(tx, task, why)

    async def _fall_back_in(self, tx: Connection, task: Task, why: str) -> None:
        """The next model of the chain (each switch is an event), or the end of the task."""
        definition = task.definition
        assert definition is not None
        chain = definition.models
        current = chain[task.model_index] if task.model_index < len(chain) else None
        following = task.model_index + 1
        if following >= len(chain):
            await self._end_in(
                tx,
                task,
                "failed",
                f"models: every model of the agent's chain failed; last: {why}",
                None,
                pending=True,
            )
            return
        updated = await self._tasks.update(
            tx,
            task.task_id,
            model_index=following,
            corrections=0,
            escalation=None,
            state="running",
            waiting_for="",
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

    async def _correct(
        self,
        tx: Connection,
        task: Task,
        step: int,
        reply: ModelReply,
        *,
        problems: dict[str, str],
        ref: ModelRef,
    ) -> None:
        """Hand the model its errors as tool results; after too many, the next model."""
        corrections = task.corrections + 1
        await self._tools.refuse(tx, task, step, reply.tool_calls, problems)
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
        if corrections > self._settings.max_corrections:
            await self._fall_back_in(
                tx,
                updated,
                f"malformed output from {ref.model} {corrections} times in a row:"
                f" {next(iter(problems.values()))}",
            )
        else:
            await self._tasks.emit(tx, "step.started", updated, step=step + 1)

    # -- the conversation ------------------------------------------------------------

    @staticmethod
    async def _conversation(
        conn: Connection, task: Task
    ) -> tuple[list[Message], dict[str, dict[str, Any]]]:
        """The messages so far, rebuilt from the checkpoints, and the gateway's specs of
        the agent's tools (by name)."""
        definition = task.definition
        assert definition is not None
        messages = []
        system = definition.system_prompt
        if task.recalled:
            remembered = "\n".join(f"- {memory}" for memory in task.recalled)
            system = f"{system}\n\nWhat you remember:\n{remembered}".strip()
        if system:
            messages.append(Message(role="system", content=system))
        messages.append(Message(role="user", content=task.input))
        # The replies, the tool results and the tools' specs in one round trip: a step's
        # reply (idx NULL) comes before its results, which are in call order; the specs
        # (step NULL) come last.
        rows = await conn.fetch(
            "SELECT step, NULL::int AS idx, NULL::text AS call_id, reply AS document"
            " FROM model_calls WHERE task_id = $1 AND reply IS NOT NULL"
            " UNION ALL SELECT step, idx, call_id, result FROM tool_calls WHERE task_id = $1"
            " UNION ALL SELECT NULL, NULL, name, spec FROM tools WHERE name = ANY($2::text[])"
            " ORDER BY step NULLS LAST, idx NULLS FIRST",
            task.task_id,
            definition.tools,
        )
        known: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row["step"] is None:
                known[row["call_id"]] = json.loads(row["document"])
            elif row["idx"] is None:
                reply = ModelReply.from_json(row["document"])
                messages.append(
                    Message(role="assistant", content=reply.text or "", tool_calls=reply.tool_calls)
                )
            else:
                messages.append(
                    Message(
                        role="tool", content=row["document"] or "{}", tool_call_id=row["call_id"]
                    )
                )
        return messages, known
