"""Each model's circuit state shows in ``mainstay_model_circuit_state``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from mainstay_execution.healing import Circuits
from mainstay_execution.metrics import model_circuit_metrics


def test_the_gauge_follows_a_circuit_through_open_half_open_and_closed() -> None:
    registry = CollectorRegistry()
    now = [0.0]
    circuits = Circuits(
        failures=2, open_s=10.0, clock=lambda: now[0], on_change=model_circuit_metrics(registry)
    )

    def state() -> float | None:
        return registry.get_sample_value(
            "mainstay_model_circuit_state", {"provider": "openai", "model": "primary"}
        )

    circuits.failed("openai", "primary")
    assert state() is None  # one failure opens nothing
    circuits.failed("openai", "primary")
    assert state() == 2
    assert not circuits.allows("openai", "primary")
    now[0] = 10.0
    assert circuits.allows("openai", "primary")
    assert state() == 1
    circuits.succeeded("openai", "primary")
    assert state() == 0
