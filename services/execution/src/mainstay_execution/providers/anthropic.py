"""Anthropic's Messages API: ``POST {base_url}/v1/messages``.

``base_url`` None is https://api.anthropic.com. Every request carries
``anthropic-version: 2023-06-01`` and, when there is a key, ``x-api-key``.

Mapping (provider-neutral :mod:`.base` -> wire)::

    Message(system, text)               the top-level "system" (several are joined)
    Message(user, text)                 {"role": "user", "content": [{"type": "text", "text"}]}
    Message(assistant, text, calls)     {"role": "assistant", "content": [text block,
                                          {"type": "tool_use", "id", "name", "input": {...}}]}
    Message(tool, result, call id)      {"type": "tool_result", "tool_use_id", "content": result}
                                          inside a user message
    ToolSpec(name, description, schema) {"name", "description", "input_schema": schema}

Consecutive messages of one wire role are merged into one message (the tool
results of one step become one user message, which is how the API wants
them), with the tool results first. Empty text blocks are left out: the API
refuses them. A call whose arguments were malformed is replayed with input
``{}``; the loop's tool result tells the model what was wrong.

``max_tokens`` is required by this API: ``ModelRef.max_tokens`` or
:data:`DEFAULT_MAX_TOKENS`. Usage: ``input_tokens`` plus
``cache_creation_input_tokens`` (cache writes are charged as input) are input,
``cache_read_input_tokens`` are cached. ``stop_reason`` is reported in the
neutral vocabulary (``end_turn`` -> ``stop``, ``tool_use`` -> ``tool_calls``,
``max_tokens`` -> ``length``, ``refusal`` -> ``content_filter``).

The tests and the demo run this adapter against
:class:`~mainstay_execution.testing.fake_models.FakeModelServer` on loopback:
the real providers are not reachable from the development machines.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from mainstay_execution.providers._http import Call, ToolNames, count, post_json
from mainstay_execution.providers.base import ModelReply, ToolCall, Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx

    from mainstay_contracts.supervisor import ModelRef
    from mainstay_execution.providers.base import Message, ToolSpec

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "PUBLIC_BASE_URL", "AnthropicProvider"]

PUBLIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
_PROVIDER = "anthropic"

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
}


class AnthropicProvider:
    """A :class:`~mainstay_execution.providers.base.Provider` over a shared ``httpx.AsyncClient``."""

    def __init__(
        self, client: httpx.AsyncClient, *, default_max_tokens: int = DEFAULT_MAX_TOKENS
    ) -> None:
        if default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        self._client = client
        self._default_max_tokens = default_max_tokens

    async def complete(
        self,
        model: ModelRef,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        api_key: str | None = None,
    ) -> ModelReply:
        base_url = (model.base_url or PUBLIC_BASE_URL).rstrip("/")
        call = Call(_PROVIDER, model, f"{base_url}/v1/messages", api_key)
        names = ToolNames(tool.name for tool in tools)
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        payload = self._request(model, messages, tools, names)
        document = await post_json(self._client, call, headers, payload)
        return _reply(document, call, names)

    def _request(
        self,
        model: ModelRef,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        names: ToolNames,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model.model,
            "max_tokens": model.max_tokens or self._default_max_tokens,
        }
        system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
        if system:
            body["system"] = system
        body["messages"] = _messages(messages, names)
        if tools:
            body["tools"] = [
                {
                    "name": names.to_wire(tool.name),
                    "description": tool.description,
                    "input_schema": tool.parameters,
                }
                for tool in tools
            ]
        return body


def _messages(messages: Sequence[Message], names: ToolNames) -> list[dict[str, Any]]:
    wire: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message, names)
        if not blocks:
            continue
        if wire and wire[-1]["role"] == role:
            wire[-1]["content"].extend(blocks)
        else:
            wire.append({"role": role, "content": blocks})
    for entry in wire:
        # The API wants a user turn's tool results before anything else in it.
        entry["content"].sort(key=lambda block: block["type"] != "tool_result")
    return wire


def _blocks(message: Message, names: ToolNames) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content,
            }
        ]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(
        {
            "type": "tool_use",
            "id": call.id,
            "name": names.to_wire(call.name),
            "input": call.arguments if call.arguments is not None else {},
        }
        for call in message.tool_calls
    )
    return blocks


def _reply(document: Any, call: Call, names: ToolNames) -> ModelReply:
    if not isinstance(document, dict):
        raise call.malformed("the body is not a JSON object")
    content = document.get("content")
    if not isinstance(content, list):
        raise call.malformed("no 'content'")
    texts: list[str] = []
    tool_calls: list[ToolCall] = []
    for block in content:
        if not isinstance(block, dict):
            raise call.malformed("a content block is not an object")
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            tool_calls.append(_tool_call(block, names))
        # Other blocks (thinking, server tools) are the provider's business, not the loop's.
    stop_reason = document.get("stop_reason")
    if isinstance(stop_reason, str) and stop_reason:
        finish_reason = _FINISH_REASONS.get(stop_reason, stop_reason)
    else:
        finish_reason = "tool_calls" if tool_calls else "stop"
    return ModelReply(
        text="".join(texts) if texts else None,
        tool_calls=tuple(tool_calls),
        usage=_usage(document.get("usage")),
        model=call.model.model,
        finish_reason=finish_reason,
        provider=_PROVIDER,
    )


def _tool_call(block: dict[str, Any], names: ToolNames) -> ToolCall:
    call_id = block.get("id")
    if not isinstance(call_id, str) or not call_id:
        call_id = f"toolu_{uuid.uuid4().hex[:24]}"
    name = block.get("name")
    name = names.from_wire(name) if isinstance(name, str) else ""
    arguments = block.get("input")
    # The API always sends an object; a proxy that forwards JSON text is read as text.
    raw = (
        arguments
        if isinstance(arguments, str)
        else json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    )
    return ToolCall.parse(call_id, name, raw)


def _usage(document: object) -> Usage:
    if not isinstance(document, dict):
        return Usage()
    return Usage(
        input_tokens=count(document.get("input_tokens"))
        + count(document.get("cache_creation_input_tokens")),
        output_tokens=count(document.get("output_tokens")),
        cached_tokens=count(document.get("cache_read_input_tokens")),
    )
