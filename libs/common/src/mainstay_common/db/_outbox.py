"""The outbox: publish exactly what was committed, even across a crash.

A service writes outgoing messages with :meth:`Outbox.add` inside the
transaction of its state change. :class:`OutboxRelay` publishes committed rows
in id order and deletes them once the broker acknowledged them. A crash between
commit and publish loses nothing (the rows wait); a crash between publish and
delete republishes with the same ``ce_id``, which consumers' inboxes skip.

Only one relay per schema publishes at a time (a transaction-scoped advisory
lock), so messages leave in commit order even with many instances running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from mainstay_common.bus._envelope import OutgoingMessage
from mainstay_common.db._listener import Listener
from mainstay_common.errors import map_asyncpg_errors
from mainstay_common.lifecycle import Resource, cancel_and_wait, within

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from mainstay_common.db._database import Connection, Database

__all__ = ["Outbox", "OutboxRelay"]

_log = logging.getLogger("mainstay.outbox")


# The oldest committed rows, if this relay is the schema's only one publishing now (a
# transaction-scoped advisory lock; the InitPlan takes it once, before any row is read).
_TAKE_BATCH = """
WITH leader AS (SELECT pg_try_advisory_xact_lock(hashtext($1)) AS ok),
batch AS (
    SELECT id FROM outbox WHERE (SELECT ok FROM leader)
    ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
)
DELETE FROM outbox AS o USING batch WHERE o.id = batch.id
RETURNING o.id, o.topic, o.key, o.value, o.headers
"""


def _channel(schema: str) -> str:
    return f"{schema}_outbox"


class Outbox:
    """Stages messages in the caller's transaction."""

    def __init__(self, database: Database) -> None:
        self._channel = _channel(database.schema)
        self._batches: dict[int, list[OutgoingMessage]] = {}
        """Messages held back by :meth:`batched`, by the transaction's connection."""

    @property
    def channel(self) -> str:
        """What to ``pg_notify`` after staging rows, so the relay wakes at once."""
        return self._channel

    def insert_statement(
        self, messages: Sequence[OutgoingMessage], *, first_param: int
    ) -> tuple[str, list[Any]]:
        """An ``INSERT`` of ``messages`` and its arguments, numbered from ``$first_param``.

        For a caller that writes its state change and its messages in one
        statement (data-modifying CTEs commit or fail together) to save round
        trips; it must also ``pg_notify(outbox.channel, '')`` in that statement.
        """
        n = first_param
        # Only parameter numbers are formatted in.
        sql = (
            "INSERT INTO outbox (event_id, topic, key, value, headers) SELECT * FROM"  # noqa: S608
            f" unnest(${n}::text[], ${n + 1}::text[], ${n + 2}::bytea[], ${n + 3}::bytea[],"
            f" ${n + 4}::jsonb[])"
        )
        args: list[Any] = [
            [m.event_id for m in messages],
            [m.topic for m in messages],
            [m.key for m in messages],
            [m.value for m in messages],
            [json.dumps(m.headers) for m in messages],
        ]
        return sql, args

    async def add(self, tx: Connection, *messages: OutgoingMessage) -> None:
        """Insert ``messages``; they are published only if ``tx`` commits."""
        if not tx.is_in_transaction():
            raise RuntimeError("Outbox.add must run inside the transaction of the state change")
        held = self._batches.get(id(tx))
        if held is not None:
            held.extend(messages)
            return
        await self._insert(tx, messages)

    @contextlib.asynccontextmanager
    async def collecting(self, tx: Connection) -> AsyncIterator[list[OutgoingMessage]]:
        """Within it, :meth:`add` to ``tx`` only collects the messages, into the list it
        gives, in the order they were added; the caller inserts them before the commit
        (:meth:`insert_statement`, or :meth:`batched` which does it for it)."""
        if not tx.is_in_transaction():
            raise RuntimeError("Outbox messages are collected inside the transaction")
        if id(tx) in self._batches:
            raise RuntimeError("Outbox is already collecting the messages of this transaction")
        held = self._batches[id(tx)] = []
        try:
            yield held
        finally:
            del self._batches[id(tx)]

    @contextlib.asynccontextmanager
    async def batched(self, tx: Connection) -> AsyncIterator[None]:
        """Within it, :meth:`add` to ``tx`` collects the messages, which are inserted in
        one statement (one round trip) when the block ends without an error."""
        async with self.collecting(tx) as held:
            yield
        await self._insert(tx, held)

    async def _insert(self, tx: Connection, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        insert, args = self.insert_statement(messages, first_param=1)
        with map_asyncpg_errors():
            # One statement, one round trip: the rows, and the relay's wake-up call.
            await tx.execute(
                f"WITH staged AS ({insert}) SELECT pg_notify($6, '')", *args, self._channel
            )


class OutboxRelay(Resource):
    """Publishes committed outbox rows; an async context manager running in the background."""

    def __init__(
        self,
        database: Database,
        publish: Callable[[Sequence[OutgoingMessage]], Awaitable[None]],
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        error_backoff: float = 1.0,
    ) -> None:
        self._database = database
        self._publish = publish
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._error_backoff = error_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener = Listener(database, _channel(database.schema), self._wake.set)
        self.published = 0

    async def relay_once(self) -> int:
        """Publish one batch of committed rows; returns how many were sent.

        One statement takes the relay's lock and deletes the batch (returning it);
        the deletion commits only after the broker acknowledged the batch, so a
        failed publish rolls it back and the rows wait for the next attempt.
        """
        schema = self._database.schema
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(_TAKE_BATCH, f"outbox:{schema}", self._batch_size)
                if not rows:
                    return 0
                rows = sorted(rows, key=lambda row: row["id"])
                messages = [
                    OutgoingMessage(
                        topic=row["topic"],
                        key=row["key"],
                        value=row["value"],
                        headers=json.loads(row["headers"]),
                    )
                    for row in rows
                ]
                await self._publish(messages)
        self.published += len(rows)
        return len(rows)

    async def pending(self) -> int:
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn:
                count: int = await conn.fetchval("SELECT count(*) FROM outbox")
        return count

    async def _run(self) -> None:
        while True:
            # Cleared before the batch is read, not after: a notice of rows committed
            # while this batch is out must bring the relay straight back, not be lost
            # until the next poll.
            self._wake.clear()
            try:
                sent = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the relay must outlive any single failure
                _log.exception("outbox relay of schema %s failed; retrying", self._database.schema)
                await asyncio.sleep(self._error_backoff)
                continue
            if sent == self._batch_size:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), timeout=self._poll_interval)

    async def start(self) -> None:
        await self._listener.start()
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay:{self._database.schema}")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._listener.close()
