"""The workload of ``./dev demo``: two agents, a batch of tasks, faults on purpose, a summary.

Everything but the models is the running mesh: with the admin token of
``./dev up`` the demo registers three tools with the tools gateway (the builtin
calculator, a flaky HTTP lookup, a hand-off tool), two agents with the
supervisor (see :mod:`mainstay_execution._demo_world`), a human approver and a
submitter with identity, prices in the ledger, and two facts in memory, the
second superseding the first. It then submits a batch over Kafka and follows
every task on ``execution.evt.task.v1`` while the faults happen:

- the primary model has a hiccup (a 500, retried), then an outage (503s: the
  tasks fall back to the backup model);
- the lookup tool fails twice (the task retries the call; the tool's server
  counts one side effect per step);
- one task's budget runs out: the ledger asks the human, who approves it
  through identity's inbox API, and the task goes on;
- the execution service is killed with SIGKILL mid-batch and started again:
  its tasks resume from their checkpoints.

It ends with a summary table (tasks completed, retries, fallbacks,
escalations, dead letters, cost per successful task). Real model providers were
not reachable where the demo was verified, so by default the models are a
local scripted server speaking the OpenAI-compatible API, and the demo says so; with ``MAINSTAY_MODEL_BASE_URL`` (and ``MAINSTAY_MODEL_API_KEY``,
``MAINSTAY_MODEL_NAME``) set the agents use that endpoint instead, and no
model fault is scripted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.markup import escape
from rich.table import Table

from mainstay_common.bus import Bus
from mainstay_common.settings import KafkaSettings
from mainstay_contracts.execution import (
    FINAL_TASK_EVENTS,
    SUBMIT_TASK,
    TASK_EVENTS,
    SubmitTaskCommand,
)
from mainstay_execution._demo_world import (
    BACKUP,
    CALCULATOR,
    HAND_OFF,
    HUMAN,
    LOOKUP,
    PRIMARY,
    SUBMITTER,
    DemoProblem,
    HandOffs,
    ModelEndpoint,
    Planner,
    Role,
    agent_definitions,
    batch_deadline,
    check,
    dead_letter_total,
    price_models,
    principal_token,
    seed_memory,
    since,
    tool_specs,
)
from mainstay_execution.testing.fake_models import FakeModelServer, HttpFailure
from mainstay_execution.testing.toolserver import ToolServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from pathlib import Path

    from rich.console import Console

__all__ = ["COST_LABEL", "ExecutionDemoReport", "ExecutionFaults", "run_execution_demo"]

COST_LABEL = "cost per successful task"
TOPICS = ("Q3 revenue", "customer churn", "the hiring plan")
BUDGET_TOPIC = "the cloud bill"
TASK_CAP_MICROS = 50_000
BUDGET_CAP_MICROS = 300
"""Less than one step of the budget task costs: its hold runs out after the first."""
LOOKUP_FAILURES = 2
CRASH_AFTER_STEPS = 6
"""SIGKILL the execution service once this many steps completed across the batch."""
REGISTRATION_GRACE_S = 1.0
_NO_AGENT = "agent: no agent"


@dataclass
class ExecutionFaults:
    """What the demo may do to the execution service: kill it (SIGKILL; returns what was
    killed, e.g. its pid) and start it again (returns once it answers ``/readyz``)."""

    crash: Callable[[], Awaitable[str]]
    restart: Callable[[], Awaitable[None]]


@dataclass
class TaskRecord:
    task_id: str
    agent: str = ""
    final: dict[str, Any] | None = None
    handed_off_by: str | None = None
    submitted: tuple[Role, str, int] | None = None
    """What the demo submitted it with (role, input, cap); None for a handed-off task."""


@dataclass
class ExecutionDemoReport:
    real_model: bool = False
    kill_planned: bool = False
    """The demo was given the means to kill and restart the execution service."""
    agents: dict[str, str] = field(default_factory=dict)
    memory_outcomes: list[str] = field(default_factory=list)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    batch: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0
    fallbacks: int = 0
    escalations: int = 0
    approvals: int = 0
    killed: str = ""
    killed_after_events: int = 0
    """How many of :attr:`events` came before the kill."""
    restarted_after_s: float | None = None
    dead_letters: int | None = None
    lookup_calls: int = 0
    lookup_effects: dict[str, int] = field(default_factory=dict)
    model_calls: dict[str, int] = field(default_factory=dict)
    currency: str = ""
    problem: str = ""
    seconds: float = 0.0

    @property
    def completed(self) -> list[TaskRecord]:
        return [t for t in self.tasks.values() if t.final and t.final["type"] == "task.completed"]

    @property
    def hand_offs(self) -> int:
        return sum(t.handed_off_by is not None for t in self.tasks.values())

    @property
    def cost_per_success(self) -> float | None:
        done = self.completed
        if not done:
            return None
        return sum(int(t.final.get("cost_micros") or 0) for t in done if t.final) / len(done)

    @property
    def ok(self) -> bool:
        every_task_done = bool(self.tasks) and len(self.completed) == len(self.tasks)
        survived_the_kill = not self.kill_planned or (
            bool(self.killed) and self.restarted_after_s is not None
        )
        if self.problem or not every_task_done or not survived_the_kill:
            return False
        if self.real_model:
            return True
        return (
            self.retries > 0
            and self.fallbacks > 0
            and self.approvals > 0
            and self.hand_offs >= 2 * len(TOPICS)
            and all(count == 1 for count in self.lookup_effects.values())
            and self.memory_outcomes == ["ADDED", "SUPERSEDED_PREVIOUS"]
        )

    def summary(self) -> list[tuple[str, str]]:
        rows = [
            ("tasks completed", f"{len(self.completed)} of {len(self.tasks)}"),
            ("hand-offs between the agents", str(self.hand_offs)),
            ("retries", str(self.retries)),
            ("fallbacks", str(self.fallbacks)),
            ("escalations", str(self.escalations)),
            ("budget approvals", f"{self.approvals} (answered through {HUMAN}'s inbox)"),
        ]
        if self.killed:
            back = self.restarted_after_s
            rows.append(
                (
                    "execution killed (SIGKILL)",
                    f"{self.killed}; running again after {back:.0f}s"
                    if back is not None
                    else f"{self.killed}; not restarted",
                )
            )
        steps = len(self.lookup_effects)
        effects = sum(self.lookup_effects.values())
        rows.append(
            (
                f"{LOOKUP} (flaky)",
                f"{self.lookup_calls} calls reached it; {effects} side effects for {steps} steps",
            )
        )
        rows.append(
            ("dead letters", "unknown" if self.dead_letters is None else str(self.dead_letters))
        )
        cost = self.cost_per_success
        rows.append(
            (
                COST_LABEL,
                "no task completed"
                if cost is None
                else f"{cost:.0f} micro-units ({cost / 1_000_000:.6f} {self.currency or 'units'})",
            )
        )
        return rows


# -- following the tasks ----------------------------------------------------------------


class _TaskFeed:
    """``execution.evt.task.v1`` from its end at start: what happens after, as it happens."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._topic = topic
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )

    async def __aenter__(self) -> _TaskFeed:
        await self._consumer.start()
        try:
            # The topic was created before: the metadata fetched at start has it.
            partitions = self._consumer.partitions_for_topic(self._topic) or set()
            if not partitions:
                raise DemoProblem(f"the topic {self._topic} does not exist")
            assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            self._consumer.assign(assigned)
            for partition, offset in (await self._consumer.end_offsets(assigned)).items():
                self._consumer.seek(partition, offset)
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def next_events(self) -> list[dict[str, Any]]:
        batch = await self._consumer.getmany(timeout_ms=300)
        return [json.loads(r.value) for records in batch.values() for r in records if r.value]


def _describe(event: dict[str, Any]) -> str:  # noqa: PLR0911  # one per type
    kind = event["type"]
    details: dict[str, Any] = event.get("details") or {}
    reason = event.get("reason") or ""
    match kind:
        case "task.accepted":
            return f"agent {event.get('agent')}"
        case "step.completed":
            calls = details.get("tool_calls") or []
            return f"step {event.get('step')}: " + (
                f"calls {', '.join(calls)}" if calls else "answers"
            )
        case "task.waiting":
            return reason or f"waiting for {details.get('waiting_for', '?')}"
        case "task.retrying" if details.get("fallback_from"):
            return f"fallback {details['fallback_from']} -> {details['fallback_to']}: {reason}"
        case "task.retrying":
            what = event.get("tool") or event.get("model") or ""
            return f"{what} attempt {details.get('attempt', '?')} failed ({reason}); retrying"
        case "task.completed":
            return f"{event.get('answer')!r} (cost {event.get('cost_micros')} micro-units)"
        case _:
            return reason


_SHOWN = {
    "task.accepted",
    "step.completed",
    "task.waiting",
    "task.retrying",
    "task.escalated",
    *FINAL_TASK_EVENTS,
}


@dataclass
class _Batch:
    """The demo's run: its tasks, the faults it injects, and the human who approves."""

    report: ExecutionDemoReport
    console: Console
    bus: Bus
    handoffs: HandOffs
    command: Callable[[str, Role, str, int], SubmitTaskCommand]
    faults: ExecutionFaults | None
    approve: Callable[[str], Awaitable[int]]
    prefix: str
    started: float = field(default_factory=time.monotonic)
    steps: int = 0
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    _approving: set[str] = field(default_factory=set)

    def name(self, task_id: str) -> str:
        return task_id.removeprefix(self.prefix)

    async def submit(self, task_id: str, role: Role, text: str, cap: int) -> None:
        self.report.tasks[task_id] = TaskRecord(
            task_id, agent=self.report.agents[role], submitted=(role, text, cap)
        )
        self.report.batch.append(task_id)
        await self.bus.publish(SUBMIT_TASK, self.command(task_id, role, text, cap))

    @property
    def done(self) -> bool:
        wanted = set(self.report.batch) | set(self.handoffs.submitted)
        return all(
            self.report.tasks.get(t) is not None and self.report.tasks[t].final is not None
            for t in wanted
        )

    async def on_event(self, event: dict[str, Any]) -> None:
        task_id = str(event.get("task_id", ""))
        if not task_id.startswith(self.prefix):
            return
        record = self.report.tasks.setdefault(task_id, TaskRecord(task_id))
        record.handed_off_by = record.handed_off_by or self.handoffs.submitted.get(task_id)
        record.agent = record.agent or str(event.get("agent") or "")
        self.report.events.append(event)
        kind = event["type"]
        details = event.get("details") or {}
        if kind == "task.retrying":
            if details.get("fallback_from"):
                self.report.fallbacks += 1
            else:
                self.report.retries += 1
        elif kind == "task.escalated":
            self.report.escalations += 1
        elif kind == "step.completed":
            self.steps += 1
        elif kind == "task.waiting" and details.get("waiting_for") == "budget":
            self._spawn(self._approve(task_id))
        if kind in _SHOWN:
            self.console.print(
                f"  {since(self.started):5.1f}s  {escape(self.name(task_id)):<34}"
                f" [bold]{kind:<15}[/] {escape(_describe(event))}",
                soft_wrap=True,
            )
        if kind in FINAL_TASK_EVENTS:
            await self._finished(record, event)
        if self.faults is not None and not self.report.killed and self.steps >= CRASH_AFTER_STEPS:
            await self._crash()

    async def _finished(self, record: TaskRecord, event: dict[str, Any]) -> None:
        reason = str(event.get("reason") or "")
        submitted = record.submitted
        if event["type"] == "task.failed" and reason.startswith(_NO_AGENT) and submitted:
            # The registration had not reached the execution service yet: once more.
            self.report.tasks.pop(record.task_id)
            self.report.batch.remove(record.task_id)
            again = f"{record.task_id}.again"
            self.console.print(
                f"  [dim]the execution service had not read the agents' registration yet;"
                f" submitting {self.name(record.task_id)} again as {self.name(again)}[/]"
            )
            await asyncio.sleep(1.0)
            await self.submit(again, *submitted)
            return
        record.final = event

    async def _crash(self) -> None:
        assert self.faults is not None
        self.report.killed_after_events = len(self.report.events)
        self.report.killed = await self.faults.crash()
        killed_at = time.monotonic()
        self.console.print(
            f"  {since(self.started):5.1f}s  [bold red]SIGKILL[/] the execution service"
            f" ({self.report.killed}) with tasks in flight; starting it again"
        )

        async def restart() -> None:
            assert self.faults is not None
            await self.faults.restart()
            self.report.restarted_after_s = time.monotonic() - killed_at
            self.console.print(
                f"  {since(self.started):5.1f}s  [bold green]execution is back[/]"
                f" after {self.report.restarted_after_s:.0f}s: its tasks resume from their"
                " checkpoints"
            )

        self._spawn(restart())

    async def _approve(self, task_id: str) -> None:
        if task_id in self._approving:
            return
        self._approving.add(task_id)
        try:
            while self.report.tasks[task_id].final is None:
                approved = await self.approve(task_id)
                if approved:
                    self.report.approvals += approved
                    self.console.print(
                        f"  {since(self.started):5.1f}s  {escape(self.name(task_id)):<34}"
                        f" [bold]approved[/]        by {HUMAN} through the inbox API"
                    )
                await asyncio.sleep(0.3)
        finally:
            self._approving.discard(task_id)

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """Wait for the restart (and anything else in flight); raise what failed."""
        if self._background:
            for outcome in await asyncio.gather(*self._background, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome

    async def cancel(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


# -- the demo -------------------------------------------------------------------------


async def _wait_ready(http: httpx.AsyncClient, services: Mapping[str, str], wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    for name, url in services.items():
        last = "no answer"
        while True:
            try:
                answer = await http.get(f"{url}/readyz", timeout=2.0)
                if answer.status_code == 200:
                    break
                last = f"/readyz answered {answer.status_code}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}"
            if time.monotonic() > deadline:
                raise DemoProblem(f"{name} at {url} was not ready within {wait_s:.0f}s ({last})")
            await asyncio.sleep(0.5)


def _script(models: FakeModelServer) -> None:
    """A hiccup, then an outage of the primary: its next requests are refused as overloaded
    (the open circuit sends further steps straight to the backup for a while)."""
    models.script(
        PRIMARY,
        [
            HttpFailure(500, "the primary had a hiccup"),
            HttpFailure(503, "the primary is overloaded"),
            HttpFailure(503, "the primary is overloaded"),
            HttpFailure(503, "the primary is overloaded"),
        ],
    )
    models.respond(PRIMARY, Planner())
    models.respond(BACKUP, Planner())


def _endpoint(environ: Mapping[str, str], models: FakeModelServer | None) -> ModelEndpoint:
    if models is not None:
        return ModelEndpoint(base_url=models.openai_base_url, real=False)
    return ModelEndpoint(
        base_url=environ["MAINSTAY_MODEL_BASE_URL"],
        real=True,
        model=environ.get("MAINSTAY_MODEL_NAME", "").strip() or "gpt-4o-mini",
    )


async def _register(
    http: httpx.AsyncClient,
    urls: Mapping[str, str],
    admin: Mapping[str, str],
    *,
    tenant: str,
    agents: Mapping[Role, str],
    endpoint: ModelEndpoint,
    lookup_url: str,
    hand_off_url: str,
) -> None:
    """The tools with the gateway, the agents with the supervisor."""
    for spec in tool_specs(lookup_url, hand_off_url):
        check(
            await http.put(
                f"{urls['tools-gateway']}/v1/tools/{spec['name']}", json=spec, headers=admin
            ),
            f"registering the tool {spec['name']}",
        )
    for role, definition in agent_definitions(agents, endpoint).items():
        check(
            await http.put(
                f"{urls['supervisor']}/v1/tenants/{tenant}/agents/{agents[role]}",
                json=definition,
                headers=admin,
            ),
            f"registering the agent {agents[role]}",
        )


def _approver(
    http: httpx.AsyncClient, identity_url: str, human_token: str
) -> Callable[[str], Awaitable[int]]:
    """The human at work: approves every pending approval of a task through the inbox API;
    answers how many it approved."""
    as_human = {"Authorization": f"Bearer {human_token}"}

    async def approve(task_id: str) -> int:
        listing = check(
            await http.get(
                f"{identity_url}/v1/approvals", params={"status": "pending"}, headers=as_human
            ),
            "reading the approvals",
        )
        approved = 0
        for approval in listing["approvals"]:
            if approval.get("task_id") != task_id:
                continue
            check(
                await http.post(
                    f"{identity_url}/v1/approvals/{approval['approval_id']}/decision",
                    json={"decision": "approve", "reason": "worth it"},
                    headers=as_human,
                ),
                "approving the budget",
            )
            approved += 1
        return approved

    return approve


async def run_execution_demo(  # noqa: PLR0915 - one linear story reads best
    bootstrap: str,
    home: Path,
    console: Console,
    *,
    urls: Mapping[str, str],
    memory_target: str,
    faults: ExecutionFaults | None = None,
    tenant: str = "default",
    topic_prefix: str = "",
    environ: Mapping[str, str] | None = None,
    ready_s: float = 120.0,
    batch_s: float = 300.0,
) -> ExecutionDemoReport:
    """Run the workload through the running mesh; see the module docstring.

    ``urls``: the HTTP base URLs of ``identity``, ``tools-gateway``, ``ledger``,
    ``supervisor`` and ``execution``; ``memory_target`` the memory service's gRPC
    address. ``home`` holds ``admin.token`` (an admin of ``tenant``). ``faults``
    kill and restart the execution service (no kill without them).
    """
    environ = os.environ if environ is None else environ
    report = ExecutionDemoReport()
    started = time.monotonic()
    run = uuid.uuid4().hex[:6]
    prefix = f"demo-{run}-"
    agents: dict[Role, str] = {"researcher": f"researcher-{run}", "writer": f"writer-{run}"}
    report.agents = dict(agents.items())
    admin = {"Authorization": f"Bearer {(home / 'admin.token').read_text().strip()}"}
    real = bool(environ.get("MAINSTAY_MODEL_BASE_URL", "").strip())
    report.real_model = real
    report.kill_planned = faults is not None
    batch: _Batch | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            models = None if real else await stack.enter_async_context(FakeModelServer())
            endpoint = _endpoint(environ, models)
            if models is not None:
                _script(models)
                console.print(
                    "[yellow]note:[/] model providers are not reachable here, so the agents'"
                    f" models are a local scripted server speaking the OpenAI-compatible API"
                    f" ({models.url}): '{PRIMARY}' has a hiccup (500) and then an outage"
                    f" (503s), '{BACKUP}' is the fallback. Set MAINSTAY_MODEL_BASE_URL"
                    " (and MAINSTAY_MODEL_API_KEY) to run against a real endpoint."
                )
            else:
                console.print(
                    f"[yellow]note:[/] the agents' model is {endpoint.model} at"
                    f" {endpoint.base_url} (MAINSTAY_MODEL_BASE_URL); no model fault is scripted"
                )
            tools = await stack.enter_async_context(ToolServer())
            tools.fail_next(LOOKUP, LOOKUP_FAILURES)
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=10, trust_env=False))
            await _wait_ready(http, urls, ready_s)
            async with asyncio.timeout(batch_s):
                report.currency = await price_models(http, urls["ledger"], admin, tenant, endpoint)
                scopes = ["execution:submit", *(f"tools:call:{t}" for t in (CALCULATOR, LOOKUP))]
                scopes.append(f"tools:call:{HAND_OFF}")
                for agent in agents.values():
                    scopes += [f"memory:read:{agent}", f"memory:write:{agent}"]
                token = await principal_token(
                    http, urls["identity"], admin, tenant=tenant, name=SUBMITTER,
                    kind="service", scopes=scopes,
                )  # fmt: skip
                human = await principal_token(
                    http, urls["identity"], admin, tenant=tenant, name=HUMAN, kind="user",
                    scopes=[],
                )  # fmt: skip
                deadline = batch_deadline(batch_s)
                bus = await stack.enter_async_context(
                    Bus(service="demo", kafka=KafkaSettings(bootstrap=bootstrap, topic_prefix=topic_prefix))
                )  # fmt: skip
                await bus.ensure_topics([SUBMIT_TASK, TASK_EVENTS])
                handoffs = await stack.enter_async_context(
                    HandOffs(bus, tenant, agents, token, TASK_CAP_MICROS, deadline)
                )
                await _register(
                    http, urls, admin, tenant=tenant, agents=agents, endpoint=endpoint,
                    lookup_url=tools.url(LOOKUP), hand_off_url=handoffs.url,
                )  # fmt: skip
                console.print(
                    f"registered tools {CALCULATOR}, {LOOKUP} (fails {LOOKUP_FAILURES} times"
                    f" first), {HAND_OFF}; agents {agents['researcher']} and {agents['writer']};"
                    f" {HUMAN}, a human who approves budgets"
                )
                report.memory_outcomes = await seed_memory(
                    memory_target, token, tenant=tenant, agent=agents["researcher"]
                )
                console.print(
                    f"memory: 'head office in Berlin' {report.memory_outcomes[0]}, then 'moved to"
                    f" Lisbon' {report.memory_outcomes[-1]} (the old fact stays in history)"
                )
                letters_before = await dead_letter_total(http, urls["supervisor"], admin)

                def command(task_id: str, role: Role, text: str, cap: int) -> SubmitTaskCommand:
                    return SubmitTaskCommand(
                        task_id=task_id,
                        tenant=tenant,
                        agent=agents[role],
                        input=text,
                        token=token,
                        max_cost_micros=cap,
                        deadline=deadline,
                        labels={"source": "dev-demo"},
                    )

                async with _TaskFeed(bootstrap, f"{topic_prefix}{TASK_EVENTS.name}") as feed:
                    approve = _approver(http, urls["identity"], human)
                    batch = _Batch(report, console, bus, handoffs, command, faults, approve, prefix)
                    # The agents' registrations reach the execution service over Kafka.
                    await asyncio.sleep(REGISTRATION_GRACE_S)
                    for n, topic in enumerate(TOPICS, start=1):
                        await batch.submit(
                            f"{prefix}r{n}", "researcher", f"Research: {topic}", TASK_CAP_MICROS
                        )
                    await batch.submit(
                        f"{prefix}budget", "researcher", f"Budget: {BUDGET_TOPIC}",
                        BUDGET_CAP_MICROS,
                    )  # fmt: skip
                    crash = f"; execution dies after {CRASH_AFTER_STEPS} steps" if faults else ""
                    console.print(
                        f"submitted {len(TOPICS)} research tasks and one with a"
                        f" {BUDGET_CAP_MICROS} micro-unit cap{crash}"
                    )
                    console.print(f"  [dim]{'time':>6}  {'task':<34} {'event':<15} detail[/]")
                    while not batch.done:
                        for event in await feed.next_events():
                            await batch.on_event(event)
                    await batch.settle()
                letters_after = await dead_letter_total(http, urls["supervisor"], admin)
                report.dead_letters = letters_after - letters_before
            report.lookup_calls = tools.calls(LOOKUP)
            report.lookup_effects = tools.effects_by_key(LOOKUP)
            if models is not None:
                report.model_calls = {m: models.calls(m) for m in (PRIMARY, BACKUP)}
    except TimeoutError:
        unfinished = [t for t, r in report.tasks.items() if r.final is None]
        report.problem = (
            f"timed out after {since(started):.0f}s with {len(unfinished)} tasks unfinished"
            f" ({', '.join(unfinished[:5])}); see `./dev logs execution`"
        )
    except httpx.HTTPError as exc:
        where = f" ({exc.request.method} {exc.request.url})" if _has_request(exc) else ""
        report.problem = f"{type(exc).__name__}{where}: {exc}".rstrip(": ")
    except (DemoProblem, OSError) as exc:
        report.problem = str(exc) or type(exc).__name__
    finally:
        if batch is not None:
            await batch.cancel()
    report.seconds = since(started)
    _print(report, console)
    return report


def _has_request(exc: httpx.HTTPError) -> bool:
    try:
        _ = exc.request
    except RuntimeError:  # an error raised without a request
        return False
    return True


def _print(report: ExecutionDemoReport, console: Console) -> None:
    if report.model_calls:
        console.print(
            "model requests served by the scripted server: "
            + ", ".join(f"{model} {count}" for model, count in report.model_calls.items())
        )
    table = Table(title="demo summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in report.summary():
        table.add_row(label, escape(value))
    console.print(table)
    if report.problem:
        console.print(f"[red]problem:[/] {escape(report.problem)}", soft_wrap=True)
    verdict = "[green]workload OK[/]" if report.ok else "[red]workload FAILED[/]"
    console.print(f"{verdict} in {report.seconds:.1f}s")
