"""What the execution benchmarks share: the whole mesh, a model that steps through tools,
and a reader of the task events (and tool commands and results) as they are published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from _stack import stack  # bench/, the script's own folder, is on sys.path
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from mainstay_common.lifecycle import cancel_and_wait, within
from mainstay_common.testing import TopicTail
from mainstay_contracts.execution import TASK_EVENTS
from mainstay_contracts.ledger import LEDGER_EVENTS
from mainstay_contracts.tools import INVOKE_TOOL, TOOL_CALLS
from mainstay_execution.testing.fake_models import CallTool, HttpFailure, Reply
from mainstay_execution.testing.mesh import running_mesh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from aiokafka import ConsumerRecord

    from mainstay_common.settings import KafkaSettings
    from mainstay_execution.testing.fake_models import FakeRequest, Step
    from mainstay_execution.testing.mesh import FullMesh

__all__ = [
    "FINAL",
    "Baseline",
    "Observed",
    "Observer",
    "RoundTrip",
    "StepResponder",
    "epoch_ms",
    "log",
    "mesh",
    "ms_between",
]

FINAL = frozenset({"task.completed", "task.failed", "task.cancelled"})


def log(bench: str, message: str) -> None:
    print(f"[{bench} bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def mesh(
    prefix: str, *, gateway_process: bool = False
) -> AsyncIterator[tuple[FullMesh, str]]:
    """The whole mesh but execution (see :mod:`mainstay_execution.testing.mesh`) and the
    PostgreSQL server's DSN, on the embedded broker and PostgreSQL unless
    ``MAINSTAY_KAFKA_BOOTSTRAP`` / ``MAINSTAY_POSTGRES_DSN`` name others; the tools
    gateway in its own process with ``gateway_process``."""
    with tempfile.TemporaryDirectory(prefix=prefix) as home_dir:
        async with (
            stack() as (bootstrap, dsn),
            running_mesh(bootstrap, dsn, Path(home_dir), gateway_process=gateway_process) as m,
        ):
            yield m, dsn


class StepResponder:
    """A model that calls one tool a step (``tools`` in turn) until the conversation holds
    ``tool_steps`` tool results, then answers; ``failure_rate`` of its answers are a
    transient 500 instead. Stateless over the conversation, so a resumed task goes on
    where it was. :attr:`arrivals` notes when each request came, by the task's input."""

    def __init__(
        self,
        tools: Sequence[str],
        tool_steps: int,
        *,
        failure_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self._tools = list(tools)
        self._tool_steps = tool_steps
        self._failure_rate = failure_rate
        self._random = random.Random(seed)
        self.failures = 0
        """Transient failures answered so far."""
        self.arrivals: defaultdict[str, list[float]] = defaultdict(list)
        """Epoch milliseconds of each request, by the conversation's first user message."""

    def __call__(self, request: FakeRequest) -> Step:
        prompt = next((m.content for m in request.messages if m.role == "user"), "")
        self.arrivals[prompt].append(time.time() * 1000)
        if self._failure_rate and self._random.random() < self._failure_rate:
            self.failures += 1
            return HttpFailure(500, "injected transient failure")
        done = sum(1 for message in request.messages if message.role == "tool")
        if done < self._tool_steps:
            tool = self._tools[done % len(self._tools)]
            return Reply(tool_calls=[CallTool(tool, {})], input_tokens=20, output_tokens=5)
        return Reply("done", input_tokens=20, output_tokens=2)


@dataclass
class Observed:
    """What was published about one task, in the order it was read."""

    events: list[dict[str, Any]] = field(default_factory=list)
    invokes: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """``(record timestamp in ms, InvokeToolCommand)``."""
    results: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """``(record timestamp in ms, ToolCallEvent)``."""
    ledger: list[dict[str, Any]] = field(default_factory=list)
    """The ledger's events about the task (with ``Observer(ledger=True)``)."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def first(self, kind: str, step: int | None = None) -> dict[str, Any] | None:
        return next(
            (e for e in self.events if e["type"] == kind and (step is None or e["step"] == step)),
            None,
        )


class Observer:
    """Reads ``execution.evt.task.v1``, ``tools.cmd.invoke-tool.v1`` and
    ``tools.evt.tool-call.v1`` from their beginning, without a consumer group, into
    :class:`Observed` records per task. Start it once the mesh created those topics."""

    def __init__(
        self, kafka: KafkaSettings, *, ledger: bool = False, fetch_max_wait_ms: int | None = None
    ) -> None:
        """``fetch_max_wait_ms``: the services' unless given; a benchmark that times tasks
        by when their end is read, rather than by their events' timestamps, wants a short
        one (on the embedded broker a fetch waits up to it before answering), at the cost
        of the broker's CPU."""
        self._kafka = kafka
        self._names = {
            f"{kafka.topic_prefix}{TASK_EVENTS.name}": "event",
            f"{kafka.topic_prefix}{INVOKE_TOOL.name}": "invoke",
            f"{kafka.topic_prefix}{TOOL_CALLS.name}": "result",
        }
        if ledger:  # the ledger's events about each task too, in :attr:`Observed.ledger`
            self._names[f"{kafka.topic_prefix}{LEDGER_EVENTS.name}"] = "ledger"
        self.tasks: defaultdict[str, Observed] = defaultdict(Observed)
        self._tail = TopicTail(
            kafka.bootstrap,
            self._names,
            self._on_record,
            fetch_max_wait_ms=fetch_max_wait_ms or kafka.fetch_max_wait_ms,
        )

    async def __aenter__(self) -> Observer:
        await self._tail.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tail.__aexit__(*exc)

    def _on_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        kind = self._names[record.topic]
        payload = json.loads(record.value)
        task = self.tasks[payload.get("task_id", "")]
        if kind == "event":
            task.events.append(payload)
            if payload["type"] in FINAL:
                task.ended.set()
        elif kind == "ledger":
            task.ledger.append(payload)
        elif kind == "invoke":
            task.invokes.append((record.timestamp, payload))
        else:
            task.results.append((record.timestamp, payload))

    async def ended(self, task_id: str, wait_s: float) -> bool:
        """Whether the task ended within ``wait_s``."""
        try:
            await within(self.tasks[task_id].ended.wait(), wait_s)
        except TimeoutError:
            return False
        return True


def ms_between(start: str | float, end: str | float) -> float:
    """Milliseconds from ``start`` to ``end``: ISO timestamps, or epoch milliseconds."""
    return epoch_ms(end) - epoch_ms(start)


def epoch_ms(value: str | float) -> float:
    """An ISO timestamp (or epoch milliseconds) as epoch milliseconds."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp() * 1000
    return float(value)


# -- the baseline ------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundTrip:
    """One of :class:`Baseline`'s measurements, in milliseconds."""

    kafka_ms: float
    commit_ms: float

    @property
    def total_ms(self) -> float:
        return self.kafka_ms + self.commit_ms


class Baseline:
    """One Kafka round trip and one PostgreSQL commit, as the services are configured.

    A round trip is what a step's tool call needs at the least: a request record
    produced (acks=all), consumed by a responder that produces a reply record,
    and the reply consumed back; then one small INSERT committed. Its two topics
    have the partitions of the two a tool call crosses (``tools.cmd.invoke-tool.v1``
    and ``tools.evt.tool-call.v1``, six each), and each reader fetches all of them,
    as the gateway's and execution's consumers do: the embedded broker answers a
    fetch over six partitions some 3-4 ms later than one over a single partition.
    """

    def __init__(self, fm: FullMesh, dsn: str) -> None:
        self._kafka = fm.kafka
        self._dsn = dsn
        self._requests = f"{fm.kafka.topic_prefix}bench.baseline.requests"
        self._replies = f"{fm.kafka.topic_prefix}bench.baseline.replies"
        self._producer = AIOKafkaProducer(bootstrap_servers=fm.kafka.bootstrap, acks="all")
        self._consumer = self._new_consumer()
        self._responder = self._new_consumer()
        self._responding: asyncio.Task[None] | None = None
        self._db: asyncpg.Connection | None = None

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=self._kafka.fetch_max_wait_ms,
        )

    async def __aenter__(self) -> Baseline:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(self._requests, INVOKE_TOOL.partitions, 1),
                    NewTopic(self._replies, TOOL_CALLS.partitions, 1),
                ]
            )
        finally:
            await admin.close()
        await self._producer.start()
        for consumer, topic, partitions in (
            (self._consumer, self._replies, TOOL_CALLS.partitions),
            (self._responder, self._requests, INVOKE_TOOL.partitions),
        ):
            await consumer.start()
            assigned = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
        self._responding = asyncio.create_task(self._respond())
        self._db = await asyncpg.connect(self._dsn)
        await self._db.execute(
            "CREATE TABLE steps (id text PRIMARY KEY, step int, at timestamptz NOT NULL)"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._responding)
        await self._responder.stop()
        await self._consumer.stop()
        await self._producer.stop()
        if self._db is not None:
            await self._db.close()

    async def _respond(self) -> None:
        """The other end of the round trip: every request answered with a reply."""
        while True:
            batch = await self._responder.getmany(timeout_ms=self._kafka.poll_timeout_ms)
            for records in batch.values():
                for record in records:
                    await self._producer.send_and_wait(self._replies, record.value, key=record.key)

    async def once(self) -> RoundTrip:
        """One request -> reply round trip, then one commit; how long each took."""
        assert self._db is not None
        marker = uuid.uuid4().hex.encode()
        started = time.perf_counter()
        await self._producer.send_and_wait(self._requests, marker, key=marker)
        seen = False
        while not seen:
            batch = await self._consumer.getmany(timeout_ms=self._kafka.poll_timeout_ms)
            seen = any(r.value == marker for records in batch.values() for r in records)
        consumed = time.perf_counter()
        async with self._db.transaction():
            await self._db.execute(
                "INSERT INTO steps VALUES ($1, $2, $3)", marker.decode(), 1, datetime.now(UTC)
            )
        done = time.perf_counter()
        return RoundTrip(kafka_ms=(consumed - started) * 1000, commit_ms=(done - consumed) * 1000)
