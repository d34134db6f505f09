"""Self-healing decisions: one classification decides the action (no I/O here).

=====================  ==============================================
failure                action
=====================  ==============================================
transient              retry the same model, exponential backoff with
                       full jitter, up to ``max_attempts``
rate limited           wait for ``Retry-After`` (at least the backoff)
overloaded / circuit   the next model in the agent's chain
malformed output       give the model the structured error; after
                       ``max_corrections`` in a row, the next model
permanent              escalate: a human decides (retry, skip, abort);
                       with nobody to ask, the task fails naming it
=====================  ==============================================

A circuit per provider and model opens after ``failures`` failures in a row
and refuses calls for ``open_s``; then one call is let through (half-open):
success closes it, failure opens it again. ``on_change`` hears each state a
circuit enters (``closed``, ``half_open``, ``open``), for the metrics.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Action", "Circuit", "CircuitState", "Circuits", "backoff", "decide"]

Action = Literal["retry", "wait", "fallback", "escalate"]
CircuitState = Literal["closed", "half_open", "open"]


def backoff(
    attempt: int, *, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Full jitter: uniform in ``[0, min(max_s, base_s * 2**(attempt-1))]``."""
    ceiling = min(max_s, base_s * 2 ** max(attempt - 1, 0))
    return (rng or random).uniform(0, ceiling)


def decide(kind: str, *, attempt: int, max_attempts: int) -> Action:
    """What to do about a failed model call of ``kind`` on its ``attempt``-th try."""
    if kind in ("overloaded", "circuit_open"):
        return "fallback"
    if kind == "permanent":
        return "escalate"
    if attempt >= max_attempts:
        return "fallback"
    return "wait" if kind == "rate_limited" else "retry"


@dataclass
class Circuit:
    failures: int = 0
    opened_at: float | None = None


@dataclass
class Circuits:
    """Circuit breakers per ``(provider, model)``, kept in memory by each instance."""

    failures: int = 5
    open_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    on_change: Callable[[str, str, CircuitState], None] | None = None
    _circuits: dict[tuple[str, str], Circuit] = field(default_factory=dict)

    def allows(self, provider: str, model: str) -> bool:
        circuit = self._circuits.get((provider, model))
        if circuit is None or circuit.opened_at is None:
            return True
        if self.clock() - circuit.opened_at < self.open_s:
            return False
        self._changed(provider, model, "half_open")  # one try
        return True

    def succeeded(self, provider: str, model: str) -> None:
        if self._circuits.pop((provider, model), None) is not None:
            self._changed(provider, model, "closed")

    def failed(self, provider: str, model: str) -> None:
        circuit = self._circuits.setdefault((provider, model), Circuit())
        circuit.failures += 1
        if circuit.failures >= self.failures:
            circuit.opened_at = self.clock()
            self._changed(provider, model, "open")

    def _changed(self, provider: str, model: str, state: CircuitState) -> None:
        if self.on_change is not None:
            self.on_change(provider, model, state)
