"""One fake model server and one ``Providers`` per module; each test starts from a clean script.

Providers are unreachable from the development machines: every adapter test
goes over real loopback HTTP to :class:`FakeModelServer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest_asyncio

from mainstay_execution.providers import Providers
from mainstay_execution.testing.fake_models import FakeModelServer, Reply

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

API_KEY = "sk-test-0123456789abcdef"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def model_server() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer(api_key=API_KEY) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def server(model_server: FakeModelServer) -> FakeModelServer:
    """The module's server, with no script, no responder, no records and ``Reply("done")``."""
    model_server.reset()
    model_server.default = Reply("done")
    model_server.api_key = API_KEY
    return model_server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def providers() -> AsyncIterator[Providers]:
    async with Providers() as providers:
        yield providers
