"""Structured logs: one JSON object per line, carrying the trace id.

The trace and span ids of the current span, the service name and the instance
id are added by a filter on the handler (a handler filter sees records from
every logger that propagates to it, unlike a logger filter), so any library's
log line can be joined to its trace. Text output keeps the same fields for
people reading a terminal.

:func:`configure_logging` replaces only the handler it installed before, so it
is safe to call again (tests, reconfiguration) and leaves foreign handlers,
such as pytest's capture, alone.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

from mainstay_common.telemetry._propagation import current_trace_ids

__all__ = ["TraceContextFilter", "configure_logging"]

_MARKER = "_mainstay_handler"
_TEXT_FORMAT = (
    "%(asctime)s %(levelname)-8s %(name)s [%(service)s/%(instance)s "
    "trace=%(trace_id)s span=%(span_id)s] %(message)s"
)


class TraceContextFilter(logging.Filter):
    """Adds ``service``, ``instance``, ``trace_id`` and ``span_id`` to each record.

    Values a caller already put on the record (``extra={"trace_id": ...}``) are
    kept, so a log written for another request's trace stays correct.
    """

    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self.service = service
        self.instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        fields.setdefault("service", self.service)
        fields.setdefault("instance", self.instance)
        if fields.get("trace_id") is None:
            trace_id, span_id = current_trace_ids()
            if trace_id is not None:
                fields["trace_id"], fields["span_id"] = trace_id, span_id
            else:
                fields.pop("trace_id", None)
                fields.pop("span_id", None)
        return True


def _formatter(json: bool) -> logging.Formatter:
    if json:
        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    defaults: dict[str, Any] = {"trace_id": "-", "span_id": "-"}
    return logging.Formatter(_TEXT_FORMAT, defaults=defaults)


def configure_logging(
    level: str | int,
    json: bool,
    service: str,
    instance: str,
    *,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) as JSON or text.

    Returns the installed handler. Uvicorn's loggers propagate to the root, so
    ``HttpServer`` output is formatted the same way.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARKER, False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _MARKER, True)
    handler.addFilter(TraceContextFilter(service, instance))
    handler.setFormatter(_formatter(json))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
