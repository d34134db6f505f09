"""The pgvector adapter of :class:`~mainstay_memory.domain.ports.VectorIndex` (the default).

Vectors live in the service's own schema (``record_vectors``, migration
``0002_vectors``) next to the records, so the embedded stack needs no second
database. Design choices, each measured or forced by pgvector:

- **Dimension.** The migration cannot know the embedder's dimension, and HNSW
  cannot index an undimensioned ``vector`` column, so :meth:`PgVectorIndex.start`
  pins the column to ``vector(N)`` on first start (under an advisory lock, so
  instances starting together agree) and builds the HNSW index then. A column
  already pinned to another dimension stops the service with
  :class:`InvalidArgument`: switching embedders means re-embedding into a fresh
  schema, never mixing spaces. Above 2,000 dimensions pgvector's HNSW cannot
  index ``vector`` at all; such a model must be asked for fewer dimensions.
- **Wire format.** Vectors travel as ``float4[]`` (asyncpg's built-in binary
  array codec) cast with ``::real[]::vector``. No per-connection codec has to be
  registered, which the shared pool has no hook for; text (``'[...]'::vector``)
  measured slowest because of the formatting in Python. Registering
  ``pgvector.asyncpg`` on every connection would save roughly 15% per search
  but costs a catalogue round trip per registration.
- **Search.** One SQL statement: a ``MATERIALIZED`` CTE walks the HNSW index
  (``vector_cosine_ops``) with the filters applied during the walk and
  pgvector 0.8's ``hnsw.iterative_scan = relaxed_order``, so a selective filter
  still yields ``limit`` rows; the outer query restores exact distance order,
  which relaxed order may perturb slightly. ``hnsw.ef_search`` and the scan mode
  are set (``set_config``) on the pooled connection just before it, one round
  trip (~0.2 ms, against 10+ ms for the search at 100k vectors); asyncpg's pool
  runs ``RESET ALL`` when the connection is released, so the settings never leak
  to other users of the pool. A Recall runs the same statement with the records
  joined to it (``RecordStore.nearest``), so finding and loading are one trip.
- **Plans.** For a small scope the planner prefers a scope btree index and an
  exact sort, which is both right and cheap; HNSW takes over once statistics
  (autovacuum's ANALYZE) show the scope is large. An iterative scan stops after
  pgvector's ``hnsw.max_scan_tuples`` (20,000 by default), so a filter matching
  almost nothing in a huge scope may return fewer than ``limit`` rows. The
  planner hands over too early for a filtered search: pgvector's cost estimate
  does not grow with the candidates a selective filter makes the walk reject.
  Measured with ``bench/memory.py`` (100k memories, ``ef_search`` 400), an agent
  holding 5% of them (~4,900 vectors) asking for 40 takes ~25-30 ms through HNSW
  and ~8-10 ms through the scope index and an exact sort, yet HNSW is chosen.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mainstay_common.errors import InvalidArgument, PermanentError, map_asyncpg_errors
from mainstay_common.lifecycle import Resource
from mainstay_memory.domain.ports import VectorHit
from mainstay_memory.store.vectors import (
    check_items,
    check_limit,
    check_moment,
    check_record_ids,
    check_vector,
    dimension_mismatch,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    import asyncpg

    from mainstay_common.db import Connection, Database
    from mainstay_memory.domain.ports import IndexedVector, Vector, VectorFilter
    from mainstay_memory.settings import VectorSettings

__all__ = ["MAX_HNSW_DIMENSION", "NearestQuery", "PgVectorIndex"]

_log = logging.getLogger(__name__)

MAX_HNSW_DIMENSION = 2000
"""pgvector's HNSW indexes ``vector`` columns of at most this many dimensions."""

_MIN_PGVECTOR = (0, 8)  # iterative index scans
_HNSW_INDEX = "record_vectors_embedding_hnsw"

_UPSERT = """
INSERT INTO record_vectors
    (record_id, tenant, agent_id, user_id, session_id, kind, valid_from, valid_to, embedding)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::real[]::vector)
ON CONFLICT (record_id) DO UPDATE SET
    tenant = EXCLUDED.tenant, agent_id = EXCLUDED.agent_id, user_id = EXCLUDED.user_id,
    session_id = EXCLUDED.session_id, kind = EXCLUDED.kind, valid_from = EXCLUDED.valid_from,
    valid_to = EXCLUDED.valid_to, embedding = EXCLUDED.embedding
"""
_EXACT = (  # no index of any kind: a sequential scan and an exact top-N sort
    "SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off;"
    " SET LOCAL enable_bitmapscan = off"
)


@dataclass(frozen=True)
class NearestQuery:
    """One nearest-neighbour search as SQL: what a search and a recall run, and for
    benchmarks, EXPLAIN and recall checks.

    Run it on a connection of the service's pool (its ``search_path`` names the
    schema) after applying ``settings`` (:meth:`apply_settings`, or ``SET name =
    value``); each row holds ``record_id`` and ``similarity``, most similar first.
    """

    sql: str
    args: tuple[Any, ...]
    settings: Mapping[str, str] = field(default_factory=dict)

    async def apply_settings(self, conn: Connection) -> None:
        """Apply :attr:`settings` to ``conn`` for the rest of its session, in one round trip.

        On a pooled connection that is until it goes back to the pool, whose
        ``RESET ALL`` removes them. ``set_config`` takes the values as parameters,
        so nothing is spliced into the SQL.
        """
        if not self.settings:
            return
        names = list(self.settings)
        calls = ", ".join(
            f"set_config(${2 * i + 1}, ${2 * i + 2}, false)" for i in range(len(names))
        )
        await conn.execute(
            f"SELECT {calls}", *[part for name in names for part in (name, self.settings[name])]
        )


class PgVectorIndex(Resource):
    """HNSW nearest-neighbour search over ``record_vectors``; :meth:`start` before use.

    The :class:`Database` (pool and migrations) belongs to the caller;
    :meth:`close` releases nothing of it.
    """

    def __init__(self, database: Database, settings: VectorSettings, *, dimension: int) -> None:
        if not 1 <= dimension <= MAX_HNSW_DIMENSION:
            raise InvalidArgument(
                f"pgvector's HNSW index holds 1 to {MAX_HNSW_DIMENSION} dimensions, not"
                f" {dimension}: configure the embedder for fewer dimensions"
                " (MEMORY_EMBEDDING_DIMENSION) or use MEMORY_VECTORS_BACKEND=weaviate"
            )
        self._database = database
        self._dimension = dimension
        self._m = settings.hnsw_m
        self._ef_construction = settings.hnsw_ef_construction
        self._settings = {
            "hnsw.ef_search": str(settings.hnsw_ef_search),
            "hnsw.iterative_scan": "relaxed_order",
        }
        self._started = False

    @property
    def dimension(self) -> int:
        return self._dimension

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Check pgvector, pin the embedding column to ``dimension``, build the HNSW index."""
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))",
                    f"vectors:{self._database.schema}",
                )
                await self._check_pgvector(conn)
                await self._pin_dimension(conn)
                await self._ensure_hnsw(conn)
        self._started = True

    async def close(self) -> None:
        self._started = False

    async def aclose(self) -> None:
        await self.close()

    async def _check_pgvector(self, conn: Connection) -> None:
        version = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        )
        found = tuple(int(part) for part in re.findall(r"\d+", version or "")[:2])
        if found < _MIN_PGVECTOR:
            raise PermanentError(
                f"the memory service needs pgvector 0.8 or later (iterative index scans);"
                f" this database has {version or 'no pgvector'}"
            )

    async def _pin_dimension(self, conn: Connection) -> None:
        typmod = await conn.fetchval(
            "SELECT atttypmod FROM pg_attribute"
            " WHERE attrelid = to_regclass(format('%I.record_vectors', current_schema()))"
            " AND attname = 'embedding' AND NOT attisdropped"
        )
        if typmod is None:
            raise PermanentError(
                f"table record_vectors is missing from schema {self._database.schema!r}:"
                " apply the memory migrations before starting the vector index"
            )
        if typmod == self._dimension:
            return
        if typmod != -1:
            raise _mismatch(typmod, self._dimension)
        stored = await conn.fetchval(
            "SELECT vector_dims(embedding) FROM record_vectors"
            " WHERE vector_dims(embedding) <> $1 LIMIT 1",
            self._dimension,
        )
        if stored is not None:
            raise _mismatch(stored, self._dimension)
        await conn.execute(
            f"ALTER TABLE record_vectors ALTER COLUMN embedding TYPE vector({self._dimension})"
        )
        _log.info("record_vectors.embedding pinned to vector(%d)", self._dimension)

    async def _ensure_hnsw(self, conn: Connection) -> None:
        row = await conn.fetchrow(
            "SELECT coalesce(c.reloptions, '{}') AS options FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relname = $1",
            _HNSW_INDEX,
        )
        wanted = {"m": str(self._m), "ef_construction": str(self._ef_construction)}
        if row is None:
            # Checked first, because CREATE INDEX IF NOT EXISTS would take a
            # table lock that blocks writers even when the index exists.
            await conn.execute(
                f"CREATE INDEX {_HNSW_INDEX} ON record_vectors"
                f" USING hnsw (embedding vector_cosine_ops)"
                f" WITH (m = {self._m}, ef_construction = {self._ef_construction})"
            )
            _log.info("built HNSW index %s with %s", _HNSW_INDEX, wanted)
            return
        built = dict(option.split("=", 1) for option in row["options"])
        if any(built.get(key, value) != value for key, value in wanted.items()):
            _log.warning(
                "HNSW index %s was built with %s but the settings ask for %s; the settings"
                " apply only after REINDEX INDEX %s",
                _HNSW_INDEX,
                built,
                wanted,
                _HNSW_INDEX,
            )

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("PgVectorIndex is not started; call start() (or use 'async with')")

    # -- writes ---------------------------------------------------------------

    async def upsert(self, items: Sequence[IndexedVector]) -> None:
        self._require_started()
        if not items:
            return
        ids = check_items(items, self._dimension)
        rows = [
            (
                record_id,
                item.scope.tenant,
                item.scope.agent_id,
                item.scope.user_id,
                item.scope.session_id,
                str(item.kind),
                item.valid_from,
                item.valid_to,
                list(item.vector),
            )
            for record_id, item in zip(ids, items, strict=True)
        ]
        # Rows locked in id order, so two batches sharing records cannot
        # deadlock; the sort is stable, so a repeated id still ends last-wins.
        rows.sort(key=lambda row: row[0])
        with map_asyncpg_errors():
            await self._database.pool.executemany(_UPSERT, rows)

    async def set_validity(self, record_ids: Sequence[str], *, valid_to: datetime | None) -> None:
        self._require_started()
        if not record_ids:
            return
        ids = check_record_ids(record_ids)
        if valid_to is not None:
            check_moment(valid_to, "valid_to")
        await self._database.execute(
            "UPDATE record_vectors SET valid_to = $2 WHERE record_id = ANY($1::uuid[])",
            ids,
            valid_to,
        )

    async def delete(self, record_ids: Sequence[str]) -> None:
        self._require_started()
        if not record_ids:
            return
        await self._database.execute(
            "DELETE FROM record_vectors WHERE record_id = ANY($1::uuid[])",
            check_record_ids(record_ids),
        )

    # -- reads ----------------------------------------------------------------

    async def search(self, query: Vector, *, where: VectorFilter, limit: int) -> list[VectorHit]:
        """The approximate ``limit`` nearest through the HNSW index (or a scope index)."""
        self._require_started()
        nearest = self.nearest_query(query, where=where, limit=limit)
        if limit == 0:
            return []
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn:
                await nearest.apply_settings(conn)
                rows = await conn.fetch(nearest.sql, *nearest.args)
        return _hits(rows)

    async def search_exact(
        self, query: Vector, *, where: VectorFilter, limit: int
    ) -> list[VectorHit]:
        """The exact ``limit`` nearest by a sequential scan: the reference for recall@k."""
        self._require_started()
        nearest = self.nearest_query(query, where=where, limit=limit)
        if limit == 0:
            return []
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                await conn.execute(_EXACT)
                rows = await conn.fetch(nearest.sql, *nearest.args)
        return _hits(rows)

    def nearest_query(self, query: Vector, *, where: VectorFilter, limit: int) -> NearestQuery:
        """The SQL :meth:`search` runs, with its arguments and session settings."""
        check_vector(query, self._dimension)
        check_limit(limit)
        args: list[Any] = [list(query)]
        conditions = _conditions(where, args)
        args.append(limit)
        sql = (
            "WITH nearest AS MATERIALIZED ("
            "SELECT record_id, embedding <=> $1::real[]::vector AS distance"
            f" FROM record_vectors WHERE {conditions}"
            f" ORDER BY distance LIMIT ${len(args)})"
            " SELECT record_id, 1 - distance AS similarity FROM nearest ORDER BY distance"
        )
        return NearestQuery(sql, tuple(args), dict(self._settings))


def _conditions(where: VectorFilter, args: list[Any]) -> str:
    """The WHERE clause of ``where``, appending its parameters to ``args``.

    Only the filters in use appear, rather than ``($n IS NULL OR col = $n)``,
    so each shape gets a plan fitted to it.
    """
    if not where.tenant:
        raise InvalidArgument("a vector search needs a tenant")

    def param(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    clauses = [f"tenant = {param(where.tenant)}"]
    for column in ("agent_id", "user_id", "session_id"):
        value = getattr(where, column)
        if value is not None:
            clauses.append(f"{column} = {param(value)}")
    if where.kinds:
        clauses.append(f"kind = ANY({param(sorted(str(k) for k in where.kinds))}::text[])")
    if where.current_only:
        clauses.append("valid_to IS NULL")
    if where.as_of is not None:
        moment = param(check_moment(where.as_of, "as_of"))
        clauses.append(f"valid_from <= {moment} AND (valid_to IS NULL OR valid_to > {moment})")
    return " AND ".join(clauses)


def _hits(rows: Sequence[asyncpg.Record]) -> list[VectorHit]:
    return [VectorHit(str(row["record_id"]), float(row["similarity"])) for row in rows]


def _mismatch(stored: int, configured: int) -> InvalidArgument:
    return dimension_mismatch("record_vectors", stored, configured, "re-embed into a fresh schema")
