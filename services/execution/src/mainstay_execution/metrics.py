"""Execution's own Prometheus families: the state of each model's circuit breaker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Gauge

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client import CollectorRegistry

    from mainstay_execution.healing import CircuitState

__all__ = ["model_circuit_metrics"]

_STATE_VALUE: dict[CircuitState, int] = {"closed": 0, "half_open": 1, "open": 2}


def model_circuit_metrics(registry: CollectorRegistry) -> Callable[[str, str, CircuitState], None]:
    """The ``on_change`` of :class:`~mainstay_execution.healing.Circuits`, setting
    ``mainstay_model_circuit_state`` (the same values as the gateway's tool circuits)."""
    circuit = Gauge(
        "mainstay_model_circuit_state",
        "Circuit breaker per model in this instance: 0 closed, 1 half-open, 2 open.",
        ["provider", "model"],
        registry=registry,
    )

    def changed(provider: str, model: str, state: CircuitState) -> None:
        circuit.labels(provider=provider, model=model).set(_STATE_VALUE[state])

    return changed
