"""Traces, metrics and logs for Mainstay services.

:func:`setup_telemetry` builds a service's OTel providers and its Prometheus
registry; :func:`configure_logging` makes logs JSON lines with the trace id;
:func:`inject_trace_headers` / :func:`extract_trace_context` carry the trace
across Kafka; :func:`task_context` puts a task id in the context, and every
span started in it carries it as :data:`TASK_ID_ATTRIBUTE`;
:func:`collect_spans` keeps the spans of every service of the process;
:mod:`mainstay_common.telemetry.metrics` defines the standard metric families
(:class:`BusMetrics`, :class:`HttpMetrics`).
"""

from mainstay_common.telemetry._collect import collect_spans
from mainstay_common.telemetry._logging import TraceContextFilter, configure_logging
from mainstay_common.telemetry._propagation import (
    TRACE_HEADERS,
    current_trace_ids,
    extract_trace_context,
    inject_trace_headers,
)
from mainstay_common.telemetry._setup import Telemetry, setup_telemetry
from mainstay_common.telemetry._task import TASK_ID_ATTRIBUTE, task_context, task_id_of
from mainstay_common.telemetry.metrics import BusMetrics, ConsumeOutcome, HttpMetrics

__all__ = [
    "TASK_ID_ATTRIBUTE",
    "TRACE_HEADERS",
    "BusMetrics",
    "ConsumeOutcome",
    "HttpMetrics",
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
