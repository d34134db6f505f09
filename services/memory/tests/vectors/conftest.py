"""Fixtures of the vector-index contract suite: one factory per backend.

``open_index`` is parametrized over both adapters. The pgvector one runs on a
fresh schema of the real PostgreSQL (the plugin's ``pg_schema``) with only the
vectors migration applied, which also proves it needs nothing from 0001. The
Weaviate one runs only against the server ``WEAVIATE_URL`` names (gRPC on
``WEAVIATE_GRPC_PORT``, default 50051), in a collection of its own that is
deleted afterwards; without a reachable server those tests are skipped, never
faked.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import pytest
import pytest_asyncio

from mainstay_common.db import Database, load_migrations
from mainstay_common.settings import PostgresSettings
from mainstay_memory.domain.model import Kind, Scope
from mainstay_memory.domain.ports import IndexedVector
from mainstay_memory.settings import VectorSettings
from mainstay_memory.store.vectors_pgvector import PgVectorIndex

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mainstay_memory.store.vectors import ManagedVectorIndex

import mainstay_memory.store

MIGRATIONS = [
    m
    for m in load_migrations(
        Path(mainstay_memory.store.__file__).parent / "migrations", namespace="memory"
    )
    if m.id == "memory/0002_vectors"
]
DIM = 16
T0 = datetime(2025, 1, 1, tzinfo=UTC)
SKIP_WEAVIATE = "WEAVIATE_URL not set / not reachable: the Weaviate adapter was not exercised"


class OpenIndex(Protocol):
    """Opens (and starts) an index over this test's storage; reopening shares it."""

    backend: str

    async def __call__(self, *, dimension: int = DIM, **settings: Any) -> ManagedVectorIndex: ...

    async def settle(self) -> None:
        """Let the backend see the data as production would (PostgreSQL: ANALYZE)."""


@dataclass
class _Opener:
    backend: str
    stack: contextlib.AsyncExitStack
    dsn: str = ""
    schema: str = ""
    weaviate_url: str = ""
    collection: str = ""
    databases: list[Database] = field(default_factory=list)

    async def __call__(self, *, dimension: int = DIM, **settings: Any) -> ManagedVectorIndex:
        if self.backend == "pgvector":
            database = await self.stack.enter_async_context(
                Database(PostgresSettings(dsn=self.dsn, pool_max_size=4), schema=self.schema)
            )
            await database.migrate(MIGRATIONS)
            self.databases.append(database)
            index: Any = PgVectorIndex(database, VectorSettings(**settings), dimension=dimension)
        else:
            from mainstay_memory.store.vectors_weaviate import WeaviateVectorIndex  # noqa: PLC0415

            index = WeaviateVectorIndex(
                VectorSettings(
                    backend="weaviate",
                    weaviate_url=self.weaviate_url,
                    weaviate_grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")),
                    weaviate_collection=self.collection,
                    **settings,
                ),
                dimension=dimension,
            )
        await index.start()  # a failed start releases what it opened
        self.stack.push_async_callback(index.aclose)
        return index  # type: ignore[no-any-return]

    async def settle(self) -> None:
        # Autovacuum would ANALYZE a table this size soon; without statistics
        # the planner misjudges the tenant filter and never picks HNSW.
        for database in self.databases[-1:]:
            await database.execute("ANALYZE record_vectors")


def _reachable(url: str, grpc_port: int) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    http_port = parts.port or (443 if parts.scheme == "https" else 80)
    for port in (http_port, grpc_port):
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def weaviate_url() -> str | None:
    url = os.environ.get("WEAVIATE_URL")
    if not url or not _reachable(url, int(os.environ.get("WEAVIATE_GRPC_PORT", "50051"))):
        return None
    return url


@pytest_asyncio.fixture
async def exit_stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as stack:
        yield stack


async def _drop_collection(url: str, name: str) -> None:
    import weaviate  # noqa: PLC0415

    parts = urlsplit(url)
    client = weaviate.use_async_with_custom(
        http_host=parts.hostname or "localhost",
        http_port=parts.port or 80,
        http_secure=parts.scheme == "https",
        grpc_host=parts.hostname or "localhost",
        grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")),
        grpc_secure=parts.scheme == "https",
    )
    async with client:
        await client.collections.delete(name)


@pytest.fixture(params=["pgvector", "weaviate"])
def open_index(request: pytest.FixtureRequest, weaviate_url: str | None) -> OpenIndex:
    # A sync fixture, so the backend's own fixtures can be requested lazily
    # (a weaviate run starts no PostgreSQL). The exit stack is requested after
    # the schema, so indexes and pools close before the schema is dropped.
    if request.param == "pgvector":
        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("pg_schema")
        stack = request.getfixturevalue("exit_stack")
        return _Opener("pgvector", stack, dsn=dsn, schema=schema)
    if weaviate_url is None:
        pytest.skip(SKIP_WEAVIATE)
    stack = request.getfixturevalue("exit_stack")
    collection = f"MainstayTest{uuid.uuid4().hex[:12]}"
    stack.push_async_callback(_drop_collection, weaviate_url, collection)
    return _Opener("weaviate", stack, weaviate_url=weaviate_url, collection=collection)


# --- synthetic data ------------------------------------------------------------


def unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray[Any, np.dtype[np.float64]]:
    v = rng.normal(size=dim)
    return v / np.linalg.norm(v)


def near(
    base: np.ndarray[Any, np.dtype[np.float64]], rng: np.random.Generator, noise: float
) -> np.ndarray[Any, np.dtype[np.float64]]:
    v = base + rng.normal(scale=noise, size=base.shape)
    return v / np.linalg.norm(v)  # type: ignore[no-any-return]


def item(
    vector: Any,
    *,
    tenant: str = "acme",
    agent_id: str = "",
    user_id: str = "",
    session_id: str = "",
    kind: Kind = Kind.FACT,
    valid_from: datetime = T0,
    valid_to: datetime | None = None,
    record_id: str | None = None,
) -> IndexedVector:
    return IndexedVector(
        record_id=record_id or str(uuid.uuid4()),
        scope=Scope(tenant, agent_id, user_id, session_id),
        kind=kind,
        vector=[float(x) for x in vector],
        valid_from=valid_from,
        valid_to=valid_to,
    )


def hours(n: float) -> timedelta:
    return timedelta(hours=n)
