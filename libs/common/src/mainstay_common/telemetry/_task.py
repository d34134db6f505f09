"""The task id on every span of a task, whichever service or library made the span.

A task's work crosses Kafka (where ``ce_correlationid`` names the task), gRPC
and HTTP (where the task id rides in W3C ``baggage`` next to ``traceparent``,
both injected by the instrumentations' global propagator) and, inside a
service, asyncpg and httpx calls made by instrumentations that know nothing of
tasks. So the task id is put in the context's baggage once, where the work for
a task begins (:func:`task_context`: a consumer span, a runner), and
:class:`TaskIdSpanProcessor` copies it onto each span as it starts, as the
attribute :data:`TASK_ID_ATTRIBUTE`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import baggage
from opentelemetry.sdk.trace import SpanProcessor

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span

__all__ = ["TASK_ID_ATTRIBUTE", "TaskIdSpanProcessor", "task_context", "task_id_of"]

TASK_ID_ATTRIBUTE = "mainstay.task_id"
"""The span attribute (and baggage entry) naming the task a span worked for."""


def task_context(task_id: str | None, context: Context | None = None) -> Context | None:
    """``context`` (default: the current one) with ``task_id`` in its baggage.

    Returns ``context`` unchanged (possibly ``None``) when ``task_id`` is empty.
    """
    if not task_id:
        return context
    return baggage.set_baggage(TASK_ID_ATTRIBUTE, task_id, context)


def task_id_of(context: Context | None = None) -> str | None:
    """The task id in ``context``'s baggage (default: the current context)."""
    value = baggage.get_baggage(TASK_ID_ATTRIBUTE, context)
    return str(value) if value else None


class TaskIdSpanProcessor(SpanProcessor):
    """Sets :data:`TASK_ID_ATTRIBUTE` on each starting span from its parent context's baggage.

    A span that already names a task keeps it. Cheap: one dictionary lookup per span.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes or {}
        if attributes.get(TASK_ID_ATTRIBUTE):
            return
        task_id = task_id_of(parent_context)
        if task_id:
            span.set_attribute(TASK_ID_ATTRIBUTE, task_id)
