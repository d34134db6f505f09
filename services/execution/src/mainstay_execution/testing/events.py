"""Reading a task's events back from ``execution.evt.task.v1``, as a submitter would.

Shared by the execution service's own tests, the whole-mesh harness
(:mod:`mainstay_execution.testing.mesh`) and the benchmarks.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer

from mainstay_common.bus import start_kafka_client
from mainstay_common.testing import assign_from_beginning, read_records
from mainstay_contracts.execution import TASK_EVENTS

if TYPE_CHECKING:
    from collections.abc import Callable

    from mainstay_common.settings import KafkaSettings

__all__ = ["FINAL_TYPES", "final_events", "task_events"]

FINAL_TYPES = frozenset({"task.completed", "task.failed", "task.cancelled"})
"""The events that end a task."""


async def task_events(
    kafka: KafkaSettings,
    task_id: str,
    until: Callable[[dict[str, Any]], bool] | None = None,
    wait_s: float = 30,
) -> list[dict[str, Any]]:
    """Every event of the task published so far, once one that ``until`` accepts is among
    them (an ``AssertionError`` if none is within ``wait_s``); without ``until``, at once."""
    topic = f"{kafka.topic_prefix}{TASK_EVENTS.name}"
    if until is not None:
        found = await read_records(
            kafka.bootstrap,
            topic,
            count=1,
            accept=lambda r: (
                json.loads(r.value)["task_id"] == task_id and until(json.loads(r.value))
            ),
            wait_s=wait_s,
        )
        assert found, f"task {task_id} never got there"
    return [e for e in await _events_so_far(kafka.bootstrap, topic) if e["task_id"] == task_id]


async def _events_so_far(bootstrap: str, topic: str, wait_s: float = 30) -> list[dict[str, Any]]:
    """Every event of ``topic`` up to its end as of now (an ``AssertionError`` if they
    cannot be read within ``wait_s``, never a silently short list)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await start_kafka_client(consumer, timeout_s=max(wait_s, 30))  # a start is not a read
    try:
        partitions = await assign_from_beginning(consumer, [topic], wait_s=wait_s)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + wait_s
        events: list[dict[str, Any]] = []
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            assert time.monotonic() < deadline, f"{topic} not read to its end in {wait_s} s"
            batch = await consumer.getmany(*partitions, timeout_ms=300)
            for records in batch.values():
                events.extend(json.loads(r.value) for r in records)
        return events
    finally:
        await consumer.stop()


async def final_events(
    kafka: KafkaSettings, task_id: str, wait_s: float = 30
) -> list[dict[str, Any]]:
    """The task's events once it has ended (the last is ``task.completed``, ``task.failed``
    or ``task.cancelled``)."""
    return await task_events(kafka, task_id, lambda e: e["type"] in FINAL_TYPES, wait_s)
