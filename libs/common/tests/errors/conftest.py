"""PostgreSQL fixtures for the error-adapter tests.

``postgres_dsn`` and ``pg_schema`` (a schema created for one test and dropped
after it) come from the ``mainstay_common.testing.plugin`` pytest plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable


@pytest.fixture
async def pg_connect(
    postgres_dsn: str, pg_schema: str
) -> AsyncIterator[Callable[[], Awaitable[asyncpg.Connection]]]:
    """Open connections whose search_path is the test's schema; all closed after it."""
    opened: list[asyncpg.Connection] = []

    async def connect() -> asyncpg.Connection:
        conn = await asyncpg.connect(
            postgres_dsn, timeout=10, server_settings={"search_path": pg_schema}
        )
        opened.append(conn)
        return conn

    try:
        yield connect
    finally:
        for conn in opened:
            await conn.close(timeout=5)


@pytest.fixture
async def pg(
    pg_connect: Callable[[], Awaitable[asyncpg.Connection]],
) -> asyncpg.Connection:
    return await pg_connect()
