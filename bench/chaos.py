"""Benchmark: tasks through the whole mesh under injected failures and SIGKILLs of execution.

One run starts (on the embedded broker and PostgreSQL unless
``MAINSTAY_KAFKA_BOOTSTRAP`` / ``MAINSTAY_POSTGRES_DSN`` are set) the whole mesh
of :mod:`mainstay_execution.testing.mesh` in this process, **with the ledger on**
(every task has a generous ``max_cost_micros``, so a hold is opened and closed,
and every model call and tool call is charged), and the execution service as
its own process (``python -m mainstay_execution``, the harness's short retry and
poll timings). ``--tasks`` tasks (20) of ``--steps`` steps (50) are submitted at
once; at each step the fake model calls one of four side-effecting, priced HTTP
tools (through the gateway, over Kafka) until the last step, which answers.

Injected failures: ``--failure-rate`` (1%) of the model's answers are a
transient 500, and the same share of the tool server's answers a 503. On top,
the execution process is SIGKILLed ``--kills`` times (3), each once the batch
has recorded a random number of steps (between 10% and 90% of them), and
restarted at once.

Last line: one JSON object with ``completed_ratio`` (tasks completed / tasks
accepted; target >= 0.999), ``without_recovery_ratio`` (``(1 - rate) ** steps``:
what would complete if one failed step failed its task), ``duplicate_side_effects``
(idempotency keys that ran more than once at the tool server; target 0),
``double_charges`` (ledger usage rows beyond one per task, step, kind and
resource; target 0), ``ledger_balanced`` (the ledger's invariants,
:func:`mainstay_ledger.testing.check_invariants`), ``kills``, ``tasks``,
``steps`` and ``seconds`` (first submit to last task ended).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from _mesh import Observer, StepResponder, log, mesh

if TYPE_CHECKING:
    from mainstay_execution.testing.mesh import FullMesh, ServiceProcess

AGENT = "chaotic"
TOOLS = ["chaos_a", "chaos_b", "chaos_c", "chaos_d"]


def say(message: str) -> None:
    log("chaos", message)


async def recorded_steps(fm: FullMesh, tasks: list[str]) -> int:
    rows = await fm.execution_rows(
        "SELECT count(*) AS n FROM model_calls WHERE reply IS NOT NULL"
        " AND task_id = ANY($1::text[])",
        tasks,
    )
    return int(rows[0]["n"])


async def kill_after(
    fm: FullMesh, process: ServiceProcess, tasks: list[str], steps: int, wait_s: float
) -> int:
    """SIGKILL ``process`` once the batch has recorded ``steps`` steps (or after ``wait_s``);
    how many it had then."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if await recorded_steps(fm, tasks) >= steps:
            break
        await asyncio.sleep(0.05)
    else:
        say(f"the batch did not reach {steps} steps within {wait_s:.0f}s; killing anyway")
    await process.kill()
    return await recorded_steps(fm, tasks)


async def wait_holds_closed(fm: FullMesh, tasks: list[str], wait_s: float) -> dict[str, int]:
    """The states of the tasks' holds, once all are closed (or after ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    while True:
        rows = await fm.ledger_rows(
            "SELECT state, count(*) AS n FROM holds WHERE task_id = ANY($1::text[]) GROUP BY state",
            tasks,
        )
        states = {row["state"]: int(row["n"]) for row in rows}
        if set(states) <= {"closed"} or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    async with mesh("mainstay-bench-chaos-") as (fm, _), contextlib.AsyncExitStack() as stack:
        responder = StepResponder(
            TOOLS, args.steps - 1, failure_rate=args.failure_rate, seed=rng.randrange(2**32)
        )
        fm.models.respond("primary", responder)
        seed = rng.randrange(2**32)
        for tool in TOOLS:
            fm.tools.fail_randomly(tool, args.failure_rate, seed=seed)
        tasks = [f"chaos-{uuid.uuid4().hex[:10]}" for _ in range(args.tasks)]
        total = args.tasks * args.steps
        kill_points = sorted(rng.sample(range(total // 10, total * 9 // 10), args.kills))
        say(f"{args.tasks} tasks of {args.steps} steps; kills after {kill_points} of {total} steps")
        killed_at: list[int] = []
        observer: Observer | None = None
        started = ended = 0.0
        for number, point in enumerate([*kill_points, None], start=1):
            async with fm.execution_process() as process:
                say(f"execution process {number} is ready (log: {process.log})")
                if observer is None:
                    for tool in TOOLS:  # each waits until the execution database has it
                        await fm.register_tool(tool, side_effects=True, price_micros=100)
                    await fm.register_agent(
                        AGENT,
                        tools=TOOLS,
                        memory={"recall": False, "remember": []},
                        limits={"max_steps": args.steps},
                    )
                    observer = await stack.enter_async_context(Observer(fm.kafka))
                    token = await fm.token()
                    started = time.perf_counter()
                    for task_id in tasks:
                        await fm.submit(
                            task_id, AGENT, "settle up", max_cost_micros=10**9, token=token
                        )
                if point is not None:
                    killed_at.append(await kill_after(fm, process, tasks, point, args.wait))
                    say(f"killed execution process {number} at {killed_at[-1]} recorded steps")
                    continue
                say("waiting for every task to end")
                deadline = time.monotonic() + args.wait
                for task_id in tasks:
                    await observer.ended(task_id, max(deadline - time.monotonic(), 0.1))
                ended = time.perf_counter()
        assert observer is not None
        return await evaluate(args, fm, observer, tasks, killed_at, responder, ended - started)


async def evaluate(
    args: argparse.Namespace,
    fm: FullMesh,
    observer: Observer,
    tasks: list[str],
    killed_at: list[int],
    responder: StepResponder,
    seconds: float,
) -> dict[str, Any]:
    seen = {task_id: observer.tasks[task_id] for task_id in tasks}
    accepted = [t for t in tasks if "task.accepted" in seen[t].types()]
    completed = [t for t in accepted if seen[t].types()[-1:] == ["task.completed"]]
    for task_id in tasks:
        if task_id not in completed:
            last = seen[task_id].events[-1] if seen[task_id].events else None
            say(f"task {task_id} did not complete; its last event: {last}")
    effects = Counter[str]()
    for tool in TOOLS:
        effects.update(fm.tools.effects_by_key(tool))
    duplicates = {key: n for key, n in effects.items() if n > 1}
    if duplicates:
        say(f"side effects that ran more than once: {duplicates}")
    usage = await fm.ledger_rows(
        "SELECT task_id, step, kind, resource, count(*) AS n FROM usage"
        " WHERE task_id = ANY($1::text[]) GROUP BY task_id, step, kind, resource",
        tasks,
    )
    double_charges = sum(int(row["n"]) - 1 for row in usage)
    holds = await wait_holds_closed(fm, tasks, 30)
    try:
        await fm.ledger_balanced()
        balanced = True
    except AssertionError as exc:
        say(f"the ledger's invariants do not hold: {exc}")
        balanced = False
    retries = Counter(
        "model" if e.get("model") else "tool"
        for task in seen.values()
        for e in task.events
        if e["type"] == "task.retrying"
    )
    return {
        "benchmark": "chaos",
        "tasks": args.tasks,
        "steps": args.steps,
        "tasks_accepted": len(accepted),
        "tasks_completed": len(completed),
        "completed_ratio": round(len(completed) / len(accepted), 4) if accepted else 0.0,
        "target_completed_ratio": 0.999,
        "without_recovery_ratio": round((1 - args.failure_rate) ** args.steps, 3),
        "without_recovery_note": f"expected share completed if a failed step failed its task:"
        f" (1 - {args.failure_rate}) ** {args.steps}",
        "duplicate_side_effects": len(duplicates),
        "double_charges": double_charges,
        "ledger_balanced": balanced,
        "kills": len(killed_at),
        "killed_at_steps": killed_at,
        "seconds": round(seconds, 1),
        "failure_rate": args.failure_rate,
        "model_failures_injected": responder.failures,
        "tool_failures_injected": sum(fm.tools.random_failures.values()),
        "retry_events": dict(retries),
        "tool_side_effects": sum(effects.values()),
        "tool_side_effects_expected": len(completed) * (args.steps - 1),
        "usage_rows": len(usage),
        "usage_rows_expected": len(completed) * (2 * args.steps - 1),
        "holds": holds,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=20, help="tasks submitted at once")
    parser.add_argument("--steps", type=int, default=50, help="model calls per task (>= 2)")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the execution process")
    parser.add_argument(
        "--failure-rate", type=float, default=0.01, help="share of failed model and tool answers"
    )
    parser.add_argument(
        "--wait", type=float, default=300, help="longest wait for a kill point or the last task"
    )
    parser.add_argument("--seed", type=int, default=None, help="repeat a run's random choices")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
