"""Closing a database: connections still in use do not hold a shutdown forever."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from mainstay_common.db import Database
from mainstay_common.settings import PostgresSettings

pytestmark = pytest.mark.real


async def test_close_returns_when_its_connections_are_back(
    postgres_dsn: str, pg_schema: str
) -> None:
    db = Database(PostgresSettings(dsn=postgres_dsn, close_timeout_s=5), schema=pg_schema)
    async with db, db.pool.acquire() as connection:
        assert await connection.fetchval("SELECT 1") == 1
    with pytest.raises(RuntimeError, match="not open"):
        _ = db.pool


async def test_a_connection_held_by_a_stuck_task_is_terminated_after_the_close_timeout(
    postgres_dsn: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(PostgresSettings(dsn=postgres_dsn, close_timeout_s=0.5), schema=pg_schema)
    await db.start()
    held = asyncio.Event()

    async def stuck() -> None:
        async with db.pool.acquire() as connection:
            held.set()
            await connection.execute("SELECT pg_sleep(20)")

    task = asyncio.create_task(stuck())
    try:
        await held.wait()
        with caplog.at_level(logging.WARNING, logger="mainstay_common.db._database"):
            async with asyncio.timeout(30):  # asyncpg's own close would wait for the query
                await db.close()
        assert (
            "of 1 connection(s) in use at close, some were still in use after 0.5 s; terminated"
            in caplog.text
        )
        with pytest.raises((asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError)):
            await task  # its query was cut off, not left running
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
