"""The vector index: one factory for both backends and the checks they share.

Both adapters (:mod:`.vectors_pgvector`, the default, and :mod:`.vectors_weaviate`)
implement :class:`~mainstay_memory.domain.ports.VectorIndex` and pass the same
contract suite (``tests/vectors``). They validate their input here, before any
I/O, so a wrong dimension, a record id that is not a UUID or a naive datetime
fails the same way, with the same :class:`InvalidArgument`, whichever backend
is configured; the backend's own message would differ and could quote data.

The factory imports the chosen adapter only when it is asked for it: the
Weaviate client pulls in gRPC and httpx machinery a pgvector deployment never
needs.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Protocol

from mainstay_common.errors import InvalidArgument
from mainstay_memory.domain.ports import VectorIndex

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from mainstay_common.db import Database
    from mainstay_memory.domain.ports import IndexedVector, Vector
    from mainstay_memory.settings import VectorSettings

__all__ = [
    "ManagedVectorIndex",
    "check_items",
    "check_limit",
    "check_moment",
    "check_record_ids",
    "check_vector",
    "create_vector_index",
    "dimension_mismatch",
]


class ManagedVectorIndex(VectorIndex, Protocol):
    """A started vector index; ``aclose()`` releases what it holds (``contextlib.aclosing``)."""

    @property
    def dimension(self) -> int: ...

    async def aclose(self) -> None: ...


async def create_vector_index(
    settings: VectorSettings, database: Database, *, dimension: int
) -> ManagedVectorIndex:
    """Build and start the configured index for vectors of ``dimension`` floats.

    Starting checks the backend against ``dimension`` (and, for pgvector, pins
    the column to it and builds the HNSW index), so a mismatch stops the service
    at startup rather than failing every write. ``database`` is only used by
    the pgvector backend; the caller keeps owning it.
    """
    if settings.backend == "weaviate":
        from mainstay_memory.store.vectors_weaviate import WeaviateVectorIndex  # noqa: PLC0415

        if not settings.weaviate_url:
            raise InvalidArgument(
                "MEMORY_VECTORS_BACKEND=weaviate needs MEMORY_VECTORS_WEAVIATE_URL"
                " (for example http://weaviate:8080)"
            )
        weaviate = WeaviateVectorIndex(settings, dimension=dimension)
        await weaviate.start()
        return weaviate
    from mainstay_memory.store.vectors_pgvector import PgVectorIndex  # noqa: PLC0415

    pgvector = PgVectorIndex(database, settings, dimension=dimension)
    await pgvector.start()
    return pgvector


def check_vector(vector: Vector, dimension: int, what: str = "query vector") -> None:
    if len(vector) != dimension:
        raise InvalidArgument(
            f"{what} has {len(vector)} dimensions but the vector index holds {dimension}:"
            " the embedder and the index disagree"
        )


def check_record_ids(record_ids: Sequence[str]) -> list[str]:
    """Canonical UUID strings: both backends key vectors by a UUID record id."""
    canonical = []
    for record_id in record_ids:
        try:
            canonical.append(str(uuid.UUID(record_id)))
        except (ValueError, TypeError, AttributeError):
            raise InvalidArgument(f"record id {record_id!r} is not a UUID") from None
    return canonical


def check_moment(moment: datetime, what: str) -> datetime:
    """Timezone-aware only: asyncpg reads a naive datetime as the host's local time."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidArgument(f"{what} must be a timezone-aware datetime, got {moment.isoformat()}")
    return moment


def check_items(items: Sequence[IndexedVector], dimension: int) -> list[str]:
    """Validate a batch for ``upsert``; returns the canonical record ids in item order."""
    ids = check_record_ids([item.record_id for item in items])
    for item, record_id in zip(items, ids, strict=True):
        check_vector(item.vector, dimension, f"vector of record {record_id}")
        check_moment(item.valid_from, "valid_from")
        if item.valid_to is not None:
            check_moment(item.valid_to, "valid_to")
        if not item.scope.tenant:
            raise InvalidArgument(f"record {record_id} has no tenant")
    return ids


def dimension_mismatch(where: str, stored: int, configured: int, remedy: str) -> InvalidArgument:
    """The startup error of an index that already holds vectors of another model."""
    return InvalidArgument(
        f"{where} holds {stored}-dimension vectors but the embedder produces {configured}:"
        f" vectors of different models cannot share an index. Configure the embedder for"
        f" {stored} dimensions, or {remedy}"
    )


def check_limit(limit: int) -> None:
    if limit < 0:
        raise InvalidArgument(f"limit must be 0 or more, got {limit}")
