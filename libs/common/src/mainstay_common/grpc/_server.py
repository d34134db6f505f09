"""The gRPC server every Mainstay service runs: health, reflection, interceptors, shutdown.

A service's composition root adds its servicers and enters the server; the rest
is the same everywhere, so it lives here once::

    async with GrpcServer(
        [(memory_pb2_grpc.add_MemoryServiceServicer_to_server, MemoryServicer(...))],
        host=settings.grpc_host,
        port=settings.grpc_port,
        interceptors=[auth_interceptor],
    ) as server:
        await stop.wait()

* The standard health service answers for the whole server (``""``, what a
  Kubernetes ``grpc`` probe asks) and for each registered service, all SERVING
  once the server has started; :meth:`GrpcServer.set_serving` flips them.
* Server reflection lists the registered services, health and reflection, so
  ``grpcurl`` works without proto files.
* Interceptors run in the order telemetry, then the caller's (auth), then error
  mapping closest to the method, so spans and auth see the final status.
* Leaving the block shuts down gracefully: every health status turns
  NOT_SERVING, the server keeps answering for ``drain_delay`` seconds so probes
  and load balancers notice, then stops accepting calls and gives in-flight
  calls ``grace`` seconds before cancelling them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Self

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

from mainstay_common.grpc._channel import MAX_MESSAGE_BYTES
from mainstay_common.grpc._interceptors import ErrorMappingInterceptor

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from types import TracebackType

__all__ = ["SERVER_OPTIONS", "GrpcServer"]

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    # Two servers silently sharing a port (gRPC's default on Linux) splits traffic
    # between an old and a new process; fail the bind instead.
    ("grpc.so_reuseport", 0),
    # Accept the client keepalive pings of mainstay_common.grpc.create_channel (every
    # 30 s) rather than closing the connection with too_many_pings.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    # Find dead clients (and free their streams) within a minute and a half.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcServer:
    """A ``grpc.aio`` server as an async context manager (see the module docstring).

    Servicers come as ``(add_fn, servicer)`` pairs, through ``register`` (called
    with the server before it starts, for anything else to add), or both. The
    service names for health and reflection are taken from what they register;
    ``service_names`` adds names the server cannot see (none, with generated code).
    ``port=0`` binds a free port; :attr:`port` tells which. ``tracer_provider``
    defaults to the global one (tests pass their own).
    """

    def __init__(
        self,
        servicers: Iterable[tuple[Callable[[Any, Any], None], object]] = (),
        *,
        register: Callable[[Any], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: grpc.ServerCredentials | None = None,
        interceptors: Sequence[Any] = (),
        telemetry: bool = True,
        tracer_provider: Any = None,
        grace: float = 5.0,
        drain_delay: float = 0.0,
        service_names: Iterable[str] = (),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._servicers = list(servicers)
        self._register = register
        self._host = host
        self._requested_port = port
        self._credentials = credentials
        self._interceptors = list(interceptors)
        self._telemetry = telemetry
        self._tracer_provider = tracer_provider
        self._grace = grace
        self._drain_delay = drain_delay
        self._extra_names = list(service_names)
        self._options = list(dict([*SERVER_OPTIONS, *options]).items())
        self._health = health.aio.HealthServicer()
        self._server: Any = None
        self._port: int | None = None
        self._service_names: tuple[str, ...] = ()
        self._entered = False

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._port is None:
            raise RuntimeError("the gRPC server has not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` as bound, for clients on the same machine."""
        return f"{_bracket(self._host)}:{self.port}"

    @property
    def service_names(self) -> tuple[str, ...]:
        """Full names of the services registered by the caller (not health/reflection)."""
        return self._service_names

    async def set_serving(self, serving: bool, *, service: str = health.OVERALL_HEALTH) -> None:
        """Set the health of one service, or of the whole server when ``service`` is ``""``.

        Ignored once shutdown has begun: a server on its way out stays NOT_SERVING.
        """
        await self._health.set(service, _SERVING if serving else _NOT_SERVING)

    async def __aenter__(self) -> Self:
        if self._entered:
            # Health stays NOT_SERVING for good after a shutdown: build a new server.
            raise RuntimeError("a GrpcServer can be entered only once")
        self._entered = True
        server = grpc.aio.server(interceptors=self._all_interceptors(), options=self._options)
        recorder = _RecordingServer(server)
        for add, servicer in self._servicers:
            add(servicer, recorder)
        if self._register is not None:
            self._register(recorder)
        names = tuple(dict.fromkeys([*recorder.service_names, *self._extra_names]))

        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        address = f"{_bracket(self._host)}:{self._requested_port}"
        if self._credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, self._credentials)
        if not port:  # older grpcio returns 0 instead of raising
            raise OSError(f"gRPC server could not bind {address}")

        await server.start()
        self._server, self._port, self._service_names = server, int(port), names
        for name in names:
            await self._health.set(name, _SERVING)
        await self._health.set(health.OVERALL_HEALTH, _SERVING)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        try:
            await self._health.enter_graceful_shutdown()
            if self._drain_delay > 0:
                await asyncio.sleep(self._drain_delay)
        finally:
            # Runs even if the drain is cancelled: the port must be released.
            await server.stop(self._grace)

    async def wait_for_termination(self) -> None:
        """Block until the server stops (bound it with ``asyncio.timeout``)."""
        if self._server is not None:
            await self._server.wait_for_termination()

    def _all_interceptors(self) -> list[Any]:
        chain: list[Any] = []
        if self._telemetry:
            # Probes and reflection would fill the traces with noise; and the aio
            # telemetry wrapper iterates streaming behaviours, which breaks the
            # context.write-style health Watch.
            chain.append(
                aio_server_interceptor(  # type: ignore[no-untyped-call]  # untyped package
                    tracer_provider=self._tracer_provider,
                    filter_=filters.negate(
                        filters.any_of(
                            filters.service_name(health.SERVICE_NAME),
                            filters.service_name(reflection.SERVICE_NAME),
                        )
                    ),
                )
            )
        chain += self._interceptors
        chain.append(ErrorMappingInterceptor())
        return chain


class _RecordingServer:
    """Stands in for the server while servicers register, to learn their service names.

    Generated ``add_*_to_server`` functions name their service in both calls below;
    everything else is passed straight to the real server.
    """

    def __init__(self, server: Any) -> None:
        self._server = server
        self.service_names: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        for handler in handlers:
            name = getattr(handler, "service_name", None)
            if callable(name):
                self._note(str(name()))
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers: Any) -> None:
        self._note(service_name)
        self._server.add_registered_method_handlers(service_name, handlers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)

    def _note(self, name: str) -> None:
        if name not in self.service_names:
            self.service_names.append(name)


def _bracket(host: str) -> str:
    """IPv6 literals need brackets in a ``host:port`` address."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
