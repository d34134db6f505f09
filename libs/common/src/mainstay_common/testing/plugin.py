"""pytest plugin: fixtures that start or attach to the embedded broker and PostgreSQL.

Fixtures:

``mainstay_stack`` (session)
    A :class:`~mainstay_common.testing.StackAddresses`. When
    ``MAINSTAY_KAFKA_BOOTSTRAP`` / ``MAINSTAY_POSTGRES_DSN`` are set the session
    attaches to those servers; whatever is not set is started once per session
    (the embedded broker and/or PostgreSQL, on free loopback ports in a
    temporary home, so a developer's ``./dev up`` stack on the default ports is
    never touched) and stopped when the session ends, failed or not. Only
    sessions that ask for it pay for it.
``kafka_bootstrap``, ``postgres_dsn`` (session)
    The two addresses of ``mainstay_stack``.
``topic_prefix`` (function)
    A unique prefix such as ``t3f9a1c2e.`` for the test's topics and consumer groups.
``pg_schema`` (function)
    A unique schema such as ``t_3f9a1c2e``, created before the test and dropped
    (``CASCADE``) after it.

Every test that uses ``mainstay_stack``, directly or through another fixture,
gets the ``real`` marker, so ``-m "not real"`` runs only the in-memory tier.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mainstay_common.testing._addresses import StackAddresses

__all__ = [
    "kafka_bootstrap",
    "mainstay_stack",
    "pg_schema",
    "postgres_dsn",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "topic_prefix",
]

_KAFKA_ENV = "MAINSTAY_KAFKA_BOOTSTRAP"
_POSTGRES_ENV = "MAINSTAY_POSTGRES_DSN"
_REAL_MARKER = (
    "real: runs against the real broker and PostgreSQL (the embedded stack or the servers "
    "named by MAINSTAY_KAFKA_BOOTSTRAP / MAINSTAY_POSTGRES_DSN)"
)


def pytest_configure(config: pytest.Config) -> None:
    # Declared here too, so a project using the plugin passes --strict-markers
    # without repeating the declaration.
    config.addinivalue_line("markers", _REAL_MARKER)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the marker must already be there
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "mainstay_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def mainstay_stack() -> AsyncIterator[StackAddresses]:
    # Imported only here, so the plugin stays cheap for sessions that need no stack.
    from mainstay_common.testing._stack import start_test_stack  # noqa: PLC0415

    async with start_test_stack(
        kafka=os.environ.get(_KAFKA_ENV) or None, postgres=os.environ.get(_POSTGRES_ENV) or None
    ) as addresses:
        yield addresses


@pytest.fixture(scope="session")
def kafka_bootstrap(mainstay_stack: StackAddresses) -> str:
    return mainstay_stack.kafka_bootstrap


@pytest.fixture(scope="session")
def postgres_dsn(mainstay_stack: StackAddresses) -> str:
    return mainstay_stack.postgres_dsn


def _unique_suffix() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def topic_prefix() -> str:
    """``t<8 hex digits>.``: put before topic names and consumer groups."""
    return f"t{_unique_suffix()}."


async def _execute(dsn: str, statement: str) -> None:
    import asyncpg  # noqa: PLC0415 - see mainstay_stack

    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement, timeout=30)
    finally:
        await connection.close(timeout=10)


@pytest_asyncio.fixture
async def pg_schema(postgres_dsn: str) -> AsyncIterator[str]:
    """``t_<8 hex digits>``: a schema that exists for the duration of one test."""
    name = f"t_{_unique_suffix()}"
    await _execute(postgres_dsn, f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        await _execute(postgres_dsn, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
