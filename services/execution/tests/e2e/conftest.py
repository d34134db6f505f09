"""The whole mesh for end-to-end tests of the execution service, one per test module.

``full_mesh`` is a :class:`~mainstay_execution.testing.mesh.FullMesh`: identity,
ledger, memory, the tools gateway (with a counting tool server), the supervisor and
the fake model server on loopback; tests start execution instances with
``full_mesh.execution()`` or ``full_mesh.execution_process()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_asyncio

from mainstay_execution.testing.mesh import FullMesh, running_mesh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

__all__ = ["FullMesh", "full_mesh"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def full_mesh(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FullMesh]:
    home = tmp_path_factory.mktemp("full-mesh")
    async with running_mesh(kafka_bootstrap, postgres_dsn, home) as mesh:
        yield mesh
