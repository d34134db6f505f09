"""Memory records in PostgreSQL (schema ``memory``): versions, history, full-text search.

Writes run inside the caller's transaction (``tx``) so curation, the records it
touches, the idempotency result and the outbox events commit together.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mainstay_common.errors import map_asyncpg_errors
from mainstay_memory.domain.model import Kind, MemoryRecord, Outcome, Scope, Source

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    import asyncpg

    from mainstay_common.db import Connection, Database
    from mainstay_memory.store.vectors_pgvector import NearestQuery

__all__ = ["RECORD_COLUMNS", "RecordFilter", "RecordStore", "StoredResult", "record_row"]

_COLUMNS = (
    "id, tenant, agent_id, user_id, session_id, kind, content, subject, metadata, importance,"
    " source_task_id, source_step, idempotency_key, valid_from, valid_to, superseded_by,"
    " created_at, expires_at, merged_count, forgotten"
)


@dataclass(frozen=True)
class StoredResult:
    record_id: str
    outcome: Outcome
    superseded_ids: tuple[str, ...]


@dataclass(frozen=True)
class RecordFilter:
    """Which records a recall or a forget may touch.

    ``tenant`` always applies; an empty ``agent_id``/``user_id``/``session_id``
    means any, a non-empty one must match exactly.
    """

    scope: Scope
    kinds: frozenset[Kind] = frozenset()
    as_of: datetime | None = None
    include_superseded: bool = False

    def where(self, first_param: int) -> tuple[str, list[Any]]:
        """SQL conditions and their parameters, numbered from ``first_param``."""
        clauses = ["tenant = $%d", "NOT forgotten"]
        params: list[Any] = [self.scope.tenant]
        for column in ("agent_id", "user_id", "session_id"):
            value = getattr(self.scope, column)
            if value:
                clauses.append(f"{column} = $%d")
                params.append(value)
        if self.kinds:
            clauses.append("kind = ANY($%d::text[])")
            params.append(sorted(str(k) for k in self.kinds))
        if self.as_of is not None:
            clauses.append("valid_from <= $%d")
            params.append(self.as_of)
            if not self.include_superseded:
                clauses.append("(valid_to IS NULL OR valid_to > $%d)")
                params.append(self.as_of)
        elif not self.include_superseded:
            clauses.append("valid_to IS NULL")
        numbered = []
        n = first_param
        for clause in clauses:
            count = clause.count("$%d")
            numbered.append(clause % tuple(range(n, n + count)) if count else clause)
            n += count
        return " AND ".join(numbered), params


def _record(row: asyncpg.Record) -> MemoryRecord:
    return MemoryRecord(
        id=str(row["id"]),
        scope=Scope(row["tenant"], row["agent_id"], row["user_id"], row["session_id"]),
        kind=Kind(row["kind"]),
        content=row["content"],
        subject=row["subject"],
        metadata=json.loads(row["metadata"]),
        importance=float(row["importance"]),
        source=Source(row["source_task_id"], row["source_step"]),
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        superseded_by=str(row["superseded_by"]) if row["superseded_by"] else "",
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        merged_count=row["merged_count"],
        forgotten=row["forgotten"],
        idempotency_key=row["idempotency_key"],
    )


RECORD_COLUMNS: tuple[str, ...] = tuple(_COLUMNS.split(", "))
"""The columns of a stored record, in the order of :func:`record_row`."""


def record_row(record: MemoryRecord) -> tuple[Any, ...]:
    """A record's column values as PostgreSQL stores them (for INSERT or COPY)."""
    return (
        uuid.UUID(record.id),
        record.scope.tenant,
        record.scope.agent_id,
        record.scope.user_id,
        record.scope.session_id,
        str(record.kind),
        record.content,
        record.subject,
        json.dumps(record.metadata),
        record.importance,
        record.source.task_id,
        record.source.step,
        record.idempotency_key,
        record.valid_from,
        record.valid_to,
        uuid.UUID(record.superseded_by) if record.superseded_by else None,
        record.created_at,
        record.expires_at,
        record.merged_count,
        record.forgotten,
    )


def _ids(values: Sequence[str]) -> list[uuid.UUID]:
    out = []
    for value in values:
        try:
            out.append(uuid.UUID(value))
        except ValueError:
            continue  # not an id of ours: it matches nothing
    return out


class RecordStore:
    """The PostgreSQL adapter for memory records."""

    def __init__(self, database: Database) -> None:
        self.database = database

    # -- inside a write transaction ---------------------------------------------

    async def lock_scope(self, tx: Connection, scope: Scope) -> None:
        """Serialise writes to one scope, so curation sees every earlier write."""
        with map_asyncpg_errors():
            await tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"memory:{scope.key}")

    async def stored_result(self, tx: Connection, tenant: str, key: str) -> StoredResult | None:
        with map_asyncpg_errors():
            row = await tx.fetchrow(
                "SELECT record_id, outcome, superseded_ids FROM remember_results"
                " WHERE tenant = $1 AND idempotency_key = $2",
                tenant,
                key,
            )
        if row is None:
            return None
        return StoredResult(
            str(row["record_id"]),
            Outcome(row["outcome"]),
            tuple(str(i) for i in row["superseded_ids"]),
        )

    async def store_result(
        self, tx: Connection, tenant: str, key: str, result: StoredResult
    ) -> None:
        with map_asyncpg_errors():
            await tx.execute(
                "INSERT INTO remember_results (tenant, idempotency_key, record_id, outcome, superseded_ids)"
                " VALUES ($1, $2, $3, $4, $5::uuid[])",
                tenant,
                key,
                uuid.UUID(result.record_id),
                str(result.outcome),
                _ids(result.superseded_ids),
            )

    async def current_by_subject(
        self, tx: Connection, scope: Scope, subject: str
    ) -> MemoryRecord | None:
        with map_asyncpg_errors():
            row = await tx.fetchrow(
                f"SELECT {_COLUMNS} FROM records WHERE tenant = $1 AND agent_id = $2 AND user_id = $3"
                " AND session_id = $4 AND subject = $5 AND valid_to IS NULL AND NOT forgotten",
                scope.tenant,
                scope.agent_id,
                scope.user_id,
                scope.session_id,
                subject,
            )
        return _record(row) if row else None

    async def insert(self, tx: Connection, record: MemoryRecord) -> None:
        with map_asyncpg_errors():
            await tx.execute(
                f"INSERT INTO records ({_COLUMNS}) VALUES"
                " ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14, $15, $16,"
                " $17, $18, $19, $20)",
                *record_row(record),
            )

    async def update(self, tx: Connection, record: MemoryRecord) -> None:
        """Persist what curation, expiry or forgetting may change on an existing record."""
        with map_asyncpg_errors():
            await tx.execute(
                "UPDATE records SET content = $2, metadata = $3::jsonb, importance = $4, valid_to = $5,"
                " superseded_by = $6, merged_count = $7, forgotten = $8, updated_at = now()"
                " WHERE id = $1",
                uuid.UUID(record.id),
                record.content,
                json.dumps(record.metadata),
                record.importance,
                record.valid_to,
                uuid.UUID(record.superseded_by) if record.superseded_by else None,
                record.merged_count,
                record.forgotten,
            )

    async def get_many(self, conn: Connection, ids: Sequence[str]) -> list[MemoryRecord]:
        with map_asyncpg_errors():
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM records WHERE id = ANY($1::uuid[])", _ids(ids)
            )
        return [_record(row) for row in rows]

    # -- reads --------------------------------------------------------------------

    async def get(self, record_id: str) -> MemoryRecord | None:
        async with self.database.pool.acquire() as conn:
            found = await self.get_many(conn, [record_id])
        return found[0] if found else None

    async def history(self, scope: Scope, subject: str) -> list[MemoryRecord]:
        """Every version of ``subject`` in exactly ``scope``, oldest first."""
        with map_asyncpg_errors():
            rows = await self.database.pool.fetch(
                f"SELECT {_COLUMNS} FROM records WHERE tenant = $1 AND agent_id = $2 AND user_id = $3"
                " AND session_id = $4 AND subject = $5 ORDER BY valid_from, created_at",
                scope.tenant,
                scope.agent_id,
                scope.user_id,
                scope.session_id,
                subject,
            )
        return [_record(row) for row in rows]

    async def keyword_matches(
        self, query: str, where: RecordFilter, limit: int
    ) -> dict[str, tuple[MemoryRecord, float]]:
        """Full-text matches of ``query`` passing ``where``: each record with its rank.

        The records come with the ranks so a recall needs no second query to load them.
        """
        conditions, params = where.where(2)
        with map_asyncpg_errors():
            rows = await self.database.pool.fetch(
                f"SELECT {_COLUMNS}, ts_rank_cd(search, q) AS rank"
                " FROM records, websearch_to_tsquery('english', $1) AS q"
                f" WHERE search @@ q AND {conditions} ORDER BY rank DESC LIMIT {int(limit)}",
                query,
                *params,
            )
        return {str(row["id"]): (_record(row), float(row["rank"])) for row in rows}

    async def nearest(
        self, nearest: NearestQuery, where: RecordFilter
    ) -> list[tuple[MemoryRecord, float]]:
        """The records ``nearest`` finds that pass ``where``, with their similarity.

        One statement, the pgvector search with the records joined to it: loading
        the hits separately costs a round trip, a pool checkout and a second plan
        on the critical path of every recall. Stale hits (a vector whose record is
        forgotten or superseded) drop out in the join, as in :meth:`load`.
        """
        conditions, params = where.where(len(nearest.args) + 1)
        sql = (
            f"WITH hits AS ({nearest.sql}) SELECT {_COLUMNS}, hits.similarity"
            f" FROM hits JOIN records ON records.id = hits.record_id WHERE {conditions}"
        )
        with map_asyncpg_errors():
            async with self.database.pool.acquire() as conn:
                await nearest.apply_settings(conn)
                rows = await conn.fetch(sql, *nearest.args, *params)
        return [(_record(row), float(row["similarity"])) for row in rows]

    async def load(self, ids: Sequence[str], where: RecordFilter) -> list[MemoryRecord]:
        """The records among ``ids`` that pass ``where`` (stale vector hits drop out here)."""
        conditions, params = where.where(2)
        with map_asyncpg_errors():
            rows = await self.database.pool.fetch(
                f"SELECT {_COLUMNS} FROM records WHERE id = ANY($1::uuid[]) AND {conditions}",
                _ids(ids),
                *params,
            )
        return [_record(row) for row in rows]

    async def matching(
        self, tx: Connection, where: RecordFilter, subject: str
    ) -> list[MemoryRecord]:
        """Records a forget by filter touches (locked for the rest of ``tx``)."""
        conditions, params = where.where(2 if subject else 1)
        sql = f"SELECT {_COLUMNS} FROM records WHERE {conditions}"
        args: list[Any] = list(params)
        if subject:
            sql = f"SELECT {_COLUMNS} FROM records WHERE subject = $1 AND {conditions}"
            args = [subject, *params]
        with map_asyncpg_errors():
            rows = await tx.fetch(sql + " FOR UPDATE", *args)
        return [_record(row) for row in rows]

    async def lock_many(self, tx: Connection, ids: Sequence[str]) -> list[MemoryRecord]:
        with map_asyncpg_errors():
            rows = await tx.fetch(
                f"SELECT {_COLUMNS} FROM records WHERE id = ANY($1::uuid[]) FOR UPDATE", _ids(ids)
            )
        return [_record(row) for row in rows]

    async def due_for_expiry(self, tx: Connection, now: datetime, limit: int) -> list[MemoryRecord]:
        with map_asyncpg_errors():
            rows = await tx.fetch(
                f"SELECT {_COLUMNS} FROM records WHERE expires_at IS NOT NULL AND expires_at <= $1"
                " AND valid_to IS NULL AND NOT forgotten ORDER BY expires_at LIMIT $2"
                " FOR UPDATE SKIP LOCKED",
                now,
                limit,
            )
        return [_record(row) for row in rows]
