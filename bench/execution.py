"""Benchmark: the execution service's time per step vs one Kafka round trip plus one PostgreSQL commit.

One run starts (on the embedded broker and PostgreSQL unless
``MAINSTAY_KAFKA_BOOTSTRAP`` / ``MAINSTAY_POSTGRES_DSN`` are set) the whole mesh
of :mod:`mainstay_execution.testing.mesh` (identity, ledger, memory and supervisor
in this process; the tools gateway as its own process, ``python -m
mainstay_tools_gateway``, as a deployment runs it), the agent's model and tool
in a process of their own (:mod:`_noop_servers`: served from this busy process
they would wait on its event loop) and one execution instance as its own process (``python -m
mainstay_execution``), **with the ledger off and no memory** (``ledger=False``,
``memory_target=None``: no hold, no usage, no recall), and with the service's
default ``wait_poll_s`` and ``ownership_check_s`` rather than the tests' short
ones. Its agent's every step is a no-op: the fake model answers at once with a
call of the ``noop`` tool (an HTTP tool on that process's tool server, through
the gateway over Kafka) until the task has ``steps - 1`` tool results, then answers.

It measures, alternating rounds so machine noise hits each side alike:

* ``step``: for tasks of ``--steps`` steps run one after another, each after a
  random pause, the time from one ``step.started`` to the next (the service's own
  ``occurred_at``): rebuild the conversation, call the model, checkpoint the reply
  and the tool call (one transaction, its events and the command in the outbox),
  the relay publishes the command, the gateway calls the tool and publishes the
  result, execution records it and starts the next step;
* ``baseline``: one Kafka round trip plus one PostgreSQL commit per step, in the
  same rhythm as the tasks' steps and with no service taking part: runs of
  ``steps - 1`` round trips (as many as a task has step intervals), each run after
  a random pause and its round trips one after another. A round trip is a request
  record produced (acks=all), consumed by a responder that produces a reply, the
  reply consumed back, all with the services' ``fetch_max_wait_ms`` and poll
  timeout, over topics with the partitions of the tool command and result topics
  (what a step's tool call needs at the least); then one small INSERT is committed
  in PostgreSQL, on the same broker and server.

``step_overhead_ratio = step_ms_p50 / baseline_ms_p50``; target <= 2. A step
crosses Kafka twice (command, result) and commits several transactions, so
``breakdown_ms_p50`` splits a step by the timestamps of its events, of the
model's requests, of the command and result records and of the gateway's result
(``completed_at``, ``latency_ms``).

Why the baseline keeps the tasks' rhythm: on the embedded broker a fetch is
answered on the broker's own clock rather than when data arrives. It looks at the
start of a fetch, then at half of ``fetch_max_wait_ms`` (100), three quarters,
and so on, so a hop costs from nothing to about half of that wait depending on
where in the cycle its record lands. A reader that fetches again the moment a
record arrives sees the next one, if it comes in less than about 50 ms, at that
fetch's half-way look: steps that follow each other at once lock onto the cycle,
at about 52 ms, whatever they do in between (about 77 ms when a record misses the
half-way look). The baseline's own round trips lock onto it the same way. So the
benchmark also reports ``isolated_round_trip_ms_p50``: round trips each after a
random pause, which land at random points of the cycle (about 26-31 ms), with
``step_vs_isolated_ratio`` and ``baseline_vs_isolated_ratio``. The latter, about
1.7-1.9, is what the broker's rhythm costs a client that does nothing but the
baseline's work; it is not the services' overhead, which is why it stays out of
the ratio. While a step's own work fits in the cycle the ratio does not see it
(a step takes the baseline's 52 ms either way); the breakdown does. On Kafka a
waiting fetch returns as soon as data arrives and both baselines are the same.

A final round runs ``--concurrent`` tasks at once (reported, not part of the
ratio). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from _mesh import Baseline, Observer, RoundTrip, epoch_ms, log, mesh, ms_between
from _noop_servers import NoopServers

from mainstay_common.testing import temporary_database
from mainstay_execution.settings import ExecutionSettings

if TYPE_CHECKING:
    from _mesh import Observed

    from mainstay_execution.testing.mesh import FullMesh

AGENT = "stepper"
TOOL = "noop"


def say(message: str) -> None:
    log("execution", message)


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- the tasks ---------------------------------------------------------------------------


def prompt(task_id: str) -> str:
    """The task's input, by which the model's requests are told apart."""
    return f"step through ({task_id})"


def step_intervals(seen: Observed) -> list[float]:
    """``step.started`` of each step to that of the next (steps with a tool call)."""
    starts = {e["step"]: e["occurred_at"] for e in seen.events if e["type"] == "step.started"}
    return [ms_between(starts[k], starts[k + 1]) for k in sorted(starts) if k + 1 in starts]


def breakdown(seen: Observed, arrivals: list[float]) -> dict[str, list[float]]:
    """Where each step's time went, from the timestamps published about it and those of
    the model's requests (``arrivals``, one per step)."""
    parts: dict[str, list[float]] = {
        "step_started_to_model_request": [],
        "model_request_to_step_completed": [],
        "step_completed_to_command_published": [],
        "command_published_to_gateway_invoke": [],
        "gateway_invoke": [],
        "gateway_result_to_result_published": [],
        "result_published_to_next_step_started": [],
    }
    for step in range(1, 1 + max((e.get("step") or 0 for e in seen.events), default=0)):
        started = seen.first("step.started", step)
        completed = seen.first("step.completed", step)
        following = seen.first("step.started", step + 1)
        invoke = next((ts for ts, c in seen.invokes if c["step"] == step), None)
        result = next(((ts, r) for ts, r in seen.results if r["step"] == step), None)
        if not (started and completed and following and invoke and result):
            continue
        if len(arrivals) < step:
            continue
        result_ts, event = result
        # the gateway's latency_ms runs from its invoke() (after consume and token check) to
        # the result: the idempotency claim, the limiter, the HTTP call, the output check
        invoked = epoch_ms(event["completed_at"]) - float(event["latency_ms"])
        parts["step_started_to_model_request"].append(
            ms_between(started["occurred_at"], arrivals[step - 1])
        )
        parts["model_request_to_step_completed"].append(
            ms_between(arrivals[step - 1], completed["occurred_at"])
        )
        parts["step_completed_to_command_published"].append(
            ms_between(completed["occurred_at"], invoke)
        )
        parts["command_published_to_gateway_invoke"].append(ms_between(invoke, invoked))
        parts["gateway_invoke"].append(float(event["latency_ms"]))
        parts["gateway_result_to_result_published"].append(
            ms_between(event["completed_at"], result_ts)
        )
        parts["result_published_to_next_step_started"].append(
            ms_between(result_ts, following["occurred_at"])
        )
    return parts


async def run_tasks(
    fm: FullMesh, observer: Observer, count: int, steps: int, *, at_once: bool
) -> list[Observed]:
    """``count`` tasks, one after another (or all at once); what was seen of each."""
    ids = [f"step-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    token = await fm.token()
    wait_s = 60 + steps * 5.0

    async def one(task_id: str) -> Observed:
        await _decorrelate()
        await fm.submit(task_id, AGENT, prompt(task_id), token=token)
        if not await observer.ended(task_id, wait_s):
            raise RuntimeError(f"task {task_id} did not end within {wait_s:.0f}s")
        seen = observer.tasks[task_id]
        if seen.types()[-1] != "task.completed" or len(step_intervals(seen)) != steps - 1:
            raise RuntimeError(f"task {task_id} ended oddly: {seen.events[-1]}")
        return seen

    if at_once:
        return list(await asyncio.gather(*(one(task_id) for task_id in ids)))
    return [await one(task_id) for task_id in ids]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    defaults = ExecutionSettings.model_fields
    async with mesh("mainstay-bench-execution-", gateway_process=True) as (fm, server_dsn):
        say("starting the execution process")
        async with (
            NoopServers("primary", [TOOL], args.steps - 1) as noop,
            fm.execution_process(
                ledger=False,
                memory_target=None,
                wait_poll_s=defaults["wait_poll_s"].default,
                ownership_check_s=defaults["ownership_check_s"].default,
            ) as process,
            temporary_database(server_dsn, prefix="exec_baseline") as dsn,
        ):
            say(f"execution log: {process.log}")
            # both wait until the execution database has them
            await fm.register_tool(TOOL, http={"url": noop.tool_urls[TOOL]})
            await fm.register_agent(
                AGENT,
                models=[noop.model_ref],
                tools=[TOOL],
                memory={"recall": False, "remember": []},
                limits={"max_steps": args.steps},
            )
            async with Observer(fm.kafka) as observer, Baseline(fm, dsn) as baseline:
                return await measure(args, fm, observer, baseline, noop)


async def measure(
    args: argparse.Namespace,
    fm: FullMesh,
    observer: Observer,
    baseline: Baseline,
    noop: NoopServers,
) -> dict[str, Any]:
    say("warming up")
    await run_tasks(fm, observer, 1, args.steps, at_once=False)
    for _ in range(10):
        await baseline.once()
    step_ms: list[float] = []
    loop: list[RoundTrip] = []
    isolated: list[RoundTrip] = []
    per_task_ms: list[float] = []
    measured: list[Observed] = []
    for round_number in range(1, args.rounds + 1):
        loop_now = await round_trip_runs(baseline, args.tasks_per_round, args.steps - 1)
        isolated_now = await round_trip_runs(baseline, args.isolated_per_round, 1)
        seen = await run_tasks(fm, observer, args.tasks_per_round, args.steps, at_once=False)
        steps = [ms for task in seen for ms in step_intervals(task)]
        loop += loop_now
        isolated += isolated_now
        step_ms += steps
        measured += seen
        for task in seen:
            first = task.first("step.started", 1)
            done = task.first("task.completed")
            assert first is not None
            assert done is not None
            per_task_ms.append(ms_between(first["occurred_at"], done["occurred_at"]) / args.steps)
        say(
            f"round {round_number}: step p50 {p50(steps):.1f} ms,"
            f" baseline p50 {p50([r.total_ms for r in loop_now]):.1f} ms,"
            f" isolated round trip p50 {p50([r.total_ms for r in isolated_now]):.1f} ms"
        )
    say(f"{args.concurrent} tasks at once")
    started = time.perf_counter()
    together = await run_tasks(fm, observer, args.concurrent, args.steps, at_once=True)
    elapsed = time.perf_counter() - started
    concurrent_ms = [ms for task in together for ms in step_intervals(task)]
    parts: dict[str, list[float]] = {}
    arrivals = await noop.arrivals()
    for task in measured:
        task_id = task.events[0]["task_id"]
        for name, values in breakdown(task, arrivals[prompt(task_id)]).items():
            parts.setdefault(name, []).extend(values)
    base_ms = [r.total_ms for r in loop]
    isolated_ms = [r.total_ms for r in isolated]
    step_p50, base_p50, isolated_p50 = p50(step_ms), p50(base_ms), p50(isolated_ms)
    return {
        "benchmark": "execution",
        "steps_per_task": args.steps,
        "tasks": len(measured),
        "rounds": args.rounds,
        "step_samples": len(step_ms),
        "baseline_samples": len(base_ms),
        "step_ms_p50": round(step_p50, 2),
        "baseline_ms_p50": round(base_p50, 2),
        "step_overhead_ratio": round(step_p50 / base_p50, 3),
        "target_ratio": 2.0,
        "step_ms_p95": round(statistics.quantiles(step_ms, n=20)[-1], 2),
        "baseline_ms_p95": round(statistics.quantiles(base_ms, n=20)[-1], 2),
        "baseline_kafka_round_trip_ms_p50": round(p50([r.kafka_ms for r in loop]), 2),
        "baseline_pg_commit_ms_p50": round(p50([r.commit_ms for r in loop]), 2),
        "isolated_samples": len(isolated_ms),
        "isolated_round_trip_ms_p50": round(isolated_p50, 2),
        "step_vs_isolated_ratio": round(step_p50 / isolated_p50, 3),
        "baseline_vs_isolated_ratio": round(base_p50 / isolated_p50, 3),
        "task_ms_per_step_p50": round(p50(per_task_ms), 2),
        "breakdown_ms_p50": {name: round(p50(values), 2) for name, values in parts.items()},
        "concurrent_tasks": args.concurrent,
        "concurrent_step_ms_p50": round(p50(concurrent_ms), 2),
        "concurrent_steps_per_s": round(args.concurrent * args.steps / elapsed, 1),
        "kafka_fetch_max_wait_ms": fm.kafka.fetch_max_wait_ms,
        "ledger": False,
        "memory": False,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def round_trip_runs(baseline: Baseline, runs: int, length: int) -> list[RoundTrip]:
    """``runs`` runs of ``length`` round trips and commits, each run after a random
    pause and its round trips one after another; no service takes part.

    The baseline is runs of ``steps - 1`` (a task's step intervals, which also
    follow each other at once, the task itself starting after a random pause);
    the isolated round trips are runs of one (reported beside the ratio, not in it).
    """
    trips: list[RoundTrip] = []
    for _ in range(runs):
        await _decorrelate()
        trips += [await baseline.once() for _ in range(length)]
    return trips


async def _decorrelate() -> None:
    """A random pause before each task, each run of baseline round trips and each
    isolated round trip.

    The embedded broker answers a waiting fetch on its own clock, not when data
    arrives, so a hop's latency depends on when in that cycle its record lands; a
    random start spreads the first hop of each over the cycle.
    """
    await asyncio.sleep(random.uniform(0, 0.1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=20, help="model calls per task (>= 2)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each side")
    parser.add_argument("--tasks-per-round", type=int, default=6, help="sequential tasks a round")
    parser.add_argument(
        "--isolated-per-round", type=int, default=100, help="isolated round trips a round"
    )
    parser.add_argument("--concurrent", type=int, default=8, help="tasks of the concurrent round")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
