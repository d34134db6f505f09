"""map_grpc_errors against a real grpc.aio server on port 0 that aborts with each code."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest

from mainstay_common.errors import (
    AlreadyExists,
    Conflict,
    DependencyTimeout,
    DependencyUnavailable,
    InvalidArgument,
    MainstayError,
    NotFound,
    PermissionDenied,
    RuleViolation,
    Unauthenticated,
    map_grpc_errors,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ABORT = "/mainstay.test.v1.Aborter/Abort"


async def _abort(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """Request ``CODE`` or ``CODE;retry-after=N``: abort with that code (OK answers)."""
    code_name, _, retry_after = request.decode().partition(";retry-after=")
    if code_name == "OK":
        return b"fine"
    trailing = (("retry-after", retry_after),) if retry_after else ()
    await context.abort(grpc.StatusCode[code_name], f"remote says {code_name}", trailing)
    raise AssertionError("abort returned")


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "mainstay.test.v1.Aborter", {"Abort": grpc.unary_unary_rpc_method_handler(_abort)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


async def call(channel: grpc.aio.Channel, request: str) -> bytes:
    reply: bytes = await channel.unary_unary(ABORT)(request.encode(), timeout=5)
    return reply


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("UNAVAILABLE", DependencyUnavailable),
        ("RESOURCE_EXHAUSTED", DependencyUnavailable),
        ("INTERNAL", DependencyUnavailable),
        ("UNKNOWN", DependencyUnavailable),
        ("CANCELLED", DependencyUnavailable),
        ("DEADLINE_EXCEEDED", DependencyTimeout),
        ("ABORTED", Conflict),
        ("NOT_FOUND", NotFound),
        ("ALREADY_EXISTS", AlreadyExists),
        ("INVALID_ARGUMENT", InvalidArgument),
        ("OUT_OF_RANGE", InvalidArgument),
        ("UNAUTHENTICATED", Unauthenticated),
        ("PERMISSION_DENIED", PermissionDenied),
        ("FAILED_PRECONDITION", RuleViolation),
    ],
)
async def test_status_code_maps_to_its_error(
    channel: grpc.aio.Channel, code: str, expected: type[MainstayError]
) -> None:
    with pytest.raises(MainstayError) as caught, map_grpc_errors("remote"):
        await call(channel, code)

    assert type(caught.value) is expected
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
    assert caught.value.__cause__.code() == grpc.StatusCode[code]
    assert caught.value.message == f"remote: {code}: remote says {code}"
    assert caught.value.retry_after is None


async def test_retry_after_trailing_metadata_becomes_retry_after(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(DependencyUnavailable) as caught, map_grpc_errors("remote"):
        await call(channel, "UNAVAILABLE;retry-after=1.5")

    assert caught.value.retry_after == 1.5


@pytest.mark.parametrize("code", ["UNIMPLEMENTED", "DATA_LOSS"])
async def test_deployment_problems_stay_unmapped(channel: grpc.aio.Channel, code: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError), map_grpc_errors("remote"):
        await call(channel, code)


async def test_success_and_non_grpc_errors_pass_through(channel: grpc.aio.Channel) -> None:
    with map_grpc_errors("remote"):
        assert await call(channel, "OK") == b"fine"
    with pytest.raises(KeyError), map_grpc_errors("remote"):
        raise KeyError("not a gRPC failure")
