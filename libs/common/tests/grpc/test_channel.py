"""create_channel: deadlines by default and on request, against a real server."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mainstay_common.errors import DependencyTimeout, map_grpc_errors
from mainstay_common.grpc import GrpcServer, create_channel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

RAISE = "/mainstay.test.v1.Probe/Raise"


async def test_a_call_without_timeout_gets_the_default_deadline(probe_server: GrpcServer) -> None:
    async with create_channel(probe_server.address, default_timeout=0.2) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(RAISE)(b"slow")

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_an_explicit_deadline_maps_to_dependency_timeout(probe_server: GrpcServer) -> None:
    async with create_channel(probe_server.address, default_timeout=None) as channel:
        with pytest.raises(DependencyTimeout) as caught, map_grpc_errors("probe"):
            await channel.unary_unary(RAISE)(b"slow", timeout=0.2)

    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)


async def test_an_explicit_deadline_wins_over_the_default(probe_server: GrpcServer) -> None:
    async with create_channel(probe_server.address, default_timeout=0.05) as channel:
        # "fine" answers at once; with the 50 ms default it could time out on a busy
        # machine, with the explicit 5 s it cannot.
        assert await channel.unary_unary(RAISE)(b"fine", timeout=5) == b"ok:fine"


async def test_streams_get_no_default_deadline(probe_server: GrpcServer) -> None:
    async with create_channel(probe_server.address, default_timeout=0.1) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        await asyncio.sleep(0.3)
        assert not watch.done()
        watch.cancel()


async def test_stream_unary_calls_get_the_default_deadline(probe_server: GrpcServer) -> None:
    async def requests() -> AsyncIterator[bytes]:
        yield b"a"
        await asyncio.sleep(30)

    async with create_channel(probe_server.address, default_timeout=0.2) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.stream_unary("/mainstay.test.v1.Probe/Collect")(requests())

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
