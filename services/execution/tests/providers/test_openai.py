"""The OpenAI-compatible adapter against the fake server, over loopback HTTP."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from mainstay_contracts.supervisor import ModelRef
from mainstay_execution.providers import Message, ModelReply, ToolCall, ToolSpec, Usage
from mainstay_execution.providers.openai import _max_tokens_field
from mainstay_execution.testing.fake_models import CallTool, MalformedBody, Reply

from .conftest import API_KEY

if TYPE_CHECKING:
    from mainstay_execution.providers import Providers
    from mainstay_execution.testing.fake_models import FakeModelServer

SEARCH = ToolSpec(
    "search",
    "Search the web.",
    {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
)
WEATHER = ToolSpec("weather.lookup", "Today's weather.", {"type": "object", "properties": {}})

CONVERSATION = (
    Message("system", "You are terse."),
    Message("user", "Weather in Oslo, and news?"),
    Message(
        "assistant",
        "",
        tool_calls=(
            ToolCall.of("call_1", "weather.lookup", {"city": "Oslo"}),
            ToolCall.parse("call_2", "search", '{"query": "news"'),  # the model's broken JSON
        ),
    ),
    Message("tool", "sunny, 21 C", tool_call_id="call_1"),
    Message("tool", "error: the arguments are not valid JSON", tool_call_id="call_2"),
)


async def test_the_request_maps_messages_tools_and_tool_results(
    server: FakeModelServer, providers: Providers
) -> None:
    model = server.model_ref("openai", "gpt-a")
    reply = await providers.complete(model, CONVERSATION, [SEARCH, WEATHER], api_key=API_KEY)
    assert reply.text == "done"

    [request] = server.requests
    assert request.api == "openai"
    assert request.authorized
    assert "authorization" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert request.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Oslo, and news?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather_lookup", "arguments": '{"city":"Oslo"}'},
                },
                # malformed arguments are replayed as {} so strict servers accept the history
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "search", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
        {
            "role": "tool",
            "tool_call_id": "call_2",
            "content": "error: the arguments are not valid JSON",
        },
    ]
    assert request.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the web.",
                "parameters": SEARCH.parameters,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "weather_lookup",
                "description": "Today's weather.",
                "parameters": WEATHER.parameters,
            },
        },
    ]
    assert "max_tokens" not in request.body
    assert "max_completion_tokens" not in request.body


async def test_no_tools_no_tools_field_and_no_key_no_header(
    server: FakeModelServer, providers: Providers
) -> None:
    server.api_key = None
    await providers.complete(server.model_ref("openai", "local"), [Message("user", "hi")], [])
    [request] = server.requests
    assert "tools" not in request.body
    assert request.authorized


async def test_max_tokens_uses_the_name_each_server_knows(
    server: FakeModelServer, providers: Providers
) -> None:
    compatible = server.model_ref("openai", "gpt-a", max_tokens=77)
    await providers.complete(compatible, [Message("user", "hi")], [], api_key=API_KEY)
    assert server.requests[-1].body["max_tokens"] == 77
    # OpenAI itself refuses max_tokens for its reasoning models; no request can be
    # sent there, so the choice is checked on the function that makes it.
    assert _max_tokens_field(ModelRef(provider="openai", model="o3")) == "max_completion_tokens"
    public = ModelRef(provider="openai", model="o3", base_url="https://api.openai.com/v1/")
    assert _max_tokens_field(public) == "max_completion_tokens"
    assert _max_tokens_field(compatible) == "max_tokens"


async def test_text_usage_and_finish_reason(server: FakeModelServer, providers: Providers) -> None:
    server.script(
        "gpt-a", [Reply("Oslo is sunny.", input_tokens=120, output_tokens=9, cached_tokens=80)]
    )
    reply = await providers.complete(
        server.model_ref("openai", "gpt-a"), [Message("user", "hi")], [], api_key=API_KEY
    )
    assert reply.text == "Oslo is sunny."
    assert reply.tool_calls == ()
    assert server.requests[0].model == "gpt-a"
    # prompt_tokens (200) include the 80 cached ones: the ledger prices them apart
    assert reply.usage == Usage(input_tokens=120, output_tokens=9, cached_tokens=80)
    assert reply.finish_reason == "stop"
    assert (reply.provider, reply.model) == ("openai", "gpt-a")


async def test_tool_calls_are_parsed_and_named_as_offered(
    server: FakeModelServer, providers: Providers
) -> None:
    server.script(
        "gpt-a",
        [
            Reply(
                "Looking.",
                tool_calls=[
                    CallTool("weather.lookup", {"city": "Oslo"}, id="call_w"),
                    CallTool("search", {"query": "news"}),
                ],
            )
        ],
    )
    reply = await providers.complete(
        server.model_ref("openai", "gpt-a"),
        [Message("user", "hi")],
        [SEARCH, WEATHER],
        api_key=API_KEY,
    )
    assert reply.text == "Looking."
    assert reply.finish_reason == "tool_calls"
    first, second = reply.tool_calls
    assert (first.id, first.name, first.arguments, first.error) == (
        "call_w",
        "weather.lookup",
        {"city": "Oslo"},
        None,
    )
    assert second.name == "search"
    assert second.arguments == {"query": "news"}
    assert second.id  # the fake made one up, as OpenAI does


async def test_malformed_arguments_do_not_raise_and_keep_the_usage(
    server: FakeModelServer, providers: Providers
) -> None:
    server.script(
        "gpt-a",
        [
            Reply(
                tool_calls=[CallTool("search", '{"query": "oslo'), CallTool("search", "[1]")],
                input_tokens=50,
                output_tokens=12,
            )
        ],
    )
    reply = await providers.complete(
        server.model_ref("openai", "gpt-a"), [Message("user", "hi")], [SEARCH], api_key=API_KEY
    )
    broken, listed = reply.tool_calls
    assert broken.arguments is None
    assert broken.raw_arguments == '{"query": "oslo'
    assert broken.error is not None
    assert "not valid JSON" in broken.error
    assert listed.arguments is None
    assert listed.error == "the arguments must be a JSON object, got an array"
    assert reply.usage == Usage(input_tokens=50, output_tokens=12, cached_tokens=0)


async def test_a_minimal_server_without_usage_or_ids(
    server: FakeModelServer, providers: Providers
) -> None:
    server.script("llama", [Reply(tool_calls=[CallTool("search", {"query": "x"})], minimal=True)])
    reply = await providers.complete(
        server.model_ref("openai", "llama"), [Message("user", "hi")], [SEARCH], api_key=API_KEY
    )
    [call] = reply.tool_calls
    assert call.id.startswith("call_")
    assert call.arguments == {"query": "x"}
    assert reply.usage == Usage()


async def test_lenient_readings_of_compatible_servers(
    server: FakeModelServer, providers: Providers
) -> None:
    """Arguments as an object, empty arguments, content parts, no finish_reason."""
    body = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    "tool_calls": [
                        {"id": "c1", "function": {"name": "search", "arguments": {"query": "q"}}},
                        {"id": "c2", "function": {"name": "weather_lookup", "arguments": ""}},
                    ],
                }
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    server.script("ollama", [MalformedBody(json.dumps(body))])
    reply = await providers.complete(
        server.model_ref("openai", "ollama"),
        [Message("user", "hi")],
        [SEARCH, WEATHER],
        api_key=API_KEY,
    )
    assert reply.text == "ab"
    first, second = reply.tool_calls
    assert first.arguments == {"query": "q"}
    assert first.raw_arguments == '{"query":"q"}'
    assert (second.name, second.arguments, second.raw_arguments) == ("weather.lookup", {}, "")
    assert reply.finish_reason == "tool_calls"
    assert reply.usage == Usage(input_tokens=3, output_tokens=4, cached_tokens=0)


async def test_a_reply_read_back_from_its_checkpoint_is_the_same(
    server: FakeModelServer, providers: Providers
) -> None:
    server.script("gpt-a", [Reply("x", tool_calls=[CallTool("search", '{"query": 1')])])
    reply = await providers.complete(
        server.model_ref("openai", "gpt-a"), [Message("user", "hi")], [SEARCH], api_key=API_KEY
    )
    assert ModelReply.from_json(reply.to_json()) == reply
