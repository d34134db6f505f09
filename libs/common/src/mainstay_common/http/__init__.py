"""The HTTP side of every Mainstay service.

:func:`create_http_app` gives a FastAPI app with ``/healthz``, ``/readyz``,
``/metrics``, request metrics, OpenTelemetry spans and the Mainstay error
shape; :class:`HttpServer` serves any ASGI app as an ``async with`` resource.
"""

from mainstay_common.http._app import PROBE_PATHS, create_http_app
from mainstay_common.http._errors import error_response, install_error_handlers
from mainstay_common.http._readiness import ReadinessCheck, ReadinessProbe
from mainstay_common.http._server import HttpServer

__all__ = [
    "PROBE_PATHS",
    "HttpServer",
    "ReadinessCheck",
    "ReadinessProbe",
    "create_http_app",
    "error_response",
    "install_error_handlers",
]
