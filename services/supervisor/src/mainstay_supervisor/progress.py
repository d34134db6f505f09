"""Progress-based supervision of tasks: stuck detection, restarts, quarantine.

The supervisor follows every task on ``execution.evt.task.v1``. Any event but
``task.waiting`` is progress; a waiting task (for a tool, a human, a budget, a
timer) is the execution service's to time out, so it is not judged stuck. A
running task without progress for longer than its agent's
``limits.step_timeout_s`` is stuck, alive or not: the sweep, which runs every
heartbeat interval, finds it at most one interval later.

What happens to a stuck task is the agent's ``strategy``:

* ``resume`` (the default): ``execution.cmd.resume-task.v1``, and the task gets
  another step timeout to show progress;
* past ``max_task_restarts`` for the task, or with ``on_stuck: cancel``:
  ``execution.cmd.cancel-task.v1``, and the escalation contacts are told;
* a restart that would be the agent's ``max_restarts + 1``-th within
  ``period_s`` quarantines the agent instead (``agent.quarantined`` on the
  agent topic: the execution service refuses its new tasks, naming the
  reason), cancels the task and tells the escalation contacts. Restarts before
  a release do not count again.

Commands, the agent's new state and mail commit in one transaction with the
outbox, so a crash never does half of it. Humans are told through identity's
``send-mail`` in the agent's tenant, with ``SUPERVISOR_MAIL_CREDENTIALS``;
every notice is also kept (``GET /v1/tenants/{tenant}/notices``), mailed or not.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import Counter

from mainstay_common.errors import NotFound
from mainstay_contracts.execution import (
    CANCEL_TASK,
    FINAL_TASK_EVENTS,
    RESUME_TASK,
    CancelTaskCommand,
    ResumeTaskCommand,
)
from mainstay_contracts.identity import SEND_MAIL, SendMailCommand
from mainstay_contracts.supervisor import Strategy

if TYPE_CHECKING:
    import asyncpg
    from prometheus_client import CollectorRegistry

    from mainstay_common.auth import TokenSource
    from mainstay_common.bus import Bus, Event
    from mainstay_common.db import Connection, Database, Outbox
    from mainstay_contracts.execution import TaskEvent
    from mainstay_supervisor.registry import AgentRecord, Registry

__all__ = ["Supervision", "SupervisionMetrics", "TaskState"]

_log = logging.getLogger("mainstay.supervisor.progress")
_BATCH = 100
_REQUESTER = "supervisor"
_KEEP_RESTARTS = timedelta(days=8)  # longer than the longest strategy period (7 days)
TaskState = Literal["running", "waiting", "cancelling", "finished"]


class SupervisionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.stuck = Counter(
            "mainstay_supervisor_stuck_tasks",
            "Stuck tasks the supervisor acted on, by action (resumed, cancelled).",
            ["action"],
            registry=registry,
        )
        self.quarantines = Counter(
            "mainstay_supervisor_quarantines",
            "Agents quarantined for restarting their tasks too often.",
            registry=registry,
        )


class Supervision:
    """Follows task progress and applies each agent's supervision strategy."""

    def __init__(
        self,
        database: Database,
        bus: Bus,
        outbox: Outbox,
        registry: Registry,
        *,
        tokens: TokenSource | None,
        default_step_timeout_s: float,
        retention: timedelta,
        metrics: SupervisionMetrics | None = None,
    ) -> None:
        self._database = database
        self._bus = bus
        self._outbox = outbox
        self._registry = registry
        self._tokens = tokens
        self._default_step_timeout_s = default_step_timeout_s
        self._retention = retention
        self._metrics = metrics

    # -- following tasks ---------------------------------------------------------

    async def on_task_event(self, tx: Connection, event: Event[TaskEvent]) -> None:
        """Record the task's state and, unless it only waits, its progress now."""
        task = event.payload
        state = (
            "finished"
            if task.type in FINAL_TASK_EVENTS
            else "waiting"
            if task.type == "task.waiting"
            else "running"
        )
        known = await tx.fetchrow(
            "SELECT state, agent, agent_version FROM tasks WHERE task_id = $1 FOR UPDATE",
            task.task_id,
        )
        if known is not None and known["state"] == "finished":
            return  # a finished task stays finished
        if known is not None and known["state"] == "cancelling" and state != "finished":
            state = "cancelling"  # asked to cancel: only the end of the task matters now
        version = task.agent_version or (known["agent_version"] if known else None)
        timeout = await self._step_timeout(tx, task.tenant, task.agent, version)
        await tx.execute(
            "INSERT INTO tasks (task_id, tenant, agent, agent_version, state, last_event,"
            " last_progress_at, step_timeout_s) VALUES ($1, $2, $3, $4, $5, $6, now(), $7)"
            " ON CONFLICT (task_id) DO UPDATE SET agent = excluded.agent,"
            " agent_version = excluded.agent_version, state = excluded.state,"
            " last_event = excluded.last_event, last_progress_at = excluded.last_progress_at,"
            " step_timeout_s = excluded.step_timeout_s, updated_at = now()",
            task.task_id,
            task.tenant,
            task.agent,
            version,
            state,
            task.type,
            timeout,
        )

    async def _step_timeout(
        self, tx: Connection, tenant: str, agent: str, version: int | None
    ) -> float:
        if not agent:
            return self._default_step_timeout_s
        try:
            record = await self._registry.get(tenant, agent, version, tx=tx)
        except NotFound:
            return self._default_step_timeout_s
        return record.definition.limits.step_timeout_s

    # -- acting on stuck tasks ---------------------------------------------------

    async def sweep(self, now: datetime | None = None) -> int:
        """Act on every running task stuck at ``now``; returns how many were acted on."""
        now = now or datetime.now(UTC)
        await self._forget_old(now)
        rows = await self._database.fetch(
            "SELECT task_id, tenant FROM tasks WHERE state = 'running'"
            " AND greatest(last_progress_at, coalesce(last_restart_at, last_progress_at))"
            " + make_interval(secs => step_timeout_s) < $1"
            " ORDER BY last_progress_at LIMIT $2",
            now,
            _BATCH,
        )
        acted = 0
        for row in rows:
            token = await self._token(row["tenant"])  # outside any transaction
            async with self._database.pool.acquire() as conn, conn.transaction():
                action = await self._act(conn, row["task_id"], now, token)
            if action is not None:
                acted += 1
                if self._metrics is not None:
                    self._metrics.stuck.labels(action[0]).inc()
                    if action[1]:
                        self._metrics.quarantines.inc()
        return acted

    async def _token(self, tenant: str) -> str | None:
        return None if self._tokens is None else await self._tokens.token_or_none(tenant)

    async def _act(
        self, tx: Connection, task_id: str, now: datetime, token: str | None
    ) -> tuple[str, bool] | None:
        """``(action, quarantined)`` for the task if it is still stuck, else None."""
        task = await tx.fetchrow(
            "SELECT * FROM tasks WHERE task_id = $1 FOR UPDATE SKIP LOCKED", task_id
        )
        if task is None or task["state"] != "running":
            return None
        since = max(task["last_progress_at"], task["last_restart_at"] or task["last_progress_at"])
        if since + timedelta(seconds=task["step_timeout_s"]) >= now:
            return None
        agent = (
            await self._registry.lock(tx, task["tenant"], task["agent"]) if task["agent"] else None
        )
        strategy = agent.definition.strategy if agent is not None else Strategy()
        stalled = (
            f"task '{task_id}' made no progress for {(now - since).total_seconds():.0f} s"
            f" (step timeout {task['step_timeout_s']:g} s) after '{task['last_event']}'"
        )
        if agent is not None and agent.quarantined:
            reason = f"{stalled}; agent '{agent.name}' is quarantined: {agent.quarantine_reason}"
        elif strategy.on_stuck == "cancel":
            reason = f"{stalled}; the agent's strategy cancels stuck tasks"
        elif task["restarts"] >= strategy.max_task_restarts:
            reason = (
                f"{stalled}; restarted {task['restarts']} time(s) already, the most the"
                f" agent's strategy allows (max_task_restarts {strategy.max_task_restarts})"
            )
        else:
            intensity = await self._intensity(tx, agent, strategy, now)
            if agent is None or intensity < strategy.max_restarts:
                await self._resume(tx, task, stalled, now, token)
                return "resumed", False
            why = (
                f"its tasks needed {intensity + 1} restarts within {strategy.period_s} s"
                f" (at most {strategy.max_restarts} allowed)"
            )
            await self._registry.set_quarantine(
                agent.tenant, agent.name, quarantined=True, reason=why, tx=tx
            )
            await self._notify(
                tx,
                agent,
                task_id,
                "agent.quarantined",
                subject=f"Agent {agent.name} quarantined",
                body=f"Agent '{agent.name}' is quarantined: {why}. Its new tasks are refused"
                f" until it is released. The last one: {stalled}; it is cancelled.",
                token=token,
            )
            await self._cancel(tx, task, f"{stalled}; agent quarantined: {why}", now, token)
            return "cancelled", True
        await self._cancel(tx, task, reason, now, token)
        if agent is not None:
            await self._notify(
                tx,
                agent,
                task_id,
                "task.cancelled",
                subject=f"Task {task_id} of agent {agent.name} cancelled",
                body=f"The supervisor cancelled a stuck task: {reason}.",
                token=token,
            )
        return "cancelled", False

    async def _intensity(
        self, tx: Connection, agent: AgentRecord | None, strategy: Strategy, now: datetime
    ) -> int:
        """Restarts of the agent's tasks within its period, none from before its last release."""
        if agent is None:
            return 0
        count = await tx.fetchval(
            "SELECT count(*) FROM restarts r JOIN agents a ON a.tenant = r.tenant"
            " AND a.name = r.agent WHERE r.tenant = $1 AND r.agent = $2"
            " AND r.restarted_at > $3 AND r.id > a.restarts_counted_after",
            agent.tenant,
            agent.name,
            now - timedelta(seconds=strategy.period_s),
        )
        return int(count or 0)

    async def _resume(
        self, tx: Connection, task: asyncpg.Record, stalled: str, now: datetime, token: str | None
    ) -> None:
        restart = task["restarts"] + 1
        await tx.execute(
            "INSERT INTO restarts (tenant, agent, task_id, restarted_at) VALUES ($1, $2, $3, $4)",
            task["tenant"],
            task["agent"],
            task["task_id"],
            now,
        )
        await tx.execute(
            "UPDATE tasks SET restarts = $2, last_restart_at = $3, updated_at = now()"
            " WHERE task_id = $1",
            task["task_id"],
            restart,
            now,
        )
        command = ResumeTaskCommand(
            task_id=task["task_id"],
            tenant=task["tenant"],
            agent=task["agent"],
            restart=restart,
            reason=stalled,
            last_progress_at=task["last_progress_at"],
            requested_by=_REQUESTER,
            requested_at=now,
            token=token,
        )
        _log.warning("resuming stuck task %s (restart %d): %s", task["task_id"], restart, stalled)
        await self._outbox.add(tx, self._command(RESUME_TASK, command, task))

    async def _cancel(
        self, tx: Connection, task: asyncpg.Record, reason: str, now: datetime, token: str | None
    ) -> None:
        await tx.execute(
            "UPDATE tasks SET state = 'cancelling', updated_at = now() WHERE task_id = $1",
            task["task_id"],
        )
        command = CancelTaskCommand(
            task_id=task["task_id"],
            tenant=task["tenant"],
            reason=reason[:4000],
            requested_by=_REQUESTER,
            requested_at=now,
            token=token,
        )
        _log.warning("cancelling stuck task %s: %s", task["task_id"], reason)
        await self._outbox.add(tx, self._command(CANCEL_TASK, command, task))

    def _command(self, spec: Any, command: Any, task: asyncpg.Record) -> Any:
        return self._bus.message(
            spec, command, tenant=task["tenant"], correlation_id=task["task_id"]
        )

    async def _notify(
        self,
        tx: Connection,
        agent: AgentRecord,
        task_id: str,
        kind: str,
        *,
        subject: str,
        body: str,
        token: str | None,
    ) -> None:
        """Keep the notice; mail the agent's escalation contacts when there is a way to."""
        recipients = list(agent.definition.escalation)
        mailed = bool(token and recipients)
        await tx.execute(
            "INSERT INTO notices (tenant, agent, task_id, kind, recipients, subject, body, mailed)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            agent.tenant,
            agent.name,
            task_id,
            kind,
            recipients,
            subject[:500],
            body,
            mailed,
        )
        if not mailed:
            _log.warning(
                "cannot mail %s about %s of agent %s/%s: %s",
                recipients or "nobody",
                kind,
                agent.tenant,
                agent.name,
                "no escalation contacts"
                if not recipients
                else f"no mail credentials for tenant '{agent.tenant}'",
            )
            return
        assert token is not None
        mail = SendMailCommand(
            message_id=f"supervisor-{uuid.uuid4().hex}",
            to=recipients,
            subject=subject[:500],
            body=body,
            labels=["supervisor", kind],
            token=token,
        )
        await self._outbox.add(
            tx, self._bus.message(SEND_MAIL, mail, tenant=agent.tenant, correlation_id=task_id)
        )

    async def _forget_old(self, now: datetime) -> None:
        """Finished tasks past the retention, and restarts no period can count any more."""
        await self._database.execute(
            "DELETE FROM tasks WHERE state = 'finished' AND updated_at < $1", now - self._retention
        )
        await self._database.execute(
            "DELETE FROM restarts WHERE restarted_at < $1", now - _KEEP_RESTARTS
        )

    # -- reading -----------------------------------------------------------------

    async def tasks(self, tenant: str, *, state: str | None, limit: int) -> list[dict[str, Any]]:
        rows = await self._database.fetch(
            "SELECT * FROM tasks WHERE tenant = $1 AND ($2::text IS NULL OR state = $2)"
            " ORDER BY updated_at DESC LIMIT $3",
            tenant,
            state,
            limit,
        )
        return [
            {
                "task_id": row["task_id"],
                "agent": row["agent"],
                "agent_version": row["agent_version"],
                "state": row["state"],
                "last_event": row["last_event"],
                "last_progress_at": row["last_progress_at"].isoformat(),
                "step_timeout_s": row["step_timeout_s"],
                "restarts": row["restarts"],
                "last_restart_at": row["last_restart_at"].isoformat()
                if row["last_restart_at"]
                else None,
            }
            for row in rows
        ]

    async def notices(self, tenant: str, *, limit: int) -> list[dict[str, Any]]:
        rows = await self._database.fetch(
            "SELECT * FROM notices WHERE tenant = $1 ORDER BY id DESC LIMIT $2", tenant, limit
        )
        return [
            {
                "agent": row["agent"],
                "task_id": row["task_id"],
                "kind": row["kind"],
                "recipients": list(row["recipients"]),
                "subject": row["subject"],
                "body": row["body"],
                "mailed": row["mailed"],
                "created_at": row["created_at"].isoformat(),
            }
            for row in rows
        ]
