"""What the ``./dev demo`` workload puts into the mesh: agents, tools, models, a human.

Two agents work together: the *researcher* computes a figure with the
gateway's builtin calculator, looks a topic up with a flaky HTTP tool and
hands the write-up to the *writer* with the ``hand-off`` tool; the writer
hands its draft back to the researcher for review. A hand-off is a real task
submission: the tool's server (run by the demo) publishes
``execution.cmd.submit-task.v1`` for the other agent, under an id derived from
the calling task, so a re-sent tool call submits nothing twice.

The models are scripted by :class:`Planner` unless a real endpoint is
configured (``MAINSTAY_MODEL_BASE_URL``): each agent's plan is a list of tool
calls followed by an answer built from what the tools returned, decided from
the conversation alone, so a task resumed elsewhere or switched to its
fallback model carries on where it was.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import grpc.aio
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay.memory.v1 import memory_pb2_grpc
from mainstay_common.grpc import create_channel
from mainstay_common.http import HttpServer
from mainstay_contracts.execution import SUBMIT_TASK, SubmitTaskCommand
from mainstay_execution.testing.fake_models import CallTool, FakeRequest, Reply

if TYPE_CHECKING:
    from collections.abc import Mapping

    import httpx
    from starlette.requests import Request

    from mainstay_common.bus import Bus

Role = Literal["researcher", "writer"]

PRIMARY = "primary"
BACKUP = "backup"
CALCULATOR = "demo-calculator"
LOOKUP = "demo-lookup"
HAND_OFF = "demo-hand-off"
HUMAN = "demo-approver"
"""The ``user`` principal who answers the budget approval through the inbox API."""
SUBMITTER = "demo-submitter"
EXPRESSION = "17 * 23 + 4"
FACT_SUBJECT = "acme.head_office"
OLD_FACT = "Acme's head office is in Berlin."
NEW_FACT = "Acme's head office moved to Lisbon in March 2026."
PRICES: dict[str, dict[str, int]] = {
    PRIMARY: {"input_per_mtok": 2_000_000, "output_per_mtok": 8_000_000},
    BACKUP: {"input_per_mtok": 1_000_000, "output_per_mtok": 4_000_000},
}
"""Micro-units per million tokens: a token of ``primary`` costs 2 in, 8 out."""
REAL_CREDENTIAL = "demo-model"
"""The credential name the agents' models use with a real endpoint; ``./dev up`` gives the
execution service ``MAINSTAY_MODEL_API_KEY`` under this name (its ``DEMO_MODEL_CREDENTIAL``)."""


class DemoProblem(Exception):
    """A step of the demo was refused; the message says which and why."""


def check(answer: httpx.Response, doing: str, ok: tuple[int, ...] = (200, 201)) -> Any:
    if answer.status_code not in ok:
        raise DemoProblem(f"{doing} was refused ({answer.status_code}): {answer.text[:300]}")
    return answer.json() if answer.content else None


# -- the scripted models ---------------------------------------------------------------


def _tokens(text: str) -> int:
    return 1 + len(text) // 4


def _first_user_text(request: FakeRequest) -> str:
    return next((m.content for m in request.messages if m.role == "user" and m.content), "")


def _role_of(request: FakeRequest) -> Role:
    system = " ".join(m.content for m in request.messages if m.role == "system" and m.content)
    return "writer" if "You are the writer" in system else "researcher"


def _tool_results(request: FakeRequest) -> dict[str, str]:
    """The output of each tool called so far, by tool name (wire names)."""
    names: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for message in request.messages:
        for call in message.tool_calls:
            names[call.id] = call.name
        if message.role == "tool" and message.tool_call_id in names:
            outputs[names[message.tool_call_id]] = message.content
    return outputs


def _output(result: str | None) -> Any:
    try:
        return json.loads(result or "").get("output")
    except (ValueError, AttributeError):
        return None


def _wire(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


class Planner:
    """The scripted model of both agents (see the module docstring)."""

    def __call__(self, request: FakeRequest) -> Reply:
        task_input = _first_user_text(request)
        role = _role_of(request)
        plan = self._plan(role, task_input, request)
        done = _tool_results(request)
        input_tokens = _tokens(json.dumps(request.body))
        for tool, arguments in plan:
            if _wire(tool) not in done:
                call = CallTool(tool, arguments)
                return Reply(
                    tool_calls=[call],
                    input_tokens=input_tokens,
                    output_tokens=_tokens(json.dumps(arguments)),
                )
        text = self._answer(role, task_input, request, done)
        return Reply(text, input_tokens=input_tokens, output_tokens=_tokens(text))

    @staticmethod
    def _plan(role: Role, task_input: str, request: FakeRequest) -> list[tuple[str, Any]]:
        topic = task_input.split(":", 1)[-1].strip()
        if role == "writer":
            return [(HAND_OFF, {"agent": "researcher", "input": f"Review the draft on: {topic}"})]
        if task_input.startswith("Review"):
            return []
        plan: list[tuple[str, Any]] = [
            (CALCULATOR, {"expression": EXPRESSION}),
            (LOOKUP, {"topic": topic}),
        ]
        if task_input.startswith("Research"):
            city = _head_office(request)
            plan.append(
                (HAND_OFF, {"agent": "writer", "input": f"Write up ({city} office): {topic}"})
            )
        return plan

    @staticmethod
    def _answer(role: Role, task_input: str, request: FakeRequest, done: Mapping[str, str]) -> str:
        topic = task_input.split(":", 1)[-1].strip()
        handed = _output(done.get(_wire(HAND_OFF))) or {}
        if role == "writer":
            return f"Draft on {topic} written; sent for review as {handed.get('task_id')}."
        if task_input.startswith("Review"):
            return f"Reviewed the draft on {topic}: the figures check out."
        figure = _output(done.get(_wire(CALCULATOR)))
        answer = f"{topic}: {EXPRESSION} = {figure}; head office in {_head_office(request)}"
        if handed:
            answer += f"; handed to the writer as {handed.get('task_id')}"
        return answer + "."


def _head_office(request: FakeRequest) -> str:
    """What the recalled memories say about the head office (the newest fact wins)."""
    text = " ".join(m.content or "" for m in request.messages)
    if "Lisbon" in text:
        return "Lisbon"
    return "Berlin" if "Berlin" in text else "an unknown city"


# -- the hand-off tool -------------------------------------------------------------------


@dataclass
class HandOffs:
    """The ``hand-off`` tool's server: each call submits a task for the other agent."""

    bus: Bus
    tenant: str
    agents: Mapping[Role, str]
    token: str
    max_cost_micros: int
    deadline: datetime
    submitted: dict[str, str] = field(default_factory=dict)
    """Task ids submitted, with the task that handed them off."""
    max_depth: int = 2
    _server: HttpServer | None = None

    async def __aenter__(self) -> HandOffs:
        app = Starlette(routes=[Route("/hand-off", self._serve, methods=["POST"])])
        self._server = HttpServer(app, host="127.0.0.1", port=0)
        await self._server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.__aexit__(*exc)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"{self._server.url}/hand-off"

    async def _serve(self, request: Request) -> JSONResponse:
        key = request.headers.get("idempotency-key", "")
        try:
            arguments = await request.json()
            role, work = arguments["agent"], str(arguments["input"])
            agent = self.agents[role]
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {"error": "arguments: 'agent' (researcher or writer) and 'input' are required"},
                status_code=422,
            )
        parent = key.split(":", 1)[0]
        if not parent:
            return JSONResponse({"error": "no Idempotency-Key: not called by a task"}, 422)
        if parent.count("-to-") >= self.max_depth:
            return JSONResponse(
                {"error": f"task {parent} was handed off {self.max_depth} times already"}, 422
            )
        task_id = f"{parent}-to-{role}"
        await self.bus.publish(
            SUBMIT_TASK,
            SubmitTaskCommand(
                task_id=task_id,
                tenant=self.tenant,
                agent=agent,
                input=work,
                token=self.token,
                max_cost_micros=self.max_cost_micros,
                deadline=self.deadline,
                labels={"source": "dev-demo", "handed-off-by": parent},
            ),
        )
        self.submitted[task_id] = parent
        return JSONResponse({"task_id": task_id, "agent": agent})


# -- registrations -----------------------------------------------------------------------


@dataclass
class ModelEndpoint:
    """Where the agents' models answer: the scripted server, or a real endpoint."""

    base_url: str
    real: bool
    model: str = PRIMARY
    backup: str = BACKUP

    def chain(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {"provider": "openai", "base_url": self.base_url}
        entry |= {"timeout_s": 60, "max_tokens": 512}
        if self.real:
            return [{**entry, "model": self.model, "credential": REAL_CREDENTIAL}]
        return [{**entry, "model": self.model}, {**entry, "model": self.backup}]


def tool_specs(lookup_url: str, hand_off_url: str) -> list[dict[str, Any]]:
    text = {"type": "string", "minLength": 1, "maxLength": 2000}
    return [
        {
            "name": CALCULATOR,
            "kind": "builtin",
            "builtin": {"builtin": "calculator"},
            "description": "Evaluate an arithmetic expression.",
            "input_schema": {
                "type": "object",
                "properties": {"expression": text},
                "required": ["expression"],
                "additionalProperties": False,
            },
            "timeout_s": 2.0,
        },
        {
            "name": LOOKUP,
            "kind": "http",
            "http": {"url": lookup_url},
            "description": "Look a business topic up in the company wiki.",
            "input_schema": {
                "type": "object",
                "properties": {"topic": text},
                "required": ["topic"],
            },
            # The gateway tries once: its failures reach the task, which retries.
            "retry": {"max_attempts": 1},
            "side_effects": True,
            "timeout_s": 5.0,
        },
        {
            "name": HAND_OFF,
            "kind": "http",
            "http": {"url": hand_off_url},
            "description": "Hand work to another agent: 'researcher' or 'writer'.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "enum": ["researcher", "writer"]},
                    "input": text,
                },
                "required": ["agent", "input"],
                "additionalProperties": False,
            },
            "side_effects": True,
            "timeout_s": 10.0,
        },
    ]


def agent_definitions(
    agents: Mapping[Role, str], endpoint: ModelEndpoint
) -> dict[Role, dict[str, Any]]:
    limits = {"max_steps": 8, "step_timeout_s": 60, "task_deadline_s": 600}
    return {
        "researcher": {
            "identity": agents["researcher"],
            "description": "Researches a topic with tools and hands the write-up on.",
            "models": endpoint.chain(),
            "system_prompt": (
                "You are the researcher. Compute figures with demo-calculator, look topics"
                " up with demo-lookup, then hand the write-up to the writer with"
                " demo-hand-off. For a review, answer briefly without tools."
            ),
            "tools": [CALCULATOR, LOOKUP, HAND_OFF],
            "memory": {"recall": True, "remember": []},
            "escalation": [HUMAN],
            "limits": limits,
        },
        "writer": {
            "identity": agents["writer"],
            "description": "Writes drafts and hands them back for review.",
            "models": endpoint.chain(),
            "system_prompt": (
                "You are the writer. Write the draft, then hand it to the researcher for"
                " review with demo-hand-off, and answer in one sentence."
            ),
            "tools": [HAND_OFF],
            "memory": {"recall": False, "remember": []},
            "escalation": [HUMAN],
            "limits": limits,
        },
    }


async def principal_token(
    http: httpx.AsyncClient,
    identity_url: str,
    admin: Mapping[str, str],
    *,
    tenant: str,
    name: str,
    kind: str,
    scopes: list[str],
) -> str:
    """Create or update ``name`` with ``scopes``, and a token identity issues it."""
    principal = f"{identity_url}/v1/tenants/{tenant}/principals/{name}"
    body = {"kind": kind, "description": "a principal of ./dev demo", "scopes": scopes}
    check(await http.put(principal, json=body, headers=admin), f"registering {name}")
    secret = check(await http.post(f"{principal}/secret", headers=admin), "a client secret")
    form = {"grant_type": "client_credentials", "client_id": f"{tenant}/{name}"}
    form["client_secret"] = secret["client_secret"]
    if scopes:
        form["scope"] = " ".join(scopes)
    token = check(await http.post(f"{identity_url}/oauth/token", data=form), f"a token of {name}")
    return str(token["access_token"])


async def price_models(
    http: httpx.AsyncClient,
    ledger_url: str,
    admin: Mapping[str, str],
    tenant: str,
    endpoint: ModelEndpoint,
) -> str:
    """Price the agents' models for the tenant; the ledger's currency. The scripted models
    get :data:`PRICES`; a real endpoint's model keeps a price the book has, or gets
    ``primary``'s (the ledger charges only what it can price)."""
    currency = ""
    wanted = PRICES if not endpoint.real else {endpoint.model: PRICES[PRIMARY]}
    for model, prices in wanted.items():
        item = f"model:{model}"
        found = await http.get(f"{ledger_url}/v1/tenants/{tenant}/prices/{item}", headers=admin)
        current = found.json() if found.status_code == 200 else {}
        stale = any(current.get(name) != value for name, value in prices.items())
        if (stale and not endpoint.real) or not current:
            current = check(
                await http.post(
                    f"{ledger_url}/v1/prices",
                    json={"item": item, "tenant": tenant, **prices},
                    headers=admin,
                ),
                f"pricing {item}",
            )
        currency = str(current.get("currency", ""))
    return currency


async def seed_memory(target: str, token: str, *, tenant: str, agent: str) -> list[str]:
    """Remember where Acme's head office is, then that it moved: the second supersedes the
    first. Returns the two curation outcomes."""
    outcomes: list[str] = []
    async with create_channel(target, default_timeout=10.0) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        for content in (OLD_FACT, NEW_FACT):
            try:
                reply = await stub.Remember(
                    pb.RememberRequest(
                        scope=pb.Scope(tenant=tenant, agent_id=agent),
                        kind=pb.KIND_FACT,
                        content=content,
                        subject=FACT_SUBJECT,
                        importance=0.9,
                    ),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=10.0,
                )
            except grpc.aio.AioRpcError as exc:
                raise DemoProblem(
                    f"memory at {target} refused Remember: {exc.code().name} {exc.details()}"
                ) from exc
            outcomes.append(pb.Outcome.Name(reply.outcome).removeprefix("OUTCOME_"))
    return outcomes


async def dead_letter_total(http: httpx.AsyncClient, supervisor_url: str, admin: Any) -> int:
    """Letters on every dead-letter topic of the mesh, as the supervisor counts them."""
    listing = check(await http.get(f"{supervisor_url}/v1/dlq", headers=admin), "listing DLQs")
    return sum(int(item.get("total", 0)) for item in listing["dlqs"])


def batch_deadline(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def since(started: float) -> float:
    return time.monotonic() - started
