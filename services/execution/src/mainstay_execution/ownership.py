"""Who runs which task: partition leases fenced by epoch.

A task belongs to the partition its id hashes to on the submit topic. The
instance that Kafka assigns that partition (consumer group
``execution.submit``) takes the partition's lease in PostgreSQL, raising its
epoch, and runs the partition's live tasks. Every write a runner makes first
checks, in the same transaction, that its epoch is still the lease's
(``SELECT ... FOR SHARE``), so an instance that lost its partition (killed,
frozen, rebalanced) cannot write once another has taken over: it is fenced.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from aiokafka.partitioner import murmur2

from mainstay_common.errors import MainstayError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from mainstay_common.bus import OutgoingMessage
    from mainstay_common.db import Connection, Database, Outbox

__all__ = ["Fenced", "Leases", "partition_of"]

_log = logging.getLogger("mainstay.execution")


class Fenced(MainstayError):
    """The instance no longer holds the partition's lease: it must stop writing."""

    retryable = False


def partition_of(task_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``task_id`` as a key."""
    return int(murmur2(task_id.encode()) & 0x7FFFFFFF) % partitions


class Leases:
    """The partition leases this instance holds, and fenced transactions under them."""

    def __init__(self, database: Database, owner: str) -> None:
        self._database = database
        self.owner = owner
        self.held: dict[int, int] = {}
        """Epoch of each partition this instance holds."""

    async def acquire(self, partition: int) -> int:
        """Take the partition's lease (a new epoch fences the previous holder)."""
        epoch = await self._database.fetchval(
            "INSERT INTO leases (partition, owner, epoch) VALUES ($1, $2, 1)"
            " ON CONFLICT (partition) DO UPDATE SET owner = excluded.owner,"
            " epoch = leases.epoch + 1, renewed_at = now() RETURNING epoch",
            partition,
            self.owner,
        )
        self.held[partition] = int(epoch)
        return int(epoch)

    def release(self, partition: int) -> None:
        """Forget the partition here (the next holder raises the epoch anyway)."""
        self.held.pop(partition, None)

    async def still_held(self) -> set[int]:
        """The partitions whose lease is still this instance's; the others are dropped."""
        if not self.held:
            return set()
        rows = await self._database.fetch(
            "UPDATE leases SET renewed_at = now() WHERE partition = ANY($1::int[])"
            " AND owner = $2 RETURNING partition, epoch",
            list(self.held),
            self.owner,
        )
        kept = {row["partition"] for row in rows if self.held.get(row["partition"]) == row["epoch"]}
        for partition in set(self.held) - kept:
            # The renewal above is itself a fenced write, refused: another instance took
            # the lease over (this one was frozen, or partitioned away, meanwhile).
            _log.warning(
                "partition %d: lease epoch %d was taken over; %s stops writing for it",
                partition,
                self.held.pop(partition),
                self.owner,
            )
        return kept

    @contextlib.asynccontextmanager
    async def fenced(
        self, partition: int, outbox: Outbox | None = None
    ) -> AsyncIterator[Connection]:
        """A transaction that commits only while this instance holds ``partition``.

        With ``outbox``, the messages added to it in the transaction are inserted at
        its end by the statement that checks the lease (one round trip for both). A
        check at the end fences as surely as one at the start: either the lease was
        taken over before it (the transaction rolls back) or its share lock holds the
        next owner's takeover until this transaction committed.
        """
        epoch = self.held.get(partition)
        if epoch is None:
            raise Fenced(f"partition {partition}: not held by {self.owner}")
        async with self._database.pool.acquire() as conn, conn.transaction():
            if outbox is None:
                self._check(partition, epoch, await conn.fetchval(_FENCE, partition))
                yield conn
                return
            async with outbox.collecting(conn) as messages:
                yield conn
            if not messages:
                self._check(partition, epoch, await conn.fetchval(_FENCE, partition))
                return
            insert, args = outbox.insert_statement(messages, first_param=3)
            current = await conn.fetchval(
                f"WITH fence AS ({_FENCE}), staged AS ({insert})"  # noqa: S608 - see insert_statement
                " SELECT epoch FROM fence, pg_notify($2, '')",
                partition,
                outbox.channel,
                *args,
            )
            self._check(partition, epoch, current)

    async def fenced_change(
        self,
        partition: int,
        outbox: Outbox,
        change: str,
        args: Sequence[Any],
        messages: Sequence[OutgoingMessage],
    ) -> bool:
        """Write ``change`` and stage ``messages`` in one statement, only while this
        instance holds ``partition``: one round trip instead of a fenced transaction's
        four. Whether ``change`` matched a row (when it did not, nothing is staged).

        ``change`` is an ``UPDATE`` ending with its ``WHERE`` clause (the lease check is
        added to it) whose parameters start at ``$4``, given in ``args``. Raises
        :class:`Fenced`, having written nothing, once another instance took the
        partition over; like :meth:`fenced`, the check's share lock holds a takeover
        until the statement committed.
        """
        epoch = self.held.get(partition)
        if epoch is None:
            raise Fenced(f"partition {partition}: not held by {self.owner}")
        insert, insert_args = outbox.insert_statement(messages, first_param=4 + len(args))
        row = await self._database.fetchrow(
            f"WITH fence AS ({_FENCE}),"  # noqa: S608 - the caller's and the outbox's statements
            f" changed AS ({change} AND EXISTS (SELECT FROM fence WHERE epoch = $2) RETURNING 1),"
            f" staged AS ({insert} WHERE EXISTS (SELECT FROM changed))"
            " SELECT (SELECT epoch FROM fence) AS epoch, EXISTS (SELECT FROM changed) AS changed,"
            " pg_notify($3, '')",
            partition,
            epoch,
            outbox.channel,
            *args,
            *insert_args,
        )
        assert row is not None
        self._check(partition, epoch, row["epoch"])
        return bool(row["changed"])

    def _check(self, partition: int, epoch: int, current: int | None) -> None:
        if current != epoch:
            self.held.pop(partition, None)
            raise Fenced(
                f"partition {partition}: lease epoch is {current}, this instance has {epoch}"
            )


_FENCE = "SELECT epoch FROM leases WHERE partition = $1 FOR SHARE"
