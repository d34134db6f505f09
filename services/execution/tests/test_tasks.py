"""Tasks through the real broker and PostgreSQL, answered by the scripted model server."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import asyncpg
import pytest

from mainstay_execution.testing.fake_models import CallTool, HttpFailure, Reply, Stall

from .conftest import new_tenant

if TYPE_CHECKING:
    from .conftest import Mesh

pytestmark = pytest.mark.real


def types(events: list[dict[str, object]]) -> list[object]:
    return [e["type"] for e in events]


async def test_a_task_runs_its_agent_to_a_final_answer(mesh: Mesh) -> None:
    tenant = new_tenant()
    await mesh.agent(tenant, "writer", system_prompt="You write haiku.")
    mesh.models.script("primary", [Reply("an old silent pond", input_tokens=12)])
    async with mesh.instance():
        await mesh.known(tenant, "writer")
        task_id = await mesh.submit(tenant, "writer", "a haiku about ponds")
        events = await mesh.final(task_id)
    assert types(events) == [
        "task.accepted",
        "task.started",
        "step.started",
        "step.completed",
        "task.completed",
    ]
    assert events[1]["details"] == {"memories": 0}  # no memory service configured here
    assert events[-1]["answer"] == "an old silent pond"
    assert events[3]["model"] == "primary"
    assert events[3]["details"]["input_tokens"] == 12
    assert all(e["agent_version"] == 1 for e in events)
    (request,) = [r for r in mesh.models.requests_for("primary") if "ponds" in str(r.messages)]
    assert [m.role for m in request.messages] == ["system", "user"]
    # The id is the idempotency key: the same submission again changes nothing.
    async with mesh.instance():
        await mesh.submit(tenant, "writer", "a haiku about ponds", task_id=task_id)
        await asyncio.sleep(1.0)
    again = await mesh.final(task_id)
    assert types(again) == types(events)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown agent", "agent: no agent 'ghost'"),
        ("quarantined", "agent: 'jailed' is quarantined: restart storm"),
        ("bad token", "token:"),
        ("other tenant", "token: submitting tasks in another tenant needs the '*' scope"),
        ("no scope", "token: missing scope 'execution:submit'"),
    ],
)
async def test_a_task_that_cannot_run_fails_at_once_naming_why(
    mesh: Mesh, case: str, reason: str
) -> None:
    tenant = new_tenant()
    await mesh.agent(tenant, "writer")
    await mesh.agent(tenant, "jailed", quarantined=True, reason="restart storm")
    agent, token = "writer", None
    if case == "unknown agent":
        agent = "ghost"
    elif case == "quarantined":
        agent = "jailed"
    elif case == "bad token":
        token = "not-a-token"
    elif case == "other tenant":
        token = mesh.token("someone-else")
    elif case == "no scope":
        token = mesh.token(tenant, scopes=("memory:read",))
    async with mesh.instance():
        await mesh.known(tenant, "jailed")
        task_id = await mesh.submit(tenant, agent, "hello", token=token)
        events = await mesh.final(task_id)
    assert types(events) == ["task.failed"]
    assert reason in events[0]["reason"]


async def test_transient_failures_are_retried_and_an_overloaded_model_falls_back(
    mesh: Mesh,
) -> None:
    tenant = new_tenant()
    await mesh.agent(tenant, "steady")
    mesh.models.script(
        "primary", [HttpFailure(500), HttpFailure(429, retry_after=0.1), HttpFailure(503)]
    )
    mesh.models.script("backup", [Reply("answered by the backup")])
    async with mesh.instance():
        await mesh.known(tenant, "steady")
        task_id = await mesh.submit(tenant, "steady", "hello")
        events = await mesh.final(task_id)
    assert types(events) == [
        "task.accepted",
        "task.started",
        "step.started",
        "task.retrying",  # 500: transient, backoff
        "task.retrying",  # 429: waits for Retry-After
        "task.retrying",  # 503: overloaded, next model
        "step.completed",
        "task.completed",
    ]
    assert events[3]["reason"].startswith("transient")
    assert events[4]["details"]["retry_after_s"] == 0.1
    assert events[5]["details"] == {"fallback_from": "primary", "fallback_to": "backup"}
    assert events[6]["model"] == "backup"
    assert events[-1]["answer"] == "answered by the backup"


async def test_malformed_output_is_handed_back_and_corrected(mesh: Mesh) -> None:
    tenant = new_tenant()
    await mesh.agent(tenant, "careful")
    mesh.models.script(
        "primary",
        [
            Reply(tool_calls=[CallTool("no_such_tool", {"q": 1})]),
            Reply(tool_calls=[CallTool("also_missing", "{not json")]),
            Reply("fine, no tools then"),
        ],
    )
    async with mesh.instance():
        await mesh.known(tenant, "careful")
        task_id = await mesh.submit(tenant, "careful", "use a tool")
        events = await mesh.final(task_id)
    assert types(events) == [
        "task.accepted",
        "task.started",
        "step.started",
        "step.completed",
        "step.failed",
        "step.started",
        "step.completed",
        "step.failed",
        "step.started",
        "step.completed",
        "task.completed",
    ]
    assert "unknown tool 'no_such_tool'" in events[4]["reason"]
    assert events[-1]["answer"] == "fine, no tools then"
    # The model saw its errors as tool results before it answered.
    last = [r for r in mesh.models.requests_for("primary") if "use a tool" in str(r.messages)][-1]
    tool_turns = [m for m in last.messages if m.role == "tool"]
    assert len(tool_turns) == 2
    assert "unknown tool" in tool_turns[0].content


async def test_a_restarted_instance_resumes_from_the_checkpoint(mesh: Mesh) -> None:
    """A recorded model reply is never requested again; the task ends once."""
    tenant = new_tenant()
    await mesh.agent(tenant, "durable")
    mesh.models.script(
        "primary",
        [Reply(tool_calls=[CallTool("nothing", {})]), Stall(seconds=60)],
    )
    async with mesh.instance():
        await mesh.known(tenant, "durable")
        task_id = await mesh.submit(tenant, "durable", "survive a restart")
        await mesh.events(task_id, lambda e: e["type"] == "step.failed")
        for _ in range(100):  # the second call is in flight, stalled
            if (
                len(
                    [r for r in mesh.models.requests_for("primary") if "survive" in str(r.messages)]
                )
                >= 2
            ):
                break
            await asyncio.sleep(0.05)
    mesh.models.script("primary", [Reply("still here")])
    async with mesh.instance():
        events = await mesh.final(task_id)
    assert types(events).count("task.completed") == 1
    assert events[-1]["answer"] == "still here"
    asked = [r for r in mesh.models.requests_for("primary") if "survive" in str(r.messages)]
    first_step = [r for r in asked if not any(m.role == "assistant" for m in r.messages)]
    assert len(first_step) == 1, "the recorded first reply was requested again"


async def test_finished_tasks_are_compacted_to_a_summary(mesh: Mesh) -> None:
    tenant = new_tenant()
    await mesh.agent(tenant, "brief")
    mesh.models.script(
        "primary",
        [
            Reply(tool_calls=[CallTool("missing", {})], input_tokens=5, output_tokens=2),
            Reply("done", input_tokens=7, output_tokens=3),
        ],
    )
    async with mesh.instance(retention_s=0.5, retention_sweep_s=0.2):
        await mesh.known(tenant, "brief")
        task_id = await mesh.submit(tenant, "brief", "keep it short")
        await mesh.final(task_id)
        connection = await asyncpg.connect(mesh.dsn)
        try:
            for _ in range(100):
                row = await connection.fetchrow(
                    "SELECT * FROM execution.tasks WHERE task_id = $1", task_id
                )
                assert row is not None
                if row["compacted_at"] is not None:
                    break
                await asyncio.sleep(0.1)
            left = await connection.fetchval(
                "SELECT (SELECT count(*) FROM execution.model_calls WHERE task_id = $1)"
                " + (SELECT count(*) FROM execution.tool_calls WHERE task_id = $1)",
                task_id,
            )
        finally:
            await connection.close()
    assert row["compacted_at"] is not None, "the finished task was never compacted"
    assert left == 0
    assert (row["state"], row["answer"], row["steps"]) == ("completed", "done", 2)
    assert row["token"] == ""  # the submitter's token is not kept
    assert json.loads(row["summary"]) == {
        "steps": 2,
        "cost_micros": 0,
        "model_calls": 2,
        "failed_model_calls": 0,
        "input_tokens": 12,
        "output_tokens": 5,
        "tool_calls": 1,
        "tools": ["missing"],
    }
