"""The inbox: exactly-once effects for consumers.

A handler's state change and the ``(group, ce_id)`` row commit in one
transaction; the primary key makes a redelivered message's insert a no-op, and
the consumer then skips the handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_common.errors import map_asyncpg_errors

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from mainstay_common.db._database import Connection

__all__ = ["claim_inbox", "claim_inbox_many", "purge_inbox"]


async def claim_inbox(conn: Connection, *, group: str, event_id: str, topic: str) -> bool:
    """Record ``event_id`` as handled by ``group``; False when it already was.

    Must run inside the transaction that holds the handler's work.
    """
    with map_asyncpg_errors():
        status = await conn.execute(
            "INSERT INTO inbox (group_id, event_id, topic) VALUES ($1, $2, $3)"
            " ON CONFLICT (group_id, event_id) DO NOTHING",
            group,
            event_id,
            topic,
        )
    return status == "INSERT 0 1"


async def claim_inbox_many(
    conn: Connection, *, group: str, events: Sequence[tuple[str, str]]
) -> set[str]:
    """Claim many ``(event_id, topic)`` at once; returns the ids that were not claimed before.

    One round trip for a whole batch; must run inside the batch's transaction.
    """
    with map_asyncpg_errors():
        rows = await conn.fetch(
            "INSERT INTO inbox (group_id, event_id, topic)"
            " SELECT $1, e.event_id, e.topic FROM unnest($2::text[], $3::text[]) AS e(event_id, topic)"
            " ON CONFLICT (group_id, event_id) DO NOTHING RETURNING event_id",
            group,
            [event_id for event_id, _ in events],
            [topic for _, topic in events],
        )
    return {row["event_id"] for row in rows}


async def purge_inbox(conn: Connection, *, older_than: timedelta) -> int:
    """Forget inbox rows older than the longest possible redelivery window."""
    with map_asyncpg_errors():
        status = await conn.execute(
            "DELETE FROM inbox WHERE handled_at < now() - $1::interval", older_than
        )
    return int(status.rsplit(" ", 1)[-1])
