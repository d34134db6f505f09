"""HttpServer as a resource: port 0, lifespan, graceful and bounded shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI

from mainstay_common.http import HttpServer
from mainstay_common.lifecycle import within

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def test_port_zero_binds_a_real_port_and_runs_the_lifespan() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    async with HttpServer(app) as first, HttpServer(app) as second:
        assert first.port != second.port > 0
        assert events == ["startup", "startup"]
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(f"{first.url}/ping")).json() == "pong"
            assert (await client.get(f"{second.url}/ping")).json() == "pong"

    assert events == ["startup", "startup", "shutdown", "shutdown"]
    with pytest.raises(RuntimeError, match="not running"):
        _ = first.port


async def test_shutdown_lets_an_in_flight_request_finish() -> None:
    app = FastAPI()
    entered = asyncio.Event()

    @app.get("/slow")
    async def slow() -> str:
        entered.set()
        await asyncio.sleep(0.3)
        return "done"

    async with httpx.AsyncClient(timeout=5) as client:
        server = HttpServer(app, shutdown_timeout_s=5)
        async with server:
            request = asyncio.create_task(client.get(f"{server.url}/slow"))
            await entered.wait()
        # The server is stopped, and the request it was serving completed first.
        response = await request

    assert response.status_code == 200
    assert response.json() == "done"


async def test_shutdown_is_bounded_when_a_request_never_ends() -> None:
    app = FastAPI()
    entered = asyncio.Event()

    @app.get("/stuck")
    async def stuck() -> str:
        entered.set()
        await asyncio.sleep(60)
        return "never"

    async with httpx.AsyncClient(timeout=5) as client:
        server = HttpServer(app, shutdown_timeout_s=0.5)
        async with server:
            request = asyncio.create_task(client.get(f"{server.url}/stuck"))
            await entered.wait()
        # uvicorn cancelled the handler after the grace period and answered 500.
        response = await request

    assert response.status_code == 500


async def test_a_failing_startup_raises_instead_of_exiting() -> None:
    def connect() -> None:
        raise RuntimeError("cannot reach the database")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        connect()
        yield

    with pytest.raises(RuntimeError, match="failed to start"):
        async with HttpServer(FastAPI(lifespan=lifespan)):
            pass


async def test_a_busy_port_raises_oserror() -> None:
    async with HttpServer(FastAPI()) as first:
        with pytest.raises(OSError, match=r"[Aa]ddress already in use"):
            async with HttpServer(FastAPI(), port=first.port):
                pass


async def test_an_idle_connection_outlives_the_clients_own_keep_alive() -> None:
    # httpx drops an idle connection after 5 s; were the server to close it at the same
    # moment, a request sent on it then would fail with a read error. The server keeps it
    # open past that, so the same connection answers after 6 s of silence.
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    request = b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n"
    async with HttpServer(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            for pause in (0.0, 6.0):
                await asyncio.sleep(pause)
                writer.write(request)
                await writer.drain()
                head = await within(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200"), head
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                assert await reader.readexactly(length) == b'"pong"'
        finally:
            writer.close()
            await writer.wait_closed()
