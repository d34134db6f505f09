"""A running identity service (real PostgreSQL and HTTP on loopback)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_asyncio

from mainstay_identity.testing import Identity, new_tenant, running_identity

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

__all__ = ["Identity", "new_tenant", "running_identity"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def identity(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Identity]:
    home = tmp_path_factory.mktemp("identity")
    async with running_identity(kafka_bootstrap, postgres_dsn, home) as running:
        yield running
