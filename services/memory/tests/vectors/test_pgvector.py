"""What only the pgvector adapter promises: its schema, its plans, its recall."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import pytest_asyncio

from mainstay_common.db import Database
from mainstay_common.errors import InvalidArgument, PermanentError
from mainstay_common.settings import PostgresSettings
from mainstay_memory.domain.ports import VectorFilter
from mainstay_memory.settings import VectorSettings
from mainstay_memory.store.vectors import create_vector_index
from mainstay_memory.store.vectors_pgvector import PgVectorIndex

from .conftest import MIGRATIONS, T0, hours, item, near, unit

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mainstay_memory.store.vectors_pgvector import NearestQuery

pytestmark = pytest.mark.real

EVERYTHING = VectorFilter("acme", current_only=False)


@pytest_asyncio.fixture
async def database(postgres_dsn: str, pg_schema: str) -> AsyncIterator[Database]:
    async with Database(PostgresSettings(dsn=postgres_dsn), schema=pg_schema) as db:
        await db.migrate(MIGRATIONS)
        yield db


async def started(database: Database, dimension: int, **settings: Any) -> PgVectorIndex:
    index = PgVectorIndex(database, VectorSettings(**settings), dimension=dimension)
    await index.start()
    return index


async def run(
    database: Database, nearest: NearestQuery, *extra: str, explain: bool = False
) -> list[str]:
    """Run ``nearest`` as the benchmark would, in a transaction rolled back afterwards."""
    sql = f"EXPLAIN (COSTS OFF) {nearest.sql}" if explain else nearest.sql
    async with database.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            for name, value in nearest.settings.items():
                await conn.execute(f"SET LOCAL {name} = {value}")
            for statement in extra:
                await conn.execute(statement)
            rows = await conn.fetch(sql, *nearest.args)
        finally:
            await tx.rollback()
    return [str(row[0]) for row in rows]


async def test_start_pins_the_column_and_builds_hnsw_with_the_settings(
    database: Database,
) -> None:
    await started(database, 24, hnsw_m=8, hnsw_ef_construction=40)

    column = await database.fetch(
        "SELECT format_type(atttypid, atttypmod) AS type FROM pg_attribute"
        " WHERE attrelid = 'record_vectors'::regclass AND attname = 'embedding'"
    )
    index = await database.fetch(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = $1"
        " AND indexname = 'record_vectors_embedding_hnsw'",
        database.schema,
    )
    assert column[0]["type"] == "vector(24)"
    assert "USING hnsw (embedding vector_cosine_ops)" in index[0]["indexdef"]
    assert "m='8'" in index[0]["indexdef"]
    assert "ef_construction='40'" in index[0]["indexdef"]


async def test_a_restart_changes_nothing_and_warns_when_the_hnsw_settings_moved(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(20)
    first = await started(database, 8)
    await first.upsert([item(unit(rng, 8))])

    with caplog.at_level(logging.WARNING, logger="mainstay_memory.store.vectors_pgvector"):
        again = await started(database, 8, hnsw_m=32)

    assert len(await again.search(unit(rng, 8).tolist(), where=EVERYTHING, limit=5)) == 1
    assert "REINDEX INDEX record_vectors_embedding_hnsw" in caplog.text


async def test_an_unpinned_column_holding_another_dimension_is_refused(
    database: Database,
) -> None:
    await database.execute(
        "INSERT INTO record_vectors (record_id, tenant, kind, valid_from, embedding)"
        " VALUES (gen_random_uuid(), 'acme', 'fact', now(), '[1,0,0]')"
    )
    with pytest.raises(InvalidArgument, match="holds 3-dimension vectors"):
        await started(database, 4)


async def test_more_dimensions_than_hnsw_can_index_are_refused_up_front(
    database: Database,
) -> None:
    with pytest.raises(InvalidArgument, match="1 to 2000 dimensions"):
        PgVectorIndex(database, VectorSettings(), dimension=3072)


async def test_without_the_migration_the_start_says_so(postgres_dsn: str, pg_schema: str) -> None:
    async with Database(PostgresSettings(dsn=postgres_dsn), schema=pg_schema) as db:
        with pytest.raises(PermanentError, match="apply the memory migrations"):
            await started(db, 8)


async def test_the_factory_starts_the_configured_backend(database: Database) -> None:
    index = await create_vector_index(VectorSettings(), database, dimension=12)
    assert isinstance(index, PgVectorIndex)
    assert index.dimension == 12
    await index.aclose()
    with pytest.raises(RuntimeError, match="not started"):
        await index.search([0.0] * 12, where=EVERYTHING, limit=1)

    with pytest.raises(InvalidArgument, match="WEAVIATE_URL"):
        await create_vector_index(VectorSettings(backend="weaviate"), database, dimension=12)


async def test_search_settings_never_leak_to_other_users_of_the_pool(database: Database) -> None:
    rng = np.random.default_rng(21)
    index = await started(database, 8, hnsw_ef_search=123)
    await index.upsert([item(unit(rng, 8))])
    await index.search(unit(rng, 8).tolist(), where=EVERYTHING, limit=1)
    await index.search_exact(unit(rng, 8).tolist(), where=EVERYTHING, limit=1)

    async with database.pool.acquire() as conn:
        settings = await conn.fetchrow(
            "SELECT current_setting('hnsw.ef_search') AS ef,"
            " current_setting('hnsw.iterative_scan') AS scan,"
            " current_setting('enable_indexscan') AS indexscan"
        )
    assert settings is not None
    assert dict(settings) == {"ef": "40", "scan": "off", "indexscan": "on"}


def clustered(
    rng: np.random.Generator, centers: np.ndarray[Any, np.dtype[np.float64]], n: int
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Unit vectors scattered around ``centers``, as embeddings of related texts are."""
    chosen = centers[rng.integers(len(centers), size=n)]
    points = chosen + rng.normal(scale=1.0, size=chosen.shape)
    return points / np.linalg.norm(points, axis=1, keepdims=True)  # type: ignore[no-any-return]


async def test_hnsw_is_used_and_its_recall_at_10_against_exact_search_is_at_least_0_9(
    database: Database,
) -> None:
    rng = np.random.default_rng(22)
    dim = 64
    # pgvector's cost estimate grows with ef_search: at the service's default (500)
    # the planner rightly prefers a sequential scan over 5,000 rows. At 100 it
    # takes the index here, which is what this test is about.
    index = await started(database, dim, hnsw_ef_search=100)
    centers = rng.normal(size=(40, dim))
    items = [item(p) for p in clustered(rng, centers, 5000)]
    for start in range(0, len(items), 1000):
        await index.upsert(items[start : start + 1000])
    await database.execute("ANALYZE record_vectors")
    queries = clustered(rng, centers, 40)

    plan = await run(
        database,
        index.nearest_query(queries[0].tolist(), where=EVERYTHING, limit=10),
        explain=True,
    )
    assert any("Index Scan using record_vectors_embedding_hnsw" in line for line in plan), plan

    stored = np.array([i.vector for i in items], dtype=np.float32).astype(np.float64)
    recalls = []
    for query in queries:
        approx = await index.search(query.tolist(), where=EVERYTHING, limit=10)
        exact = await index.search_exact(query.tolist(), where=EVERYTHING, limit=10)
        # The exact search is the ground truth: check it against numpy first.
        best = np.sort(stored @ query / np.linalg.norm(stored, axis=1))[::-1][:10]
        assert [h.similarity for h in exact] == pytest.approx(best.tolist(), abs=1e-5)
        found = {h.record_id for h in approx} & {h.record_id for h in exact}
        recalls.append(len(found) / 10)
    assert float(np.mean(recalls)) >= 0.9, recalls


async def test_iterative_scan_fills_the_limit_through_the_hnsw_index(database: Database) -> None:
    # Most vectors near the query are closed; the open ones lie further out. With
    # only the HNSW index to use (btree indexes dropped, sequential scans off),
    # a plain walk with ef_search=10 finds few open ones; the iterative scan
    # keeps walking until it has `limit`.
    rng = np.random.default_rng(23)
    index = await started(database, 16, hnsw_ef_search=10)
    q = unit(rng, 16)
    closed = [item(near(q, rng, 0.2), valid_to=T0 + hours(1)) for _ in range(1500)]
    open_ = [item(near(q, rng, 0.6)) for _ in range(100)]
    for start in range(0, 1600, 400):
        await index.upsert([*closed, *open_][start : start + 400])
    await database.execute("ANALYZE record_vectors")
    nearest = index.nearest_query(q.tolist(), where=VectorFilter("acme"), limit=20)
    only_hnsw = (
        "DROP INDEX record_vectors_scope",
        "DROP INDEX record_vectors_kind",
        "SET LOCAL enable_seqscan = off",
    )

    plan = await run(database, nearest, *only_hnsw, explain=True)
    walked = await run(database, nearest, *only_hnsw)
    plain = await run(database, nearest, *only_hnsw, "SET LOCAL hnsw.iterative_scan = off")

    assert any("record_vectors_embedding_hnsw" in line for line in plan), plan
    assert len(plain) < 20  # what a filtered HNSW search returns without iterative scans
    assert len(walked) == 20
    assert set(walked) <= {i.record_id for i in open_}
    exact = await index.search_exact(q.tolist(), where=VectorFilter("acme"), limit=20)
    assert len(set(walked) & {h.record_id for h in exact}) >= 18
