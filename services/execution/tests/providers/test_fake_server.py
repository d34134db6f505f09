"""The fake model server itself: scripts, responders, the tool loop, what it records."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Literal

import httpx
import pytest

from mainstay_execution.providers import Message, ModelError, ToolSpec
from mainstay_execution.testing.fake_models import (
    CallTool,
    FakeModelServer,
    FakeRequest,
    HttpFailure,
    Reply,
    Stall,
    Step,
    ToolLoopResponder,
    example_arguments,
)

from .conftest import API_KEY

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mainstay_contracts.supervisor import ModelRef
    from mainstay_execution.providers import ModelReply, Providers

Api = Literal["openai", "anthropic"]
APIS: list[Api] = ["openai", "anthropic"]
HELLO = [Message("user", "hello")]

SEARCH = ToolSpec(
    "search",
    "Search the web.",
    {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
)
WEATHER = ToolSpec(
    "weather.lookup",
    "Today's weather.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "units": {"enum": ["metric", "imperial"]},
        },
        "required": ["city", "days", "units"],
    },
)


async def ask(
    providers: Providers, model: ModelRef, messages: Sequence[Message] = HELLO
) -> ModelReply:
    return await providers.complete(model, messages, [], api_key=API_KEY)


async def test_scripts_are_per_model_then_the_default(
    server: FakeModelServer, providers: Providers
) -> None:
    server.script("a", [Reply("a1"), Reply("a2")])
    server.script("b", [Reply("b1")])
    a, b = server.model_ref("openai", "a"), server.model_ref("anthropic", "b")
    assert (await ask(providers, b)).text == "b1"
    assert (await ask(providers, a)).text == "a1"
    assert (await ask(providers, b)).text == "done"
    assert (await ask(providers, a)).text == "a2"
    assert (await ask(providers, a)).text == "done"
    assert server.calls("a") == 3
    assert server.calls("b") == 2
    assert server.calls() == 5
    assert [r.api for r in server.requests_for("b")] == ["anthropic", "anthropic"]
    assert server.pending("a") == 0


async def test_the_default_and_per_model_responders(
    server: FakeModelServer, providers: Providers
) -> None:
    seen: list[FakeRequest] = []

    async def echo(request: FakeRequest) -> Step:
        await asyncio.sleep(0)
        seen.append(request)
        return Reply(f"you said {request.messages[-1].content}")

    server.default = echo
    server.respond("down", HttpFailure(503))
    assert (await ask(providers, server.model_ref("openai", "x"))).text == "you said hello"
    with pytest.raises(ModelError) as caught:
        await ask(providers, server.model_ref("anthropic", "down"))
    assert caught.value.kind == "overloaded"
    server.respond("down", None)
    reply = await ask(providers, server.model_ref("anthropic", "down"), [Message("user", "hi")])
    assert reply.text == "you said hi"
    assert [r.model for r in seen] == ["x", "down"]


async def test_a_script_goes_before_the_responder(
    server: FakeModelServer, providers: Providers
) -> None:
    server.respond("m", lambda request: Reply("from the responder"))
    server.script("m", [Reply("scripted")])
    model = server.model_ref("openai", "m")
    assert (await ask(providers, model)).text == "scripted"
    assert (await ask(providers, model)).text == "from the responder"


async def test_headers_are_recorded_without_credentials(
    server: FakeModelServer, providers: Providers
) -> None:
    await ask(providers, server.model_ref("openai", "m"))
    await ask(providers, server.model_ref("anthropic", "m"))
    for request in server.requests:
        assert request.authorized
        assert request.headers["user-agent"].startswith("mainstay-execution/")
        assert API_KEY not in str(request.headers)
        assert "authorization" not in request.headers
        assert "x-api-key" not in request.headers


async def test_what_the_real_apis_refuse_is_refused(server: FakeModelServer) -> None:
    headers = {"x-api-key": API_KEY}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        no_version = await client.post(
            "/v1/messages", json={**body, "max_tokens": 5}, headers=headers
        )
        no_max_tokens = await client.post(
            "/v1/messages", json=body, headers={**headers, "anthropic-version": "2023-06-01"}
        )
        text_first = await client.post(
            "/v1/messages",
            json={
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "hi"},
                            {"type": "tool_result", "tool_use_id": "t", "content": "x"},
                        ],
                    }
                ],
            },
            headers={**headers, "anthropic-version": "2023-06-01"},
        )
        not_json = await client.post("/v1/chat/completions", content=b"{", headers=headers)
    assert no_version.status_code == 400
    assert "anthropic-version" in no_version.json()["error"]["message"]
    assert no_max_tokens.status_code == 400
    assert "max_tokens" in no_max_tokens.json()["error"]["message"]
    assert text_first.status_code == 400
    assert "tool_result blocks must come first" in text_first.json()["error"]["message"]
    assert not_json.status_code == 400
    assert server.requests == []  # refused before they were read


async def test_a_stall_ends_when_the_client_gives_up(
    server: FakeModelServer, providers: Providers
) -> None:
    server.script("m", [Stall(60)])
    with pytest.raises(ModelError):
        await providers.complete(
            server.model_ref("openai", "m", timeout_s=0.2), HELLO, [], api_key=API_KEY
        )
    # the server is free at once: the next call is answered normally
    assert (await ask(providers, server.model_ref("openai", "m"))).text == "done"


async def test_a_short_stall_answers_late(server: FakeModelServer, providers: Providers) -> None:
    server.script("m", [Stall(0.05, then=Reply("eventually"))])
    assert (await ask(providers, server.model_ref("anthropic", "m"))).text == "eventually"


async def test_without_an_expected_key_anything_goes(providers: Providers) -> None:
    async with FakeModelServer(default=Reply("open")) as server:
        model = server.model_ref("openai", "m")
        assert (await providers.complete(model, HELLO, [])).text == "open"
        assert server.requests[0].authorized


# --- the tool loop ---------------------------------------------------------------------------


async def run_loop(
    providers: Providers, model: ModelRef, tools: Sequence[ToolSpec], *, max_steps: int = 10
) -> tuple[str | None, list[tuple[str, dict[str, object] | None]]]:
    """A miniature execution loop: run the tools the model calls until it answers."""
    messages = [Message("system", "Use the tools."), Message("user", "What is up in Oslo?")]
    called: list[tuple[str, dict[str, object] | None]] = []
    for _ in range(max_steps):
        reply = await providers.complete(model, messages, tools, api_key=API_KEY)
        if not reply.tool_calls:
            return reply.text, called
        messages.append(Message("assistant", reply.text or "", tool_calls=reply.tool_calls))
        for call in reply.tool_calls:
            called.append((call.name, call.arguments))
            messages.append(Message("tool", f"result of {call.name}", tool_call_id=call.id))
    raise AssertionError("the model never answered")


@pytest.mark.parametrize("api", APIS)
async def test_the_tool_loop_calls_each_tool_once_then_answers(
    server: FakeModelServer, providers: Providers, api: Api
) -> None:
    server.default = ToolLoopResponder({"search": {"query": "oslo news"}}, answer="All done.")
    text, called = await run_loop(providers, server.model_ref(api, "agent"), [SEARCH, WEATHER])
    assert called == [
        ("search", {"query": "oslo news"}),
        ("weather.lookup", {"city": "example", "days": 1, "units": "metric"}),
    ]
    # the fake sees (and reports) tools by the names they have on the wire
    assert text == "All done.\nsearch: result of search\nweather_lookup: result of weather.lookup"
    assert server.calls("agent") == 3
    # token counts grow with the conversation, as a real model's do
    assert server.requests[0].body != server.requests[2].body


async def test_the_tool_loop_in_parallel_and_by_mainstay_name(
    server: FakeModelServer, providers: Providers
) -> None:
    server.default = ToolLoopResponder(
        {"weather.lookup": {"city": "Oslo", "days": 2, "units": "metric"}}, parallel=True
    )
    text, called = await run_loop(providers, server.model_ref("openai", "agent"), [SEARCH, WEATHER])
    assert called == [
        ("search", {"query": "example"}),
        ("weather.lookup", {"city": "Oslo", "days": 2, "units": "metric"}),
    ]
    assert text is not None
    assert text.startswith("done\n")
    assert server.calls("agent") == 2


async def test_the_tool_loop_carries_on_after_a_fallback(
    server: FakeModelServer, providers: Providers
) -> None:
    """The responder keeps no state: a second model continues the first one's conversation."""
    responder = ToolLoopResponder()
    server.default = responder
    messages = [Message("user", "go")]
    first = await providers.complete(
        server.model_ref("openai", "primary"), messages, [SEARCH, WEATHER], api_key=API_KEY
    )
    messages += [
        Message("assistant", "", tool_calls=first.tool_calls),
        Message("tool", "found it", tool_call_id=first.tool_calls[0].id),
    ]
    second = await providers.complete(
        server.model_ref("anthropic", "fallback"), messages, [SEARCH, WEATHER], api_key=API_KEY
    )
    assert [c.name for c in second.tool_calls] == ["weather.lookup"]


async def test_the_tool_loop_usage_is_estimated(
    server: FakeModelServer, providers: Providers
) -> None:
    server.default = ToolLoopResponder()
    reply = await providers.complete(
        server.model_ref("openai", "m"), HELLO, [SEARCH], api_key=API_KEY
    )
    assert reply.usage.input_tokens > 10
    assert reply.usage.output_tokens >= 1


def test_example_arguments_follow_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 10},
            "count": {"type": "integer", "exclusiveMinimum": 5},
            "ratio": {"type": "number", "maximum": 0.5},
            "flag": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "mode": {"type": "string", "default": "fast"},
            "kind": {"const": "x"},
            "maybe": {"type": ["null", "integer"]},
            "nested": {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "required": ["a"],
            },
            "optional": {"type": "string"},
        },
        "required": [
            "name",
            "count",
            "ratio",
            "flag",
            "tags",
            "mode",
            "kind",
            "maybe",
            "nested",
        ],
    }
    arguments = example_arguments(schema)
    assert len(arguments["name"]) >= 10
    assert arguments["count"] == 6
    assert arguments["ratio"] == 0.5
    assert arguments["flag"] is True
    assert arguments["tags"] == ["example", "example"]
    assert arguments["mode"] == "fast"
    assert arguments["kind"] == "x"
    assert arguments["maybe"] == 1
    assert arguments["nested"] == {"a": "example"}
    assert "optional" not in arguments
    assert example_arguments({"type": "object"}) == {}


async def test_scripted_tool_calls_use_the_offered_name(
    server: FakeModelServer, providers: Providers
) -> None:
    server.script("m", [Reply(tool_calls=[CallTool("weather.lookup", {"city": "Oslo"})])])
    reply = await providers.complete(
        server.model_ref("anthropic", "m"), HELLO, [WEATHER], api_key=API_KEY
    )
    assert server.requests[0].tools[0].name == "weather_lookup"
    assert server.requests[0].body["tools"][0]["name"] == "weather_lookup"
    # the fake answered with the wire name, which the adapter mapped back
    assert reply.tool_calls[0].name == "weather.lookup"
