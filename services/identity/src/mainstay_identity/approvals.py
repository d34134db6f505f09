"""Approvals: a question put to humans, answered once, or decided by its deadline.

An approval is opened by a message of kind ``approval-request``; its human
recipients (principals of kind ``user``) are its approvers. One of them
answers with a message of kind ``approval-reply`` (or ``POST
/v1/approvals/{id}/decision``, or a reply email): the answer must name one of
the options, come from the human themself (not an agent acting for them)
and arrive before the deadline. An approval is decided at most once; at its
deadline an unanswered one is ``expired`` with the request's ``on_expiry``
option as its decision. Each outcome is an ``approval.decided`` event,
written to the outbox in the transaction that decides it.

The functions here work inside a transaction the caller holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mainstay_common.errors import InvalidArgument, NotFound, PermissionDenied, RuleViolation
from mainstay_contracts.identity import ApprovalEvent

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

    from mainstay_common.auth import Principal
    from mainstay_common.db import Connection
    from mainstay_contracts.identity import ApprovalAnswer, ApprovalRequest

__all__ = [
    "EXPIRED_REASON",
    "approval_event",
    "approval_state",
    "decide",
    "expire_due",
    "open_approval",
]

EXPIRED_REASON = "no answer before the deadline"


def approval_event(row: asyncpg.Record | dict[str, Any], type_: str) -> ApprovalEvent:
    return ApprovalEvent.model_validate({**dict(row), "type": type_})


def approval_state(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """The approval as the HTTP API shows it."""
    return approval_event(row, "approval.decided").model_dump(
        mode="json", exclude={"type", "approval_key"}
    )


async def open_approval(
    conn: Connection,
    *,
    tenant: str,
    approval_id: str,
    thread_id: str,
    requester: str,
    recipient_kinds: dict[str, str],
    request: ApprovalRequest,
    now: datetime,
) -> asyncpg.Record:
    """Record a new approval request; its human recipients become its approvers."""
    if request.deadline <= now:
        raise InvalidArgument(
            f"approval.deadline: {request.deadline.isoformat()} has passed already"
        )
    approvers = [name for name, kind in recipient_kinds.items() if kind == "user"]
    if not approvers:
        raise InvalidArgument(
            "to: an approval request needs at least one human recipient (a principal of"
            f" kind 'user'); {', '.join(recipient_kinds)} are not"
        )
    row = await conn.fetchrow(
        "INSERT INTO approvals (tenant, approval_id, thread_id, requester, approvers, task_id,"
        " question, options, deadline, on_expiry) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        " RETURNING *",
        tenant,
        approval_id,
        thread_id,
        requester,
        approvers,
        request.task_id,
        request.question,
        request.options,
        request.deadline,
        request.on_expiry,
    )
    assert row is not None
    return row


async def decide(
    conn: Connection, decider: Principal, answer: ApprovalAnswer, now: datetime
) -> asyncpg.Record:
    """Apply ``answer`` to its pending approval (locked); the decided row is returned."""
    row = await conn.fetchrow(
        "SELECT * FROM approvals WHERE tenant = $1 AND approval_id = $2 FOR UPDATE",
        decider.tenant,
        answer.approval_id,
    )
    if row is None:
        raise NotFound(f"answer.approval_id: no approval request '{answer.approval_id}'")
    if decider.subject not in row["approvers"]:
        raise PermissionDenied(
            f"only the human recipients of approval '{answer.approval_id}'"
            f" ({', '.join(row['approvers'])}) may answer it"
        )
    if decider.actor_chain:
        raise PermissionDenied(
            "an approval is answered by the human themself, not by an agent acting for"
            f" them (act: {' <- '.join(decider.actor_chain)})"
        )
    if row["status"] == "decided":
        raise RuleViolation(
            f"approval '{answer.approval_id}' was already answered: '{row['decision']}' by"
            f" {row['decided_by']} at {row['decided_at'].isoformat()}"
        )
    if row["status"] == "expired" or row["deadline"] <= now:
        raise RuleViolation(
            f"approval '{answer.approval_id}' expired at {row['deadline'].isoformat()};"
            f" its outcome is '{row['on_expiry']}'"
        )
    if answer.decision not in row["options"]:
        raise InvalidArgument(
            f"answer.decision: '{answer.decision}' is not one of the options"
            f" ({', '.join(row['options'])})"
        )
    decided = await conn.fetchrow(
        "UPDATE approvals SET status = 'decided', decision = $3, reason = $4, decided_by = $5,"
        " decided_at = $6 WHERE tenant = $1 AND approval_id = $2 RETURNING *",
        decider.tenant,
        answer.approval_id,
        answer.decision,
        answer.reason,
        decider.subject,
        now,
    )
    assert decided is not None
    return decided


async def expire_due(conn: Connection, *, limit: int) -> list[asyncpg.Record]:
    """Expire up to ``limit`` pending approvals past their deadline (skipping locked ones)."""
    return list(
        await conn.fetch(
            "UPDATE approvals a SET status = 'expired', decision = a.on_expiry, reason = $2,"
            " decided_at = now() FROM (SELECT tenant, approval_id FROM approvals"
            "  WHERE status = 'pending' AND deadline <= now() ORDER BY deadline LIMIT $1"
            "  FOR UPDATE SKIP LOCKED) due"
            " WHERE a.tenant = due.tenant AND a.approval_id = due.approval_id RETURNING a.*",
            limit,
            EXPIRED_REASON,
        )
    )
