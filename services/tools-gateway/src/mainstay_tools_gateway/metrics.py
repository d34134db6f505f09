"""The gateway's own Prometheus families: calls by tool and outcome, latency, circuit states."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from mainstay_common.telemetry.metrics import HANDLER_BUCKETS
from mainstay_tools_gateway.domain.breaker import BreakerState
from mainstay_tools_gateway.service import CallObserver

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["gateway_metrics"]

_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def gateway_metrics(registry: CollectorRegistry) -> CallObserver:
    calls = Counter(
        "mainstay_tool_calls",
        "Tool calls by tool and outcome.",
        ["tool", "outcome"],
        registry=registry,
    )
    latency = Histogram(
        "mainstay_tool_call_seconds",
        "Time from receiving a call to its classified result.",
        ["tool"],
        buckets=HANDLER_BUCKETS,
        registry=registry,
    )
    circuit = Gauge(
        "mainstay_tool_circuit_state",
        "Circuit breaker per tool in this instance: 0 closed, 1 half-open, 2 open.",
        ["tool"],
        registry=registry,
    )

    def call_finished(tool: str, outcome: str, seconds: float) -> None:
        # Unknown names would grow the series without bound; they share one label.
        label = tool if outcome != "UNKNOWN_TOOL" else "<unknown>"
        calls.labels(tool=label, outcome=outcome).inc()
        latency.labels(tool=label).observe(seconds)

    def breaker_changed(tool: str, state: BreakerState) -> None:
        circuit.labels(tool=tool).set(_STATE_VALUE[state])

    return CallObserver(call_finished=call_finished, breaker_changed=breaker_changed)
