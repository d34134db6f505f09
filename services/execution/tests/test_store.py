"""Reading a task back: the calls of its last step still unanswered come with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

import pytest

from mainstay_common.db import Outbox
from mainstay_execution.settings import ExecutionSettings
from mainstay_execution.tasks import Tasks
from mainstay_execution.toolcalls import ToolCalls

if TYPE_CHECKING:
    from mainstay_common.bus import Bus
    from mainstay_common.db import Database

pytestmark = pytest.mark.real


async def test_a_task_is_loaded_with_the_unanswered_calls_of_its_last_step(
    database: Database,
) -> None:
    outbox = Outbox(database)
    tasks = Tasks(database, cast("Bus", None), outbox)  # loading publishes nothing
    await database.execute(
        "INSERT INTO tasks (task_id, tenant, agent, partition, input, token, state, steps)"
        " VALUES ('t-1', 'acme', 'writer', 0, 'hi', 'token', 'waiting', 2)"
    )
    retry_at = datetime.now(UTC) + timedelta(seconds=30)
    calls = [  # (step, idx, result, attempts, failed_attempt, retry_at)
        (1, 0, None, 1, 0, None),  # an earlier step: not the task's to wait for now
        (2, 0, None, 2, 2, retry_at),  # failed twice, retried in 30 s
        (2, 1, {"ok": True}, 1, 0, None),  # answered
        (2, 2, None, 1, 0, None),  # sent, not answered yet
    ]
    for step, idx, result, attempts, failed, retry in calls:
        await database.execute(
            "INSERT INTO tool_calls (task_id, step, idx, call_id, tool, arguments,"
            " idempotency_key, result, attempts, failed_attempt, retry_at)"
            " VALUES ('t-1', $1, $2, $3, 'noop', '{\"a\": 1}', $4, $5::jsonb, $6, $7, $8)",
            step,
            idx,
            f"call-{step}-{idx}",
            f"t-1:{step}:{idx}",
            None if result is None else json.dumps(result),
            attempts,
            failed,
            retry,
        )
    task = await tasks.load("t-1")
    assert task is not None
    assert task.unanswered is not None
    assert [(row["step"], row["idx"]) for row in task.unanswered] == [(2, 0), (2, 2)]
    assert task.unanswered[0]["retry_at"] == retry_at
    assert json.loads(task.unanswered[0]["arguments"]) == {"a": 1}

    tools = ToolCalls(database, cast("Bus", None), outbox, ExecutionSettings())
    now = datetime.now(UTC)
    read_with_the_task = await tools.progress("t-1", 2, now, task.unanswered)
    read_alone = await tools.progress("t-1", 2, now)
    assert read_with_the_task == read_alone
    assert not read_with_the_task.done
    assert read_with_the_task.wake_at == retry_at

    async with database.pool.acquire() as tx, tx.transaction():
        assert (await tasks.load("t-1", tx=tx)).unanswered is None  # type: ignore[union-attr]
