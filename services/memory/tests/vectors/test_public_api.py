"""The exported names of the vector-index modules are their contract."""

from __future__ import annotations

import mainstay_memory.store.vectors
import mainstay_memory.store.vectors_pgvector
import mainstay_memory.store.vectors_weaviate


def test_vectors_exports() -> None:
    module = mainstay_memory.store.vectors
    assert sorted(module.__all__) == [
        "ManagedVectorIndex",
        "check_items",
        "check_limit",
        "check_moment",
        "check_record_ids",
        "check_vector",
        "create_vector_index",
        "dimension_mismatch",
    ]
    assert all(hasattr(module, name) for name in module.__all__)


def test_pgvector_exports() -> None:
    module = mainstay_memory.store.vectors_pgvector
    assert sorted(module.__all__) == ["MAX_HNSW_DIMENSION", "NearestQuery", "PgVectorIndex"]
    assert all(hasattr(module, name) for name in module.__all__)


def test_weaviate_exports() -> None:
    module = mainstay_memory.store.vectors_weaviate
    assert sorted(module.__all__) == [
        "OPEN",
        "VECTOR_NAME",
        "WeaviateVectorIndex",
        "map_weaviate_errors",
        "object_properties",
        "search_filter",
    ]
    assert all(hasattr(module, name) for name in module.__all__)
