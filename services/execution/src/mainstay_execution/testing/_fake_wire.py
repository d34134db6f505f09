"""The two wire formats as the fake model server sees them: requests in, replies and errors out.

Requests are read back into the provider-neutral types of
:mod:`mainstay_execution.providers.base`, so a test asserts what the model was
told the same way for both APIs, and a responder works for both. Reading is
strict where the real APIs are (a missing ``max_tokens`` or
``anthropic-version`` is a 400, as it would be remotely), so an adapter bug
shows up as the error it would cause in production.

This module is written from the APIs' documentation, not from the adapters:
it shares no code with them, so it can catch their mistakes.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from mainstay_execution.providers.base import Message, ToolCall, ToolSpec

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mainstay_execution.providers.base import Role

__all__ = [
    "Api",
    "BadRequest",
    "anthropic_error",
    "anthropic_message",
    "openai_completion",
    "openai_error",
    "read_anthropic",
    "read_openai",
    "wire_name",
]

Api: TypeAlias = Literal["openai", "anthropic"]

_ANTHROPIC_STOP = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}

# The error "type" each status gets when a step names none (Anthropic's vocabulary,
# which reads well in OpenAI-shaped bodies too).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


_OPENAI_ROLES: dict[object, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


class BadRequest(Exception):
    """A request the real API would refuse with 400."""


def wire_name(name: str, offered: Sequence[ToolSpec]) -> str:
    """The name of an offered tool that ``name`` means (``weather.lookup`` -> ``weather_lookup``)."""
    if any(tool.name == name for tool in offered):
        return name
    sanitized = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    return next((tool.name for tool in offered if tool.name == sanitized), name)


# --- reading requests ----------------------------------------------------------


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise BadRequest(problem)


def _model(body: Any) -> str:
    _require(isinstance(body, dict), "the body must be a JSON object")
    model = body.get("model")
    _require(isinstance(model, str) and bool(model), "'model' is required")
    return str(model)


def _text_of(content: Any, where: str) -> str:
    """A string, or the joined text of content blocks/parts."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    _require(isinstance(content, list), f"{where}: content must be a string or a list")
    texts = []
    for part in content:
        _require(isinstance(part, dict), f"{where}: each content part must be an object")
        if part.get("type") == "text":
            _require(isinstance(part.get("text"), str), f"{where}: a text part needs 'text'")
            texts.append(part["text"])
    return "".join(texts)


def read_openai(body: Any) -> tuple[str, list[Message], list[ToolSpec]]:
    """``(model, messages, tools)`` of a chat-completions request."""
    model = _model(body)
    wire = body.get("messages")
    _require(isinstance(wire, list) and bool(wire), "'messages' must be a non-empty list")
    messages = [_openai_message(entry, f"messages[{i}]") for i, entry in enumerate(wire)]
    tools = []
    for i, entry in enumerate(body.get("tools") or []):
        where = f"tools[{i}]"
        _require(
            isinstance(entry, dict) and entry.get("type") == "function", f"{where}: not a function"
        )
        function = entry.get("function")
        _require(isinstance(function, dict) and isinstance(function.get("name"), str), where)
        parameters = function.get("parameters", {})
        _require(isinstance(parameters, dict), f"{where}: parameters must be an object")
        tools.append(ToolSpec(function["name"], str(function.get("description", "")), parameters))
    return model, messages, tools


def _openai_message(entry: Any, where: str) -> Message:
    _require(isinstance(entry, dict), f"{where}: must be an object")
    role = _OPENAI_ROLES.get(entry.get("role"))
    _require(role is not None, f"{where}: unknown role {entry.get('role')!r}")
    assert role is not None
    text = _text_of(entry.get("content"), where)
    if role == "tool":
        call_id = entry.get("tool_call_id")
        _require(isinstance(call_id, str) and bool(call_id), f"{where}: 'tool_call_id' is required")
        return Message("tool", text, tool_call_id=call_id)
    calls: list[ToolCall] = []
    if role == "assistant":
        for j, call in enumerate(entry.get("tool_calls") or []):
            at = f"{where}.tool_calls[{j}]"
            _require(
                isinstance(call, dict) and isinstance(call.get("id"), str), f"{at}: needs 'id'"
            )
            function = call.get("function")
            _require(isinstance(function, dict), f"{at}: needs 'function'")
            arguments = function.get("arguments")
            _require(isinstance(arguments, str), f"{at}: 'arguments' must be a JSON string")
            calls.append(ToolCall.parse(call["id"], str(function.get("name", "")), arguments))
    return Message(role, text, tool_calls=tuple(calls))


def read_anthropic(
    body: Any, headers: Mapping[str, str]
) -> tuple[str, list[Message], list[ToolSpec]]:
    """``(model, messages, tools)`` of a Messages API request, the system prompt first."""
    _require("anthropic-version" in headers, "anthropic-version: header is required")
    model = _model(body)
    max_tokens = body.get("max_tokens")
    _require(
        isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 1,
        "max_tokens: Field required",
    )
    messages: list[Message] = []
    system = body.get("system")
    if system is not None:
        messages.append(Message("system", _text_of(system, "system")))
    wire = body.get("messages")
    _require(isinstance(wire, list) and bool(wire), "messages: must be a non-empty list")
    for i, entry in enumerate(wire):
        messages.extend(_anthropic_message(entry, f"messages.{i}"))
    tools = []
    for i, entry in enumerate(body.get("tools") or []):
        where = f"tools.{i}"
        _require(isinstance(entry, dict) and isinstance(entry.get("name"), str), where)
        schema = entry.get("input_schema")
        _require(isinstance(schema, dict), f"{where}.input_schema: Field required")
        tools.append(ToolSpec(entry["name"], str(entry.get("description", "")), schema))
    return model, messages, tools


def _anthropic_message(entry: Any, where: str) -> list[Message]:
    _require(isinstance(entry, dict), f"{where}: must be an object")
    role = entry.get("role")
    _require(role in {"user", "assistant"}, f"{where}.role: must be 'user' or 'assistant'")
    content = entry.get("content")
    if isinstance(content, str):
        return [Message(role, content)]
    _require(isinstance(content, list) and bool(content), f"{where}.content: must not be empty")
    results: list[Message] = []
    texts: list[str] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        _require(isinstance(block, dict), f"{at}: must be an object")
        kind = block.get("type")
        if kind == "text":
            _require(
                isinstance(block.get("text"), str) and bool(block["text"]),
                f"{at}: text content blocks must be non-empty",
            )
            texts.append(block["text"])
        elif kind == "tool_use" and role == "assistant":
            _require(isinstance(block.get("id"), str) and isinstance(block.get("name"), str), at)
            _require(isinstance(block.get("input"), dict), f"{at}.input: must be an object")
            calls.append(ToolCall.of(block["id"], block["name"], block["input"]))
        elif kind == "tool_result" and role == "user":
            _require(not texts, f"{at}: tool_result blocks must come first in a user message")
            call_id = block.get("tool_use_id")
            _require(isinstance(call_id, str) and bool(call_id), f"{at}: needs 'tool_use_id'")
            text = _text_of(block.get("content"), at)
            results.append(Message("tool", text, tool_call_id=call_id))
        else:
            raise BadRequest(f"{at}: unexpected {kind!r} block in a {role} message")
    if texts or calls or not results:
        results.append(Message(role, "".join(texts), tool_calls=tuple(calls)))
    return results


# --- writing replies -------------------------------------------------------------


def _arguments_text(arguments: Mapping[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(dict(arguments))


def openai_completion(
    *,
    number: int,
    model: str,
    text: str | None,
    calls: Sequence[tuple[str | None, str, Mapping[str, Any] | str]],
    finish_reason: str,
    usage: tuple[int, int, int],
    minimal: bool,
) -> dict[str, Any]:
    """A chat completion; ``calls`` are ``(id, name, arguments)``; ``usage`` ``(in, out, cached)``."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = []
        for i, (call_id, name, arguments) in enumerate(calls):
            wire: dict[str, Any] = {
                "type": "function",
                "function": {"name": name, "arguments": _arguments_text(arguments)},
            }
            if not minimal:
                wire["id"] = call_id or f"call_{number}_{i}"
            message["tool_calls"].append(wire)
    document: dict[str, Any] = {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if not minimal:
        input_tokens, output_tokens, cached_tokens = usage
        document["usage"] = {
            "prompt_tokens": input_tokens + cached_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + cached_tokens + output_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        }
    return document


def anthropic_message(
    *,
    number: int,
    model: str,
    text: str | None,
    calls: Sequence[tuple[str | None, str, Mapping[str, Any] | str]],
    finish_reason: str,
    usage: tuple[int, int, int],
    minimal: bool,
) -> dict[str, Any]:
    """A Messages API reply; a string ``arguments`` goes out as a string ``input`` (broken)."""
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    for i, (call_id, name, arguments) in enumerate(calls):
        content.append(
            {
                "type": "tool_use",
                "id": call_id or f"toolu_{number}_{i}",
                "name": name,
                "input": arguments if isinstance(arguments, str) else dict(arguments),
            }
        )
    document: dict[str, Any] = {
        "id": f"msg_{number}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _ANTHROPIC_STOP.get(finish_reason, finish_reason),
        "stop_sequence": None,
    }
    if not minimal:
        input_tokens, output_tokens, cached_tokens = usage
        document["usage"] = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached_tokens,
        }
    return document


def _error_type(status: int, error_type: str | None) -> str:
    if error_type:
        return error_type
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def openai_error(
    status: int, message: str, error_type: str | None, code: str | None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _error_type(status, error_type),
            "param": None,
            "code": code,
        }
    }


def anthropic_error(status: int, message: str, error_type: str | None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _error_type(status, error_type), "message": message}}
