"""Inboxes: sending a message to principals of the sender's tenant, reading it.

A send is one transaction: the message, one delivery per recipient, and one
``delivered`` event per recipient in the outbox; for an approval request also
the approval and its ``approval.requested`` event, for an answer the decided
approval and its ``approval.decided`` event (see :mod:`.approvals`). The same
``message_id`` sent again by the same sender is delivered once (the first
message is returned); sent by someone else it is a conflict. Recipients must
be principals of the sender's tenant; unknown names are refused, all of them
named. A principal reads only its own inbox, so a token of one tenant never
sees another's mail.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mainstay_common.errors import AlreadyExists, InvalidArgument, NotFound, map_asyncpg_errors
from mainstay_contracts.identity import (
    APPROVAL_EVENTS,
    MAILBOX_EVENTS,
    MailboxEvent,
    MailSnapshot,
)
from mainstay_identity.approvals import (
    approval_event,
    approval_state,
    decide,
    expire_due,
    open_approval,
)

if TYPE_CHECKING:
    import asyncpg

    from mainstay_common.auth import Principal
    from mainstay_common.bus import Bus, OutgoingMessage
    from mainstay_common.db import Connection, Database, Outbox
    from mainstay_contracts.identity import ApprovalEvent, MailDraft

__all__ = ["MailService"]


# A message with its approval's current state (NULL unless it is a request).
_SELECT_MESSAGE = (
    "SELECT m.*, to_jsonb(a.*) AS approval_state FROM messages m"
    " LEFT JOIN approvals a ON a.tenant = m.tenant AND a.approval_id = m.message_id"
)


def _message(row: asyncpg.Record, *, read_at: datetime | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": row["message_id"],
        "thread_id": row["thread_id"],
        "kind": row["kind"],
        "sender": row["sender"],
        "to": list(row["recipients"]),
        "subject": row["subject"],
        "body": row["body"],
        "attachments": json.loads(row["attachments"]),
        "sent_at": row["sent_at"].isoformat(),
        "read_at": read_at.isoformat() if read_at else None,
    }
    if row["kind"] == "approval-reply":
        message["answer"] = json.loads(row["detail"])
    state = row.get("approval_state")
    if state is not None:
        message["approval"] = approval_state(json.loads(state))
    return message


def _snapshot(row: asyncpg.Record) -> MailSnapshot:
    return MailSnapshot(
        message_id=row["message_id"],
        thread_id=row["thread_id"],
        tenant=row["tenant"],
        sender=row["sender"],
        to=list(row["recipients"]),
        subject=row["subject"],
        kind=row["kind"],
        sent_at=row["sent_at"],
    )


class MailService:
    def __init__(self, database: Database, bus: Bus, outbox: Outbox) -> None:
        self._database = database
        self._bus = bus
        self._outbox = outbox

    def _approval_message(self, event: ApprovalEvent) -> OutgoingMessage:
        return self._bus.message(
            APPROVAL_EVENTS,
            event,
            event_type=f"mainstay.identity.{event.type}",
            tenant=event.tenant,
            subject=event.requester,
        )

    async def send(self, sender: Principal, draft: MailDraft) -> dict[str, Any]:
        tenant = sender.tenant
        message_id = draft.message_id or uuid.uuid4().hex
        now = datetime.now(UTC)
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                first = await conn.fetchrow(
                    f"{_SELECT_MESSAGE} WHERE m.tenant = $1 AND m.message_id = $2",
                    tenant,
                    message_id,
                )
                if first is not None:  # sent before: the first send stands
                    if first["sender"] != sender.subject:
                        raise AlreadyExists(f"message id '{message_id}' is taken")
                    return _message(first)
                thread_id = draft.thread_id or message_id
                recipients = list(dict.fromkeys(draft.to))
                subject, body, detail = draft.subject, draft.body, None
                events: list[OutgoingMessage] = []
                if draft.answer is not None:
                    decided = await decide(conn, sender, draft.answer, now)
                    events.append(
                        self._approval_message(approval_event(decided, "approval.decided"))
                    )
                    thread_id = decided["thread_id"]
                    recipients = list(dict.fromkeys([decided["requester"], *recipients]))
                    subject = subject or f"Re: {decided['question']}"[:500]
                    body = body or f"{draft.answer.decision}: {draft.answer.reason}".rstrip(": ")
                    detail = draft.answer.model_dump_json()
                elif draft.approval is not None:
                    detail = draft.approval.model_dump_json()
                    subject = subject or draft.approval.question[:500]
                kinds = await self._recipient_kinds(conn, tenant, recipients)
                row = await conn.fetchrow(
                    "INSERT INTO messages (tenant, message_id, thread_id, sender, recipients,"
                    " subject, body, attachments, kind, detail)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::jsonb)"
                    " RETURNING *, NULL::jsonb AS approval_state",
                    tenant,
                    message_id,
                    thread_id,
                    sender.subject,
                    recipients,
                    subject,
                    body,
                    json.dumps([a.model_dump(mode="json") for a in draft.attachments]),
                    draft.kind,
                    detail,
                )
                assert row is not None
                state: dict[str, Any] | None = None
                if draft.approval is not None:
                    opened = await open_approval(
                        conn,
                        tenant=tenant,
                        approval_id=message_id,
                        thread_id=thread_id,
                        requester=sender.subject,
                        recipient_kinds=kinds,
                        request=draft.approval,
                        now=now,
                    )
                    events.append(
                        self._approval_message(approval_event(opened, "approval.requested"))
                    )
                    state = approval_state(opened)
                await conn.executemany(
                    "INSERT INTO deliveries (tenant, message_id, recipient, labels)"
                    " VALUES ($1, $2, $3, $4)",
                    [(tenant, message_id, r, draft.labels) for r in recipients],
                )
                snapshot = _snapshot(row)
                events += [
                    self._bus.message(
                        MAILBOX_EVENTS,
                        MailboxEvent(
                            type="delivered", recipient=r, message=snapshot, occurred_at=now
                        ),
                        event_type="mainstay.identity.mail.delivered",
                        tenant=tenant,
                        subject=r,
                    )
                    for r in recipients
                ]
                await self._outbox.add(conn, *events)
        message = _message(row)
        if state is not None:
            message["approval"] = state
        return message

    @staticmethod
    async def _recipient_kinds(
        conn: Connection, tenant: str, recipients: list[str]
    ) -> dict[str, str]:
        """Each recipient's kind, in the order given; unknown names are refused together."""
        known = {
            r["name"]: r["kind"]
            for r in await conn.fetch(
                "SELECT name, kind FROM principals WHERE tenant = $1 AND name = ANY($2::text[])"
                " AND NOT disabled",
                tenant,
                recipients,
            )
        }
        unknown = sorted(set(recipients) - set(known))
        if unknown:
            raise InvalidArgument(
                f"to: no such recipients in tenant '{tenant}': {', '.join(unknown)}"
            )
        return {name: known[name] for name in recipients}

    async def expire_approvals(self, *, limit: int = 100) -> int:
        """Decide the approvals whose deadline passed as their ``on_expiry``; how many."""
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                rows = await expire_due(conn, limit=limit)
                await self._outbox.add(
                    conn,
                    *(self._approval_message(approval_event(r, "approval.decided")) for r in rows),
                )
        return len(rows)

    async def approval(self, reader: Principal, approval_id: str) -> dict[str, Any]:
        """One approval, for its requester and its approvers only."""
        rows = await self._database.fetch(
            "SELECT * FROM approvals WHERE tenant = $1 AND approval_id = $2"
            " AND (requester = $3 OR $3 = ANY(approvers))",
            reader.tenant,
            approval_id,
            reader.subject,
        )
        if not rows:
            raise NotFound(f"no approval '{approval_id}' that you asked for or may answer")
        return approval_state(rows[0])

    async def approvals(
        self, reader: Principal, *, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Approvals the reader asked for or may answer, newest deadline first."""
        rows = await self._database.fetch(
            "SELECT * FROM approvals WHERE tenant = $1 AND (requester = $2 OR $2 = ANY(approvers))"
            " AND ($3::text IS NULL OR status = $3) ORDER BY deadline DESC LIMIT $4",
            reader.tenant,
            reader.subject,
            status,
            limit,
        )
        return [approval_state(r) for r in rows]

    async def inbox(
        self, reader: Principal, *, unread_only: bool, label: str | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self._database.fetch(
            "SELECT m.*, d.read_at, to_jsonb(a.*) AS approval_state FROM deliveries d"
            " JOIN messages m USING (tenant, message_id)"
            " LEFT JOIN approvals a ON a.tenant = m.tenant AND a.approval_id = m.message_id"
            " WHERE d.tenant = $1 AND d.recipient = $2"
            " AND ($3::bool IS FALSE OR d.read_at IS NULL)"
            " AND ($4::text IS NULL OR $4 = ANY(d.labels))"
            " ORDER BY d.delivered_at DESC LIMIT $5",
            reader.tenant,
            reader.subject,
            unread_only,
            label,
            limit,
        )
        return [_message(r, read_at=r["read_at"]) for r in rows]

    async def read(self, reader: Principal, message_id: str) -> dict[str, Any]:
        """The message, now marked read (the first read announces itself)."""
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "SELECT m.*, d.read_at, to_jsonb(a.*) AS approval_state FROM deliveries d"
                    " JOIN messages m USING (tenant, message_id)"
                    " LEFT JOIN approvals a ON a.tenant = m.tenant AND a.approval_id = m.message_id"
                    " WHERE d.tenant = $1 AND d.recipient = $2 AND d.message_id = $3"
                    " FOR UPDATE OF d",
                    reader.tenant,
                    reader.subject,
                    message_id,
                )
                if row is None:
                    raise NotFound(f"no message '{message_id}' in your inbox")
                read_at = row["read_at"]
                if read_at is None:
                    read_at = datetime.now(UTC)
                    await conn.execute(
                        "UPDATE deliveries SET read_at = $4"
                        " WHERE tenant = $1 AND recipient = $2 AND message_id = $3",
                        reader.tenant,
                        reader.subject,
                        message_id,
                        read_at,
                    )
                    await self._outbox.add(
                        conn,
                        self._bus.message(
                            MAILBOX_EVENTS,
                            MailboxEvent(
                                type="read",
                                recipient=reader.subject,
                                message=_snapshot(row),
                                occurred_at=read_at,
                            ),
                            event_type="mainstay.identity.mail.read",
                            tenant=reader.tenant,
                            subject=reader.subject,
                        ),
                    )
        return _message(row, read_at=read_at)
