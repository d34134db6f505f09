"""map_httpx_errors against a real HTTP server on 127.0.0.1:0.

The server answers ``/status/<code>`` with that status (and ``Retry-After`` taken
from the ``retry-after`` query parameter) and never answers ``/slow``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from mainstay_common.errors import (
    Conflict,
    DependencyTimeout,
    DependencyUnavailable,
    InvalidArgument,
    MainstayError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    map_httpx_errors,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        target = urlsplit(head.split(b" ", 2)[1].decode())
        if target.path == "/slow":
            await reader.read()  # say nothing until the client hangs up
            return
        status = HTTPStatus(int(target.path.rsplit("/", 1)[1]))
        headers = ["Content-Length: 0", "Connection: close"]
        headers += [f"Retry-After: {v}" for v in parse_qs(target.query).get("retry-after", [])]
        if 300 <= status < 400:
            headers.append("Location: /status/200")
        lines = [f"HTTP/1.1 {status.value} {status.phrase}", *headers, "", ""]
        writer.write("\r\n".join(lines).encode())
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def get_mapped(client: httpx.AsyncClient, url: str) -> MainstayError:
    with pytest.raises(MainstayError) as caught, map_httpx_errors("upstream"):
        (await client.get(url)).raise_for_status()
    return caught.value


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, InvalidArgument),
        (401, Unauthenticated),
        (403, PermissionDenied),
        (404, NotFound),
        (408, DependencyTimeout),
        (409, Conflict),
        (413, InvalidArgument),
        (422, InvalidArgument),
        (429, DependencyUnavailable),
        (500, DependencyUnavailable),
        (502, DependencyUnavailable),
        (503, DependencyUnavailable),
        (504, DependencyUnavailable),
    ],
)
async def test_status_maps_to_the_most_specific_error(
    client: httpx.AsyncClient, base_url: str, status: int, expected: type[MainstayError]
) -> None:
    error = await get_mapped(client, f"{base_url}/status/{status}")

    assert type(error) is expected
    assert isinstance(error.__cause__, httpx.HTTPStatusError)
    assert error.__cause__.response.status_code == status
    assert f"HTTP {status}" in error.message
    assert error.message.startswith("upstream")
    assert error.retry_after is None


async def test_retry_after_in_seconds(client: httpx.AsyncClient, base_url: str) -> None:
    error = await get_mapped(client, f"{base_url}/status/429?retry-after=7")

    assert isinstance(error, DependencyUnavailable)
    assert error.retry_after == 7.0


async def test_retry_after_as_an_http_date(client: httpx.AsyncClient, base_url: str) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)

    error = await get_mapped(client, f"{base_url}/status/503?retry-after={quote(when)}")

    assert isinstance(error, DependencyUnavailable)
    assert error.retry_after is not None
    assert 100 <= error.retry_after <= 120


@pytest.mark.parametrize("value", ["soon", "-5", "Wed, 21 Oct 2015 07:28:00 GMT"])
async def test_garbled_negative_or_past_retry_after(
    client: httpx.AsyncClient, base_url: str, value: str
) -> None:
    error = await get_mapped(client, f"{base_url}/status/503?retry-after={quote(value)}")

    assert error.retry_after == (None if value == "soon" else 0.0)


async def test_query_string_never_reaches_the_message(
    client: httpx.AsyncClient, base_url: str
) -> None:
    error = await get_mapped(client, f"{base_url}/status/404?token=hunter2")

    assert "hunter2" not in error.message
    assert f"GET {base_url}/status/404" in error.message


async def test_redirect_is_left_unmapped(client: httpx.AsyncClient, base_url: str) -> None:
    with pytest.raises(httpx.HTTPStatusError), map_httpx_errors("upstream"):
        (await client.get(f"{base_url}/status/302")).raise_for_status()


async def test_connection_refused_is_dependency_unavailable(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    error = await get_mapped(client, f"http://127.0.0.1:{port}/x")

    assert isinstance(error, DependencyUnavailable)
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert "connect error" in error.message


async def test_read_timeout_is_dependency_timeout(base_url: str) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.1)) as client:
        error = await get_mapped(client, f"{base_url}/slow")

    assert isinstance(error, DependencyTimeout)
    assert isinstance(error.__cause__, httpx.ReadTimeout)
    assert f"GET {base_url}/slow" in error.message


async def test_async_with_form(client: httpx.AsyncClient, base_url: str) -> None:
    with pytest.raises(NotFound):
        async with map_httpx_errors("upstream"):
            (await client.get(f"{base_url}/status/404")).raise_for_status()
