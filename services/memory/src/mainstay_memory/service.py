"""Use-cases of the memory service, shared by the gRPC and the Kafka doors.

Each write runs in one PostgreSQL transaction that holds the scope's lock, the
records it changes, the idempotency result and the outgoing events (outbox), so
a change and its announcement on ``memory.evt.memory.v1`` commit together.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mainstay_common.errors import NotFound
from mainstay_contracts.memory import MEMORY_EVENTS, MemoryEvent, MemoryEventType, MemorySnapshot
from mainstay_memory.domain.curation import Thresholds, decide, merge_into, supersede
from mainstay_memory.domain.model import MemoryRecord, Outcome
from mainstay_memory.domain.ports import IndexedVector, VectorFilter
from mainstay_memory.domain.scoring import RecallWeights, rank
from mainstay_memory.store.records import RecordFilter, StoredResult
from mainstay_memory.store.vectors_pgvector import PgVectorIndex

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from mainstay_common.bus import Bus, OutgoingMessage
    from mainstay_common.db import Connection, Outbox
    from mainstay_memory.domain.model import Kind, RecallQuery, RememberCommand, Scope, ScoredRecord
    from mainstay_memory.domain.ports import Embedder, VectorIndex
    from mainstay_memory.store.records import RecordStore

__all__ = ["MemoryService", "RememberResult"]

_NEIGHBOURS = 5
_MIN_CANDIDATES = 40


@dataclass(frozen=True)
class RememberResult:
    record: MemoryRecord
    outcome: Outcome
    superseded_ids: tuple[str, ...] = ()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MemoryService:
    def __init__(
        self,
        *,
        records: RecordStore,
        vectors: VectorIndex,
        embedder: Embedder,
        bus: Bus,
        outbox: Outbox,
        thresholds: Thresholds | None = None,
        weights: RecallWeights | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.records = records
        self.vectors = vectors
        self.embedder = embedder
        self.bus = bus
        self.outbox = outbox
        self.thresholds = thresholds or Thresholds()
        self.weights = weights or RecallWeights()
        self.clock = clock

    # -- writes -------------------------------------------------------------------

    async def remember(
        self, command: RememberCommand, *, correlation_id: str = ""
    ) -> RememberResult:
        """Store ``command`` after curation; a repeated idempotency key returns the first result."""
        [vector] = await self.embedder.embed([command.content])
        now = self.clock()
        valid_from = command.valid_from or now
        async with self.records.database.pool.acquire() as tx, tx.transaction():
            await self.records.lock_scope(tx, command.scope)
            if command.idempotency_key:
                stored = await self.records.stored_result(
                    tx, command.scope.tenant, command.idempotency_key
                )
                if stored is not None:
                    return await self._replay(tx, stored)
            same_subject = (
                await self.records.current_by_subject(tx, command.scope, command.subject)
                if command.subject
                else None
            )
            neighbours: list[tuple[MemoryRecord, float]] = []
            if same_subject is None:
                neighbours = await self._neighbours(tx, command.scope, command.kind, vector)
            decision = decide(
                command,
                same_subject=same_subject,
                neighbours=neighbours,
                thresholds=self.thresholds,
            )
            events: list[tuple[MemoryEventType, MemoryRecord, tuple[str, ...]]] = []
            superseded: tuple[str, ...] = ()
            if decision.outcome in (Outcome.ADDED, Outcome.SUPERSEDED_PREVIOUS):
                record = command.new_record(
                    record_id=str(uuid.uuid4()), valid_from=valid_from, created_at=now
                )
                if decision.outcome is Outcome.SUPERSEDED_PREVIOUS:
                    assert decision.existing is not None
                    old = supersede(decision.existing, new_id=record.id, at=valid_from)
                    await self.records.update(tx, old)
                    await self.vectors.set_validity([old.id], valid_to=old.valid_to)
                    superseded = (old.id,)
                    events.append(("superseded", old, ()))
                # The vector goes in first: if the transaction then fails, an
                # orphan vector is harmless (recall only returns stored records).
                await self.vectors.upsert(
                    [IndexedVector(record.id, record.scope, record.kind, vector, record.valid_from)]
                )
                await self.records.insert(tx, record)
                events.append(("added", record, superseded))
            elif decision.outcome is Outcome.MERGED:
                assert decision.existing is not None
                record = merge_into(decision.existing, command)
                await self.records.update(tx, record)
                events.append(("merged", record, ()))
            else:
                assert decision.existing is not None
                record = decision.existing
            if command.idempotency_key:
                await self.records.store_result(
                    tx,
                    command.scope.tenant,
                    command.idempotency_key,
                    StoredResult(record.id, decision.outcome, superseded),
                )
            await self._announce(tx, events, now=now, correlation_id=correlation_id)
        return RememberResult(record, decision.outcome, superseded)

    async def _replay(self, tx: Connection, stored: StoredResult) -> RememberResult:
        found = await self.records.get_many(tx, [stored.record_id])
        if not found:
            raise NotFound(
                f"memory record {stored.record_id} of an earlier request no longer exists"
            )
        return RememberResult(found[0], stored.outcome, stored.superseded_ids)

    async def _neighbours(
        self, tx: Connection, scope: Scope, kind: Kind, vector: list[float]
    ) -> list[tuple[MemoryRecord, float]]:
        hits = await self.vectors.search(
            vector,
            where=VectorFilter(
                tenant=scope.tenant,
                agent_id=scope.agent_id,
                user_id=scope.user_id,
                session_id=scope.session_id,
                kinds=frozenset({kind}),
            ),
            limit=_NEIGHBOURS,
        )
        found = {r.id: r for r in await self.records.get_many(tx, [h.record_id for h in hits])}
        return [(found[h.record_id], h.similarity) for h in hits if h.record_id in found]

    async def forget(
        self,
        *,
        ids: Sequence[str] = (),
        where: RecordFilter | None = None,
        subject: str = "",
        hard: bool,
        allow: Callable[[Scope], None],
        correlation_id: str = "",
    ) -> int:
        """Hide (or, ``hard``, erase) records; ``allow`` raises for a record the caller may not touch."""
        now = self.clock()
        async with self.records.database.pool.acquire() as tx, tx.transaction():
            if ids:
                targets = await self.records.lock_many(tx, ids)
            else:
                assert where is not None
                targets = await self.records.matching(tx, where, subject)
            for record in targets:
                allow(record.scope)
            changed = []
            for record in targets:
                if record.forgotten and not hard:
                    continue
                if hard and record.forgotten and not record.content:
                    continue
                gone = replace(
                    record,
                    forgotten=True,
                    content="" if hard else record.content,
                    metadata={} if hard else record.metadata,
                )
                await self.records.update(tx, gone)
                changed.append(gone)
            if changed:
                if hard:
                    await self.vectors.delete([r.id for r in changed])
                else:
                    await self.vectors.set_validity([r.id for r in changed], valid_to=now)
            await self._announce(
                tx,
                [("forgotten", r, ()) for r in changed],
                now=now,
                correlation_id=correlation_id,
                hard=hard,
            )
        return len(changed)

    async def expire_due(self, *, limit: int = 500) -> int:
        """Close the validity of records whose TTL ran out; returns how many."""
        now = self.clock()
        async with self.records.database.pool.acquire() as tx, tx.transaction():
            due = await self.records.due_for_expiry(tx, now, limit)
            expired = []
            for record in due:
                closed = replace(record, valid_to=record.expires_at)
                await self.records.update(tx, closed)
                expired.append(closed)
            for record in expired:
                await self.vectors.set_validity([record.id], valid_to=record.valid_to)
            await self._announce(tx, [("expired", r, ()) for r in expired], now=now)
        return len(expired)

    async def _announce(
        self,
        tx: Connection,
        events: Sequence[tuple[MemoryEventType, MemoryRecord, tuple[str, ...]]],
        *,
        now: datetime,
        correlation_id: str = "",
        hard: bool = False,
    ) -> None:
        messages: list[OutgoingMessage] = [
            self.bus.message(
                MEMORY_EVENTS,
                MemoryEvent(
                    type=kind,
                    record=snapshot(record),
                    superseded_ids=list(superseded),
                    hard=hard,
                    occurred_at=now,
                ),
                event_type=f"mainstay.memory.{kind}",
                subject=record.id,
                tenant=record.scope.tenant,
                correlation_id=correlation_id or record.source.task_id or None,
            )
            for kind, record, superseded in events
        ]
        if messages:
            await self.outbox.add(tx, *messages)

    # -- reads --------------------------------------------------------------------

    async def get(self, record_id: str) -> MemoryRecord:
        record = await self.records.get(record_id)
        if record is None:
            raise NotFound(f"no memory record {record_id!r}")
        return record

    async def history(self, scope: Scope, subject: str) -> list[MemoryRecord]:
        return await self.records.history(scope, subject)

    async def history_of(self, record: MemoryRecord) -> list[MemoryRecord]:
        if not record.subject:
            return [record]  # only keyed facts have other versions
        return await self.records.history(record.scope, record.subject)

    async def recall(self, query: RecallQuery) -> list[ScoredRecord]:
        """Hybrid search: vector and keyword candidates, scored and fused."""
        where = RecordFilter(
            scope=query.scope,
            kinds=query.kinds,
            as_of=query.as_of,
            include_superseded=query.include_superseded,
        )
        candidates = max(query.top_k * 4, _MIN_CANDIDATES)
        # The keyword search needs no vector: it runs while the query is embedded.
        vectors, keyword = await asyncio.gather(
            self.embedder.embed([query.query]),
            self.records.keyword_matches(query.query, where, candidates),
        )
        nearest = await self._nearest(
            vectors[0],
            VectorFilter(
                tenant=query.scope.tenant,
                agent_id=query.scope.agent_id or None,
                user_id=query.scope.user_id or None,
                session_id=query.scope.session_id or None,
                kinds=query.kinds,
                current_only=query.as_of is None and not query.include_superseded,
                as_of=None if query.include_superseded else query.as_of,
            ),
            where,
            candidates,
        )
        records = {record.id: record for record, _ in keyword.values()}
        records.update((record.id, record) for record, _ in nearest)
        return rank(
            list(records.values()),
            similarities={record.id: similarity for record, similarity in nearest},
            keyword_ranks={record_id: found for record_id, (_, found) in keyword.items()},
            now=query.as_of or self.clock(),
            weights=self.weights,
            top_k=query.top_k,
            min_score=query.min_score,
        )

    async def _nearest(
        self, vector: list[float], vector_filter: VectorFilter, where: RecordFilter, limit: int
    ) -> list[tuple[MemoryRecord, float]]:
        """The records nearest to ``vector`` that pass ``where``, with their similarity."""
        if isinstance(self.vectors, PgVectorIndex):
            # Vectors and records share the database: one statement finds and loads them.
            return await self.records.nearest(
                self.vectors.nearest_query(vector, where=vector_filter, limit=limit), where
            )
        hits = await self.vectors.search(vector, where=vector_filter, limit=limit)
        found = {r.id: r for r in await self.records.load([h.record_id for h in hits], where)}
        return [(found[h.record_id], h.similarity) for h in hits if h.record_id in found]


def snapshot(record: MemoryRecord) -> MemorySnapshot:
    return MemorySnapshot.model_validate(
        {
            "id": record.id,
            "scope": {
                "tenant": record.scope.tenant,
                "agent_id": record.scope.agent_id,
                "user_id": record.scope.user_id,
                "session_id": record.scope.session_id,
            },
            "kind": str(record.kind),
            "content": record.content,
            "subject": record.subject,
            "metadata": record.metadata,
            "importance": record.importance,
            "source": {"task_id": record.source.task_id, "step": record.source.step},
            "valid_from": record.valid_from,
            "valid_to": record.valid_to,
            "superseded_by": record.superseded_by,
            "created_at": record.created_at,
            "expires_at": record.expires_at,
            "merged_count": record.merged_count,
            "forgotten": record.forgotten,
        }
    )
