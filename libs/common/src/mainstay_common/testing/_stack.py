"""A throwaway embedded broker and PostgreSQL for tests and benchmarks."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mainstay_common.testing._addresses import StackAddresses

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["start_test_stack"]


def _two_free_ports() -> tuple[int, int]:
    from mainstay_common.devstack import free_port  # noqa: PLC0415 - keeps the import lazy

    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


@contextlib.asynccontextmanager
async def start_test_stack(
    *, kafka: str | None = None, postgres: str | None = None
) -> AsyncIterator[StackAddresses]:
    """Attach to ``kafka``/``postgres`` when given, else start them on free ports.

    What is started lives in a temporary home and is stopped and deleted on exit,
    also on failure.
    """
    if kafka and postgres:
        yield StackAddresses(kafka_bootstrap=kafka, postgres_dsn=postgres)
        return
    from mainstay_common.devstack import EmbeddedStack  # noqa: PLC0415 - keeps the import lazy

    kafka_port, pg_port = _two_free_ports()
    # Not under pytest's basetemp: as root, postgres runs as another user that
    # must traverse every parent folder, and pytest resets its basetemp root to
    # 0700 at the start of every session, including concurrent ones.
    home = Path(tempfile.mkdtemp(prefix="mainstay-test-"))
    stack = EmbeddedStack(
        home,
        home,
        kafka_port=kafka_port,
        pg_port=pg_port,
        external_kafka=kafka,
        external_postgres=postgres,
        create_topics=False,
        write_credentials=False,
        start_services=False,
        stop_grace_s=5.0,
    )
    try:
        await stack.up()
        yield StackAddresses(kafka_bootstrap=stack.kafka_bootstrap, postgres_dsn=stack.postgres_dsn)
    finally:
        try:
            await stack.down()
        finally:
            shutil.rmtree(home, ignore_errors=True)
