"""``mainstay tasks``: submit, watch, list, show and cancel agent tasks."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from mainstay_client.cli._core import (
    JsonOption,
    fail,
    load_settings,
    out,
    run,
    segment,
    show,
    supervisor_api,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mainstay_client._tasks import Mainstay, TaskHandle
    from mainstay_contracts.execution import TaskEvent

__all__ = ["commands", "healing"]

commands = typer.Typer(help="Agent tasks: submit, watch, list, show, cancel.", no_args_is_help=True)

_STYLE = {"task.completed": "green", "task.failed": "red", "task.cancelled": "yellow"}
_FINAL = frozenset(_STYLE)


def _client() -> Mainstay:
    from mainstay_client._tasks import Mainstay  # noqa: PLC0415 - Kafka only for commands that use it

    return Mainstay(load_settings())


@commands.command()
def submit(
    agent: Annotated[str, typer.Argument(help="The agent that runs the task.")],
    text: Annotated[str, typer.Argument(metavar="INPUT", help="What the agent is asked.")],
    task_id: Annotated[
        str | None, typer.Option(help="The task's id, its idempotency key (default: new).")
    ] = None,
    max_cost: Annotated[
        int | None, typer.Option(help="Cap on the task's cost, in micro-units.", min=1)
    ] = None,
    priority: Annotated[int, typer.Option(min=0, max=9, help="0 runs first.")] = 5,
    label: Annotated[
        list[str] | None, typer.Option(help="A label as key=value (repeatable).")
    ] = None,
    watch_it: Annotated[
        bool, typer.Option("--watch", help="Follow the task until it ends.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="With --watch: seconds to follow it.")] = 600,
    as_json: JsonOption = False,
) -> None:
    """Submit a task to an agent; prints its id (and follows it with --watch)."""
    labels = dict(_label(item) for item in label or [])

    async def go() -> None:
        async with _client() as mainstay:
            task = await mainstay.submit_task(
                agent,
                text,
                task_id=task_id,
                max_cost_micros=max_cost,
                priority=priority,
                labels=labels,
            )
            if not watch_it:
                show({"task_id": task.task_id, "agent": agent}, as_json=as_json)
                return
            if not as_json:
                out.print(f"submitted [bold]{escape(task.task_id)}[/bold]")
            await _follow(task, timeout, as_json=as_json)

    run(go())


@commands.command()
def watch(
    task_id: Annotated[str, typer.Argument(help="The task to follow.")],
    timeout: Annotated[float, typer.Option(help="Seconds to follow it before giving up.")] = 600,
    as_json: JsonOption = False,
) -> None:
    """Follow a task step by step until it ends: the answer, the cost and the self-healing
    that happened on the way. With --json, one event per line."""

    async def go() -> None:
        async with _client() as mainstay:
            await _follow(await mainstay.task(task_id), timeout, as_json=as_json)

    run(go())


@commands.command("list")
def list_tasks(
    state: Annotated[str | None, typer.Option(help="Only tasks in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    tenant: Annotated[str | None, typer.Option(help="Default: the token's tenant.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The tenant's tasks as the supervisor follows them, latest first."""

    async def go() -> None:
        settings, api = supervisor_api()
        answer = await api.call(
            "GET",
            f"/v1/tenants/{segment(settings.tenant_or(tenant))}/tasks",
            params={"state": state, "limit": limit},
        )
        show(answer["tasks"], as_json=as_json, title="tasks")

    run(go())


@commands.command("show")
def show_task(
    task_id: Annotated[str, typer.Argument(help="The task.")],
    as_json: JsonOption = False,
) -> None:
    """Everything the task went through so far, and its outcome if it ended."""

    async def go() -> None:
        async with _client() as mainstay:
            events = await (await mainstay.task(task_id)).history()
        if not events:
            fail(f"no events of task {task_id!r} (unknown, or compacted away)")
        if as_json:
            show([_plain(event) for event in events], as_json=True)
            return
        show(
            [_row(event) for event in events],
            as_json=False,
            columns=["time", "event", "step", "model", "tool", "reason"],
            title=f"task {task_id}",
        )
        _summary(events)

    run(go())


@commands.command()
def cancel(
    task_id: Annotated[str, typer.Argument(help="The task.")],
    reason: Annotated[str, typer.Option(help="Why (on task.cancelled).")] = "cancelled by hand",
    as_json: JsonOption = False,
) -> None:
    """Ask the execution service to cancel a task (it ends with task.cancelled)."""

    async def go() -> None:
        async with _client() as mainstay:
            await mainstay.cancel_task(task_id, reason, requested_by="mainstay-cli")
        show({"task_id": task_id, "cancellation": "requested"}, as_json=as_json)

    run(go())


# -- following a task ------------------------------------------------------------------------


async def _follow(task: TaskHandle, timeout_s: float, *, as_json: bool) -> None:
    seen: list[TaskEvent] = []
    if as_json:
        async for event in task.events(timeout_s=timeout_s):
            seen.append(event)
            sys.stdout.write(json.dumps(_plain(event)) + "\n")
            sys.stdout.flush()
    else:
        with out.status(f"following {task.task_id}") as status:
            async for event in task.events(timeout_s=timeout_s):
                seen.append(event)
                row = _row(event)
                style = _STYLE.get(event.type, "cyan")
                details = " ".join(
                    escape(str(row[k])) for k in ("model", "tool", "reason") if row[k]
                )
                step = f" step {event.step}" if event.step else ""
                out.print(
                    f"[dim]{row['time']}[/dim] [{style}]{event.type}[/{style}]{step} {details}"
                )
                status.update(f"{task.task_id}: {event.type}{step}")
        _summary(seen)
    if seen and seen[-1].type != "task.completed":
        raise typer.Exit(1)


def _summary(events: list[TaskEvent]) -> None:
    last = events[-1]
    if last.type not in _FINAL:
        out.print(f"[dim]still running: {last.type}[/dim]")
        return
    summary: dict[str, Any] = {"outcome": last.type.removeprefix("task.")}
    if last.answer is not None:
        summary["answer"] = last.answer
    if last.reason:
        summary["reason"] = last.reason
    summary["cost (micro-units)"] = last.cost_micros or 0
    summary["steps"] = max((e.step or 0 for e in events), default=0)
    summary.update(healing(events))
    show(summary, as_json=False, title="outcome")


def healing(events: Iterable[TaskEvent]) -> dict[str, int]:
    """What self-healing happened: retries (of models and tools), model fallbacks,
    corrected model output, escalations to humans, and whether the task ran degraded."""
    counts: Counter[str] = Counter()
    degraded = False
    for event in events:
        degraded = degraded or event.degraded
        if event.type == "task.retrying":
            counts["fallbacks" if "fallback_to" in event.details else "retries"] += 1
        elif event.type == "step.failed":
            counts["corrections"] += 1
        elif event.type == "task.escalated":
            counts["escalations"] += 1
    return {
        "retries": counts["retries"],
        "fallbacks": counts["fallbacks"],
        "corrections": counts["corrections"],
        "escalations": counts["escalations"],
        "degraded": int(degraded),
    }


def _row(event: TaskEvent) -> dict[str, Any]:
    return {
        "time": event.occurred_at.strftime("%H:%M:%S.%f")[:-3],
        "event": event.type,
        "step": event.step or "",
        "model": event.model,
        "tool": event.tool,
        "reason": event.reason or (event.answer or ""),
    }


def _plain(event: TaskEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")


def _label(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{item!r} is not key=value", param_hint="--label")
    return key, value
