"""Provider-neutral shapes of a model call: what the execution loop sends and gets back.

The loop speaks only these types; :mod:`.openai` and :mod:`.anthropic` translate
them to and from each wire format. Nothing here does I/O, so the loop's logic
and its tests use them without a network.

Two rules shape the types:

* **Malformed model output never raises.** A tool call whose arguments are not
  a JSON object still cost tokens that must be charged, and the loop answers
  the model with the problem so it can correct itself: :class:`ToolCall`
  carries ``error`` (and ``arguments`` None) instead.
* **A reply is checkpointed once and never requested again.** The loop stores
  :meth:`ModelReply.to_json` in PostgreSQL before acting on it, and a resumed
  task rebuilds the same reply with :meth:`ModelReply.from_json`; the round
  trip is exact (``raw_arguments`` keeps the model's own text byte for byte).

Failures are a :class:`ModelError` whose ``kind`` says how to retry::

    kind          cause                                          retry?
    transient     connect error, timeout, dropped connection,    yes, with backoff
                  HTTP 500/502/504 (and 408, 409, other 5xx)
    rate_limited  HTTP 429                                       yes, after retry_after
    overloaded    HTTP 503, Anthropic 529 overloaded_error       yes, or the next model
    malformed     a 2xx body that is not a completion            yes (a broken proxy heals)
    permanent     HTTP 400/401/403/404/422 (other 4xx), a bad     no: the next model
                  base_url, OpenAI's 429 insufficient_quota
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, get_args

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mainstay_contracts.supervisor import ModelRef

__all__ = [
    "ErrorKind",
    "Message",
    "ModelError",
    "ModelReply",
    "Provider",
    "Role",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "parse_arguments",
]

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
ErrorKind: TypeAlias = Literal["transient", "rate_limited", "overloaded", "malformed", "permanent"]

_ROLES: frozenset[str] = frozenset(get_args(Role))
_ERROR_KINDS: frozenset[str] = frozenset(get_args(ErrorKind))
_REPLY_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call; ``parameters`` is the JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: PostgreSQL's jsonb refuses them and nan != nan
    # would break the checkpoint round trip, so they count as malformed arguments.
    raise ValueError(f"{name} is not valid JSON")


def parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(arguments, None)`` for a JSON object, ``(None, problem)`` for anything else."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and the constants above
        return None, f"the arguments are not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"the arguments must be a JSON object, got {_json_type(value)}"
    return value, None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for.

    ``raw_arguments`` is the model's own text. When the call cannot be used as
    is (arguments that are not a JSON object, no tool name), ``arguments`` is
    None and ``error`` says why, in words the model can act on.
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str
    error: str | None = None

    def __post_init__(self) -> None:
        if self.error is None and self.arguments is None:
            raise ValueError("a tool call without arguments must say why in 'error'")

    @classmethod
    def parse(cls, id: str, name: str, raw_arguments: str) -> ToolCall:
        """A call from the model's argument text; malformed text gives ``error``, never raises."""
        arguments, error = parse_arguments(raw_arguments)
        if not name and error is None:
            arguments, error = None, "the tool call names no tool"
        return cls(id=id, name=name, arguments=arguments, raw_arguments=raw_arguments, error=error)

    @classmethod
    def of(cls, id: str, name: str, arguments: Mapping[str, Any]) -> ToolCall:
        """A well-formed call (tests, replays); ``raw_arguments`` is the compact JSON."""
        document = dict(arguments)
        return cls(id=id, name=name, arguments=document, raw_arguments=_dumps(document))


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation.

    ``tool_calls`` only on ``assistant`` turns; ``tool_call_id`` (the call
    answered) exactly on ``tool`` turns, whose ``content`` is the tool's result.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(f"role must be one of {sorted(_ROLES)}, got {self.role!r}")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("tool messages, and only they, name the tool_call_id they answer")


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call consumed, in the ledger's terms (each priced on its own).

    ``input_tokens`` are the prompt tokens charged at the full input price and
    ``cached_tokens`` those read from the provider's prompt cache: they never
    overlap, so OpenAI's ``prompt_tokens`` (which include the cached ones) is
    split, and Anthropic's cache writes count as input.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """All tokens of the prompt, cached or not."""
        return self.input_tokens + self.cached_tokens


@dataclass(frozen=True, slots=True)
class ModelReply:
    """What one model call produced.

    ``model`` is the name the agent's chain gives (what prices are keyed by),
    ``provider`` the API it spoke. ``finish_reason`` uses OpenAI's vocabulary
    for both APIs: ``stop``, ``tool_calls``, ``length`` (cut at max_tokens),
    ``content_filter``, or the provider's own word for anything else.
    """

    text: str | None
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    model: str
    finish_reason: str
    provider: str

    def to_json(self) -> str:
        """The checkpoint form: compact JSON text that :meth:`from_json` turns back into ``self``."""
        return _dumps(
            {
                "format": _REPLY_FORMAT,
                "provider": self.provider,
                "model": self.model,
                "text": self.text,
                "finish_reason": self.finish_reason,
                "tool_calls": [
                    {
                        "id": call.id,
                        "name": call.name,
                        "arguments": call.arguments,
                        "raw_arguments": call.raw_arguments,
                        "error": call.error,
                    }
                    for call in self.tool_calls
                ],
                "usage": {
                    "input_tokens": self.usage.input_tokens,
                    "output_tokens": self.usage.output_tokens,
                    "cached_tokens": self.usage.cached_tokens,
                },
            }
        )

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> ModelReply:
        """The reply :meth:`to_json` wrote: its text, or that text already decoded (jsonb).

        Raises ``ValueError`` for anything else: a checkpoint that does not
        read back is a bug or corruption, never something to guess around.
        """
        document: Any = json.loads(data) if isinstance(data, str | bytes) else data
        try:
            if document["format"] != _REPLY_FORMAT:
                raise ValueError(f"unknown reply format {document['format']!r}")
            usage = document["usage"]
            reply = cls(
                text=_optional_str(document["text"]),
                tool_calls=tuple(_call_from_json(call) for call in document["tool_calls"]),
                usage=Usage(
                    input_tokens=_int(usage["input_tokens"]),
                    output_tokens=_int(usage["output_tokens"]),
                    cached_tokens=_int(usage["cached_tokens"]),
                ),
                model=_str(document["model"]),
                finish_reason=_str(document["finish_reason"]),
                provider=_str(document["provider"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a recorded model reply: {exc!r}") from exc
        return reply


def _call_from_json(document: Any) -> ToolCall:
    arguments = document["arguments"]
    if arguments is not None and not isinstance(arguments, dict):
        raise TypeError("tool call arguments must be an object or null")
    return ToolCall(
        id=_str(document["id"]),
        name=_str(document["name"]),
        arguments=arguments,
        raw_arguments=_str(document["raw_arguments"]),
        error=_optional_str(document["error"]),
    )


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _dumps(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class ModelError(Exception):
    """A model call that produced no reply; ``kind`` says how the loop should retry it.

    ``retry_after`` is the provider's own hint in seconds (``Retry-After``),
    ``status`` the HTTP status when there was one. The message names the
    provider, the model and what happened, and never contains the API key.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        provider: str,
        model: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        if kind not in _ERROR_KINDS:
            raise ValueError(f"kind must be one of {sorted(_ERROR_KINDS)}, got {kind!r}")
        if retry_after is not None and not (math.isfinite(retry_after) and retry_after >= 0):
            raise ValueError(f"retry_after must be a non-negative number, got {retry_after!r}")
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind
        self.provider = provider
        self.model = model
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """False only for ``permanent``: the same request would fail the same way."""
        return self.kind != "permanent"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # The keyword-only arguments are not in self.args: copy and pickle need this.
        rebuild = functools.partial(
            ModelError,
            kind=self.kind,
            provider=self.provider,
            model=self.model,
            status=self.status,
            retry_after=self.retry_after,
        )
        return (rebuild, (self.message,))

    def __repr__(self) -> str:
        return (
            f"ModelError(kind={self.kind!r}, status={self.status!r},"
            f" retry_after={self.retry_after!r}, message={self.message!r})"
        )


class Provider(Protocol):
    """One model API. ``api_key`` None sends no credential (local servers need none)."""

    async def complete(
        self,
        model: ModelRef,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        api_key: str | None = None,
    ) -> ModelReply:
        """The model's reply to ``messages``; raises :class:`ModelError` when there is none."""
        ...
