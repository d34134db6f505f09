"""Benchmark: tasks per second and end-to-end latency through the whole mesh, by offered load.

One run starts (on the embedded broker and PostgreSQL unless
``MAINSTAY_KAFKA_BOOTSTRAP`` / ``MAINSTAY_POSTGRES_DSN`` are set) the whole mesh
of :mod:`mainstay_execution.testing.mesh` — identity, ledger, memory and
supervisor in this process, the tools gateway and execution each as its own
process (``python -m ...``, as a deployment runs them, with execution's default
poll and ownership timings) — and a no-op agent whose every task touches every
service: its submitter's token is checked with identity, the ledger opens a hold
(every task has a cost cap), charges each model call and tool call and closes the
hold, memory is asked for recall over gRPC, and the fake model (a local HTTP
server speaking the OpenAI API) answers at once: ``--tool-steps`` (1) calls of a
no-op HTTP tool through the gateway over Kafka, then the answer.

At each offered load of ``--rates`` (tasks per second) tasks are submitted at an
even pace for ``--seconds`` (20), each timed from its submit to the moment its
``task.completed`` is read back from the broker (what a user of the mesh sees).
A level is saturated when it completes fewer than 80% of its offered tasks per
second; the run stops after the first saturated level. Before the levels, the
raw broker round trip (a record produced with acks=all, consumed by a responder
that produces a reply, the reply consumed back, with the services'
``fetch_max_wait_ms``) is measured ``--round-trips`` (100) times.

The last line printed is one JSON object: per level ``offered_tasks_per_s``,
``tasks_per_s``, ``completed``, ``failed``, the latency ``p50_ms`` /
``p95_ms`` / ``p99_ms`` and ``cpu_percent`` (per part of the mesh, in percent
of one core: which part is the bottleneck); ``max_tasks_per_s`` over the
levels; ``idle_cpu_percent`` (the same, ``--idle-s`` with no task); and the
broker round trip's ``p50_ms`` / ``p95_ms`` / ``p99_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from _cpu import CpuMeter
from _mesh import Baseline, Observer, StepResponder, log, mesh, ms_between

from mainstay_common.testing import temporary_database
from mainstay_execution.settings import ExecutionSettings

if TYPE_CHECKING:
    from _mesh import Observed

    from mainstay_execution.testing.mesh import FullMesh

AGENT = "idler"
TOOL = "noop"
CAP_MICROS = 1_000_000
SATURATED = 0.8


def say(message: str) -> None:
    log("mesh", message)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95 and p99 of ``values`` in milliseconds (NaN-free: empty gives zeros)."""
    if len(values) < 2:
        only = round(values[0], 2) if values else 0.0
        return {"p50_ms": only, "p95_ms": only, "p99_ms": only}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(values), 2),
        "p95_ms": round(cuts[94], 2),
        "p99_ms": round(cuts[98], 2),
    }


def timeline(seen: Observed) -> str:
    """A task's events and the ledger's about it, each with the milliseconds since the first."""
    if not seen.events:
        return "no events"
    first = seen.events[0]["occurred_at"]
    events = sorted(
        seen.events + seen.ledger, key=lambda event: ms_between(first, event["occurred_at"])
    )
    return ", ".join(
        f"{event['type']}{'#' + str(event['step']) if event.get('step') else ''}"
        f" +{ms_between(first, event['occurred_at']):.0f}"
        for event in events
    )


async def one_level(
    fm: FullMesh, observer: Observer, rate: float, seconds: float, drain_s: float
) -> dict[str, Any]:
    """Tasks at ``rate`` a second for ``seconds``; what came of them."""
    token = await fm.token()
    count = max(1, round(rate * seconds))
    latencies: list[float] = []
    slowest: tuple[float, str] = (0.0, "")
    outcomes: dict[str, int] = {}
    ended_at: list[float] = []

    async def task(index: int, start: float) -> None:
        await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
        task_id = f"mesh-{uuid.uuid4().hex[:12]}"
        submitted = time.perf_counter()
        await fm.submit(task_id, AGENT, f"nothing to do ({task_id})", CAP_MICROS, token=token)
        remaining = start + count / rate + drain_s - time.perf_counter()
        if not await observer.ended(task_id, max(remaining, 1.0)):
            outcomes["unfinished"] = outcomes.get("unfinished", 0) + 1
            return
        done = time.perf_counter()
        kind = observer.tasks[task_id].types()[-1].removeprefix("task.")
        outcomes[kind] = outcomes.get(kind, 0) + 1
        if kind == "completed":
            nonlocal slowest
            latencies.append((done - submitted) * 1000)
            ended_at.append(done)
            slowest = max(slowest, (latencies[-1], task_id))

    start = time.perf_counter()
    await asyncio.gather(*(task(i, start) for i in range(count)))
    elapsed = (max(ended_at) if ended_at else time.perf_counter()) - start
    completed = outcomes.get("completed", 0)
    if slowest[1]:
        say(f"the slowest task, {slowest[0]:.0f} ms: {timeline(observer.tasks[slowest[1]])}")
    return {
        "offered_tasks_per_s": rate,
        "submitted": count,
        "completed": completed,
        "failed": count - completed,
        "outcomes": outcomes,
        "tasks_per_s": round(completed / elapsed, 2) if elapsed > 0 else 0.0,
        **percentiles(latencies),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    defaults = ExecutionSettings.model_fields
    async with mesh("mainstay-bench-mesh-", gateway_process=True) as (fm, server_dsn):
        fm.models.respond("primary", StepResponder([TOOL], args.tool_steps))
        say("starting the execution process")
        async with (
            fm.execution_process(
                wait_poll_s=defaults["wait_poll_s"].default,
                ownership_check_s=defaults["ownership_check_s"].default,
            ) as process,
            temporary_database(server_dsn, prefix="mesh_baseline") as dsn,
        ):
            say(f"execution log: {process.log}")
            await fm.register_tool(TOOL)
            await fm.register_agent(
                AGENT,
                tools=[TOOL],
                memory={"recall": True, "remember": []},
                limits={"max_steps": args.tool_steps + 1},
            )
            async with (
                # tasks are timed by when their end is read: read it closely
                Observer(fm.kafka, ledger=True, fetch_max_wait_ms=10) as observer,
                Baseline(fm, dsn) as baseline,
            ):
                return await measure(args, fm, observer, baseline)


async def measure(
    args: argparse.Namespace, fm: FullMesh, observer: Observer, baseline: Baseline
) -> dict[str, Any]:
    say("warming up")
    warm = await one_level(fm, observer, 1.0, 3, args.drain_s)
    if warm["completed"] != warm["submitted"]:
        raise RuntimeError(f"the warm-up tasks did not all complete: {warm['outcomes']}")
    for _ in range(10):
        await baseline.once()
    kafka_ms = [(await baseline.once()).kafka_ms for _ in range(args.round_trips)]
    round_trip = percentiles(kafka_ms)
    say(f"broker round trip p50 {round_trip['p50_ms']} ms")
    cpu = CpuMeter()
    await asyncio.sleep(args.idle_s)
    idle = cpu.mark()
    say(f"CPU % of one core, idle mesh: {idle}")
    levels = []
    for rate in args.rates:
        cpu.mark()
        level = await one_level(fm, observer, rate, args.seconds, args.drain_s)
        level["cpu_percent"] = cpu.mark()
        levels.append(level)
        say(
            f"offered {rate}/s: {level['tasks_per_s']}/s completed, p50 {level['p50_ms']} ms,"
            f" p99 {level['p99_ms']} ms, {level['outcomes']}, CPU % {level['cpu_percent']}"
        )
        if level["tasks_per_s"] < SATURATED * rate:
            say(f"saturated at {rate}/s")
            break
    return {
        "benchmark": "mesh",
        "tool_steps": args.tool_steps,
        "seconds_per_level": args.seconds,
        "levels": levels,
        "max_tasks_per_s": max(level["tasks_per_s"] for level in levels),
        "saturated_at_offered_tasks_per_s": next(
            (
                lv["offered_tasks_per_s"]
                for lv in levels
                if lv["tasks_per_s"] < SATURATED * lv["offered_tasks_per_s"]
            ),
            None,
        ),
        "idle_cpu_percent": idle,
        "broker_round_trip": {**round_trip, "samples": len(kafka_ms)},
        "kafka_fetch_max_wait_ms": fm.kafka.fetch_max_wait_ms,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--rates",
        type=lambda text: [float(part) for part in text.split(",")],
        default=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
        help="offered loads in tasks per second, comma-separated, rising",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each level")
    parser.add_argument("--tool-steps", type=int, default=1, help="tool calls a task makes")
    parser.add_argument("--round-trips", type=int, default=100, help="broker round trips timed")
    parser.add_argument(
        "--idle-s", type=float, default=10.0, help="how long the idle mesh's CPU is measured"
    )
    parser.add_argument(
        "--drain-s", type=float, default=60.0, help="how long a level's last tasks may take"
    )
    args = parser.parse_args()
    if any(rate <= 0 for rate in args.rates):
        parser.error("--rates must all be positive")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
