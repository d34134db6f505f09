"""Escalations: a human decides what a task does after a failure no retry can fix.

A permanent model failure (a refused key, a policy refusal) is put to the
agent's escalation contacts as an approval request in their identity inboxes,
with three options: ``retry`` (call the same model again), ``skip`` (go on with
the next model of the chain) and ``abort`` (fail the task). Unanswered by
``escalation_timeout_s`` the request expires as ``abort``. The request is sent
with the tenant's mail credentials; a tenant without them, or an agent without
contacts, cannot escalate, and the task fails with the reason instead.

Decisions arrive on ``identity.evt.approval.v1`` (keyed by task) and are
recorded here by whichever instance consumes them; the task's owner acts on
them on its next turn.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mainstay_contracts.identity import SEND_MAIL, ApprovalRequest, SendMailCommand

if TYPE_CHECKING:
    from mainstay_common.auth import TokenSource
    from mainstay_common.bus import Bus
    from mainstay_common.db import Connection, Outbox
    from mainstay_contracts.identity import ApprovalEvent
    from mainstay_execution.tasks import Task

__all__ = ["OPTIONS", "Escalations"]

OPTIONS = ["retry", "skip", "abort"]


class Escalations:
    """Approval requests to escalation contacts, and their answers."""

    def __init__(
        self, bus: Bus, outbox: Outbox, tokens: TokenSource | None, *, timeout_s: int
    ) -> None:
        self._bus = bus
        self._outbox = outbox
        self._tokens = tokens
        self._timeout_s = timeout_s

    async def sender_token(self, task: Task) -> str | None:
        """A token to send the task's escalation with; None: the task cannot escalate."""
        definition = task.definition
        if definition is None or not definition.escalation:
            return None
        return None if self._tokens is None else await self._tokens.token_or_none(task.tenant)

    async def escalate(
        self, tx: Connection, task: Task, *, step: int, reason: str, token: str
    ) -> dict[str, Any]:
        """Ask the contacts what to do; the pending escalation to store on the task."""
        assert task.definition is not None
        approval_id = f"escalation-{uuid.uuid4().hex}"
        mail = SendMailCommand(
            kind="approval-request",
            message_id=approval_id,
            to=task.definition.escalation,
            subject=f"Task {task.task_id} of agent {task.agent} needs a decision"[:500],
            body=(
                f"Step {step} of task {task.task_id} failed in a way retries cannot fix:\n\n"
                f"{reason}\n\nretry: call the model again; skip: go on with the next model of"
                " the agent's chain; abort: fail the task."
            ),
            approval=ApprovalRequest(
                question=f"{reason}"[:2000] or "What should the task do?",
                options=OPTIONS,
                deadline=datetime.now(UTC) + timedelta(seconds=self._timeout_s),
                on_expiry="abort",
                task_id=task.task_id,
            ),
            token=token,
        )
        message = self._bus.message(
            SEND_MAIL, mail, tenant=task.tenant, correlation_id=task.task_id
        )
        await self._outbox.add(tx, message)
        return {
            "approval_id": approval_id,
            "step": step,
            "reason": reason[:4000],
            "to": list(task.definition.escalation),
        }

    @staticmethod
    async def on_approval(tx: Connection, event: ApprovalEvent) -> str | None:
        """Record a human's decision on one of our escalations; the task's id to wake."""
        if event.type != "approval.decided" or not event.task_id or event.decision is None:
            return None
        decision = {
            "decision": event.decision,
            "decided_by": event.decided_by or "expiry",
            "note": event.reason[:4000],
        }
        status = await tx.execute(
            "UPDATE tasks SET escalation = escalation || $3::jsonb WHERE task_id = $1"
            " AND escalation->>'approval_id' = $2 AND NOT escalation ? 'decision'",
            event.task_id,
            event.approval_id,
            json.dumps(decision),
        )
        return None if status.endswith(" 0") else event.task_id
