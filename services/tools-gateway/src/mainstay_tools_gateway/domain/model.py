"""What a tool call is, how its outcome is classified, and the port every tool kind fills."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mainstay_common.errors import parse_retry_after as parse_retry_after_header

if TYPE_CHECKING:
    from datetime import datetime

    from mainstay_contracts.tools import CallOutcome, ToolSpec

__all__ = [
    "FINAL_OUTCOMES",
    "RETRYABLE_OUTCOMES",
    "CallContext",
    "CallRequest",
    "Invoker",
    "ToolFailure",
    "classify_status",
    "parse_retry_after",
]

FailureOutcome = Literal["TRANSIENT", "PERMANENT", "RATE_LIMITED"]

FINAL_OUTCOMES: frozenset[CallOutcome] = frozenset({"OK", "PERMANENT", "INVALID_OUTPUT"})
"""Outcomes of a call that reached the tool and will not change on a retry: stored and replayed."""

RETRYABLE_OUTCOMES: frozenset[CallOutcome] = frozenset(
    {"TRANSIENT", "RATE_LIMITED", "CIRCUIT_OPEN", "CONFLICT"}
)


@dataclass(frozen=True)
class CallRequest:
    """One call as the gateway receives it (from HTTP, Kafka or MCP)."""

    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    task_id: str = ""
    step: int = 0
    deadline: datetime | None = None
    attempt: int = 1


@dataclass(frozen=True)
class CallContext:
    """What an invoker needs besides the tool and the arguments."""

    timeout_s: float
    max_output_bytes: int
    idempotency_key: str = ""
    credential: str | None = field(default=None, repr=False)
    """The vault secret for the tool's endpoint ``auth``, if it names one."""


class ToolFailure(Exception):
    """A call that reached (or tried to reach) the tool and failed, classified."""

    def __init__(
        self, outcome: FailureOutcome, message: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.outcome: FailureOutcome = outcome
        self.message = message
        self.retry_after_s = retry_after_s


class Invoker(Protocol):
    """Calls one kind of tool; raises :class:`ToolFailure` for a classified failure."""

    async def call(self, tool: ToolSpec, arguments: dict[str, Any], context: CallContext) -> Any:
        """The tool's output (JSON-like)."""
        ...


def classify_status(status: int) -> FailureOutcome | None:
    """An HTTP status in the tool's answer: ``None`` for success, else the failure class."""
    if 200 <= status < 300:
        return None
    if status == 429:
        return "RATE_LIMITED"
    if status in {408, 425} or status >= 500:
        return "TRANSIENT"
    return "PERMANENT"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if valid; a
    tool is never waited for longer than a day."""
    seconds = parse_retry_after_header(value, now=now)
    return None if seconds is None else min(seconds, 24 * 3600.0)
