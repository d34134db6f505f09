"""Admission of tasks, cancel and resume, and which tasks this instance runs.

``submit`` accepts a task (``task.accepted``) or fails it at once with a clear
reason: an invalid token, another tenant, an agent unknown or quarantined.
The task id is the idempotency key: a repeat submission changes nothing.
``cancel`` ends a live task; ``resume`` (the supervisor's, for a stuck task)
fences the partition's current holder by taking its lease, and the task goes
on from its last checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context

from mainstay_common.db import after_commit
from mainstay_common.errors import PermissionDenied, Unauthenticated
from mainstay_common.lifecycle import cancel_and_wait
from mainstay_common.telemetry import extract_trace_context, task_context
from mainstay_contracts.execution import SUBMIT_TASK
from mainstay_execution.ownership import partition_of

if TYPE_CHECKING:
    from mainstay_common.auth import TokenVerifier
    from mainstay_common.bus import Bus, Event
    from mainstay_common.db import Connection
    from mainstay_contracts.execution import (
        CancelTaskCommand,
        ResumeTaskCommand,
        SubmitTaskCommand,
    )
    from mainstay_execution.agents import AgentBook
    from mainstay_execution.budget import Budget
    from mainstay_execution.ownership import Leases
    from mainstay_execution.runner import Runner, Wakeups
    from mainstay_execution.tasks import Tasks

__all__ = ["SUBMIT_SCOPE", "Execution"]

_log = logging.getLogger("mainstay.execution")
SUBMIT_SCOPE = "execution:submit"


class Execution:
    """One instance's tasks: admission, and a runner per live task of its partitions."""

    def __init__(
        self,
        *,
        tasks: Tasks,
        agents: AgentBook,
        leases: Leases,
        runner: Runner,
        budget: Budget,
        wakeups: Wakeups,
        verifier: TokenVerifier,
        bus: Bus,
        submit_group: str,
    ) -> None:
        self._tasks = tasks
        self._budget = budget
        self._wakeups = wakeups
        self._agents = agents
        self._leases = leases
        self._runner = runner
        self._verifier = verifier
        self._bus = bus
        self._submit_group = submit_group
        self._submit_topic = f"{bus.kafka.topic_prefix}{SUBMIT_TASK.name}"
        self.running: dict[str, asyncio.Task[None]] = {}
        self._partition_of: dict[str, int] = {}

    # -- admission ----------------------------------------------------------------

    async def submit(self, tx: Connection, event: Event[SubmitTaskCommand]) -> None:
        command = event.payload
        if await self._tasks.load(command.task_id, tx=tx) is not None:
            return  # the id is the idempotency key
        partition = partition_of(command.task_id, SUBMIT_TASK.partitions)
        refusal, principal = await self._refusal(command)
        agent = await self._agents.get(tx, command.tenant, command.agent)
        if refusal is None and agent is None:
            refusal = (
                f"agent: no agent '{command.agent}' in tenant '{command.tenant}'"
                " (register it with the supervisor first)"
            )
        if refusal is None and agent is not None and agent.quarantined:
            refusal = f"agent: '{command.agent}' is quarantined: {agent.quarantine_reason}"
        definition = agent.definition if agent is not None and refusal is None else None
        deadline, cap = command.deadline, command.max_cost_micros
        if definition is not None:
            latest = datetime.now(UTC) + timedelta(seconds=definition.limits.task_deadline_s)
            deadline = min(deadline, latest) if deadline else latest
            caps = [c for c in (cap, definition.limits.max_cost_micros) if c is not None]
            cap = min(caps) if caps else None
        task = await self._tasks.insert(
            tx,
            command,
            partition=partition,
            version=agent.version if agent is not None else None,
            definition=definition,
            principal=principal,
            deadline=deadline,
            cap_micros=cap,
        )
        assert task is not None  # checked above, in the same transaction
        if refusal is not None:
            await self._tasks.finish(tx, task, "failed", reason=refusal, caused_by=event)
            return
        await self._tasks.emit(tx, "task.accepted", task, caused_by=event)
        after_commit(lambda: self.start(task.task_id, partition))

    async def _refusal(self, command: SubmitTaskCommand) -> tuple[str | None, str]:
        try:
            caller = await self._verifier.verify(command.token)
        except Unauthenticated as exc:
            return f"token: {exc}", ""
        try:
            caller.require_tenant(command.tenant, doing="submitting tasks in another tenant")
            caller.require_scope(SUBMIT_SCOPE)
        except PermissionDenied as exc:
            return f"token: {exc}", caller.subject
        return None, caller.subject

    async def on_cancel(self, tx: Connection, event: Event[CancelTaskCommand]) -> None:
        command = event.payload
        task = await self._tasks.load(command.task_id, tx=tx)
        if task is None or task.final or task.tenant != command.tenant:
            return  # nothing to cancel (unknown, finished, or not the tenant's)
        reason = f"cancelled by {command.requested_by}: {command.reason}"
        await self._budget.close(tx, task, reason)
        await self._tasks.finish(tx, task, "cancelled", reason=reason, caused_by=event)
        after_commit(lambda: self._cancel_runner(command.task_id))

    async def on_resume(self, tx: Connection, event: Event[ResumeTaskCommand]) -> None:
        command = event.payload
        task = await self._tasks.load(command.task_id, tx=tx)
        if task is None or task.final:
            return
        # Fence whoever holds the partition now: its next write fails, and the
        # partition's assigned instance takes the lease back and resumes.
        await tx.execute(
            "UPDATE leases SET epoch = epoch + 1, owner = '' WHERE partition = $1",
            task.partition,
        )
        await self._tasks.update(tx, task.task_id, wake_at=None)
        await self._tasks.emit(
            tx,
            "task.retrying",
            task,
            reason=f"resumed by {command.requested_by}: {command.reason}"[:4000],
            details={"restart": command.restart},
            caused_by=event,
        )

    def wake_after_commit(self, task_id: str | None) -> None:
        """Wake the task's runner, if it runs here, once what it waits for is committed."""
        if task_id is not None:
            after_commit(lambda: self._wakeups.wake(task_id))

    # -- ownership -----------------------------------------------------------------

    def start(self, task_id: str, partition: int, *, traceparent: str = "") -> None:
        """Run the task here if this instance holds its partition (else its holder will).

        The runner goes on in the trace the task was submitted in: the current one (from
        the submit handler), or the stored ``traceparent`` (after a takeover or restart).
        Either way its spans name the task.
        """
        if partition not in self._leases.held or task_id in self.running:
            return
        parent = (
            extract_trace_context([("traceparent", traceparent.encode("ascii"))])
            if traceparent
            else otel_context.get_current()
        )
        token = otel_context.attach(task_context(task_id, parent) or parent)
        try:
            runner = asyncio.create_task(self._runner.run(task_id), name=f"task:{task_id}")
        finally:
            otel_context.detach(token)
        self.running[task_id] = runner
        self._partition_of[task_id] = partition
        runner.add_done_callback(lambda _: self._forget(task_id, runner))

    def _forget(self, task_id: str, runner: asyncio.Task[None]) -> None:
        if self.running.get(task_id) is runner:
            del self.running[task_id]
            self._partition_of.pop(task_id, None)
        if not runner.cancelled() and runner.exception() is not None:
            _log.error("task %s: its runner failed", task_id, exc_info=runner.exception())

    def _cancel_runner(self, task_id: str) -> None:
        runner = self.running.get(task_id)
        if runner is not None:
            runner.cancel()

    async def _stop(self, task_id: str) -> None:
        await cancel_and_wait(self.running.get(task_id))

    async def reconcile(self) -> int:
        """Hold the leases of the partitions Kafka assigns this instance; run their tasks."""
        assigned = {
            partition
            for topic, partition in self._bus.assignment().get(self._submit_group, set())
            if topic == self._submit_topic
        }
        kept = await self._leases.still_held()  # those taken over are dropped already
        for partition in kept - assigned:
            self._leases.release(partition)
        lost = [t for t, p in self._partition_of.items() if p not in self._leases.held]
        for task_id in lost:
            await self._stop(task_id)
        for partition in sorted(assigned - kept):
            await self._leases.acquire(partition)
        # Every round, not only on a takeover: a runner that died (PostgreSQL away) restarts.
        for task_id, partition, traceparent in await self._tasks.live(assigned):
            self.start(task_id, partition, traceparent=traceparent)
        return 0

    async def close(self) -> None:
        # A runner that failed was logged when it ended (``_forget``).
        await asyncio.gather(
            *(cancel_and_wait(runner) for runner in list(self.running.values())),
            return_exceptions=True,
        )
