"""GrpcServer: health, reflection, graceful shutdown, registration, on real servers."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import mainstay_common.grpc
from mainstay_common.grpc import GrpcServer, create_channel

PROBE = "mainstay.test.v1.Probe"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def check(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


def test_public_names() -> None:
    assert sorted(mainstay_common.grpc.__all__) == [
        "CHANNEL_OPTIONS",
        "ErrorMappingInterceptor",
        "GrpcServer",
        "MAX_MESSAGE_BYTES",
        "SERVER_OPTIONS",
        "create_channel",
    ]


async def test_binds_a_free_port_and_reports_registered_services(
    probe_server: GrpcServer,
) -> None:
    assert probe_server.port > 0
    assert probe_server.address == f"127.0.0.1:{probe_server.port}"
    assert probe_server.service_names == (PROBE,)


async def test_health_answers_serving_for_the_server_and_each_service(
    channel: grpc.aio.Channel,
) -> None:
    assert await check(channel) == SERVING
    assert await check(channel, PROBE) == SERVING


async def test_set_serving_flips_one_service_or_the_whole_server(
    probe_server: GrpcServer, channel: grpc.aio.Channel
) -> None:
    await probe_server.set_serving(False, service=PROBE)
    assert await check(channel, PROBE) == NOT_SERVING
    assert await check(channel) == SERVING

    await probe_server.set_serving(False)
    assert await check(channel) == NOT_SERVING

    await probe_server.set_serving(True)
    await probe_server.set_serving(True, service=PROBE)
    assert await check(channel) == SERVING
    assert await check(channel, PROBE) == SERVING


async def test_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(channel, "mainstay.nope.v1.Nope")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_registered_health_and_reflection_services(
    channel: grpc.aio.Channel,
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    replies = [reply async for reply in call]

    names = {service.name for service in replies[0].list_services_response.service}
    assert names == {PROBE, HEALTH, REFLECTION}


async def test_reflection_describes_the_health_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=HEALTH)
    replies = [reply async for reply in stub.ServerReflectionInfo(iter([request]), timeout=5)]

    assert replies[0].HasField("file_descriptor_response")


async def test_shutdown_turns_not_serving_during_the_drain_then_stops() -> None:
    server = GrpcServer(register=lambda _server: None, grace=0.1, drain_delay=0.5)
    await server.__aenter__()
    async with create_channel(server.address, telemetry=False) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING

        stopping = asyncio.create_task(server.__aexit__(None, None, None))
        # A watcher hears about the shutdown, and a probe asking during the drain
        # is told NOT_SERVING rather than refused.
        assert (await watch.read()).status == NOT_SERVING
        assert await check(channel) == NOT_SERVING
        await stopping

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        watch.cancel()


async def test_set_serving_is_ignored_once_shutdown_began() -> None:
    server = GrpcServer(grace=0.1, drain_delay=0.3)
    await server.__aenter__()
    async with create_channel(server.address, telemetry=False) as channel:
        stopping = asyncio.create_task(server.__aexit__(None, None, None))
        await asyncio.sleep(0.05)
        await server.set_serving(True)
        assert await check(channel) == NOT_SERVING
        await stopping


async def test_register_callback_and_extra_service_names() -> None:
    def register(server: grpc.aio.Server) -> None:
        # What grpcio-tools generates: both registration calls name the service.
        handlers = {"Ping": grpc.unary_unary_rpc_method_handler(_pong)}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("mainstay.test.v1.Other", handlers),)
        )
        server.add_registered_method_handlers("mainstay.test.v1.Other", handlers)

    async with GrpcServer(
        register=register,
        service_names=["mainstay.test.v1.Hidden"],
        telemetry=False,
        grace=0.1,
    ) as server:
        assert server.service_names == ("mainstay.test.v1.Other", "mainstay.test.v1.Hidden")
        async with create_channel(server.address, telemetry=False) as channel:
            assert await check(channel, "mainstay.test.v1.Hidden") == SERVING
            ping = channel.unary_unary("/mainstay.test.v1.Other/Ping", _registered_method=True)
            assert await ping(b"ping", timeout=5) == b"pong"


async def _pong(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"pong"


async def test_port_conflict_fails_loudly(probe_server: GrpcServer) -> None:
    with pytest.raises((OSError, RuntimeError)):
        async with GrpcServer(port=probe_server.port, telemetry=False):
            pass


async def test_port_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = GrpcServer().port


async def test_a_server_is_single_use() -> None:
    server = GrpcServer(telemetry=False, grace=0.1)
    async with server:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        await server.__aenter__()
