"""The broker and PostgreSQL a benchmark runs on.

``MAINSTAY_KAFKA_BOOTSTRAP`` / ``MAINSTAY_POSTGRES_DSN`` when both are set,
otherwise the embedded broker and PostgreSQL started on free ports for the run.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from mainstay_common.testing import start_test_stack

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["stack"]


@contextlib.asynccontextmanager
async def stack() -> AsyncIterator[tuple[str, str]]:
    """``(kafka_bootstrap, postgres_dsn)`` for the duration of the block."""
    async with start_test_stack(
        kafka=os.environ.get("MAINSTAY_KAFKA_BOOTSTRAP"),
        postgres=os.environ.get("MAINSTAY_POSTGRES_DSN"),
    ) as addresses:
        yield addresses.kafka_bootstrap, addresses.postgres_dsn
