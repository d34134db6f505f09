"""A scripted model server on loopback that speaks OpenAI's and Anthropic's APIs.

Real model providers are not reachable from the development machines, so the
execution service's tests, its chaos tests and the demo point their agents'
``ModelRef.base_url`` here. It is a real HTTP server (uvicorn on
``127.0.0.1:0`` through :class:`~mainstay_common.http.HttpServer`), so the
adapters' requests cross a real socket and timeouts, dropped connections,
headers and status codes behave as they would remotely::

    async with FakeModelServer(api_key="sk-test") as server:
        server.script("gpt-a", [HttpFailure(429, retry_after=2), Reply("hello")])
        server.default = ToolLoopResponder({"search": {"query": "mainstay"}})
        ref = server.model_ref("openai", "gpt-a")   # base_url = <url>/v1
        ...
        assert server.calls("gpt-a") == 2

``POST /v1/chat/completions`` speaks OpenAI (base_url ``<url>/v1``) and
``POST /v1/messages`` Anthropic (base_url ``<url>``). What a request gets:

1. 400 if the real API would refuse it (no ``max_tokens`` or
   ``anthropic-version`` for Anthropic, a malformed message list...), and 401
   if the server expects an API key and did not get it; neither consumes a step;
2. otherwise the next :data:`Step` scripted for the request's model, if any;
3. otherwise the model's own responder (:meth:`FakeModelServer.respond`);
4. otherwise :attr:`FakeModelServer.default` (``Reply("done")`` unless changed).

A responder is a callable given the parsed :class:`FakeRequest` that returns
a step (or an awaitable of one); :class:`ToolLoopResponder` is a ready-made
one that gives agents realistic multi-step tasks without scripting each call.

Every request is recorded in :attr:`FakeModelServer.requests`, with its
messages and tools read back into the provider-neutral types and its headers
without credentials.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import math
import re
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self, TypeAlias, TypeGuard

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mainstay_common.http import HttpServer
from mainstay_contracts.supervisor import ModelRef
from mainstay_execution.testing import _fake_wire as wire

if TYPE_CHECKING:
    from starlette.requests import Request

    from mainstay_execution.providers.base import Message, ToolSpec

__all__ = [
    "CallTool",
    "Disconnect",
    "FakeModelServer",
    "FakeRequest",
    "HttpFailure",
    "MalformedBody",
    "Reply",
    "Responder",
    "Stall",
    "Step",
    "ToolLoopResponder",
    "example_arguments",
]

Api: TypeAlias = Literal["openai", "anthropic"]

_SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}
)


# --- steps ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallTool:
    """A tool call in a :class:`Reply`.

    ``arguments`` as a mapping are sent as JSON; as a string they are sent as
    they are, which is how a test makes a model emit malformed arguments (for
    Anthropic the string goes out as ``input``, which the real API never does).
    ``name`` may be the Mainstay name (``weather.lookup``): the server answers
    with the name under which the client offered that tool.
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful completion: text, tool calls, or both, with its token counts.

    ``input_tokens`` exclude ``cached_tokens`` (as the adapters report them);
    ``finish_reason`` is in the neutral vocabulary (default ``tool_calls`` when
    there are calls, else ``stop``). ``minimal`` answers like a bare
    OpenAI-compatible server: no usage and, for OpenAI, no tool call ids.
    """

    text: str | None = None
    tool_calls: Sequence[CallTool] = ()
    input_tokens: int = 10
    output_tokens: int = 5
    cached_tokens: int = 0
    finish_reason: str | None = None
    minimal: bool = False


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """An error status with the provider's error body.

    ``retry_after`` becomes the ``Retry-After`` header (a number of seconds, or
    a string such as an HTTP date). ``error_type`` and ``code`` default to what
    the provider would say for the status; ``body`` replaces the whole error
    document with raw text (a proxy's HTML page, say).
    """

    status: int
    message: str = ""
    retry_after: float | str | None = None
    error_type: str | None = None
    code: str | None = None
    body: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Drop the connection without answering (the client sees the peer close)."""


@dataclass(frozen=True, slots=True)
class Stall:
    """Answer ``then`` after ``seconds`` (set it past the client's timeout to make it time out).

    The server stops waiting as soon as the client hangs up, so a timed-out
    call leaves nothing running.
    """

    seconds: float = 3600.0
    then: Step | None = None


@dataclass(frozen=True, slots=True)
class MalformedBody:
    """A response that is not a completion (status 200 unless told otherwise)."""

    body: str = "<html><body>upstream error</body></html>"
    status: int = 200
    content_type: str = "application/json"


Step: TypeAlias = Reply | HttpFailure | Disconnect | Stall | MalformedBody
"""What the fake model does with one request."""


@dataclass(frozen=True, slots=True)
class FakeRequest:
    """One request the server received, read back into the provider-neutral types."""

    api: Api
    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...]
    body: Mapping[str, Any]
    """The JSON document as sent."""
    headers: Mapping[str, str]
    """Lower-cased, without the credential headers."""
    authorized: bool
    """The expected API key came with it (always true when the server expects none)."""


Responder: TypeAlias = Callable[[FakeRequest], "Step | Awaitable[Step]"]
"""Decides the step for a request no script covers."""


# --- the server ------------------------------------------------------------------


class FakeModelServer:
    """The scripted server; ``async with`` starts it on a free loopback port.

    ``api_key``: when set, requests must carry it (``Authorization: Bearer`` or
    ``x-api-key``) or get 401. That 401 quotes the key it got, as a careless
    proxy would, so tests can prove the adapters never repeat it.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        default: Step | Responder | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.default: Step | Responder = default if default is not None else Reply("done")
        self.requests: list[FakeRequest] = []
        self._scripts: defaultdict[str, deque[Step]] = defaultdict(deque)
        self._responders: dict[str, Step | Responder] = {}
        self._numbers = itertools.count(1)
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/v1/messages", self._anthropic, methods=["POST"]),
            ]
        )
        # A short drain: a stalled answer nobody waits for must not hold up the test.
        self._server = HttpServer(app, host=host, port=port, shutdown_timeout_s=1.0)

    async def __aenter__(self) -> Self:
        await self._server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.__aexit__(*exc)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: Anthropic's base_url."""
        return self._server.url

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def model_ref(self, provider: Api, model: str, **fields: Any) -> ModelRef:
        """A chain entry pointing at this server (``fields``: timeout_s, max_tokens, ...)."""
        base_url = self.openai_base_url if provider == "openai" else self.anthropic_base_url
        return ModelRef(provider=provider, model=model, base_url=base_url, **fields)

    # -- programming it --

    def script(self, model: str, steps: Iterable[Step]) -> None:
        """Queue ``steps`` for ``model``'s next requests, after any already queued."""
        self._scripts[model].extend(steps)

    def respond(self, model: str, responder: Step | Responder | None) -> None:
        """What ``model`` gets when its script is empty (None: the default again)."""
        if responder is None:
            self._responders.pop(model, None)
        else:
            self._responders[model] = responder

    def pending(self, model: str) -> int:
        """Steps still queued for ``model``."""
        return len(self._scripts[model])

    def reset(self) -> None:
        """Forget scripts, responders and recorded requests (the default stays)."""
        self._scripts.clear()
        self._responders.clear()
        self.requests.clear()

    # -- what it saw --

    def requests_for(self, model: str | None = None) -> list[FakeRequest]:
        return [r for r in self.requests if model is None or r.model == model]

    def calls(self, model: str | None = None) -> int:
        """Requests received (for ``model``, or in all), refused ones included."""
        return len(self.requests_for(model))

    # -- serving --

    async def _openai(self, request: Request) -> Response:
        return await self._serve(request, "openai")

    async def _anthropic(self, request: Request) -> Response:
        return await self._serve(request, "anthropic")

    async def _serve(self, request: Request, api: Api) -> Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            body = json.loads(await request.body())
            if api == "openai":
                model, messages, tools = wire.read_openai(body)
            else:
                model, messages, tools = wire.read_anthropic(body, headers)
        except (ValueError, wire.BadRequest) as exc:
            return self._error(api, HttpFailure(400, f"invalid request: {exc}"))
        presented = self._presented_key(api, headers)
        authorized = self.api_key is None or presented == self.api_key
        fake = FakeRequest(
            api=api,
            model=model,
            messages=tuple(messages),
            tools=tuple(tools),
            body=body,
            headers={k: v for k, v in headers.items() if k not in _SECRET_HEADERS},
            authorized=authorized,
        )
        self.requests.append(fake)
        if not authorized:
            quoted = presented if presented is not None else "none"
            return self._error(api, HttpFailure(401, f"Incorrect API key provided: {quoted}"))
        step = await self._next_step(fake)
        return await self._render(request, fake, step)

    @staticmethod
    def _presented_key(api: Api, headers: Mapping[str, str]) -> str | None:
        if api == "anthropic":
            return headers.get("x-api-key")
        authorization = headers.get("authorization")
        if authorization is None:
            return None
        return authorization.removeprefix("Bearer ").removeprefix("bearer ")

    async def _next_step(self, request: FakeRequest) -> Step:
        queue = self._scripts.get(request.model)
        if queue:
            return queue.popleft()
        source = self._responders.get(request.model, self.default)
        if not callable(source):
            return source
        step = source(request)
        if inspect.isawaitable(step):
            step = await step
        return step

    async def _render(self, request: Request, fake: FakeRequest, step: Step) -> Response:
        match step:
            case Reply():
                return JSONResponse(self._reply(fake, step))
            case HttpFailure():
                return self._error(fake.api, step)
            case MalformedBody():
                return Response(step.body, status_code=step.status, media_type=step.content_type)
            case Disconnect():
                return await _disconnect(request)
            case Stall():
                if await _client_left_within(request, step.seconds):
                    return Response(status_code=499)  # nobody is listening any more
                return await self._render(request, fake, step.then or Reply("late"))

    def _reply(self, request: FakeRequest, step: Reply) -> dict[str, Any]:
        calls = [
            (c.id, wire.wire_name(c.name, request.tools), c.arguments) for c in step.tool_calls
        ]
        render = wire.openai_completion if request.api == "openai" else wire.anthropic_message
        return render(
            number=next(self._numbers),
            model=request.model,
            text=step.text,
            calls=calls,
            finish_reason=step.finish_reason or ("tool_calls" if calls else "stop"),
            usage=(step.input_tokens, step.output_tokens, step.cached_tokens),
            minimal=step.minimal,
        )

    @staticmethod
    def _error(api: Api, step: HttpFailure) -> Response:
        headers = dict(step.headers)
        if step.retry_after is not None:
            headers["retry-after"] = str(step.retry_after)
        if step.body is not None:
            return Response(step.body, status_code=step.status, headers=headers)
        message = step.message or f"the fake model answers {step.status}"
        document = (
            wire.openai_error(step.status, message, step.error_type, step.code)
            if api == "openai"
            else wire.anthropic_error(step.status, message, step.error_type)
        )
        return JSONResponse(document, status_code=step.status, headers=headers)


async def _disconnect(request: Request) -> Response:
    """Close the socket under the request, so the client gets no answer at all."""
    cycle = getattr(request.receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if isinstance(transport, asyncio.Transport):
        transport.abort()
        # Wait for uvicorn to notice, so it neither answers 500 nor logs a missing response.
        await _client_left_within(request, 5.0)
        return Response(status_code=499)
    # Another server than uvicorn: promise a body, send part of it and stop.
    return Response(b"{", status_code=200, headers={"content-length": "1000"})


async def _client_left_within(request: Request, seconds: float) -> bool:
    """Wait up to ``seconds`` for the client to hang up; whether it did."""
    try:
        async with asyncio.timeout(seconds):
            while (await request.receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


# --- a responder for realistic multi-step tasks ------------------------------------


class ToolLoopResponder:
    """Calls each offered tool once, then answers with what the tools returned.

    Each request looks at the conversation so far: the first offered tool not
    yet called is called (all of them at once with ``parallel``), with the
    arguments ``arguments`` gives for it (by Mainstay or wire name) or, failing
    that, :func:`example_arguments` of its schema. Once every tool has been
    called the reply is the final text: ``answer`` and one ``<tool>: <result>``
    line per tool result, in order. It keeps no state, so a task resumed on
    another instance, or switched to a fallback model, carries on where it was.

    Token counts are estimated from the sizes of the request and the reply
    (about four characters a token), so spend grows as a real conversation's.
    """

    def __init__(
        self,
        arguments: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        answer: str = "done",
        parallel: bool = False,
    ) -> None:
        self._arguments = {_wire_key(name): dict(args) for name, args in (arguments or {}).items()}
        self._answer = answer
        self._parallel = parallel

    def __call__(self, request: FakeRequest) -> Reply:
        called: dict[str, str] = {}
        results: list[tuple[str, str]] = []
        for message in request.messages:
            for call in message.tool_calls:
                called[call.id] = call.name
            if message.role == "tool" and message.tool_call_id is not None:
                results.append((message.tool_call_id, message.content))
        remaining = [tool for tool in request.tools if tool.name not in set(called.values())]
        input_tokens = 1 + len(json.dumps(request.body)) // 4
        if remaining:
            batch = remaining if self._parallel else remaining[:1]
            calls = [CallTool(tool.name, self.arguments_for(tool)) for tool in batch]
            size = sum(len(json.dumps(call.arguments)) + len(call.name) for call in calls)
            return Reply(tool_calls=calls, input_tokens=input_tokens, output_tokens=1 + size // 4)
        lines = [self._answer]
        lines += [f"{called.get(call_id, call_id)}: {result}" for call_id, result in results]
        text = "\n".join(lines)
        return Reply(text, input_tokens=input_tokens, output_tokens=1 + len(text) // 4)

    def arguments_for(self, tool: ToolSpec) -> dict[str, Any]:
        """The arguments this responder calls ``tool`` with."""
        given = self._arguments.get(_wire_key(tool.name))
        return dict(given) if given is not None else example_arguments(tool.parameters)


def _wire_key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def example_arguments(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments that satisfy a simple JSON Schema: each required property, a plausible value."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    required = schema.get("required")
    names = required if isinstance(required, list) else []
    return {
        name: _example_value(properties.get(name, {})) for name in names if isinstance(name, str)
    }


def _example_value(schema: Any) -> Any:  # noqa: PLR0911  # one return per JSON type reads best
    if not isinstance(schema, Mapping):
        return "example"
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind in {"integer", "number"}:
        return _example_number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "array":
        count = schema.get("minItems", 0)
        count = count if isinstance(count, int) and not isinstance(count, bool) else 0
        return [_example_value(schema.get("items", {})) for _ in range(count)]
    if kind == "object":
        return example_arguments(schema)
    text = "example"
    min_length = schema.get("minLength")
    if isinstance(min_length, int) and not isinstance(min_length, bool) and min_length > len(text):
        text = text * (min_length // len(text) + 1)
    return text


def _example_number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    value: float = 1
    minimum, above, maximum = (
        schema.get(key) for key in ("minimum", "exclusiveMinimum", "maximum")
    )
    if _is_number(minimum):
        value = minimum
    elif _is_number(above):
        value = above + 1
    if _is_number(maximum) and value > maximum:
        value = maximum
    return math.ceil(value) if integer else float(value)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
