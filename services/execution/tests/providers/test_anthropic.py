"""The Anthropic Messages adapter against the fake server, over loopback HTTP."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from mainstay_execution.providers import Message, ModelReply, ToolCall, ToolSpec, Usage
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


async def test_the_request_maps_system_tools_and_merged_tool_results(
    server: FakeModelServer, providers: Providers
) -> None:
    conversation = [
        Message("system", "You are terse."),
        Message("system", "Answer in English."),
        Message("user", "Weather in Oslo, and news?"),
        Message(
            "assistant",
            "Checking both.",
            tool_calls=(
                ToolCall.of("toolu_1", "weather.lookup", {"city": "Oslo"}),
                ToolCall.of("toolu_2", "search", {"query": "news"}),
            ),
        ),
        Message("tool", "sunny, 21 C", tool_call_id="toolu_1"),
        Message("tool", "nothing new", tool_call_id="toolu_2"),
        Message("user", "Thanks, summarise."),
    ]
    model = server.model_ref("anthropic", "claude-a")
    reply = await providers.complete(model, conversation, [SEARCH, WEATHER], api_key=API_KEY)
    assert reply.text == "done"

    [request] = server.requests
    assert request.api == "anthropic"
    assert request.authorized
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "x-api-key" not in request.headers  # recorded without the credential
    assert request.body["model"] == "claude-a"
    assert request.body["max_tokens"] == 1024
    assert request.body["system"] == "You are terse.\n\nAnswer in English."
    assert request.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo, and news?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "weather_lookup",
                    "input": {"city": "Oslo"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "search", "input": {"query": "news"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 21 C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "nothing new"},
                {"type": "text", "text": "Thanks, summarise."},
            ],
        },
    ]
    assert request.body["tools"] == [
        {"name": "search", "description": "Search the web.", "input_schema": SEARCH.parameters},
        {
            "name": "weather_lookup",
            "description": "Today's weather.",
            "input_schema": WEATHER.parameters,
        },
    ]
    # read back by the fake into the neutral types, the conversation is the one sent
    assert request.messages[0] == Message("system", "You are terse.\n\nAnswer in English.")
    assert request.messages[2].tool_calls[0].name == "weather_lookup"
    assert [m.role for m in request.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "user",
    ]


async def test_max_tokens_from_the_model_ref(server: FakeModelServer, providers: Providers) -> None:
    model = server.model_ref("anthropic", "claude-a", max_tokens=4096)
    await providers.complete(model, [Message("user", "hi")], [], api_key=API_KEY)
    [request] = server.requests
    assert request.body["max_tokens"] == 4096
    assert "tools" not in request.body
    assert "system" not in request.body


async def test_a_malformed_earlier_call_is_replayed_with_empty_input(
    server: FakeModelServer, providers: Providers
) -> None:
    conversation = [
        Message("user", "hi"),
        Message("assistant", "", tool_calls=(ToolCall.parse("toolu_9", "search", "{oops"),)),
        Message("tool", "error: not valid JSON", tool_call_id="toolu_9"),
    ]
    await providers.complete(
        server.model_ref("anthropic", "claude-a"), conversation, [SEARCH], api_key=API_KEY
    )
    assistant = server.requests[0].body["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_9", "name": "search", "input": {}}],
    }


async def test_text_tool_calls_and_usage(server: FakeModelServer, providers: Providers) -> None:
    server.script(
        "claude-a",
        [
            Reply(
                "Let me look.",
                tool_calls=[CallTool("weather.lookup", {"city": "Oslo"}, id="toolu_w")],
                input_tokens=300,
                output_tokens=40,
                cached_tokens=1200,
            )
        ],
    )
    reply = await providers.complete(
        server.model_ref("anthropic", "claude-a"),
        [Message("user", "hi")],
        [SEARCH, WEATHER],
        api_key=API_KEY,
    )
    assert reply.text == "Let me look."
    [call] = reply.tool_calls
    assert (call.id, call.name, call.arguments, call.error) == (
        "toolu_w",
        "weather.lookup",
        {"city": "Oslo"},
        None,
    )
    assert json.loads(call.raw_arguments) == {"city": "Oslo"}
    assert reply.finish_reason == "tool_calls"
    assert reply.usage == Usage(input_tokens=300, output_tokens=40, cached_tokens=1200)
    assert (reply.provider, reply.model) == ("anthropic", "claude-a")
    assert ModelReply.from_json(reply.to_json()) == reply


async def test_cache_writes_count_as_input(server: FakeModelServer, providers: Providers) -> None:
    body = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 2,
            "cache_creation_input_tokens": 500,
            "cache_read_input_tokens": 7,
        },
    }
    server.script("claude-a", [MalformedBody(json.dumps(body))])
    reply = await providers.complete(
        server.model_ref("anthropic", "claude-a"), [Message("user", "hi")], [], api_key=API_KEY
    )
    assert reply.usage == Usage(input_tokens=510, output_tokens=2, cached_tokens=7)


@pytest.mark.parametrize(
    ("wire", "neutral"),
    [("stop", "stop"), ("length", "length"), ("content_filter", "content_filter")],
)
async def test_stop_reasons_in_the_neutral_vocabulary(
    server: FakeModelServer, providers: Providers, wire: str, neutral: str
) -> None:
    # The fake maps the neutral word to Anthropic's (end_turn, max_tokens, refusal).
    server.script("claude-a", [Reply("x", finish_reason=wire)])
    reply = await providers.complete(
        server.model_ref("anthropic", "claude-a"), [Message("user", "hi")], [], api_key=API_KEY
    )
    assert server.requests[0].api == "anthropic"
    assert reply.finish_reason == neutral


async def test_malformed_input_does_not_raise_and_keeps_the_usage(
    server: FakeModelServer, providers: Providers
) -> None:
    server.script(
        "claude-a",
        [
            Reply(
                tool_calls=[CallTool("search", '{"query": "oslo')],
                input_tokens=70,
                output_tokens=8,
            )
        ],
    )
    reply = await providers.complete(
        server.model_ref("anthropic", "claude-a"),
        [Message("user", "hi")],
        [SEARCH],
        api_key=API_KEY,
    )
    [call] = reply.tool_calls
    assert call.arguments is None
    assert call.raw_arguments == '{"query": "oslo'
    assert call.error is not None
    assert reply.usage == Usage(input_tokens=70, output_tokens=8, cached_tokens=0)


async def test_no_text_is_none_and_unknown_blocks_are_skipped(
    server: FakeModelServer, providers: Providers
) -> None:
    body = {
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "tool_use", "id": "t1", "name": "search", "input": {"query": "q"}},
        ],
        "stop_reason": "tool_use",
    }
    server.script("claude-a", [MalformedBody(json.dumps(body))])
    reply = await providers.complete(
        server.model_ref("anthropic", "claude-a"),
        [Message("user", "hi")],
        [SEARCH],
        api_key=API_KEY,
    )
    assert reply.text is None
    assert [c.arguments for c in reply.tool_calls] == [{"query": "q"}]
    assert reply.usage == Usage()
