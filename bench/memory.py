"""Benchmark: memory ``Recall`` over gRPC against the raw pgvector query, on N memories.

One run loads ``--n`` memories (default 100,000) into a fresh database and then,
interleaving the measurements so machine noise hits each alike:

* ``grpc_p50_ms`` / ``grpc_p95_ms``: ``Recall`` end to end through the memory
  service's real gRPC server on loopback, with a valid token, scoped to one
  agent, ``top_k=10``: what a caller waits for, embedding of the query included;
* ``raw_p50_ms`` / ``raw_p95_ms``: the nearest-neighbour SQL the service runs
  (``PgVectorIndex.nearest_query``: same scope filter, ``limit 10``) executed with
  asyncpg on a connection carrying its search settings, the query vector
  precomputed;
* ``embed_p50_ms``: embedding the query alone, the share of ``grpc`` that no
  database work can remove;
* ``recall_at_10``: the HNSW path (``PgVectorIndex.search``) against
  ``search_exact`` for the same queries and filters;
* ``p95_ratio = grpc_p95_ms / raw_p95_ms``. Targets: ``p95_ratio`` <= 3,
  ``recall_at_10`` >= 0.95.

``by_agent`` splits the figures per agent, with the plan PostgreSQL chose for
the raw query (``limit 10``) and for the service's (``limit 40``: a Recall asks
the index for ``max(4 * top_k, 40)`` candidates to fuse with the keyword hits).

How the measuring stays fair:

* every side measures every query once, but within a round each side runs a
  different query (offset by a third of the list), and the order of the sides
  rotates: the pages one side's search pulls into PostgreSQL's buffers (the
  index and the table outgrow ``shared_buffers`` at 100k) never serve the other
  side's search for the same vector;
* each measured call is preceded by an idle gap (``--gap-ms``): onnxruntime's
  pool threads busy-wait for tens of milliseconds after an inference, and on a
  2-core machine the next call would otherwise pay for the previous one;
* warm-up queries (``--warmup``) run first on every side and are not counted.

**ef_search.** The service searches with ``hnsw.ef_search`` from its settings
(``MEMORY_VECTORS_HNSW_EF_SEARCH``, default 500), and so does this benchmark
unless ``--ef-search`` overrides it. With the service's default index build
(m 16, ef_construction 64), this corpus gives recall@10 of ~0.90 at 100, ~0.93
at 200, ~0.945 at 300, 0.95-0.956 at 400 (it varies a little from one build to
the next) and ~0.97 at 500: the default is the smallest of those that clears
0.95 with a margin on every fresh build. (Building the index with
ef_construction 200 instead gives ~0.97 already at ef_search 100, for twice the
build time.)

**Corpus.** Seeded and deterministic: templates x vocabularies (people, places,
foods, hobbies, jobs, products, events...) give varied 8-16 word sentences of the
five kinds. The scope layout:

* one tenant (``acme``);
* six agents with skewed shares: ``support`` 35%, ``sales`` 25%, ``concierge``
  15%, ``coach`` 12%, ``travel`` 8%, ``research`` 5%;
* 2,000 users, Zipf-like activity (a few users hold many memories);
* facts, preferences and decisions are user-level (no session); 60% of
  episodes and observations belong to one of five sessions of their user;
* kinds: fact 30%, preference 25%, episode 20%, observation 13%, decision 12%;
* about a third of facts and preferences carry a subject (``user.home_city``,
  ``user.job``, ``user.favourite_food``, ``user.reply_language``); a later write
  with the same subject in the same scope supersedes the earlier one, so the
  corpus holds history rows the current-only filter must skip;
* writes spread over the last year, in time order; a third of observations
  carry a TTL (400 days, so none expires during the run).

Queries are natural questions drawn from the same vocabularies (a separate seed
stream), never a corpus sentence, each scoped to one agent drawn uniformly.

**Loading.** 100,000 ``Remember`` calls one by one would take far too long on
2 cores, so the corpus goes in through the service's own pieces instead: the
service's embedder (``create_embedder``) in large batches; the service's pure
curation (``decide``, ``supersede``, ``merge_into``) replayed write by write in
time order against the same neighbours its search would return (the 5 nearest
current records of the same scope and kind), so duplicates, merges and
superseded versions come out as the service would have made them; records
COPYed with exactly the columns ``RecordStore.insert`` writes (a sample is read
back through ``RecordStore`` and compared); vectors through
``PgVectorIndex.upsert``. The HNSW index is dropped for the load and rebuilt by
``PgVectorIndex.start`` (the service's own DDL and settings) afterwards, then
``VACUUM (ANALYZE)`` and a checkpoint, so the measurement starts from the state
autovacuum would leave rather than paying for hint bits and a checkpoint
mid-run. The outbox events the writes would have announced are not produced:
nothing in a Recall reads them.

Every run measures from scratch in a database of its own, dropped at the end;
``--reuse`` keeps a database named after ``--n`` and ``--seed`` and reuses it when
it already holds that corpus. Uses MAINSTAY_KAFKA_BOOTSTRAP / MAINSTAY_POSTGRES_DSN
when both are set, otherwise starts the embedded broker and PostgreSQL. Progress
goes to stderr; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import numpy as np
from _memory_corpus import (  # bench/, the script's own folder, is on sys.path
    AGENTS,
    CORPUS_VERSION,
    TENANT,
    Query,
    Write,
    corpus,
    curate,
    questions,
)
from _stack import stack  # bench/, the script's own folder, is on sys.path
from asyncpg.exceptions import InsufficientPrivilegeError

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay.memory.v1 import memory_pb2_grpc
from mainstay_common.auth import TokenSigner
from mainstay_common.db import LIBRARY_MIGRATIONS, Database, load_migrations
from mainstay_common.grpc import create_channel
from mainstay_common.settings import AuthSettings, KafkaSettings, PostgresSettings
from mainstay_common.testing import with_database
from mainstay_memory.app import MIGRATIONS, SCHEMA, MemoryApp
from mainstay_memory.domain.ports import IndexedVector, VectorFilter
from mainstay_memory.settings import EmbeddingSettings, MemorySettings, VectorSettings
from mainstay_memory.store.embedding import create_embedder
from mainstay_memory.store.records import RECORD_COLUMNS, RecordStore, record_row
from mainstay_memory.store.vectors_pgvector import PgVectorIndex

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from mainstay_memory.domain.model import MemoryRecord
    from mainstay_memory.domain.ports import Vector

HNSW_INDEX = "record_vectors_embedding_hnsw"

# -- loading ---------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[memory bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Progress:
    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.started, self.last = what, total, time.perf_counter(), 0.0

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < 5 and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate else float("inf")
        log(f"{self.what}: {done:,}/{self.total:,} ({rate:,.0f}/s, ETA {eta:,.0f} s)")


@dataclass(frozen=True)
class Loaded:
    records: int
    current: int
    outcomes: dict[str, int]
    embed_s: float
    texts_per_s: float
    write_s: float
    index_s: float
    vacuum_s: float
    load_s: float


async def load(dsn: str, writes: Sequence[Write], *, seed: int, batch: int) -> Loaded:
    started = time.perf_counter()
    embedding = EmbeddingSettings(batch_size=batch)
    async with (
        # The HNSW build and VACUUM of 100k vectors outlast the 30 s a service command gets.
        Database(
            PostgresSettings(dsn=dsn, pool_max_size=4, command_timeout_s=3600), schema=SCHEMA
        ) as database,
        create_embedder(embedding) as embedder,
    ):
        await database.migrate(LIBRARY_MIGRATIONS, load_migrations(MIGRATIONS, namespace="memory"))
        vectors = PgVectorIndex(database, VectorSettings(), dimension=embedder.dimension)
        await vectors.start()  # pins the column; its HNSW index is rebuilt after the load
        await database.execute(f"DROP INDEX {HNSW_INDEX}")

        texts = [w.command.content for w in writes]
        matrix = np.empty((len(texts), embedder.dimension), dtype=np.float32)
        progress = Progress("embedding", len(texts))
        chunk = batch * 16  # the embedder sorts a call's texts by length: less padding
        embed_started = time.perf_counter()
        for start in range(0, len(texts), chunk):
            part = await embedder.embed(texts[start : start + chunk])
            matrix[start : start + len(part)] = np.asarray(part, dtype=np.float32)
            progress.update(start + len(part))
        embed_s = time.perf_counter() - embed_started

        write_started = time.perf_counter()
        curated = curate(writes, matrix, seed)
        records = list(curated.records.values())
        log(f"curation: {len(writes):,} writes -> {len(records):,} records {curated.outcomes}")
        async with database.pool.acquire() as conn:
            await conn.copy_records_to_table(
                "records",
                schema_name=SCHEMA,
                columns=list(RECORD_COLUMNS),
                records=[record_row(r) for r in records],
            )
        progress = Progress("vectors", len(records))
        with_vectors = [r for r in records if r.id in curated.vector_of]
        for start in range(0, len(with_vectors), 2000):
            part_records = with_vectors[start : start + 2000]
            await vectors.upsert(
                [
                    IndexedVector(
                        r.id,
                        r.scope,
                        r.kind,
                        matrix[curated.vector_of[r.id]].tolist(),
                        r.valid_from,
                        r.valid_to,
                    )
                    for r in part_records
                ]
            )
            progress.update(start + len(part_records))
        write_s = time.perf_counter() - write_started
        await check_round_trip(database, records, seed)

        index_started = time.perf_counter()
        log("building the HNSW index (PgVectorIndex.start)")
        await PgVectorIndex(database, VectorSettings(), dimension=embedder.dimension).start()
        index_s = time.perf_counter() - index_started
        vacuum_started = time.perf_counter()
        await database.execute("VACUUM (ANALYZE) records, record_vectors")
        async with database.pool.acquire() as conn:
            try:
                await conn.execute("CHECKPOINT")
            except InsufficientPrivilegeError:
                log("CHECKPOINT refused (needs pg_checkpoint): one may land mid-run")
        vacuum_s = time.perf_counter() - vacuum_started
        await database.execute(
            "CREATE TABLE bench_corpus (version int, n int, seed int, records int, current int)"
        )
        current = sum(1 for r in records if r.current)
        await database.execute(
            "INSERT INTO bench_corpus VALUES ($1, $2, $3, $4, $5)",
            CORPUS_VERSION,
            len(writes),
            seed,
            len(records),
            current,
        )
    return Loaded(
        records=len(records),
        current=current,
        outcomes=curated.outcomes,
        embed_s=embed_s,
        texts_per_s=len(texts) / embed_s,
        write_s=write_s,
        index_s=index_s,
        vacuum_s=vacuum_s,
        load_s=time.perf_counter() - started,
    )


async def check_round_trip(database: Database, records: Sequence[MemoryRecord], seed: int) -> None:
    """The stored rows read back through RecordStore as the records the service would hold."""
    sample = random.Random(seed).sample(list(records), min(200, len(records)))
    async with database.pool.acquire() as conn:
        found = {
            r.id: r for r in await RecordStore(database).get_many(conn, [r.id for r in sample])
        }
    for record in sample:
        back = found.get(record.id)
        # importance is a float4 column: compare it at that precision
        if back is None or replace(back, importance=record.importance) != record:
            raise SystemExit(f"record {record.id} did not read back as written: {back}")


# -- measuring ---------------------------------------------------------------------


@dataclass
class Timings:
    """Seconds per measured call, with the agent the query was scoped to."""

    samples: list[tuple[str, float]] = field(default_factory=list)

    def ms(self, q: float, agent: str | None = None) -> float:
        values = [s for a, s in self.samples if agent in (None, a)]
        return round(float(np.percentile(np.asarray(values) * 1000, q)), 3)


def scope_filter(agent: str) -> VectorFilter:
    """What MemoryService.recall searches for a Recall scoped to ``agent``."""
    return VectorFilter(tenant=TENANT, agent_id=agent)


@contextlib.asynccontextmanager
async def serve(
    kafka: str, dsn: str, vectors: VectorSettings
) -> AsyncIterator[tuple[MemoryApp, TokenSigner]]:
    signer = TokenSigner.generate()
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as home:
        jwks = Path(home) / "jwks.json"
        jwks.write_text(json.dumps(signer.jwks()))
        settings = MemorySettings(
            grpc_port=0,
            http_port=0,
            shutdown_grace_s=2.0,
            kafka=KafkaSettings(bootstrap=kafka, topic_prefix=f"mb{uuid.uuid4().hex[:8]}."),
            postgres=PostgresSettings(dsn=dsn),
            auth=AuthSettings(jwks_file=str(jwks)),
            vectors=vectors,
        )
        async with MemoryApp(settings) as app:
            yield app, signer


async def measure(
    app: MemoryApp,
    signer: TokenSigner,
    dsn: str,
    queries: Sequence[Query],
    *,
    warmup: int,
    gap_s: float,
) -> dict[str, Any]:
    service = app.service
    assert service is not None
    index = service.vectors
    assert isinstance(index, PgVectorIndex), "the benchmark measures the pgvector backend"
    embedder = service.embedder
    tokens = {
        agent: [
            (
                "authorization",
                "Bearer "
                + signer.mint(
                    subject=agent,
                    tenant=TENANT,
                    scopes=[f"memory:read:{agent}"],
                    ttl=timedelta(hours=2),
                ),
            )
        ]
        for agent in AGENTS
    }
    log(f"embedding {len(queries)} queries for the raw side")
    vectors: list[Vector] = [(await embedder.embed([q.text]))[0] for q in queries]
    nearest = [
        index.nearest_query(v, where=scope_filter(q.agent), limit=10)
        for v, q in zip(vectors, queries, strict=True)
    ]
    conn = await asyncpg.connect(
        dsn, server_settings={"search_path": f"{SCHEMA},public", **nearest[0].settings}
    )
    channel = create_channel(f"127.0.0.1:{app.grpc_port}")
    grpc, raw, embed = Timings(), Timings(), Timings()
    empty = 0
    try:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)

        async def grpc_call(i: int) -> None:
            nonlocal empty
            q = queries[i]
            reply = await stub.Recall(
                pb.RecallRequest(
                    scope=pb.Scope(tenant=TENANT, agent_id=q.agent), query=q.text, top_k=10
                ),
                metadata=tokens[q.agent],
                timeout=10.0,
            )
            empty += not reply.hits

        async def raw_call(i: int) -> None:
            await conn.fetch(nearest[i].sql, *nearest[i].args)

        async def embed_call(i: int) -> None:
            await embedder.embed([queries[i].text])

        calls: list[tuple[Timings, Callable[[int], Awaitable[None]]]] = [
            (grpc, grpc_call),
            (raw, raw_call),
            (embed, embed_call),
        ]
        for i in range(warmup):
            for _sink, call in calls:
                await call(i)
        # Each round measures every side once, each on a different query: the pages
        # one side's search brings into PostgreSQL's buffers must not serve the
        # other side's next search for the same vector. Over the run every side
        # sees every query once, and the order within a round rotates.
        measured = len(queries) - warmup
        progress = Progress("measuring", measured)
        offsets = [side * measured // len(calls) for side in range(len(calls))]
        sides = list(zip(calls, offsets, strict=True))
        for n in range(measured):
            shift = n % len(sides)
            for (sink, call), offset in sides[shift:] + sides[:shift]:
                i = warmup + (n + offset) % measured
                await asyncio.sleep(gap_s)
                started = time.perf_counter()
                await call(i)
                sink.samples.append((queries[i].agent, time.perf_counter() - started))
            progress.update(n + 1)
        plans = {}
        for agent in AGENTS:
            # limit 10 as the raw query runs, 40 as a Recall with top_k=10 asks
            shapes = set()
            for limit in (10, 40):
                probe = index.nearest_query(vectors[0], where=scope_filter(agent), limit=limit)
                rows = await conn.fetch(f"EXPLAIN (COSTS OFF) {probe.sql}", *probe.args)
                plan = "\n".join(str(r[0]) for r in rows)
                shapes.add("hnsw" if HNSW_INDEX in plan else "exact")
            plans[agent] = "+".join(sorted(shapes))
    finally:
        await channel.close()
        await conn.close()

    log("recall@10: HNSW path against exact search")
    recalls: list[float] = []
    recalls_by: dict[str, list[float]] = {agent: [] for agent in AGENTS}
    for i, (v, q) in enumerate(zip(vectors, queries, strict=True)):
        if i < warmup:
            continue
        approx = await index.search(v, where=scope_filter(q.agent), limit=10)
        exact = await index.search_exact(v, where=scope_filter(q.agent), limit=10)
        if exact:
            truth = {h.record_id for h in exact}
            recalls.append(len(truth & {h.record_id for h in approx}) / len(truth))
            recalls_by[q.agent].append(recalls[-1])
    return {
        "embed_p50_ms": embed.ms(50),
        "embed_p95_ms": embed.ms(95),
        "grpc_p50_ms": grpc.ms(50),
        "grpc_p95_ms": grpc.ms(95),
        "raw_p50_ms": raw.ms(50),
        "raw_p95_ms": raw.ms(95),
        "p95_ratio": round(grpc.ms(95) / raw.ms(95), 3),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "queries": len(grpc.samples),
        "empty_recalls": empty,
        "ef_search": int(nearest[0].settings.get("hnsw.ef_search", 0)),
        "by_agent": {
            agent: {
                "share": AGENTS[agent],
                "plan": plans[agent],
                "grpc_p50_ms": grpc.ms(50, agent),
                "grpc_p95_ms": grpc.ms(95, agent),
                "raw_p50_ms": raw.ms(50, agent),
                "raw_p95_ms": raw.ms(95, agent),
                "recall_at_10": round(float(np.mean(recalls_by[agent])), 4),
            }
            for agent in AGENTS
            if recalls_by[agent]  # a short run may draw no query for a small agent
        },
    }


# -- the run ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bench_database(
    admin_dsn: str, name: str, *, keep: bool, corpus_key: tuple[int, int, int]
) -> AsyncIterator[str]:
    """A database of the run's own; kept (``keep``) only while it holds ``corpus_key``."""
    admin = await asyncpg.connect(admin_dsn)
    dsn = with_database(admin_dsn, name)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and (not keep or (await stored_corpus(dsn) or ())[:3] != corpus_key):
            # A half-finished load, another generator version or no --reuse: start over.
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = False
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
            # HNSW builds in memory far faster than once it spills; per database, so
            # nothing else on the server is touched.
            await admin.execute(f"ALTER DATABASE \"{name}\" SET maintenance_work_mem = '1GB'")
        yield dsn
    finally:
        try:
            if not keep:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def stored_corpus(dsn: str) -> tuple[int, int, int, int, int] | None:
    """``(version, n, seed, records, current)`` of the corpus a kept database holds."""
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('memory.bench_corpus') IS NOT NULL"):
            return None
        row = await conn.fetchrow("SELECT * FROM memory.bench_corpus")
        return tuple(row) if row else None
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    name = (
        f"bench_memory_{args.n}_{args.seed}"
        if args.reuse
        else f"bench_memory_{uuid.uuid4().hex[:8]}"
    )
    queries = questions(args.warmup + args.queries, args.seed)
    key = (CORPUS_VERSION, args.n, args.seed)
    async with (
        stack() as (kafka, admin_dsn),
        bench_database(admin_dsn, name, keep=args.reuse, corpus_key=key) as dsn,
    ):
        stored = await stored_corpus(dsn)
        if stored is not None:
            log(f"--reuse: database {name} already holds the corpus ({stored[3]:,} records)")
            loaded: Loaded | None = None
            records, current = stored[3], stored[4]
        else:
            writes = corpus(args.n, args.seed, datetime.now(UTC))
            log(
                f"corpus: {len(writes):,} writes, e.g. {writes[len(writes) // 2].command.content!r}"
            )
            loaded = await load(dsn, writes, seed=args.seed, batch=args.batch)
            records, current = loaded.records, loaded.current
            log(
                f"loaded in {loaded.load_s:,.0f} s (embedding {loaded.embed_s:,.0f} s at"
                f" {loaded.texts_per_s:,.0f} texts/s, writes {loaded.write_s:,.0f} s,"
                f" HNSW build {loaded.index_s:,.0f} s, VACUUM ANALYZE {loaded.vacuum_s:,.0f} s)"
            )
        vectors = VectorSettings()
        if args.ef_search:
            vectors = VectorSettings(hnsw_ef_search=args.ef_search)
        async with serve(kafka, dsn, vectors) as (app, signer):
            figures = await measure(
                app, signer, dsn, queries, warmup=args.warmup, gap_s=args.gap_ms / 1000
            )
    result: dict[str, Any] = {"benchmark": "memory", "n": args.n, **figures}
    result.update(
        {
            "records": records,
            "current_records": current,
            "target_p95_ratio": 3.0,
            "target_recall_at_10": 0.95,
            "reused": loaded is None,
        }
    )
    if loaded is not None:
        result.update(
            {
                "load_s": round(loaded.load_s, 1),
                "embed_load_s": round(loaded.embed_s, 1),
                "texts_per_s": round(loaded.texts_per_s, 1),
                "write_s": round(loaded.write_s, 1),
                "index_build_s": round(loaded.index_s, 1),
                "vacuum_analyze_s": round(loaded.vacuum_s, 1),
                "curation": loaded.outcomes,
            }
        )
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="memories to load")
    parser.add_argument("--queries", type=int, default=300, help="measured queries")
    parser.add_argument("--warmup", type=int, default=30, help="queries run before measuring")
    parser.add_argument("--seed", type=int, default=7, help="seeds the corpus and the queries")
    parser.add_argument("--batch", type=int, default=128, help="embedding batch while loading")
    parser.add_argument(
        "--gap-ms", type=float, default=60.0, help="idle time before each measured call"
    )
    parser.add_argument(
        "--ef-search",
        type=int,
        default=0,
        help="hnsw.ef_search the service searches with (0: the service's own default, 500)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database (named after --n and --seed) and reuse its corpus next time",
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
