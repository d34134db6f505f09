"""One task, one trace: its spans in execution, memory, the tools gateway, the ledger and
identity share a trace id, every one names the task, and each span's parent is one of
them (a consumer's parent is the producer span of the message it handled, a server's
the client span of the call). Then the task's work shows in the services' ``/metrics``.

Every service runs in this process, so one in-memory collector sees the spans of all
of them. Each service makes its bus, HTTP-server and gRPC spans with its own tracer
provider (its own ``service.name``); the asyncpg and httpx instrumentations, and the
test's own publisher, use the process's global provider, which is the first service's,
so the per-service checks rest on the former.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from mainstay_common.telemetry import TASK_ID_ATTRIBUTE, collect_spans
from mainstay_contracts.execution import SUBMIT_TASK
from mainstay_execution.memory import MemoryClient
from mainstay_execution.testing.fake_models import CallTool, Reply
from mainstay_execution.testing.mesh import FullMesh, running_mesh

if TYPE_CHECKING:
    from pathlib import Path

    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]

SERVICES = {"execution", "memory", "tools-gateway", "ledger", "identity"}


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes.get("service.name", ""))


def _attribute(span: ReadableSpan, name: str) -> object:
    return (span.attributes or {}).get(name)


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


async def _settled(spans: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    """The trace's finished spans, once none has ended for two polls and every parent is
    among them (relays and consumers end their last spans after the final event is out,
    and a parent ends after its children); what there is after a minute otherwise."""
    seen, quiet = -1, 0
    for _ in range(120):
        current = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
        quiet = quiet + 1 if len(current) == seen else 0
        seen = len(current)
        ids = {_span_id(s) for s in current}
        if quiet >= 2 and all(s.parent is None or s.parent.span_id in ids for s in current):
            return current
        await asyncio.sleep(0.5)
    return current


def _samples(exposition: str, name: str, **labels: str) -> list[float]:
    """The values of ``name``'s samples whose labels include ``labels``."""
    return [
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


async def _warm_up_memory(mesh: FullMesh, token: str) -> None:
    """One recall first, so memory's embedder is loaded before the task's recall."""
    memory = MemoryClient(mesh.memory_target, timeout_s=60)
    try:
        await memory.recall(
            token=token, tenant=mesh.tenant, agent="clerk", query="warm", limit=1, task_id="warm"
        )
    finally:
        await memory.aclose()


async def _metrics(mesh: FullMesh, url: str) -> str:
    answer = await mesh.http.get(f"{url}/metrics")
    assert answer.status_code == 200, answer.text
    return answer.text


async def test_a_task_is_one_trace_across_the_mesh_and_shows_in_the_metrics(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path: Path
) -> None:
    async with running_mesh(kafka_bootstrap, postgres_dsn, tmp_path) as mesh:
        await mesh.register_tool("lookup", price_micros=0)
        await mesh.register_tool("charge_card", side_effects=True, price_micros=300)
        mesh.models.script(
            "primary",
            [
                Reply(
                    tool_calls=[
                        CallTool("lookup", {"customer": "alice"}),
                        CallTool("charge_card", {"amount": 5}),
                    ]
                ),
                Reply(
                    tool_calls=[
                        CallTool(
                            "remember", {"content": "Alice pays by card", "kind": "preference"}
                        )
                    ]
                ),
                Reply("charged alice 5"),
            ],
        )
        # A loaded machine must not turn the recall into a timeout (the task would go on
        # without memory, and memory's span would end after the trace was read).
        async with mesh.execution(memory_timeout_s=60) as execution:
            await mesh.register_agent("clerk", tools=["lookup", "charge_card"])
            task_id = f"trace-{uuid.uuid4().hex[:8]}"
            token = await mesh.token()
            await _warm_up_memory(mesh, token)
            with collect_spans() as spans:
                await mesh.submit(task_id, "clerk", "charge alice 5", 10_000, token=token)
                events = await mesh.final(task_id)
                assert events[-1]["type"] == "task.completed", events
                assert not events[-1]["degraded"], events
                [submitted] = [
                    s
                    for s in spans.get_finished_spans()
                    if s.kind is SpanKind.PRODUCER
                    and str(_attribute(s, "messaging.destination.name")).endswith(SUBMIT_TASK.name)
                ]
                assert submitted.context is not None
                trace = await _settled(spans, submitted.context.trace_id)
                others = [
                    s
                    for s in spans.get_finished_spans()
                    if _attribute(s, TASK_ID_ATTRIBUTE) == task_id
                    and s.context is not None
                    and s.context.trace_id != submitted.context.trace_id
                ]
            # The submission's trace is stored with the task: whichever instance runs it
            # (after a takeover too) goes on in it.
            [stored] = await mesh.execution_rows(
                "SELECT traceparent FROM tasks WHERE task_id = $1", task_id
            )
            execution_metrics = await _metrics(mesh, f"http://127.0.0.1:{execution.http_port}")
        gateway_metrics = await _metrics(mesh, mesh.gateway_url)
        ledger_metrics = await _metrics(mesh, mesh.ledger_url)

    assert stored["traceparent"].split("-")[1] == f"{submitted.context.trace_id:032x}"
    # One trace: every span naming the task is in it, and every span in it names the task.
    assert not others, [(s.name, _service(s)) for s in others]
    unnamed = [(s.name, _service(s)) for s in trace if _attribute(s, TASK_ID_ATTRIBUTE) != task_id]
    assert not unnamed, unnamed
    services = Counter(_service(s) for s in trace)
    assert set(services) >= SERVICES, services

    # The chain: one root (the submitter's publish); every other span's parent is in the trace.
    by_id = {_span_id(s): s for s in trace}
    roots = [s for s in trace if s.parent is None]
    assert roots == [submitted], [(s.name, _service(s)) for s in roots]
    orphans = [
        (s.name, _service(s))
        for s in trace
        if s.parent is not None and s.parent.span_id not in by_id
    ]
    assert not orphans, orphans
    for span in trace:
        if span.parent is None:
            continue
        parent = by_id[span.parent.span_id]
        if span.kind is SpanKind.CONSUMER:
            # A consumer's parent is the publish of the very message it handled.
            assert parent.kind is SpanKind.PRODUCER, (span.name, parent.name)
            message_id = _attribute(span, "messaging.message.id")
            assert _attribute(parent, "messaging.message.id") == message_id, span.name
        if span.kind is SpanKind.SERVER:
            assert parent.kind is SpanKind.CLIENT, (span.name, parent.name)

    def hops(kind: SpanKind, service: str) -> set[str]:
        """The services whose spans are the parents of ``service``'s ``kind`` spans."""
        return {
            _service(by_id[s.parent.span_id])
            for s in trace
            if s.kind is kind and _service(s) == service and s.parent is not None
        }

    # The hops the task made: execution commands the gateway, the ledger and memory over
    # Kafka, recalls memory over gRPC, and verifies the task's token with identity's keys.
    assert "execution" in hops(SpanKind.CONSUMER, "tools-gateway")
    assert "execution" in hops(SpanKind.CONSUMER, "ledger")
    assert "execution" in hops(SpanKind.CONSUMER, "memory")
    assert "execution" in hops(SpanKind.SERVER, "memory")
    assert {"tools-gateway", "ledger"} <= hops(SpanKind.CONSUMER, "execution")
    assert any(s.kind is SpanKind.SERVER and _service(s) == "identity" for s in trace)

    # Metrics: throughput and latency per handler, lag, tool calls and circuits, spend.
    submit_group = {"topic": f"{mesh.kafka.topic_prefix}{SUBMIT_TASK.name}"}
    assert (
        sum(
            _samples(
                execution_metrics, "mainstay_messages_consumed_total", outcome="ok", **submit_group
            )
        )
        >= 1
    )
    assert sum(_samples(execution_metrics, "mainstay_handler_seconds_count", **submit_group)) >= 1
    assert _samples(execution_metrics, "mainstay_consumer_lag", **submit_group)
    assert _samples(gateway_metrics, "mainstay_tool_calls_total", tool="charge_card")
    assert sum(_samples(gateway_metrics, "mainstay_tool_call_seconds_count", tool="lookup")) >= 1
    assert (
        sum(
            _samples(
                ledger_metrics,
                "mainstay_ledger_spend_micros_total",
                tenant=mesh.tenant,
                kind="tool",
            )
        )
        == 300
    )
