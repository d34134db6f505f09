"""map_asyncpg_errors against a real PostgreSQL: each failure provoked for real."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import asyncpg
import pytest
from asyncpg.exceptions._base import InternalClientError

from mainstay_common.errors import (
    AlreadyExists,
    Conflict,
    DependencyTimeout,
    DependencyUnavailable,
    InvalidArgument,
    map_asyncpg_data_errors,
    map_asyncpg_errors,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Connect = Callable[[], Awaitable[asyncpg.Connection]]

SECRET = "s3cret-value-42"


def closed_port() -> int:
    """A port nothing listens on: bound once, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unique_violation_is_already_exists_naming_the_constraint(
    pg: asyncpg.Connection,
) -> None:
    await pg.execute(
        "CREATE TABLE agents (id int PRIMARY KEY, email text CONSTRAINT agents_email_key UNIQUE)"
    )
    await pg.execute("INSERT INTO agents VALUES (1, $1)", SECRET)

    with pytest.raises(AlreadyExists) as caught, map_asyncpg_errors():
        await pg.execute("INSERT INTO agents VALUES (2, $1)", SECRET)

    assert isinstance(caught.value.__cause__, asyncpg.UniqueViolationError)
    assert "agents_email_key" in caught.value.message
    assert "agents" in caught.value.message
    assert SECRET not in caught.value.message
    assert not caught.value.retryable


async def test_concurrent_serializable_updates_are_a_conflict(pg_connect: Connect) -> None:
    first, second = await pg_connect(), await pg_connect()
    await first.execute("CREATE TABLE balances (id int PRIMARY KEY, amount int)")
    await first.execute("INSERT INTO balances VALUES (1, 100)")

    tx1 = first.transaction(isolation="serializable")
    tx2 = second.transaction(isolation="serializable")
    await tx1.start()
    await tx2.start()
    # Both take their snapshot, the first commits a change, the second then
    # tries to change the same row from its stale snapshot.
    assert await first.fetchval("SELECT amount FROM balances WHERE id = 1") == 100
    assert await second.fetchval("SELECT amount FROM balances WHERE id = 1") == 100
    await first.execute("UPDATE balances SET amount = 90 WHERE id = 1")
    await tx1.commit()

    with pytest.raises(Conflict) as caught, map_asyncpg_errors():
        await second.execute("UPDATE balances SET amount = 80 WHERE id = 1")
    await tx2.rollback()

    assert isinstance(caught.value.__cause__, asyncpg.SerializationError)
    assert caught.value.retryable
    assert "40001" in caught.value.message


async def test_deadlock_is_a_conflict(pg_connect: Connect) -> None:
    first, second = await pg_connect(), await pg_connect()
    await first.execute("CREATE TABLE locks (id int PRIMARY KEY)")
    await first.execute("INSERT INTO locks VALUES (1), (2)")
    for conn in (first, second):
        await conn.execute("SET deadlock_timeout = '50ms'")

    async def lock_in_order(conn: asyncpg.Connection, a: int, b: int) -> None:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM locks WHERE id = $1 FOR UPDATE", a)
            await barrier.wait()
            await conn.execute("SELECT 1 FROM locks WHERE id = $1 FOR UPDATE", b)

    barrier = asyncio.Barrier(2)
    results = await asyncio.gather(
        _mapped(lock_in_order(first, 1, 2)),
        _mapped(lock_in_order(second, 2, 1)),
    )

    failures = [r for r in results if r is not None]
    assert len(failures) == 1
    assert isinstance(failures[0], Conflict)
    assert isinstance(failures[0].__cause__, asyncpg.DeadlockDetectedError)


async def _mapped(work: Awaitable[None]) -> BaseException | None:
    try:
        async with map_asyncpg_errors():
            await work
    except Conflict as exc:
        return exc
    return None


async def test_statement_timeout_is_a_dependency_timeout(pg: asyncpg.Connection) -> None:
    await pg.execute("SET statement_timeout = '50ms'")

    with pytest.raises(DependencyTimeout) as caught, map_asyncpg_errors():
        await pg.execute("SELECT pg_sleep(5)")

    assert isinstance(caught.value.__cause__, asyncpg.QueryCanceledError)
    assert "57014" in caught.value.message


async def test_client_side_timeout_is_a_dependency_timeout(pg: asyncpg.Connection) -> None:
    with pytest.raises(DependencyTimeout) as caught, map_asyncpg_errors():
        await pg.fetchval("SELECT pg_sleep(5)", timeout=0.05)

    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_connection_refused_is_dependency_unavailable() -> None:
    with pytest.raises(DependencyUnavailable) as caught, map_asyncpg_errors():
        await asyncpg.connect(host="127.0.0.1", port=closed_port(), user="postgres", timeout=5)

    assert isinstance(caught.value.__cause__, OSError)


async def test_backend_terminated_mid_query_is_dependency_unavailable(
    pg_connect: Connect,
) -> None:
    victim, admin = await pg_connect(), await pg_connect()
    pid = await victim.fetchval("SELECT pg_backend_pid()")
    query = asyncio.create_task(_mapped_fetch(victim, "SELECT pg_sleep(30)"))
    async with asyncio.timeout(10):
        # The admin's query is the wait: it returns once the victim's sleep is running.
        while not await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep%'"
            " AND state = 'active'",
            pid,
        ):
            pass
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)

    failure = await query
    assert isinstance(failure, DependencyUnavailable)
    assert isinstance(
        failure.__cause__,
        asyncpg.AdminShutdownError | asyncpg.ConnectionDoesNotExistError,
    )


async def _mapped_fetch(conn: asyncpg.Connection, sql: str) -> BaseException | None:
    try:
        with map_asyncpg_errors():
            await conn.fetchval(sql)
    except DependencyUnavailable as exc:
        return exc
    return None


async def test_closed_connection_and_pool_are_dependency_unavailable(
    pg: asyncpg.Connection, postgres_dsn: str
) -> None:
    await pg.close()
    with pytest.raises(DependencyUnavailable) as caught, map_asyncpg_errors():
        await pg.fetchval("SELECT 1")
    assert isinstance(caught.value.__cause__, asyncpg.InterfaceError)

    pool = await asyncpg.create_pool(postgres_dsn, min_size=0, max_size=1, timeout=5)
    await pool.close()
    with pytest.raises(DependencyUnavailable), map_asyncpg_errors():
        await pool.fetchval("SELECT 1")


def test_a_query_on_a_connection_the_server_ended_is_dependency_unavailable() -> None:
    """What asyncpg raises for a query sent on a pool connection that PostgreSQL ended
    while it sat idle (seen when PostgreSQL stopped under load): retryable, so code
    that waits out an outage (a consumer, a gateway's result write) waits this out too;
    asyncpg's other internal errors are left unmapped (a bug should not be retried)."""
    broken = InternalClientError("cannot switch to state 15; another operation (2) is in progress")
    with pytest.raises(DependencyUnavailable) as caught, map_asyncpg_errors():
        raise broken
    assert caught.value.__cause__ is broken
    assert "the connection broke" in caught.value.message
    with pytest.raises(InternalClientError), map_asyncpg_errors():
        raise InternalClientError("unexpected message type")


async def test_invalid_text_representation_is_invalid_argument_without_the_value(
    pg: asyncpg.Connection,
) -> None:
    with pytest.raises(InvalidArgument) as caught, map_asyncpg_errors():
        await pg.fetchval("SELECT $1::text::int", SECRET)

    assert isinstance(caught.value.__cause__, asyncpg.InvalidTextRepresentationError)
    assert SECRET in str(caught.value.__cause__)  # the server quotes it...
    assert SECRET not in caught.value.message  # ...the mapped error does not
    assert caught.value.message == "database: invalid text representation (SQLSTATE 22P02)"


async def test_numeric_out_of_range_is_invalid_argument(pg: asyncpg.Connection) -> None:
    with pytest.raises(InvalidArgument) as caught, map_asyncpg_errors():
        await pg.fetchval("SELECT $1::text::smallint", "99999")

    assert isinstance(caught.value.__cause__, asyncpg.NumericValueOutOfRangeError)


async def test_argument_the_driver_cannot_encode_is_invalid_argument(
    pg: asyncpg.Connection,
) -> None:
    with pytest.raises(InvalidArgument) as caught, map_asyncpg_errors():
        await pg.fetchval("SELECT $1::int", SECRET)

    assert isinstance(caught.value.__cause__, asyncpg.DataError)
    assert SECRET in str(caught.value.__cause__)
    assert SECRET not in caught.value.message


@pytest.mark.parametrize(
    ("statement", "cause", "named"),
    [
        (
            "INSERT INTO children VALUES (1, 999, 1)",
            asyncpg.ForeignKeyViolationError,
            "children_parent_fk",
        ),
        (
            "INSERT INTO children VALUES (1, 1, -5)",
            asyncpg.CheckViolationError,
            "children_rank_positive",
        ),
        ("INSERT INTO children VALUES (1, NULL, 1)", asyncpg.NotNullViolationError, "parent_id"),
    ],
)
async def test_integrity_violations_are_invalid_argument(
    pg: asyncpg.Connection, statement: str, cause: type[Exception], named: str
) -> None:
    await pg.execute("CREATE TABLE parents (id int PRIMARY KEY)")
    await pg.execute("INSERT INTO parents VALUES (1)")
    await pg.execute(
        "CREATE TABLE children (id int PRIMARY KEY,"
        " parent_id int NOT NULL CONSTRAINT children_parent_fk REFERENCES parents,"
        " rank int CONSTRAINT children_rank_positive CHECK (rank > 0))"
    )

    with pytest.raises(InvalidArgument) as caught, map_asyncpg_errors():
        await pg.execute(statement)

    assert isinstance(caught.value.__cause__, cause)
    assert named in caught.value.message


async def test_undefined_table_is_left_unmapped(pg: asyncpg.Connection) -> None:
    # A bug or a missing migration: bounded retries, then INTERNAL/500 — see the
    # module docstring of mainstay_common.errors._adapters.
    with pytest.raises(asyncpg.UndefinedTableError), map_asyncpg_errors():
        await pg.fetchval("SELECT * FROM no_such_table")


@pytest.mark.parametrize(
    ("value", "column"),
    [
        (2**40, "int"),  # asyncpg cannot encode it: out of int32 range
        ("a\x00b", "text"),  # PostgreSQL refuses it: a NUL character in text
    ],
)
async def test_only_data_errors_are_mapped_by_the_data_mapper(
    pg: asyncpg.Connection, value: object, column: str
) -> None:
    await pg.execute(f"CREATE TABLE readings (id int PRIMARY KEY, value {column})")

    with pytest.raises(InvalidArgument) as caught, map_asyncpg_data_errors():
        await pg.execute("INSERT INTO readings VALUES (1, $1)", value)
    assert not caught.value.retryable
    assert str(value) not in caught.value.message

    await pg.execute("INSERT INTO readings (id) VALUES (2)")
    with pytest.raises(asyncpg.UniqueViolationError), map_asyncpg_data_errors():
        await pg.execute("INSERT INTO readings (id) VALUES (2)")
