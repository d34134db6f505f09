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

A test with a timeout (pytest-timeout's ``timeout`` marker or setting) that is
still running a few seconds before it prints the stack of every asyncio task:
pytest-timeout shows the threads, where an event loop only ever sits in
``select``, not what its tasks wait for.
"""

from __future__ import annotations

import asyncio
import linecache
import os
import sys
import threading
import uuid
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from mainstay_common.testing._addresses import StackAddresses

__all__ = [
    "kafka_bootstrap",
    "mainstay_stack",
    "pg_schema",
    "postgres_dsn",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_runtest_protocol",
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


_DUMP_AHEAD_S = 5.0


def _timeout_s(item: pytest.Item) -> float:
    """The item's pytest-timeout budget in seconds, 0 for none."""
    marker = item.get_closest_marker("timeout")
    value: object = None
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    else:
        try:
            value = item.config.getoption("timeout", None) or item.config.getini("timeout")
        except ValueError:  # pytest-timeout is not installed
            return 0.0
    try:
        return float(value or 0)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _awaiting_chain(awaitable: object) -> Iterator[str]:
    """``file:line in function`` and the source line, down the chain of awaits."""
    seen = 0
    while awaitable is not None and seen < 50:
        seen += 1
        frame = None
        for frame_name, next_name in (
            ("cr_frame", "cr_await"),
            ("ag_frame", "ag_await"),
            ("gi_frame", "gi_yieldfrom"),
        ):
            if hasattr(awaitable, frame_name):
                frame = getattr(awaitable, frame_name)
                awaitable = getattr(awaitable, next_name, None)
                break
        else:
            yield f"  waiting on {awaitable!r}"
            return
        if frame is None:  # finished
            return
        code = frame.f_code
        line = linecache.getline(code.co_filename, frame.f_lineno).strip()
        yield f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}'
        if line:
            yield f"    {line}"


def _dump_asyncio_tasks(nodeid: str) -> None:
    """Print what every asyncio task is waiting for (read from a timer thread)."""
    tasks = getattr(asyncio.tasks, "_all_tasks", ())
    for _ in range(3):
        try:
            pending = [task for task in list(tasks) if not task.done()]
            break
        except RuntimeError:  # the set changed while it was copied
            continue
    else:
        return
    lines = [f"+++ {nodeid}: about to time out; {len(pending)} asyncio tasks +++"]
    for task in pending:
        lines.append(f"--- task {task.get_name()}")
        try:
            lines.extend(_awaiting_chain(task.get_coro()))
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            lines.append(f"  (no stack: {exc!r})")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    seconds = _timeout_s(item)
    timer = None
    if seconds > 2 * _DUMP_AHEAD_S:
        timer = threading.Timer(seconds - _DUMP_AHEAD_S, _dump_asyncio_tasks, (item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


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
