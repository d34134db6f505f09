"""The exported names are the contract: adding or removing one must be deliberate."""

from __future__ import annotations

import mainstay_common.telemetry
import mainstay_common.telemetry.metrics


def test_telemetry_exports() -> None:
    assert sorted(mainstay_common.telemetry.__all__) == [
        "BusMetrics",
        "ConsumeOutcome",
        "HttpMetrics",
        "TASK_ID_ATTRIBUTE",
        "TRACE_HEADERS",
        "Telemetry",
        "TraceContextFilter",
        "collect_spans",
        "configure_logging",
        "current_trace_ids",
        "extract_trace_context",
        "inject_trace_headers",
        "setup_telemetry",
        "task_context",
        "task_id_of",
    ]
    assert all(
        hasattr(mainstay_common.telemetry, name) for name in mainstay_common.telemetry.__all__
    )


def test_metrics_exports() -> None:
    assert sorted(mainstay_common.telemetry.metrics.__all__) == [
        "BusMetrics",
        "ConsumeOutcome",
        "HANDLER_BUCKETS",
        "HttpMetrics",
    ]
