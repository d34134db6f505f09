"""OpenAI-compatible chat completions: ``POST {base_url}/chat/completions``.

OpenAI itself (``base_url`` None: https://api.openai.com/v1) and every server
that speaks its API: vLLM, Ollama, LM Studio, LiteLLM, OpenRouter. Those differ
in small ways, so the reply is read leniently where the meaning is still clear:
no ``usage`` counts zero tokens, a tool call without an id gets one, arguments
sent as an object instead of JSON text are taken as they are, and empty
arguments mean ``{}`` (a tool without parameters). What cannot be read as a
completion at all (not JSON, no ``choices``, no ``message``) is ``malformed``.

Mapping (provider-neutral :mod:`.base` -> wire)::

    Message(system|user, text)          {"role": ..., "content": text}
    Message(assistant, text, calls)     {"role": "assistant", "content": text or null,
                                         "tool_calls": [{"id", "type": "function",
                                           "function": {"name", "arguments": "<JSON text>"}}]}
    Message(tool, result, call id)      {"role": "tool", "tool_call_id": id, "content": result}
    ToolSpec(name, description, schema) {"type": "function", "function": {"name",
                                           "description", "parameters": schema}}

A call whose arguments were malformed is replayed with ``{}``: servers such as
vLLM parse the arguments of earlier calls and would refuse the whole
conversation, and the loop's tool result already tells the model what was wrong.

``max_tokens`` goes as ``max_completion_tokens`` to OpenAI itself (its
reasoning models refuse the older name) and as ``max_tokens`` to everyone else
(the name the compatible servers all understand).

The tests and the demo run this adapter against
:class:`~mainstay_execution.testing.fake_models.FakeModelServer` on loopback:
the real providers are not reachable from the development machines.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import httpx

from mainstay_execution.providers._http import Call, ToolNames, count, post_json
from mainstay_execution.providers.base import ModelReply, ToolCall, Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mainstay_contracts.supervisor import ModelRef
    from mainstay_execution.providers.base import Message, ToolSpec

__all__ = ["PUBLIC_BASE_URL", "OpenAIProvider"]

PUBLIC_BASE_URL = "https://api.openai.com/v1"
_PROVIDER = "openai"
_PUBLIC_HOST = "api.openai.com"


class OpenAIProvider:
    """A :class:`~mainstay_execution.providers.base.Provider` over a shared ``httpx.AsyncClient``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def complete(
        self,
        model: ModelRef,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        api_key: str | None = None,
    ) -> ModelReply:
        base_url = (model.base_url or PUBLIC_BASE_URL).rstrip("/")
        call = Call(_PROVIDER, model, f"{base_url}/chat/completions", api_key)
        names = ToolNames(tool.name for tool in tools)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        document = await post_json(
            self._client, call, headers, _request(model, messages, tools, names)
        )
        return _reply(document, call, names)


def _request(
    model: ModelRef, messages: Sequence[Message], tools: Sequence[ToolSpec], names: ToolNames
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model.model,
        "messages": [_message(message, names) for message in messages],
    }
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": names.to_wire(tool.name),
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in tools
        ]
    if model.max_tokens is not None:
        body[_max_tokens_field(model)] = model.max_tokens
    return body


def _max_tokens_field(model: ModelRef) -> str:
    if model.base_url is None:
        return "max_completion_tokens"
    try:
        host = httpx.URL(model.base_url).host
    except httpx.InvalidURL:
        host = ""
    return "max_completion_tokens" if host == _PUBLIC_HOST else "max_tokens"


def _message(message: Message, names: ToolNames) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role != "assistant" or not message.tool_calls:
        return {"role": message.role, "content": message.content}
    return {
        "role": "assistant",
        # OpenAI wants null rather than "" beside tool calls; some servers reject "".
        "content": message.content or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": names.to_wire(call.name), "arguments": _replayed(call)},
            }
            for call in message.tool_calls
        ],
    }


def _replayed(call: ToolCall) -> str:
    if call.arguments is None:
        return "{}"
    return call.raw_arguments if call.raw_arguments.strip() else "{}"


def _reply(document: Any, call: Call, names: ToolNames) -> ModelReply:
    if not isinstance(document, dict):
        raise call.malformed("the body is not a JSON object")
    choices = document.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise call.malformed("no 'choices'")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise call.malformed("the first choice has no 'message'")
    wire_calls = message.get("tool_calls") or []
    if not isinstance(wire_calls, list):
        raise call.malformed("'tool_calls' is not a list")
    tool_calls = tuple(_tool_call(item, names) for item in wire_calls)
    text = _text(message.get("content"))
    if text is None and isinstance(message.get("refusal"), str):
        text = message["refusal"]
    finish_reason = choice.get("finish_reason")
    if not isinstance(finish_reason, str) or not finish_reason:
        finish_reason = "tool_calls" if tool_calls else "stop"
    return ModelReply(
        text=text,
        tool_calls=tool_calls,
        usage=_usage(document.get("usage")),
        model=call.model.model,
        finish_reason=finish_reason,
        provider=_PROVIDER,
    )


def _text(content: object) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts, as some compatible servers answer
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        ]
        return "".join(parts) if parts else None
    return None


def _tool_call(item: object, names: ToolNames) -> ToolCall:
    if not isinstance(item, dict):
        return ToolCall(
            id=_new_id(),
            name="",
            arguments=None,
            raw_arguments=json.dumps(item, ensure_ascii=False),
            error="the tool call is not an object",
        )
    call_id = item.get("id")
    if not isinstance(call_id, str) or not call_id:
        call_id = _new_id()
    function = item.get("function")
    if not isinstance(function, dict):
        function = {}
    name = function.get("name")
    name = names.from_wire(name) if isinstance(name, str) else ""
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        raw = arguments
    elif arguments is None:
        raw = ""
    else:  # an object (or worse) instead of JSON text
        raw = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    parsed = ToolCall.parse(call_id, name, raw if raw.strip() else "{}")
    if parsed.raw_arguments == raw:
        return parsed
    return ToolCall(
        id=parsed.id,
        name=parsed.name,
        arguments=parsed.arguments,
        raw_arguments=raw,
        error=parsed.error,
    )


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _usage(document: object) -> Usage:
    if not isinstance(document, dict):
        return Usage()
    prompt = count(document.get("prompt_tokens"))
    details = document.get("prompt_tokens_details")
    cached = min(prompt, count(details.get("cached_tokens"))) if isinstance(details, dict) else 0
    return Usage(
        input_tokens=prompt - cached,
        output_tokens=count(document.get("completion_tokens")),
        cached_tokens=cached,
    )
