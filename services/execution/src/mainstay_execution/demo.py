"""The execution part of ``./dev demo``: one agent task through the whole running mesh.

Real model providers cannot be reached from the development machines, so the
demo serves the agent's two models itself for its duration: a
:class:`~mainstay_execution.testing.fake_models.FakeModelServer` on loopback
answers as ``primary`` (OpenAI API) and ``backup`` (Anthropic API). Everything
else is the running stack: with the admin token of ``./dev up`` the demo
registers a builtin tool with the tools gateway, prices the two models in the
ledger, registers an agent with the supervisor and gets a submitter token from
the identity service; then it publishes ``execution.cmd.submit-task.v1`` and
follows the task on ``execution.evt.task.v1``, one line per transition.

The models are scripted so the task has to heal itself on the way: the
primary fails once with a 500 (retried with backoff), then asks for the
calculator; on the next step it is overloaded (503) and the task falls back to
the backup, which writes a memory and answers with the calculator's result.
The cost cap makes the ledger hold the budget and charge every model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.markup import escape

from mainstay_common.bus import Bus
from mainstay_common.settings import KafkaSettings
from mainstay_contracts.execution import (
    FINAL_TASK_EVENTS,
    SUBMIT_TASK,
    TASK_EVENTS,
    SubmitTaskCommand,
)
from mainstay_execution.testing.fake_models import (
    CallTool,
    FakeModelServer,
    FakeRequest,
    HttpFailure,
    Reply,
    ToolLoopResponder,
)
from mainstay_execution.toolcalls import REMEMBER_TOOL

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from rich.console import Console

__all__ = ["ExecutionDemoReport", "run_execution_demo"]

TOOL = "demo-calculator"
"""The tool the agent uses: the gateway's builtin calculator, registered under this name."""
EXPRESSION = "17 * 23 + 4"
RESULT = 395
EXPECTED_ANSWER = f"{EXPRESSION} = {RESULT}"
"""What the backup answers once the calculator returned ``RESULT``."""
PRIMARY = "primary"
BACKUP = "backup"
PRICES: dict[str, dict[str, int]] = {
    PRIMARY: {"input_per_mtok": 2_000_000, "output_per_mtok": 8_000_000},
    BACKUP: {"input_per_mtok": 1_000_000, "output_per_mtok": 4_000_000},
}
"""Micro-units per million tokens: a token of ``primary`` costs 2 in, 8 out."""
COST_CAP_MICROS = 50_000
SUBMITTER = "demo-submitter"
_NO_AGENT = "agent: no agent"
REGISTRATION_GRACE_S = 1.0
"""How long after registering the agent the first task is submitted (the registration
reaches the execution service over Kafka; a task submitted before fails and is sent again)."""


class _DemoProblem(Exception):
    """A step of the demo was refused; the message says which and why."""


@dataclass
class ExecutionDemoReport:
    agent: str = ""
    task_id: str = ""
    submissions: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = ""
    """The task's final event type, or empty when it never ended."""
    answer: str | None = None
    cost_micros: int | None = None
    currency: str = ""
    problem: str = ""
    """Why the demo could not finish, when it could not."""
    model_calls: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "task.completed" and self.answer == EXPECTED_ANSWER


# -- the models -------------------------------------------------------------------------


def _tool_output(request: FakeRequest, tool: str) -> Any:
    """What ``tool`` answered in the conversation so far (its ``output``), if it did."""
    calls = {
        call.id for message in request.messages for call in message.tool_calls if call.name == tool
    }
    for message in request.messages:
        if message.role == "tool" and message.tool_call_id in calls:
            with contextlib.suppress(ValueError, AttributeError):
                return json.loads(message.content).get("output")
    return None


class _Finisher:
    """Calls each offered tool once (the calculator, ``remember``), then answers with the
    calculator's result: the answer the demo expects only if the tool really ran."""

    def __init__(self) -> None:
        self._loop = ToolLoopResponder(
            {
                TOOL: {"expression": EXPRESSION},
                REMEMBER_TOOL: {
                    "content": f"{EXPRESSION} is {RESULT}",
                    "kind": "fact",
                    "subject": "demo.arithmetic",
                },
            }
        )

    def __call__(self, request: FakeRequest) -> Reply:
        reply = self._loop(request)
        if reply.tool_calls:
            return reply
        text = f"{EXPRESSION} = {_tool_output(request, TOOL)}"
        return Reply(text, input_tokens=reply.input_tokens, output_tokens=1 + len(text) // 4)


def _script(models: FakeModelServer) -> None:
    """The primary stumbles twice, differently; the backup finishes the task."""
    models.script(
        PRIMARY,
        [
            HttpFailure(500, "the primary had a hiccup"),
            Reply(tool_calls=[CallTool(TOOL, {"expression": EXPRESSION})]),
            HttpFailure(503, "the primary is overloaded"),
        ],
    )
    # Past its script (an unexpected extra request) the primary behaves like the backup,
    # so the demo still ends instead of waiting on a model that says "done".
    models.respond(PRIMARY, _Finisher())
    models.respond(BACKUP, _Finisher())


# -- the mesh --------------------------------------------------------------------------


def _check(answer: httpx.Response, doing: str, ok: tuple[int, ...] = (200, 201)) -> Any:
    if answer.status_code not in ok:
        raise _DemoProblem(f"{doing} was refused ({answer.status_code}): {answer.text[:300]}")
    return answer.json() if answer.content else None


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
                raise _DemoProblem(f"{name} at {url} was not ready within {wait_s:.0f}s ({last})")
            await asyncio.sleep(0.5)


async def _submitter_token(
    http: httpx.AsyncClient, identity_url: str, admin: dict[str, str], tenant: str, agent: str
) -> str:
    scopes = [
        "execution:submit",
        f"tools:call:{TOOL}",
        f"memory:read:{agent}",
        f"memory:write:{agent}",
    ]
    principal = f"{identity_url}/v1/tenants/{tenant}/principals/{SUBMITTER}"
    body = {"kind": "service", "description": "submits the tasks of ./dev demo", "scopes": scopes}
    _check(await http.put(principal, json=body, headers=admin), f"registering {SUBMITTER}")
    secret = _check(await http.post(f"{principal}/secret", headers=admin), "a client secret")
    token = _check(
        await http.post(
            f"{identity_url}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": f"{tenant}/{SUBMITTER}",
                "client_secret": secret["client_secret"],
                "scope": " ".join(scopes),
            },
        ),
        "a submitter token",
    )
    return str(token["access_token"])


async def _price_models(
    http: httpx.AsyncClient, ledger_url: str, admin: dict[str, str], tenant: str
) -> str:
    """Price both models for the tenant unless the book already has these prices; the
    ledger's currency."""
    currency = ""
    for model, prices in PRICES.items():
        item = f"model:{model}"
        found = await http.get(f"{ledger_url}/v1/tenants/{tenant}/prices/{item}", headers=admin)
        current = found.json() if found.status_code == 200 else {}
        if any(current.get(name) != value for name, value in prices.items()):
            current = _check(
                await http.post(
                    f"{ledger_url}/v1/prices",
                    json={"item": item, "tenant": tenant, **prices},
                    headers=admin,
                ),
                f"pricing {item}",
            )
        currency = str(current.get("currency", ""))
    return currency


async def _register(
    http: httpx.AsyncClient,
    urls: Mapping[str, str],
    admin: dict[str, str],
    *,
    tenant: str,
    agent: str,
    models: FakeModelServer,
) -> int:
    """The tool with the gateway and the agent with the supervisor; the agent's version."""
    tool = {
        "name": TOOL,
        "kind": "builtin",
        "builtin": {"builtin": "calculator"},
        "description": "Evaluate an arithmetic expression (the gateway's builtin calculator).",
        "input_schema": {
            "type": "object",
            "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": 1000}},
            "required": ["expression"],
            "additionalProperties": False,
        },
        "timeout_s": 2.0,
    }
    _check(
        await http.put(f"{urls['tools-gateway']}/v1/tools/{TOOL}", json=tool, headers=admin),
        f"registering the tool {TOOL}",
    )
    definition = {
        "identity": agent,
        "description": "The agent of ./dev demo: does arithmetic with a tool.",
        "models": [
            models.model_ref("openai", PRIMARY, timeout_s=10, max_tokens=512).model_dump(
                exclude_none=True
            ),
            models.model_ref("anthropic", BACKUP, timeout_s=10, max_tokens=512).model_dump(
                exclude_none=True
            ),
        ],
        "system_prompt": f"You do arithmetic. Always compute with {TOOL}.",
        "tools": [TOOL],
        "memory": {"recall": True, "remember": ["fact"]},
        "limits": {"max_steps": 8, "step_timeout_s": 30, "task_deadline_s": 300},
    }
    record = _check(
        await http.put(
            f"{urls['supervisor']}/v1/tenants/{tenant}/agents/{agent}",
            json=definition,
            headers=admin,
        ),
        f"registering the agent {agent}",
    )
    return int(record["version"])


# -- the task ------------------------------------------------------------------------------


class _TaskFeed:
    """``execution.evt.task.v1`` from its end at start: what happens after, as it happens."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._topic = topic
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        self._pending: list[dict[str, Any]] = []

    async def __aenter__(self) -> _TaskFeed:
        await self._consumer.start()
        try:
            await self._consumer.topics()  # fetches the metadata partitions_for_topic reads
            partitions = self._consumer.partitions_for_topic(self._topic) or set()
            if not partitions:
                raise _DemoProblem(f"the topic {self._topic} does not exist")
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

    async def follow(self, task_id: str, show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Show each event of ``task_id`` as it comes; returns the final one."""
        while True:
            batch = await self._consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value)
                    if event.get("task_id") != task_id:
                        continue
                    show(event)
                    if event["type"] in FINAL_TASK_EVENTS:
                        return dict(event)


def _describe(event: dict[str, Any], currency: str) -> str:  # noqa: PLR0911  # one per type
    kind = event["type"]
    details: dict[str, Any] = event.get("details") or {}
    reason = event.get("reason") or ""
    match kind:
        case "task.accepted":
            return f"agent {event.get('agent')} v{event.get('agent_version')}"
        case "task.started":
            degraded = " (degraded: " + details["memory"] + ")" if "memory" in details else ""
            return f"{details.get('memories', 0)} memories recalled{degraded}"
        case "step.completed":
            calls = details.get("tool_calls") or []
            did = f"calls {', '.join(calls)}" if calls else "answers"
            return (
                f"{did} ({details.get('input_tokens')} tokens in,"
                f" {details.get('output_tokens')} out)"
            )
        case "task.waiting":
            return reason or f"waiting for {details.get('waiting_for', '?')}"
        case "task.retrying" if details.get("fallback_from"):
            return f"fallback {details['fallback_from']} -> {details['fallback_to']}: {reason}"
        case "task.retrying" if "attempt" in details:
            return (
                f"attempt {details['attempt']} failed ({reason}); again in"
                f" {details.get('delay_s', 0):.2f}s"
            )
        case "task.completed":
            return f"answer {event.get('answer')!r}, {_cost(event.get('cost_micros'), currency)}"
        case "task.failed" | "task.cancelled":
            return f"{reason}, {_cost(event.get('cost_micros'), currency)}"
        case _:
            return reason


def _cost(micros: int | None, currency: str) -> str:
    if micros is None:
        return "no cost reported"
    return f"cost {micros} micro-units ({micros / 1_000_000:.6f} {currency or 'units'})"


async def _run_task(
    bus: Bus,
    feed: _TaskFeed,
    command: Callable[[str], SubmitTaskCommand],
    *,
    run: str,
    report: ExecutionDemoReport,
    console: Console,
) -> None:
    """Submit until the execution service knows the agent, then follow the task to its end."""
    while True:
        report.submissions += 1
        report.task_id = f"demo-{run}-{report.submissions}"
        report.events = []
        started = time.monotonic()

        def show(event: dict[str, Any], started: float = started) -> None:
            report.events.append(event)
            if event["type"] == "task.failed" and event.get("reason", "").startswith(_NO_AGENT):
                return  # shown below as what it is: the registration is still on its way
            step = "" if event.get("step") is None else str(event["step"])
            line = (
                f"  {time.monotonic() - started:5.1f}s  [bold]{event['type']:<15}[/]"
                f" {step:>2}  {event.get('model') or '':<8} {event.get('tool') or '':<15}"
                f" {escape(_describe(event, report.currency))}"
            )
            console.print(line, soft_wrap=True)

        await bus.publish(SUBMIT_TASK, command(report.task_id))
        if report.submissions == 1:
            console.print(
                f"submitted [bold]{report.task_id}[/]: {command(report.task_id).input!r}"
                f" (cost cap {COST_CAP_MICROS} micro-units)"
            )
            console.print(
                f"  [dim]{'time':>6}  {'event':<15} {'step':>2}  {'model':<8} {'tool':<15} detail[/]"
            )
        final = await feed.follow(report.task_id, show)
        if final["type"] == "task.failed" and final.get("reason", "").startswith(_NO_AGENT):
            console.print(
                f"  [dim]the execution service has not read agent {report.agent}'s registration"
                f" yet; submitting again as demo-{run}-{report.submissions + 1}[/]"
            )
            await asyncio.sleep(1.0)
            continue
        report.outcome = final["type"]
        report.answer = final.get("answer")
        report.cost_micros = final.get("cost_micros")
        return


async def run_execution_demo(
    bootstrap: str,
    home: Path,
    console: Console,
    *,
    urls: Mapping[str, str],
    tenant: str = "default",
    topic_prefix: str = "",
    ready_s: float = 60.0,
    task_s: float = 60.0,
) -> ExecutionDemoReport:
    """Run one agent task through the running mesh; see the module docstring.

    ``urls``: the HTTP base URLs of ``identity``, ``tools-gateway``, ``ledger``,
    ``supervisor`` and ``execution``. ``home`` holds ``admin.token`` (an admin of
    ``tenant``). The services get ``ready_s`` to answer ``/readyz``; the rest
    (registrations, the task) gets ``task_s``.
    """
    report = ExecutionDemoReport()
    started = time.monotonic()
    run = uuid.uuid4().hex[:6]
    report.agent = f"demo-{run}"
    admin = {"Authorization": f"Bearer {(home / 'admin.token').read_text().strip()}"}
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=topic_prefix)
    try:
        async with (
            FakeModelServer() as models,
            httpx.AsyncClient(timeout=10, trust_env=False) as http,
        ):
            console.print(
                "[yellow]note:[/] real model providers are unreachable here, so for this demo"
                f" a fake model server at {models.url} (FakeModelServer) serves '{PRIMARY}'"
                f" (OpenAI API) and '{BACKUP}' (Anthropic API), scripted: {PRIMARY} fails once"
                " (500), calls the tool, then is overloaded (503); the task must heal itself"
            )
            _script(models)
            await _wait_ready(http, urls, ready_s)
            if (waited := time.monotonic() - started) > 1:
                console.print(f"[dim]the services were ready after {waited:.0f}s[/]")
            async with asyncio.timeout(task_s):
                report.currency = await _price_models(http, urls["ledger"], admin, tenant)
                version = await _register(
                    http, urls, admin, tenant=tenant, agent=report.agent, models=models
                )
                console.print(
                    f"registered tool [bold]{TOOL}[/] (builtin calculator) and agent"
                    f" [bold]{report.agent}[/] v{version} ({PRIMARY} then {BACKUP}, memory on)"
                )
                token = await _submitter_token(http, urls["identity"], admin, tenant, report.agent)
                deadline = datetime.now(UTC) + timedelta(seconds=task_s)

                def command(task_id: str) -> SubmitTaskCommand:
                    return SubmitTaskCommand(
                        task_id=task_id,
                        tenant=tenant,
                        agent=report.agent,
                        input=f"What is {EXPRESSION}?",
                        token=token,
                        max_cost_micros=COST_CAP_MICROS,
                        deadline=deadline,
                        labels={"source": "dev-demo"},
                    )

                async with Bus(service="demo", kafka=kafka) as bus:
                    await bus.ensure_topics([SUBMIT_TASK, TASK_EVENTS])
                    async with _TaskFeed(bootstrap, f"{topic_prefix}{TASK_EVENTS.name}") as feed:
                        # The agent's registration reaches the execution service over Kafka.
                        await asyncio.sleep(REGISTRATION_GRACE_S)
                        await _run_task(bus, feed, command, run=run, report=report, console=console)
            report.model_calls = {m: models.calls(m) for m in (PRIMARY, BACKUP)}
    except TimeoutError:
        report.problem = (
            f"timed out after {time.monotonic() - started:.0f}s"
            + (f" waiting for task {report.task_id}" if report.task_id else "")
            + "; see `./dev logs execution`"
        )
    except (_DemoProblem, httpx.HTTPError, OSError) as exc:
        report.problem = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
    report.seconds = time.monotonic() - started
    _print(report, console)
    return report


def _print(report: ExecutionDemoReport, console: Console) -> None:
    if report.model_calls:
        console.print(
            "model calls served by the fake server: "
            + ", ".join(f"{model} {count}" for model, count in report.model_calls.items())
        )
    if report.problem:
        console.print(f"[red]problem:[/] {escape(report.problem)}", soft_wrap=True)
    elif not report.ok:
        console.print(
            f"[red]expected[/] task.completed with {EXPECTED_ANSWER!r}, got {report.outcome}"
            f" with {report.answer!r}"
        )
    verdict = "[green]execution OK[/]" if report.ok else "[red]execution FAILED[/]"
    console.print(f"{verdict} in {report.seconds:.1f}s")
