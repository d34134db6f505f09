"""Ports: what the memory service needs from the outside world.

Adapters live in ``mainstay_memory.store``; each port has more than one (the
embedded default and a production one) and every adapter of a port passes the
same contract test suite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from mainstay_memory.domain.model import Kind, Scope

__all__ = ["Embedder", "IndexedVector", "Vector", "VectorFilter", "VectorHit", "VectorIndex"]

Vector = list[float]
"""A unit-length embedding."""


class Embedder(Protocol):
    """Turns texts into unit-length vectors of ``dimension`` floats.

    Implementations batch, and never block the event loop (model inference runs
    in a worker thread; remote calls are async with explicit timeouts).
    """

    @property
    def dimension(self) -> int: ...

    @property
    def model_name(self) -> str: ...

    async def embed(self, texts: Sequence[str]) -> list[Vector]: ...


@dataclass(frozen=True)
class IndexedVector:
    """What a vector index stores for one memory record."""

    record_id: str
    scope: Scope
    kind: Kind
    vector: Vector
    valid_from: datetime
    valid_to: datetime | None = None


@dataclass(frozen=True)
class VectorFilter:
    """Which vectors a search may return.

    ``tenant`` always applies; the other scope fields apply when not ``None``
    (an empty string matches records stored without that field). ``current_only``
    keeps records whose validity is still open; ``as_of`` keeps records valid at
    that moment; ``kinds`` empty means every kind.
    """

    tenant: str
    agent_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    kinds: frozenset[Kind] = frozenset()
    current_only: bool = True
    as_of: datetime | None = None


@dataclass(frozen=True)
class VectorHit:
    record_id: str
    similarity: float
    """Cosine similarity in -1..1 (1 is identical)."""


class VectorIndex(Protocol):
    """Nearest-neighbour search over memory vectors, filtered by scope and validity."""

    async def upsert(self, items: Sequence[IndexedVector]) -> None:
        """Insert or replace the vectors of these records."""

    async def set_validity(self, record_ids: Sequence[str], *, valid_to: datetime | None) -> None:
        """Close (or reopen) the validity of records, as superseding or expiry does."""

    async def delete(self, record_ids: Sequence[str]) -> None:
        """Remove vectors for good (hard forget)."""

    async def search(self, query: Vector, *, where: VectorFilter, limit: int) -> list[VectorHit]:
        """The ``limit`` nearest vectors passing ``where``, most similar first."""
