"""Reading a task's events back from ``execution.evt.task.v1``, as a submitter would.

Shared by the execution service's own tests, the whole-mesh harness
(:mod:`mainstay_execution.testing.mesh`) and the benchmarks.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mainstay_common.testing import read_records
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
    every = await read_records(
        kafka.bootstrap,
        topic,
        count=10_000,
        accept=lambda r: json.loads(r.value)["task_id"] == task_id,
        wait_s=0.5,
    )
    return [json.loads(r.value) for r in every]


async def final_events(
    kafka: KafkaSettings, task_id: str, wait_s: float = 30
) -> list[dict[str, Any]]:
    """The task's events once it has ended (the last is ``task.completed``, ``task.failed``
    or ``task.cancelled``)."""
    return await task_events(kafka, task_id, lambda e: e["type"] in FINAL_TYPES, wait_s)
