"""Fenced writes on real PostgreSQL: a runner whose partition was taken over writes
nothing, whether the lease is checked first or, with the outbox, last, in a
transaction or in the one statement of :meth:`Leases.fenced_change`."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING

import pytest

from mainstay_common.bus import OutgoingMessage
from mainstay_common.db import Database, Outbox
from mainstay_common.lifecycle import within
from mainstay_contracts import Header
from mainstay_execution.ownership import Fenced, Leases

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.real

PARTITION = 3


@pytest.fixture(autouse=True)
async def _notes(database: Database) -> None:
    await database.execute("CREATE TABLE notes (note text NOT NULL)")


def message(note: str) -> OutgoingMessage:
    return OutgoingMessage(
        topic="notes",
        key=note.encode(),
        value=note.encode(),
        headers={Header.ID: str(uuid.uuid4())},
    )


async def outboxed(database: Database) -> list[bytes]:
    return [row["value"] for row in await database.fetch("SELECT value FROM outbox ORDER BY id")]


async def notes(database: Database) -> list[str]:
    return [row["note"] for row in await database.fetch("SELECT note FROM notes")]


@contextlib.asynccontextmanager
async def relay_woken(database: Database, outbox: Outbox) -> AsyncIterator[None]:
    """Fails unless the block notifies the outbox relay (within 5 s of its end)."""
    woken = asyncio.Event()

    def wake(*_: object) -> None:
        woken.set()

    async with database.pool.acquire() as listening:
        await listening.add_listener(outbox.channel, wake)
        try:
            yield
            await within(woken.wait(), 5)
        finally:
            await listening.remove_listener(outbox.channel, wake)


async def a_draft_held_by_one(database: Database) -> Leases:
    """The note 'draft', and instance "one" holding the partition."""
    await database.execute("INSERT INTO notes VALUES ('draft')")
    one = Leases(database, owner="one")
    await one.acquire(PARTITION)
    return one


async def write(leases: Leases, outbox: Outbox | None, note: str) -> None:
    async with leases.fenced(PARTITION, outbox) as tx:
        await tx.execute("INSERT INTO notes VALUES ($1)", note)
        if outbox is not None:
            await outbox.add(tx, message(note))


async def test_the_holder_commits_its_state_and_messages_and_wakes_the_relay(
    database: Database,
) -> None:
    outbox = Outbox(database)
    leases = Leases(database, owner="one")
    await leases.acquire(PARTITION)
    async with relay_woken(database, outbox), leases.fenced(PARTITION, outbox) as tx:
        await tx.execute("INSERT INTO notes VALUES ('a')")
        await outbox.add(tx, message("a1"))
        await outbox.add(tx, message("a2"))
    assert await notes(database) == ["a"]
    assert await outboxed(database) == [b"a1", b"a2"]


@pytest.mark.parametrize("with_outbox", [True, False], ids=["checked-last", "checked-first"])
async def test_a_partition_taken_over_fences_the_previous_holder(
    database: Database, with_outbox: bool
) -> None:
    outbox = Outbox(database) if with_outbox else None
    one, two = Leases(database, owner="one"), Leases(database, owner="two")
    await one.acquire(PARTITION)
    await write(one, outbox, "before")
    await two.acquire(PARTITION)  # a new epoch: "one" was frozen, say
    with pytest.raises(Fenced, match="lease epoch is 2, this instance has 1"):
        await write(one, outbox, "after")
    assert PARTITION not in one.held
    await write(two, outbox, "by two")
    assert sorted(await notes(database)) == ["before", "by two"]
    if with_outbox:
        assert await outboxed(database) == [b"before", b"by two"]


async def test_a_takeover_waits_for_a_transaction_that_passed_the_check(
    database: Database,
) -> None:
    """The check's share lock holds the next holder's takeover until the commit, so the
    next holder sees everything the previous one committed."""
    outbox = Outbox(database)
    one, two = Leases(database, owner="one"), Leases(database, owner="two")
    await one.acquire(PARTITION)
    checked = asyncio.Event()
    release = asyncio.Event()

    async def slow_commit() -> None:
        async with one.fenced(PARTITION, outbox) as tx:
            await tx.execute("INSERT INTO notes VALUES ('slow')")
            await outbox.add(tx, message("slow"))
        # not reached before the commit

    async def hold_after_check() -> None:
        async with one.fenced(PARTITION) as tx:  # checked first, then held open
            await tx.execute("INSERT INTO notes VALUES ('held')")
            checked.set()
            await release.wait()

    await slow_commit()
    holding = asyncio.create_task(hold_after_check())
    await checked.wait()
    takeover = asyncio.create_task(two.acquire(PARTITION))
    await asyncio.sleep(0.5)
    assert not takeover.done()  # waits for the open transaction's share lock
    release.set()
    await holding
    assert await takeover == 2
    assert sorted(await notes(database)) == ["held", "slow"]


async def change(leases: Leases, outbox: Outbox, old: str, new: str) -> bool:
    return await leases.fenced_change(
        PARTITION,
        outbox,
        "UPDATE notes SET note = $4 WHERE note = $5",
        [new, old],
        [message(f"{old} -> {new}"), message(f"{new} announced")],
    )


async def test_one_statement_changes_the_row_and_stages_its_messages_in_order(
    database: Database,
) -> None:
    outbox = Outbox(database)
    one = await a_draft_held_by_one(database)
    async with relay_woken(database, outbox):
        assert await change(one, outbox, "draft", "final")
    assert await notes(database) == ["final"]
    assert await outboxed(database) == [b"draft -> final", b"final announced"]


async def test_one_statement_that_matches_no_row_stages_nothing(database: Database) -> None:
    outbox = Outbox(database)
    one = await a_draft_held_by_one(database)

    assert not await change(one, outbox, "missing", "final")

    assert await notes(database) == ["draft"]
    assert await outboxed(database) == []


async def test_one_statement_of_a_holder_whose_partition_was_taken_over_writes_nothing(
    database: Database,
) -> None:
    outbox = Outbox(database)
    one, two = await a_draft_held_by_one(database), Leases(database, owner="two")
    await two.acquire(PARTITION)

    with pytest.raises(Fenced, match="lease epoch is 2, this instance has 1"):
        await change(one, outbox, "draft", "final")

    assert PARTITION not in one.held
    assert await notes(database) == ["draft"]
    assert await outboxed(database) == []
    assert await change(two, outbox, "draft", "by two")
    assert await notes(database) == ["by two"]


async def test_a_takeover_waits_for_the_one_statement_that_passed_the_check(
    database: Database,
) -> None:
    """The statement's share lock on the lease holds the takeover until it committed."""
    outbox = Outbox(database)
    one, two = await a_draft_held_by_one(database), Leases(database, owner="two")
    async with database.pool.acquire() as blocker, blocker.transaction():
        # The statement waits for this lock on the row it changes, its lease check done.
        await blocker.execute("SELECT note FROM notes FOR UPDATE")
        changing = asyncio.create_task(change(one, outbox, "draft", "final"))
        await asyncio.sleep(0.5)
        takeover = asyncio.create_task(two.acquire(PARTITION))
        await asyncio.sleep(0.5)
        assert not changing.done()
        assert not takeover.done()  # held by the statement's share lock
    assert await changing
    assert await takeover == 2
    assert await notes(database) == ["final"]
