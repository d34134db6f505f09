"""Per-tool circuit breakers and Retry-After cool-downs (state of one gateway instance).

A breaker is *closed* while calls succeed. ``failure_threshold`` consecutive
``TRANSIENT`` failures open it: calls are refused at once (``CIRCUIT_OPEN``)
for ``open_s``. Then it is *half-open*: exactly one call goes through as a
probe while the others are still refused; the probe's success closes the
breaker, its failure opens it for another ``open_s``.

A tool that answers 429 with ``Retry-After`` gets a cool-down instead: no call
reaches it until that time, and callers are told how long is left.

The state lives in each instance's memory, as with most breakers: every
instance learns about a failing tool from its own calls, within
``failure_threshold`` calls.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Admission", "BreakerState", "CircuitBreakers"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Admission:
    """Whether a call may go to the tool now; if not, why and for how long."""

    allowed: bool
    probe: bool = False
    reason: str = ""
    retry_after_s: float | None = None
    rate_limited: bool = False


@dataclass
class _Breaker:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    cool_until: float = 0.0


class CircuitBreakers:
    """The breakers of every tool this instance calls."""

    def __init__(
        self,
        *,
        failure_threshold: int,
        open_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if open_s <= 0:
            raise ValueError("open_s must be positive")
        self._threshold = failure_threshold
        self._open_s = open_s
        self._clock = clock
        self._on_change = on_change
        self._breakers: dict[str, _Breaker] = {}

    def state(self, tool: str) -> BreakerState:
        breaker = self._breakers.get(tool)
        if breaker is None:
            return BreakerState.CLOSED
        if breaker.state is BreakerState.OPEN and self._clock() - breaker.opened_at >= self._open_s:
            return BreakerState.HALF_OPEN
        return breaker.state

    def admit(self, tool: str) -> Admission:
        """Ask before calling ``tool``; a ``probe`` admission must be reported back."""
        breaker = self._breakers.setdefault(tool, _Breaker())
        now = self._clock()
        if breaker.cool_until > now:
            wait = breaker.cool_until - now
            return Admission(
                False,
                reason=f"tool '{tool}' asked callers to wait {wait:.1f} s (Retry-After)",
                retry_after_s=wait,
                rate_limited=True,
            )
        if breaker.state is BreakerState.OPEN:
            remaining = breaker.opened_at + self._open_s - now
            if remaining > 0:
                return Admission(
                    False,
                    reason=f"circuit of tool '{tool}' is open after {breaker.failures}"
                    f" consecutive failures; next probe in {remaining:.1f} s",
                    retry_after_s=remaining,
                )
            self._set(tool, breaker, BreakerState.HALF_OPEN)
        if breaker.state is BreakerState.HALF_OPEN:
            if breaker.probing:
                return Admission(
                    False,
                    reason=f"circuit of tool '{tool}' is half-open and a probe call is running",
                    retry_after_s=1.0,
                )
            breaker.probing = True
            return Admission(True, probe=True)
        return Admission(True)

    def succeeded(self, tool: str) -> None:
        breaker = self._breakers.setdefault(tool, _Breaker())
        breaker.failures = 0
        breaker.probing = False
        if breaker.state is not BreakerState.CLOSED:
            self._set(tool, breaker, BreakerState.CLOSED)

    def failed(self, tool: str) -> None:
        """A TRANSIENT failure: counts toward opening (or re-opens a half-open breaker)."""
        breaker = self._breakers.setdefault(tool, _Breaker())
        breaker.failures += 1
        if breaker.state is BreakerState.HALF_OPEN or breaker.failures >= self._threshold:
            breaker.opened_at = self._clock()
            breaker.probing = False
            if breaker.state is not BreakerState.OPEN:
                self._set(tool, breaker, BreakerState.OPEN)

    def released(self, tool: str) -> None:
        """The admitted call ended in a way that says nothing about the tool's health."""
        breaker = self._breakers.setdefault(tool, _Breaker())
        breaker.probing = False

    def cool_down(self, tool: str, seconds: float) -> None:
        """Honour a tool's ``Retry-After``: send it nothing for ``seconds``."""
        breaker = self._breakers.setdefault(tool, _Breaker())
        breaker.cool_until = max(breaker.cool_until, self._clock() + max(0.0, seconds))
        breaker.probing = False

    def _set(self, tool: str, breaker: _Breaker, state: BreakerState) -> None:
        breaker.state = state
        if self._on_change is not None:
            self._on_change(tool, state)
