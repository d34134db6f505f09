"""A running memory service (real PostgreSQL, broker and gRPC on loopback) per test module."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest_asyncio

from ..running import Memory, running_memory

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import grpc
    import pytest

__all__ = ["Memory", "new_tenant", "status_of"]


def new_tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def memory(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Memory]:
    home: Path = tmp_path_factory.mktemp("memory-auth")
    async with running_memory(kafka_bootstrap, postgres_dsn, home) as memory:
        yield memory


def status_of(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), error.details() or ""
