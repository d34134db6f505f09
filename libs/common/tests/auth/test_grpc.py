"""The gRPC interceptor on a real grpc.aio server on 127.0.0.1:0."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mainstay_common.auth import (
    DEFAULT_EXEMPT_METHODS,
    AuthInterceptor,
    TokenSigner,
    TokenVerifier,
    current_principal,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence


async def _whoami(_request: bytes, _context: Any) -> bytes:
    principal = current_principal()
    return f"{principal.subject}@{principal.tenant}".encode()


async def _count(_request: bytes, _context: Any) -> AsyncIterator[bytes]:
    for index in range(3):
        yield f"{current_principal().subject}:{index}".encode()


async def _public(_request: bytes, _context: Any) -> bytes:
    return b"public"


def _sync_whoami(_request: bytes, _context: Any) -> bytes:
    return current_principal().subject.encode()


_ECHO = grpc.method_handlers_generic_handler(
    "test.Echo",
    {
        "Whoami": grpc.unary_unary_rpc_method_handler(_whoami),
        "Count": grpc.unary_stream_rpc_method_handler(_count),
        "Public": grpc.unary_unary_rpc_method_handler(_public),
        "SyncWhoami": grpc.unary_unary_rpc_method_handler(_sync_whoami),
    },
)


class Server:
    def __init__(self, verifier: TokenVerifier, exempt: Sequence[str]) -> None:
        self.server = grpc.aio.server(
            interceptors=[AuthInterceptor(verifier, exempt_methods=exempt)]
        )
        self.server.add_generic_rpc_handlers([_ECHO])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")


@pytest.fixture
def serve(verifier: TokenVerifier) -> Callable[..., Any]:
    """``async with serve(exempt) as channel`` runs a server and connects to it."""

    @contextlib.asynccontextmanager
    async def run(
        exempt: Sequence[str] = (*DEFAULT_EXEMPT_METHODS, "/test.Echo/Public"),
    ) -> AsyncIterator[grpc.aio.Channel]:
        server = Server(verifier, exempt)
        await server.server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                yield channel
        finally:
            await server.server.stop(grace=None)

    return run


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_a_valid_token_reaches_the_method_with_its_principal(
    serve: Callable[..., Any], signer: TokenSigner
) -> None:
    token = signer.mint(subject="agent-7", tenant="acme", scopes=["memory:read"])
    async with serve() as channel:
        whoami = channel.unary_unary("/test.Echo/Whoami")
        count = channel.unary_stream("/test.Echo/Count")

        assert await whoami(b"", metadata=_bearer(token), timeout=5) == b"agent-7@acme"
        sync_whoami = channel.unary_unary("/test.Echo/SyncWhoami")
        assert await sync_whoami(b"", metadata=_bearer(token), timeout=5) == b"agent-7"
        replies = [reply async for reply in count(b"", metadata=_bearer(token), timeout=5)]
        assert replies == [b"agent-7:0", b"agent-7:1", b"agent-7:2"]


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "missing bearer token"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "must use the Bearer scheme"),
        ((("authorization", "Bearer not-a-token"),), "malformed token"),
    ],
)
async def test_missing_or_bad_tokens_are_unauthenticated(
    serve: Callable[..., Any], metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    async with serve() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/test.Echo/Whoami")(b"", metadata=metadata, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason in (caught.value.details() or "")


async def test_a_streaming_method_is_refused_before_it_yields(
    serve: Callable[..., Any], signer: TokenSigner
) -> None:
    expired = signer.mint(subject="a", tenant="t", scopes=[], ttl=-timedelta(minutes=1))
    async with serve() as channel:
        call = channel.unary_stream("/test.Echo/Count")(b"", metadata=_bearer(expired), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            _ = [reply async for reply in call]
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert caught.value.details() == "token has expired"


async def test_health_and_exempt_methods_need_no_token(serve: Callable[..., Any]) -> None:
    async with serve() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert await channel.unary_unary("/test.Echo/Public")(b"", timeout=5) == b"public"


async def test_without_exemptions_health_watch_needs_a_token(
    serve: Callable[..., Any], signer: TokenSigner
) -> None:
    token = signer.mint(subject="probe", tenant="t", scopes=[])
    async with serve(exempt=()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # Watch is a coroutine that writes to its context: the wrapper must keep that working.
        watch = stub.Watch(health_pb2.HealthCheckRequest(), metadata=_bearer(token), timeout=5)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
