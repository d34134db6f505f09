"""The error-mapping and telemetry interceptors, seen from a real client."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.trace import SpanKind

from mainstay_common.errors import DependencyUnavailable, NotFound, map_grpc_errors
from mainstay_common.grpc import GrpcServer, create_channel

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

RAISE = "/mainstay.test.v1.Probe/Raise"
STREAM = "/mainstay.test.v1.Probe/Stream"
COLLECT = "/mainstay.test.v1.Probe/Collect"
SECRET = "hunter2"


async def call_raise(channel: grpc.aio.Channel, kind: bytes) -> bytes:
    reply: bytes = await channel.unary_unary(RAISE)(kind, timeout=5)
    return reply


@pytest.mark.parametrize(
    ("kind", "code", "details"),
    [
        (b"not-found", grpc.StatusCode.NOT_FOUND, "record r-1 not found"),
        (b"conflict", grpc.StatusCode.ABORTED, "version 3 was superseded"),
        (b"unavailable", grpc.StatusCode.UNAVAILABLE, "database unavailable"),
        (b"value-error", grpc.StatusCode.INTERNAL, "internal error"),
    ],
)
async def test_unary_errors_end_with_their_status_and_message(
    channel: grpc.aio.Channel, kind: bytes, code: grpc.StatusCode, details: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_raise(channel, kind)

    assert caught.value.code() == code
    assert caught.value.details() == details


async def test_success_passes_through(channel: grpc.aio.Channel) -> None:
    assert await call_raise(channel, b"fine") == b"ok:fine"


async def test_unexpected_error_is_logged_with_traceback_but_not_leaked(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="mainstay_common.grpc"),
        pytest.raises(grpc.aio.AioRpcError) as caught,
    ):
        await call_raise(channel, b"value-error")

    assert SECRET not in (caught.value.details() or "")
    assert SECRET not in str(caught.value.trailing_metadata())
    [record] = [r for r in caplog.records if r.name.startswith("mainstay_common.grpc")]
    assert RAISE in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)


async def test_retry_after_rides_in_trailing_metadata(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_raise(channel, b"unavailable")

    assert ("retry-after", "2.5") in tuple(caught.value.trailing_metadata())


async def test_round_trip_through_map_grpc_errors_keeps_type_and_retry_after(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(DependencyUnavailable) as caught, map_grpc_errors("probe"):
        await call_raise(channel, b"unavailable")

    assert caught.value.retry_after == 2.5
    assert "database unavailable" in caught.value.message

    with pytest.raises(NotFound), map_grpc_errors("probe"):
        await call_raise(channel, b"not-found")


async def test_unary_stream_delivers_messages_then_the_mapped_status(
    channel: grpc.aio.Channel,
) -> None:
    call = channel.unary_stream(STREAM)(b"not-found", timeout=5)
    received = [await call.read(), await call.read()]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()

    assert received == [b"first", b"second"]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "record r-1 not found"


async def test_unary_stream_hides_unexpected_errors(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream(STREAM)(b"value-error", timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [reply async for reply in call]

    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"


async def test_unary_stream_success(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream(STREAM)(b"fine", timeout=5)
    assert [reply async for reply in call] == [b"first", b"second"]


async def test_stream_unary_errors_are_mapped(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.stream_unary(COLLECT)(iter([b"a", b"conflict"]), timeout=5)

    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert await channel.stream_unary(COLLECT)(iter([b"a", b"b"]), timeout=5) == b"a,b"


async def test_unknown_method_is_unimplemented(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary("/mainstay.test.v1.Probe/Nope")(b"", timeout=5)

    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_extra_interceptors_run_outside_error_mapping(probe: Any) -> None:
    seen: list[tuple[str, str]] = []

    class Recording(grpc.aio.ServerInterceptor):  # type: ignore[misc]
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = await continuation(details)

            async def behavior(request: bytes, context: Any) -> bytes:
                try:
                    reply: bytes = await handler.unary_unary(request, context)
                except BaseException as exc:
                    seen.append((details.method, type(exc).__name__))
                    raise
                seen.append((details.method, "ok"))
                return reply

            return grpc.unary_unary_rpc_method_handler(behavior)

    async with (
        GrpcServer([probe], interceptors=[Recording()], telemetry=False, grace=0.1) as server,
        create_channel(server.address, telemetry=False) as channel,
    ):
        await call_raise(channel, b"fine")
        with pytest.raises(grpc.aio.AioRpcError):
            await call_raise(channel, b"not-found")

    # The outer interceptor sees the abort the error mapping produced, not NotFound.
    assert seen == [(RAISE, "ok"), (RAISE, "AbortError")]


async def test_server_and_client_spans_share_a_trace_and_record_the_status(
    channel: grpc.aio.Channel, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await call_raise(channel, b"not-found")

    # The server ends its span after the status is on the wire: wait for it.
    async with asyncio.timeout(5):
        # The exporter has no notification to await; the timeout bounds the poll.
        while not any(s.kind == SpanKind.SERVER for s in spans.get_finished_spans()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    finished = spans.get_finished_spans()
    [server_span] = [s for s in finished if s.kind == SpanKind.SERVER]
    [client_span] = [s for s in finished if s.kind == SpanKind.CLIENT]
    assert server_span.name == RAISE
    assert server_span.attributes is not None
    assert server_span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert server_span.context is not None
    assert client_span.context is not None
    assert server_span.context.trace_id == client_span.context.trace_id
    assert server_span.parent is not None
    assert server_span.parent.span_id == client_span.context.span_id


async def test_health_checks_are_not_traced(
    channel: grpc.aio.Channel, spans: InMemorySpanExporter
) -> None:
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)

    assert [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER] == []
