"""Fenced transactions on real PostgreSQL: a runner whose partition was taken over
writes nothing, whether the lease is checked first or, with the outbox, last."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mainstay_common.bus import OutgoingMessage
from mainstay_common.db import Database, Outbox
from mainstay_common.lifecycle import within
from mainstay_contracts import Header
from mainstay_execution.ownership import Fenced, Leases

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
    woken = asyncio.Event()

    def wake(*_: object) -> None:
        woken.set()

    async with database.pool.acquire() as listening:
        await listening.add_listener(outbox.channel, wake)
        async with leases.fenced(PARTITION, outbox) as tx:
            await tx.execute("INSERT INTO notes VALUES ('a')")
            await outbox.add(tx, message("a1"))
            await outbox.add(tx, message("a2"))
        await within(woken.wait(), 5)  # the relay is woken
        await listening.remove_listener(outbox.channel, wake)
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
