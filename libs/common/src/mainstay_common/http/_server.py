"""Serving an ASGI app with uvicorn as an ``async with`` resource.

A service's composition root runs the HTTP server next to its consumers and
gRPC server in one event loop, so the server must start and stop under the
root's control: ``__aenter__`` returns once the port is bound and the app's
lifespan has started, ``__aexit__`` drains in-flight requests for at most
``shutdown_timeout_s`` and then cancels them.

The socket is bound here, not by uvicorn, so port 0 works and the real port is
known before any request arrives. Uvicorn's signal handlers are off by default:
the composition root owns SIGTERM and decides the shutdown order.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from typing import TYPE_CHECKING, Self

import uvicorn

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.types import ASGIApp

__all__ = ["HttpServer"]

_POLL_S = 0.01


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, handle_signals: bool) -> None:
        super().__init__(config)
        self._handle_signals = handle_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self._handle_signals:
            with super().capture_signals():
                yield
        else:
            yield


KEEP_ALIVE_S = 30
"""How long an idle client connection stays open. Longer than clients keep idle
connections themselves (httpx: 5 s), so a client never sends a request on a
connection the server is closing at that moment (which it sees as a read error)."""


class HttpServer:
    """``async with HttpServer(app, port=0) as server: server.url``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = 10.0,
        shutdown_timeout_s: float = 10.0,
        access_log: bool = False,
        handle_signals: bool = False,
        keep_alive_s: int = KEEP_ALIVE_S,
    ) -> None:
        self._app = app
        self._keep_alive = keep_alive_s
        self.host = host
        self._requested_port = port
        self._startup_timeout = startup_timeout_s
        self._shutdown_timeout = shutdown_timeout_s
        self._access_log = access_log
        self._handle_signals = handle_signals
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for); only while running."""
        if self._port is None:
            raise RuntimeError("HttpServer is not running")
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:41234``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def _bind(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self.host, self._requested_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        return sock

    async def _serve(self, server: _Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:
            # uvicorn exits the process on a failed startup; inside a service that
            # must be an ordinary error the composition root can handle.
            raise RuntimeError(f"HTTP server failed to start (exit code {exc.code})") from None

    async def __aenter__(self) -> Self:
        if self._task is not None:
            raise RuntimeError("HttpServer is already running")
        sock = await self._bind()
        config = uvicorn.Config(
            self._app,
            lifespan="auto",
            log_config=None,  # logs propagate to the root logger configure_logging set up
            access_log=self._access_log,
            timeout_graceful_shutdown=math.ceil(self._shutdown_timeout),
            timeout_keep_alive=self._keep_alive,
        )
        server = _Server(config, handle_signals=self._handle_signals)
        self._server = server
        self._task = asyncio.create_task(self._serve(server, sock), name="http-server")
        try:
            async with asyncio.timeout(self._startup_timeout):
                while not server.started:
                    if self._task.done():
                        self._task.result()  # raises the startup failure
                        raise RuntimeError("HTTP server stopped during startup")
                    await asyncio.sleep(_POLL_S)
        except BaseException:
            await self._stop(startup_failed=True)
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._stop()

    async def _stop(self, *, startup_failed: bool = False) -> None:
        server, task = self._server, self._task
        self._server, self._task, self._port = None, None, None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            # uvicorn cancels stragglers after timeout_graceful_shutdown; the margin
            # covers its lifespan shutdown, then we stop waiting altogether.
            async with asyncio.timeout(self._shutdown_timeout + 5.0):
                await asyncio.shield(task)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except RuntimeError:
            if not startup_failed:
                raise
            # otherwise __aenter__ is already raising this failure
