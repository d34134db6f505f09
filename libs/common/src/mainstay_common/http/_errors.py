"""Every HTTP error leaves a Mainstay service as ``{"error": {"type", "message"}}``.

- a :class:`MainstayError` answers its own ``http_status`` and type name, with
  ``Retry-After`` when it asks for a delay (and ``WWW-Authenticate`` for 401);
- ``HTTPException`` (unknown route, the auth dependencies) keeps its status and
  headers and gets the same shape;
- a request validation error is 422 and names each offending field, never the
  value sent (it may be a secret);
- anything else is a bug: 500 ``internal error``, logged with the trace id so
  an operator can find it, and nothing of the exception leaks to the caller.

The catch-all is a middleware rather than an ``Exception`` handler because
Starlette re-raises after running such a handler, which logs every bug twice.
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from starlette.exceptions import HTTPException

from mainstay_common.errors import MainstayError, Unauthenticated
from mainstay_common.telemetry import current_trace_ids

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["InternalErrorMiddleware", "error_response", "install_error_handlers"]

logger = logging.getLogger(__name__)

# Names for statuses Starlette raises itself, in the vocabulary of the error tree.
_TYPE_BY_STATUS = {
    400: "InvalidArgument",
    401: "Unauthenticated",
    403: "PermissionDenied",
    404: "NotFound",
    409: "Conflict",
    422: "InvalidArgument",
    503: "Unavailable",
}


def _type_for_status(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    try:
        return HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")
    except ValueError:
        return "Error"


def error_response(
    status: int,
    type_name: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """A response in the Mainstay error shape; routes may use it for custom errors."""
    body: dict[str, Any] = {"type": type_name, "message": message, **(extra or {})}
    return JSONResponse({"error": body}, status_code=status, headers=dict(headers or {}))


async def _mainstay_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MainstayError)
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(0, math.ceil(exc.retry_after)))
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="mainstay"'
    return error_response(exc.http_status, exc.type_name, exc.message, headers=headers)


def _describe(request: Request, exc: HTTPException) -> str:
    """The exception's detail; Starlette's bare status phrases say which request they mean."""
    detail = str(exc.detail)
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        return detail
    if detail != phrase:
        return detail
    path = request.url.path
    shown = path if len(path) <= 200 else path[:200] + "..."
    if exc.status_code == 404:
        return f"no route matches {request.method} {shown}"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return f"method {request.method} is not allowed on {shown}" + (
            f" (allowed: {allowed})" if allowed else ""
        )
    return f"{detail} ({request.method} {shown})"


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(
        exc.status_code,
        _type_for_status(exc.status_code),
        _describe(request, exc),
        headers=exc.headers,
    )


def _field(location: Any) -> str:
    return ".".join(str(part) for part in location) if isinstance(location, list | tuple) else ""


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        {"field": _field(error.get("loc", ())), "message": str(error.get("msg", "invalid"))}
        for error in exc.errors()
    ]
    summary = "; ".join(f"{item['field']}: {item['message']}" for item in fields)
    return error_response(
        422, "InvalidArgument", f"invalid request: {summary}", extra={"fields": fields}
    )


class InternalErrorMiddleware:
    """Turns an unhandled exception into a logged 500 that reveals nothing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            trace_id, span_id = current_trace_ids()
            span = trace.get_current_span()
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            logger.exception(
                "unhandled error in %s %s",
                scope.get("method"),
                scope.get("path"),
                extra={"trace_id": trace_id, "span_id": span_id},
            )
            if started:
                raise  # too late for a clean 500: let the server drop the connection
            await error_response(500, "Internal", "internal error")(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Register the Mainstay error mapping on ``app`` (``create_http_app`` does this)."""
    app.add_exception_handler(MainstayError, _mainstay_error)
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(InternalErrorMiddleware)
