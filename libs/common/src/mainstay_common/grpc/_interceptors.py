"""Server interceptors: turn what a servicer raises into a gRPC status.

Servicers raise the Mainstay error tree rather than calling ``context.abort``
themselves, so the domain and the handlers stay free of gRPC status vocabulary
and the mapping lives in one place:

* a :class:`~mainstay_common.errors.MainstayError` ends the call with its
  ``grpc_status_name`` and its message as details, plus a ``retry-after``
  trailing metadata entry (seconds) when it carries ``retry_after`` — which
  :func:`~mainstay_common.errors.map_grpc_errors` reads back on the client;
* any other exception is a bug: it is logged with its traceback and the call
  ends with INTERNAL and the details ``internal error``, so nothing about the
  server's internals (SQL, paths, secrets in messages) reaches the caller;
* a request whose bytes do not decode as the method's message type (corrupt wire
  format, invalid UTF-8 in a string field) ends with INVALID_ARGUMENT naming the
  problem, where grpc alone would answer UNKNOWN with the server's exception text;
* an abort the servicer chose itself, and cancellation, pass through untouched.

Interceptors see the handler for a method before it runs, not the call, so the
interceptor rebuilds the ``RpcMethodHandler`` with its behaviour wrapped, keeping
the behaviour's kind: the aio server runs a coroutine function through the
``context.write`` API and an async generator function by iterating it, so the
wrapper must be the same kind of callable as what it wraps.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from mainstay_common.errors import InvalidArgument, MainstayError, grpc_status_for

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

__all__ = ["ErrorMappingInterceptor"]

logger = logging.getLogger(__name__)

# Read back by mainstay_common.errors.map_grpc_errors; gRPC metadata keys are lowercase.
RETRY_AFTER_KEY = "retry-after"
INTERNAL_DETAILS = "internal error"
_MAX_DETAILS = 2000


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    """Map exceptions raised by servicer methods to gRPC statuses (see module docstring).

    Install it last among the server's interceptors, so it runs closest to the
    method and every outer interceptor (telemetry, auth) sees the final status.
    Servicer methods must be coroutines or async generators; a synchronous
    behaviour (only possible with a migration thread pool) is left unwrapped.
    """

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let the server answer UNIMPLEMENTED
            return None
        return _wrap_handler(handler, handler_call_details.method)


def _wrap_handler(handler: Any, method: str) -> Any:
    if handler.request_streaming and handler.response_streaming:
        behavior, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler

    if inspect.isasyncgenfunction(behavior):
        wrapped: Callable[..., Any] = _wrap_async_generator(behavior, method)
    elif inspect.iscoroutinefunction(behavior):
        wrapped = _wrap_coroutine(behavior, method)
    else:
        return handler
    return factory(
        wrapped,
        request_deserializer=_tolerant(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class _Undecodable:
    """Stands for a request the deserializer refused, so the method can answer for it.

    grpc itself answers a deserializer's exception with UNKNOWN and the exception's
    text (naming the server's classes); the wrapped method turns this marker into
    INVALID_ARGUMENT naming the message type and what was wrong with the bytes.
    """

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - any refusal is the caller's bad request
            return _Undecodable(exc)

    return deserialize


def _details(message: str) -> str:
    """``message``, cut short: details travel as a header, and a message that quotes a
    huge request would exceed the peer's header limit and turn into RESOURCE_EXHAUSTED."""
    return message if len(message) <= _MAX_DETAILS else message[:_MAX_DETAILS] + "..."


def _refuse_undecodable(request: Any) -> None:
    """Raise ``InvalidArgument`` when ``request`` is what the deserializer could not read."""
    if isinstance(request, _Undecodable):
        # DecodeError says "Error parsing message with type 'x.y.Z': <reason>".
        reason = str(request.error) or type(request.error).__name__
        raise InvalidArgument(f"the request is not a valid protobuf message: {reason}")


def _wrap_coroutine(
    behavior: Callable[[Any, Any], Awaitable[Any]], method: str
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def mapped(request: Any, context: Any) -> Any:
        try:
            _refuse_undecodable(request)
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # every failure must end with a status
            await _abort(context, exc, method)
            raise  # context.abort raises; this only runs if a test double does not

    return mapped


def _wrap_async_generator(
    behavior: Callable[[Any, Any], AsyncGenerator[Any]], method: str
) -> Callable[[Any, Any], AsyncGenerator[Any]]:
    async def mapped(request: Any, context: Any) -> AsyncGenerator[Any]:
        try:
            _refuse_undecodable(request)
            # aclosing: a client that hangs up mid-stream closes the servicer's
            # generator now (running its finally blocks), not at garbage collection.
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # every failure must end with a status
            await _abort(context, exc, method)
            raise

    return mapped


async def _abort(context: Any, exc: Exception, method: str) -> None:
    """End the call with the status for ``exc``; ``context.abort`` raises AbortError."""
    if isinstance(exc, MainstayError):
        # Expected outcomes (not found, conflict, dependency down): no traceback.
        logger.log(
            logging.WARNING if exc.retryable else logging.INFO,
            "%s failed: %s: %s",
            method,
            exc.type_name,
            exc.message,
        )
        trailing: tuple[tuple[str, str], ...] = ()
        if exc.retry_after is not None:
            trailing = ((RETRY_AFTER_KEY, f"{max(0.0, exc.retry_after):g}"),)
        await context.abort(grpc_status_for(exc), _details(exc.message), trailing)
        return
    logger.error("%s failed with an unhandled exception", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_DETAILS)
