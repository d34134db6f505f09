"""Client channels with the options and deadlines every Mainstay caller needs.

gRPC's defaults suit neither a mesh whose peers restart during deploys nor the
house rule that every network call has a timeout:

* a call without a deadline waits forever on a hung server, so unary-response
  calls get ``default_timeout`` unless the caller passes ``timeout=``; streams
  (watches, long reads) are exempt because a deadline would cut them off;
* connections idle behind a load balancer or NAT die silently, so the client
  sends keepalive pings every 30 s during calls (the server options in
  :data:`SERVER_OPTIONS` accept pings that often instead of answering
  ``too_many_pings``);
* the reconnect backoff is capped at 10 s instead of 2 min, so a restarted peer
  is reachable again quickly;
* messages up to :data:`MAX_MESSAGE_BYTES` (memory records carry embeddings).

Usage, with a deadline per call and errors mapped at the boundary::

    async with create_channel("memory:50051") as channel:
        stub = MemoryServiceStub(channel)
        with map_grpc_errors("memory"):
            reply = await stub.Recall(request, timeout=2.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from opentelemetry.instrumentation.grpc import aio_client_interceptors

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["CHANNEL_OPTIONS", "MAX_MESSAGE_BYTES", "create_channel"]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # Keep pinging on a long idle stream (a health Watch) instead of stopping after two.
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 10_000),
)


def create_channel(
    target: str,
    *,
    interceptors: Sequence[Any] = (),
    credentials: grpc.ChannelCredentials | None = None,
    default_timeout: float | None = 10.0,
    telemetry: bool = True,
    tracer_provider: Any = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """Open a ``grpc.aio.Channel`` to ``target`` (``host:port`` or any gRPC target).

    ``interceptors`` are ``grpc.aio`` client interceptors (an auth interceptor
    adding a bearer token, say); they run inside the OpenTelemetry one, which
    propagates the trace context in the metadata when ``telemetry`` is on
    (``tracer_provider`` defaults to the global one).
    ``options`` override :data:`CHANNEL_OPTIONS` key by key. ``credentials``
    selects TLS; without them the channel is plaintext (in-cluster traffic).
    Create the channel inside the running event loop and close it (``async
    with`` or ``await channel.close()``) when done.
    """
    chain: list[Any] = []
    if default_timeout is not None:
        chain += [
            _DefaultUnaryUnaryDeadline(default_timeout),
            _DefaultStreamUnaryDeadline(default_timeout),
        ]
    if telemetry:
        chain += aio_client_interceptors(tracer_provider=tracer_provider)  # type: ignore[no-untyped-call]  # untyped package
    chain += interceptors
    merged = list(dict([*CHANNEL_OPTIONS, *options]).items())
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=merged, interceptors=chain)
    return grpc.aio.secure_channel(target, credentials, options=merged, interceptors=chain)


def _with_default_timeout(details: Any, timeout: float) -> Any:
    if details.timeout is not None:
        return details
    return details._replace(timeout=timeout)


# grpc.aio sorts client interceptors by their first matching base class, so one
# class per call kind is needed.
class _DefaultUnaryUnaryDeadline(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # grpc ships no types
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        return await continuation(_with_default_timeout(details, self._timeout), request)


class _DefaultStreamUnaryDeadline(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]  # grpc ships no types
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    async def intercept_stream_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any, requests: Any
    ) -> Any:
        return await continuation(_with_default_timeout(details, self._timeout), requests)
