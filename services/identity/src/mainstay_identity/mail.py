"""Inboxes: sending a message to principals of the sender's tenant, reading it.

A send is one transaction: the message, one delivery per recipient, and one
``delivered`` event per recipient in the outbox. The same ``message_id`` sent
again by the same sender is delivered once (the first message is returned);
sent by someone else it is a conflict. Recipients must be principals of the
sender's tenant; unknown names are refused, all of them named. A principal
reads only its own inbox, so a token of one tenant never sees another's mail.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mainstay_common.errors import AlreadyExists, InvalidArgument, NotFound, map_asyncpg_errors
from mainstay_contracts.identity import MAILBOX_EVENTS, MailboxEvent, MailSnapshot

if TYPE_CHECKING:
    import asyncpg

    from mainstay_common.auth import Principal
    from mainstay_common.bus import Bus
    from mainstay_common.db import Database, Outbox
    from mainstay_contracts.identity import MailDraft

__all__ = ["MailService"]


def _message(row: asyncpg.Record, *, read_at: datetime | None = None) -> dict[str, Any]:
    return {
        "message_id": row["message_id"],
        "thread_id": row["thread_id"],
        "sender": row["sender"],
        "to": list(row["recipients"]),
        "subject": row["subject"],
        "body": row["body"],
        "attachments": json.loads(row["attachments"]),
        "sent_at": row["sent_at"].isoformat(),
        "read_at": read_at.isoformat() if read_at else None,
    }


def _snapshot(row: asyncpg.Record) -> MailSnapshot:
    return MailSnapshot(
        message_id=row["message_id"],
        thread_id=row["thread_id"],
        tenant=row["tenant"],
        sender=row["sender"],
        to=list(row["recipients"]),
        subject=row["subject"],
        sent_at=row["sent_at"],
    )


class MailService:
    def __init__(self, database: Database, bus: Bus, outbox: Outbox) -> None:
        self._database = database
        self._bus = bus
        self._outbox = outbox

    async def send(self, sender: Principal, draft: MailDraft) -> dict[str, Any]:
        tenant = sender.tenant
        message_id = draft.message_id or uuid.uuid4().hex
        recipients = list(dict.fromkeys(draft.to))
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                known = await conn.fetch(
                    "SELECT name FROM principals WHERE tenant = $1 AND name = ANY($2::text[])"
                    " AND NOT disabled",
                    tenant,
                    recipients,
                )
                unknown = sorted(set(recipients) - {r["name"] for r in known})
                if unknown:
                    raise InvalidArgument(
                        f"no such recipients in tenant '{tenant}': {', '.join(unknown)}"
                    )
                row = await conn.fetchrow(
                    "INSERT INTO messages (tenant, message_id, thread_id, sender, recipients,"
                    " subject, body, attachments) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
                    " ON CONFLICT (tenant, message_id) DO NOTHING RETURNING *",
                    tenant,
                    message_id,
                    draft.thread_id or message_id,
                    sender.subject,
                    recipients,
                    draft.subject,
                    draft.body,
                    json.dumps([a.model_dump(mode="json") for a in draft.attachments]),
                )
                if row is None:  # sent before: the first send stands
                    first = await conn.fetchrow(
                        "SELECT * FROM messages WHERE tenant = $1 AND message_id = $2",
                        tenant,
                        message_id,
                    )
                    assert first is not None
                    if first["sender"] != sender.subject:
                        raise AlreadyExists(f"message id '{message_id}' is taken")
                    return _message(first)
                await conn.executemany(
                    "INSERT INTO deliveries (tenant, message_id, recipient, labels)"
                    " VALUES ($1, $2, $3, $4)",
                    [(tenant, message_id, r, draft.labels) for r in recipients],
                )
                snapshot = _snapshot(row)
                now = datetime.now(UTC)
                await self._outbox.add(
                    conn,
                    *(
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
                    ),
                )
        return _message(row)

    async def inbox(
        self, reader: Principal, *, unread_only: bool, label: str | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self._database.fetch(
            "SELECT m.*, d.read_at FROM deliveries d JOIN messages m USING (tenant, message_id)"
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
                    "SELECT m.*, d.read_at FROM deliveries d"
                    " JOIN messages m USING (tenant, message_id)"
                    " WHERE d.tenant = $1 AND d.recipient = $2 AND d.message_id = $3 FOR UPDATE",
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
