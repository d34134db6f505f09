"""Tasks through the whole mesh: identity, ledger, memory, tools gateway, supervisor and
execution, on the real broker and PostgreSQL, with a scripted model server (real model
providers are not reachable here) and a tool server that counts what really ran."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from mainstay_common.devstack import free_port
from mainstay_execution.memory import MemoryClient
from mainstay_execution.testing.fake_models import CallTool, HttpFailure, Reply

if TYPE_CHECKING:
    from mainstay_execution.testing.mesh import FullMesh

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def fresh_scripts(full_mesh: FullMesh) -> None:
    """Each test scripts the models from scratch."""
    full_mesh.models.reset()


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def approval_for(mesh: FullMesh, task_id: str) -> dict[str, Any]:
    """The approval request pending for ``task_id`` in alice's inbox (others may be pending:
    a hold that runs out on a task's last step asks for more although nothing will use it)."""
    for _ in range(150):
        for approval in await mesh.pending_approvals("alice"):
            if approval["task_id"] == task_id:
                return approval
        await asyncio.sleep(0.2)
    raise AssertionError(f"no approval request for task {task_id}")


async def charged(mesh: FullMesh, task_id: str) -> list[dict[str, Any]]:
    """The usage the ledger posted for the task, in step order."""
    rows = await mesh.ledger_rows(
        "SELECT usage_id, kind, resource, step, cost FROM usage WHERE task_id = $1"
        " ORDER BY step, kind, usage_id",
        task_id,
    )
    return [dict(row) for row in rows]


async def test_a_task_recalls_and_writes_memory_calls_two_tools_and_is_charged(
    full_mesh: FullMesh,
) -> None:
    mesh = full_mesh
    await mesh.register_tool("lookup", price_micros=0)
    await mesh.register_tool("charge_card", side_effects=True, price_micros=300)
    writer, reader = new_id("first"), new_id("second")
    mesh.models.script(
        "primary",
        [
            Reply(
                tool_calls=[
                    CallTool("lookup", {"customer": "alice"}),
                    CallTool("charge_card", {"amount": 5}),
                ]
            ),
            Reply(
                tool_calls=[
                    CallTool(
                        "remember", {"content": "Alice takes her tea black", "kind": "preference"}
                    )
                ]
            ),
            Reply("charged alice 5 and noted her tea"),
        ],
    )
    async with mesh.execution():
        await mesh.register_agent("clerk", tools=["lookup", "charge_card"])
        await mesh.submit(writer, "clerk", "charge alice 5", max_cost_micros=10_000)
        events = await mesh.final(writer)
        assert types(events)[-1] == "task.completed", events
        done = events[-1]
        assert done["answer"] == "charged alice 5 and noted her tea"
        assert not done["degraded"]
        # Each side effect ran once, under the key of its step.
        assert mesh.tools.effects_by_key("charge_card") == {f"{writer}:1:1": 1}
        assert mesh.tools.effects_by_key("lookup") == {f"{writer}:1:0": 1}
        # Three model steps and one priced tool call, each charged once; the task's cost is
        # what the ledger charged, and the ledger balances.
        usage = await charged(mesh, writer)
        assert [(u["kind"], u["step"]) for u in usage] == [
            ("model", 1),
            ("tool", 1),
            ("model", 2),
            ("model", 3),
        ]
        assert next(u["cost"] for u in usage if u["kind"] == "tool") == 300
        assert done["cost_micros"] == sum(u["cost"] for u in usage)
        await mesh.ledger_balanced()
        (hold,) = await mesh.ledger_rows(
            "SELECT state, spent FROM holds WHERE task_id = $1", writer
        )
        assert hold["state"] == "closed"
        assert hold["spent"] == done["cost_micros"]

        # The memory written by the first task is recalled by the next one.
        memory = MemoryClient(mesh.memory_target, timeout_s=5)
        try:
            token = await mesh.token()
            for _ in range(100):
                found = await memory.recall(
                    token=token,
                    tenant=mesh.tenant,
                    agent="clerk",
                    query="tea",
                    limit=5,
                    task_id=reader,
                )
                if found:
                    break
                await asyncio.sleep(0.1)
        finally:
            await memory.aclose()
        assert found == ["Alice takes her tea black"]
        mesh.models.script("primary", [Reply("black, no sugar")])
        await mesh.submit(reader, "clerk", "how does alice take her tea?")
        events = await mesh.final(reader)
    assert events[-1]["answer"] == "black, no sugar"
    started = next(e for e in events if e["type"] == "task.started")
    assert started["details"]["memories"] == 1
    (asked,) = [
        r for r in mesh.models.requests_for("primary") if "how does alice" in str(r.messages)
    ]
    assert "Alice takes her tea black" in asked.messages[0].content


async def test_the_fallback_model_finishes_when_the_primary_fails(full_mesh: FullMesh) -> None:
    mesh = full_mesh
    task_id = new_id("fallback")
    mesh.models.script("primary", [HttpFailure(503)])
    mesh.models.script("backup", [Reply("the backup answered")])
    async with mesh.execution():
        await mesh.register_agent("resilient")
        await mesh.submit(task_id, "resilient", "answer me", max_cost_micros=10_000)
        events = await mesh.final(task_id)
    assert events[-1]["answer"] == "the backup answered"
    switch = next(e for e in events if e["details"].get("fallback_to"))
    assert switch["details"] == {"fallback_from": "primary", "fallback_to": "backup"}
    assert [(u["resource"], u["step"]) for u in await charged(mesh, task_id)] == [("backup", 1)]
    await mesh.ledger_balanced()


async def test_a_tool_failing_transiently_is_retried_and_runs_once(full_mesh: FullMesh) -> None:
    mesh = full_mesh
    task_id = new_id("flaky")
    # The gateway does not retry this tool itself: its failures reach the task.
    await mesh.register_tool("flaky_post", side_effects=True, retry={"max_attempts": 1})
    mesh.tools.fail_next("flaky_post", 2)
    mesh.models.script(
        "primary", [Reply(tool_calls=[CallTool("flaky_post", {"n": 1})]), Reply("posted")]
    )
    async with mesh.execution():
        await mesh.register_agent("poster", tools=["flaky_post"])
        await mesh.submit(task_id, "poster", "post it")
        events = await mesh.final(task_id)
    assert events[-1]["answer"] == "posted"
    retries = [e for e in events if e["type"] == "task.retrying"]
    assert [e["details"]["attempt"] for e in retries] == [2, 3]
    assert all(e["tool"] == "flaky_post" for e in retries)
    key = f"{task_id}:1:0"
    assert mesh.tools.by_key("flaky_post") == {key: 3}
    assert mesh.tools.effects_by_key("flaky_post") == {key: 1}
    # The model saw the tool's output, not its failures.
    last = [r for r in mesh.models.requests_for("primary") if "post it" in str(r.messages)][-1]
    (result,) = [m for m in last.messages if m.role == "tool"]
    assert '"output"' in result.content


async def test_malformed_calls_are_corrected_by_the_model(full_mesh: FullMesh) -> None:
    mesh = full_mesh
    task_id = new_id("malformed")
    await mesh.register_tool(
        "find",
        input_schema={
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
        },
    )
    mesh.models.script(
        "primary",
        [
            Reply(tool_calls=[CallTool("find", "{not json")]),
            Reply(tool_calls=[CallTool("find", {"q": 5})]),
            Reply(tool_calls=[CallTool("find", {"q": "five"})]),
            Reply("found five"),
        ],
    )
    async with mesh.execution():
        await mesh.register_agent("finder", tools=["find"])
        await mesh.submit(task_id, "finder", "find five")
        events = await mesh.final(task_id)
    assert events[-1]["answer"] == "found five"
    failures = [e["reason"] for e in events if e["type"] == "step.failed"]
    assert len(failures) == 2
    assert "not valid JSON" in failures[0] or "JSON" in failures[0]
    assert "arguments of 'find' at 'q': 5 is not of type 'string'" in failures[1]
    # Only the well-formed call reached the tool.
    assert mesh.tools.by_key("find") == {f"{task_id}:3:0": 1}


async def test_an_exhausted_budget_waits_for_approval_then_finishes(full_mesh: FullMesh) -> None:
    mesh = full_mesh
    task_id = new_id("budget")
    await mesh.register_tool("lookup", price_micros=0)
    # A primary step costs 10 * 2 + 5 * 8 = 60: the first one runs a cap of 50 out.
    mesh.models.script(
        "primary", [Reply(tool_calls=[CallTool("lookup", {"q": "x"})]), Reply("worth it")]
    )
    async with mesh.execution():
        await mesh.register_agent("spender", tools=["lookup"])
        await mesh.submit(task_id, "spender", "spend a little more", max_cost_micros=50)
        waiting = await mesh.events(
            task_id, lambda e: e["details"].get("waiting_for") == "budget", wait_s=90
        )
        assert types(waiting)[-1] == "task.waiting"
        request = await approval_for(mesh, task_id)
        asked = [
            r for r in mesh.models.requests_for("primary") if "a little more" in str(r.messages)
        ]
        assert len(asked) == 1, "the task took another step after its hold ran out"
        await mesh.answer("alice", request["approval_id"], "approve")
        events = await mesh.final(task_id)
    assert events[-1]["type"] == "task.completed", events
    assert events[-1]["answer"] == "worth it"
    assert events[-1]["cost_micros"] == 120
    (hold,) = await mesh.ledger_rows("SELECT state, cap FROM holds WHERE task_id = $1", task_id)
    assert (hold["state"], hold["cap"]) == ("closed", 100)
    await mesh.ledger_balanced()


async def test_a_denied_extension_fails_the_task_cleanly(full_mesh: FullMesh) -> None:
    mesh = full_mesh
    task_id = new_id("denied")
    await mesh.register_tool("lookup", price_micros=0)
    mesh.models.script(
        "primary", [Reply(tool_calls=[CallTool("lookup", {"q": "y"})]), Reply("never sent")]
    )
    async with mesh.execution():
        await mesh.register_agent("spender", tools=["lookup"])
        await mesh.submit(task_id, "spender", "spend too much", max_cost_micros=50)
        request = await approval_for(mesh, task_id)
        await mesh.answer("alice", request["approval_id"], "deny", reason="not this month")
        events = await mesh.final(task_id)
    assert events[-1]["type"] == "task.failed"
    assert events[-1]["reason"].startswith("budget: the hold ran out and no extension was approved")
    assert events[-1]["cost_micros"] == 60
    assert mesh.models.pending("primary") == 1, "the task took a step it had no budget for"
    (hold,) = await mesh.ledger_rows("SELECT state FROM holds WHERE task_id = $1", task_id)
    assert hold["state"] == "closed"
    await mesh.ledger_balanced()


async def test_an_exhausted_budget_with_nobody_to_ask_fails_the_task(full_mesh: FullMesh) -> None:
    mesh = full_mesh
    task_id = new_id("alone")
    await mesh.register_tool("lookup", price_micros=0)
    mesh.models.script(
        "primary", [Reply(tool_calls=[CallTool("lookup", {"q": "z"})]), Reply("never sent")]
    )
    async with mesh.execution():
        await mesh.register_agent("loner", tools=["lookup"], escalation=[])
        await mesh.submit(task_id, "loner", "spend alone", max_cost_micros=50)
        events = await mesh.final(task_id)
    assert events[-1]["type"] == "task.failed"
    assert events[-1]["reason"] == (
        "budget: the hold ran out and the agent has no escalation contacts to ask"
    )
    assert mesh.models.pending("primary") == 1
    await mesh.ledger_balanced()


async def test_a_permanent_failure_is_escalated_and_the_human_decides(
    full_mesh: FullMesh,
) -> None:
    mesh = full_mesh
    retried, aborted = new_id("escalated"), new_id("aborted")
    mesh.models.script("primary", [HttpFailure(401), Reply("worked the second time")])
    async with mesh.execution():
        await mesh.register_agent("guarded")
        await mesh.submit(retried, "guarded", "try with a bad key")
        escalated = await mesh.events(retried, lambda e: e["type"] == "task.escalated")
        assert escalated[-1]["reason"].startswith("permanent")
        assert escalated[-1]["details"]["to"] == ["alice"]
        request = await approval_for(mesh, retried)
        assert request["options"] == ["retry", "skip", "abort"]
        await mesh.answer("alice", request["approval_id"], "retry")
        events = await mesh.final(retried)
        assert events[-1]["answer"] == "worked the second time"

        mesh.models.script("primary", [HttpFailure(403)])
        await mesh.submit(aborted, "guarded", "refused again")
        request = await approval_for(mesh, aborted)
        await mesh.answer("alice", request["approval_id"], "abort", reason="key revoked")
        events = await mesh.final(aborted)
    assert events[-1]["type"] == "task.failed"
    assert events[-1]["reason"].startswith("aborted by ")
    assert "key revoked" in events[-1]["reason"]


async def test_without_memory_a_task_goes_on_degraded(full_mesh: FullMesh) -> None:
    mesh = full_mesh
    task_id = new_id("degraded")
    mesh.models.script("primary", [Reply("fine without memory")])
    async with mesh.execution(memory_target=f"127.0.0.1:{free_port()}", memory_timeout_s=0.5):
        await mesh.register_agent("forgetful")
        await mesh.submit(task_id, "forgetful", "remember anything?")
        events = await mesh.final(task_id)
    assert events[-1]["type"] == "task.completed"
    assert events[-1]["degraded"] is True
    started = next(e for e in events if e["type"] == "task.started")
    assert "continuing without memory: memory UNAVAILABLE" in started["details"]["memory"]
