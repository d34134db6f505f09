"""Chaos: the execution process is killed (SIGKILL) at random points of a batch of tasks.

Every accepted task must still end, every side-effecting tool must have run once per
call (counted by the tool's own server), every usage must be charged once, and the
ledger must balance.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from mainstay_execution.testing.fake_models import ToolLoopResponder

if TYPE_CHECKING:
    from mainstay_execution.testing.mesh import FullMesh, ServiceProcess

pytestmark = [pytest.mark.real, pytest.mark.timeout(600)]

TOOLS = ["chaos_a", "chaos_b", "chaos_c", "chaos_d"]
TASKS = 10
STEPS = len(TOOLS) + 1  # one tool a step, then the answer


async def recorded_steps(mesh: FullMesh, tasks: list[str]) -> int:
    rows = await mesh.execution_rows(
        "SELECT count(*) AS n FROM model_calls WHERE reply IS NOT NULL"
        " AND task_id = ANY($1::text[])",
        tasks,
    )
    return int(rows[0]["n"])


async def kill_after(mesh: FullMesh, process: ServiceProcess, tasks: list[str], steps: int) -> int:
    """SIGKILL ``process`` once the batch has recorded ``steps`` steps; how many it had."""
    for _ in range(1200):
        done = await recorded_steps(mesh, tasks)
        if done >= steps:
            break
        await asyncio.sleep(0.05)
    await process.kill()
    return await recorded_steps(mesh, tasks)


async def test_sigkill_at_random_points_loses_nothing_and_repeats_nothing(
    full_mesh: FullMesh,
) -> None:
    mesh = full_mesh
    mesh.models.reset()
    rng = random.Random()
    for tool in TOOLS:
        await mesh.register_tool(tool, side_effects=True, price_micros=100, wait=False)
    mesh.models.respond("primary", ToolLoopResponder(answer="settled"))
    tasks = [f"chaos-{uuid.uuid4().hex[:8]}" for _ in range(TASKS)]
    total = TASKS * STEPS
    kill_points = sorted(rng.sample(range(3, total - 3), 3))
    killed_at: list[int] = []
    await mesh.register_agent(
        "chaotic", tools=TOOLS, memory={"recall": False, "remember": []}, wait=False
    )
    for point in kill_points:
        async with mesh.execution_process() as process:
            if not killed_at:
                await mesh.wait_agent("chaotic")
                for task_id in tasks:
                    await mesh.submit(task_id, "chaotic", "settle up", max_cost_micros=1_000_000)
            killed_at.append(await kill_after(mesh, process, tasks, point))
    async with mesh.execution_process():
        finals = [(await mesh.final(task_id, wait_s=180))[-1] for task_id in tasks]
    mesh.models.respond("primary", None)

    assert all(at < total for at in killed_at), f"every kill came mid-batch: {killed_at}"
    assert [f["type"] for f in finals] == ["task.completed"] * TASKS, finals
    # Every side effect ran once per call: one key per task and tool, each run once.
    for tool in TOOLS:
        effects = mesh.tools.effects_by_key(tool)
        assert sorted(effects) == sorted(f"{t}:{TOOLS.index(tool) + 1}:0" for t in tasks)
        assert set(effects.values()) == {1}, f"{tool} ran twice for one call: {effects}"
    # Every usage was charged once: one model usage per step, one tool usage per call.
    usage = await mesh.ledger_rows(
        "SELECT task_id, kind, step FROM usage WHERE task_id = ANY($1::text[])", tasks
    )
    per_step = Counter((u["task_id"], u["kind"], u["step"]) for u in usage)
    assert set(per_step.values()) == {1}, "a usage was charged twice"
    assert len([k for k in per_step if k[1] == "model"]) == total
    assert len([k for k in per_step if k[1] == "tool"]) == TASKS * len(TOOLS)
    costs = await mesh.ledger_rows(
        "SELECT task_id, sum(cost) AS cost FROM usage WHERE task_id = ANY($1::text[])"
        " GROUP BY task_id",
        tasks,
    )
    by_task = {row["task_id"]: row["cost"] for row in costs}
    assert {f["task_id"]: f["cost_micros"] for f in finals} == by_task
    holds = await mesh.ledger_rows(
        "SELECT DISTINCT state FROM holds WHERE task_id = ANY($1::text[])", tasks
    )
    assert [h["state"] for h in holds] == ["closed"]
    await mesh.ledger_balanced()
