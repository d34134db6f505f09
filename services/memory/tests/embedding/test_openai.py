"""The OpenAI-compatible adapter against a real local server speaking the embeddings API.

Providers are unreachable from the development machines, so the "provider" is
a small Starlette app served by uvicorn on 127.0.0.1:0: requests cross a real
socket, and timeouts, headers and status codes behave as they would remotely.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mainstay_common.errors import (
    DependencyTimeout,
    DependencyUnavailable,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from mainstay_common.http import HttpServer
from mainstay_memory.settings import EmbeddingSettings
from mainstay_memory.store.embedding import create_embedder
from mainstay_memory.store.embedding_openai import OpenAIEmbedder

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from starlette.requests import Request

NATIVE_DIMENSION = 8
API_KEY = "sk-test-not-a-real-key"


def raw_vector(text: str, size: int) -> list[float]:
    """What the fake model returns for a text: distinct per text, not unit length."""
    return [float(len(text) + k) for k in range(size)]


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


@dataclass
class FakeProvider:
    """Records each request; answers like OpenAI unless a test sets ``respond``."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    respond: Callable[[dict[str, Any]], Awaitable[Response]] | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def embeddings(self, request: Request) -> Response:
        payload = await request.json()
        self.requests.append(payload)
        self.authorizations.append(request.headers.get("authorization"))
        if self.respond is not None:
            return await self.respond(payload)
        size = payload.get("dimensions", NATIVE_DIMENSION)
        data = [
            {"object": "embedding", "index": i, "embedding": raw_vector(text, size)}
            for i, text in enumerate(payload["input"])
        ]
        data.reverse()  # the API orders by "index", not by position: clients must sort
        return JSONResponse(
            {"object": "list", "data": data, "model": payload["model"], "usage": {}}
        )


@pytest_asyncio.fixture(scope="module")
async def server() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    app = Starlette(routes=[Route("/v1/embeddings", fake.embeddings, methods=["POST"])])
    async with HttpServer(app, shutdown_timeout_s=2) as running:
        fake.url = f"{running.url}/v1"
        yield fake


@pytest_asyncio.fixture
async def provider(server: FakeProvider) -> AsyncIterator[FakeProvider]:
    server.requests.clear()
    server.authorizations.clear()
    server.respond = None
    server.release = asyncio.Event()
    yield server
    server.release.set()  # frees a handler a timeout test left waiting


def embedder_for(provider: FakeProvider, **options: Any) -> OpenAIEmbedder:
    settings: dict[str, Any] = {
        "base_url": provider.url,
        "model": "text-embedding-3-small",
        "api_key": API_KEY,
    }
    return OpenAIEmbedder(**(settings | options))


async def test_vectors_come_back_in_order_unit_length(provider: FakeProvider) -> None:
    texts = ["a", "bb", "ccc"]
    async with embedder_for(provider) as embedder:
        vectors = await embedder.embed(texts)

    for text, vector in zip(texts, vectors, strict=True):
        assert vector == pytest.approx(unit(raw_vector(text, NATIVE_DIMENSION)))
    [request] = provider.requests
    assert request == {
        "model": "text-embedding-3-small",
        "input": texts,
        "encoding_format": "float",
    }
    assert provider.authorizations == [f"Bearer {API_KEY}"]


async def test_the_factory_wires_settings_to_the_wire(provider: FakeProvider) -> None:
    settings = EmbeddingSettings(
        backend="openai",
        base_url=provider.url + "/",
        api_key=SecretStr("sk-from-settings"),
        model="text-embedding-3-large",
        dimension=4,
        batch_size=1,
    )
    async with create_embedder(settings) as embedder:
        assert isinstance(embedder, OpenAIEmbedder)
        assert (embedder.model_name, embedder.dimension) == ("text-embedding-3-large", 4)
        vectors = await embedder.embed(["a", "b"])
    assert [len(v) for v in vectors] == [4, 4]
    assert [r["input"] for r in provider.requests] == [["a"], ["b"]]
    assert {r["dimensions"] for r in provider.requests} == {4}
    assert provider.authorizations == ["Bearer sk-from-settings"] * 2


async def test_texts_are_sent_in_batches_and_reassembled(provider: FakeProvider) -> None:
    texts = ["one", "two!", "three", "four..", "five...."]
    async with embedder_for(provider, batch_size=2) as embedder:
        vectors = await embedder.embed(texts)

    assert [r["input"] for r in provider.requests] == [texts[0:2], texts[2:4], texts[4:]]
    assert vectors == [pytest.approx(unit(raw_vector(t, NATIVE_DIMENSION))) for t in texts]


async def test_the_dimension_is_learned_from_the_first_response(provider: FakeProvider) -> None:
    async with embedder_for(provider) as embedder:
        with pytest.raises(RuntimeError, match="MEMORY_EMBEDDING_DIMENSION"):
            _ = embedder.dimension
        assert await embedder.detect_dimension() == NATIVE_DIMENSION
        assert embedder.dimension == NATIVE_DIMENSION
        assert await embedder.detect_dimension() == NATIVE_DIMENSION  # no second probe
    assert len(provider.requests) == 1
    assert "dimensions" not in provider.requests[0]


async def test_a_configured_dimension_is_requested(provider: FakeProvider) -> None:
    async with embedder_for(provider, dimension=4) as embedder:
        assert embedder.dimension == 4
        [vector] = await embedder.embed(["shorter vectors"])
    assert len(vector) == 4
    assert provider.requests[0]["dimensions"] == 4


async def test_a_server_ignoring_the_dimension_is_a_clear_error(provider: FakeProvider) -> None:
    async def native_size(payload: dict[str, Any]) -> Response:
        vector = raw_vector("x", NATIVE_DIMENSION)
        return JSONResponse({"data": [{"index": 0, "embedding": vector}]})

    provider.respond = native_size
    async with embedder_for(provider, dimension=4) as embedder:
        with pytest.raises(DependencyUnavailable, match="8-dimensional vectors where 4"):
            await embedder.embed(["x"])


async def test_no_api_key_sends_no_authorization(provider: FakeProvider) -> None:
    async with embedder_for(provider, api_key=None) as embedder:
        await embedder.embed(["local servers often need no key"])
    assert provider.authorizations == [None]


async def test_nothing_to_embed_sends_nothing(provider: FakeProvider) -> None:
    async with embedder_for(provider) as embedder:
        assert await embedder.embed([]) == []
        with pytest.raises(InvalidArgument, match=r"texts\[0\] is empty"):
            await embedder.embed(["", "fine"])
    assert provider.requests == []


def status(code: int, headers: dict[str, str] | None = None) -> Callable[..., Awaitable[Response]]:
    async def respond(_payload: dict[str, Any]) -> Response:
        return JSONResponse({"error": {"message": "nope"}}, status_code=code, headers=headers)

    return respond


async def test_429_is_retryable_after_retry_after(provider: FakeProvider) -> None:
    provider.respond = status(429, {"Retry-After": "7"})
    async with embedder_for(provider) as embedder:
        with pytest.raises(DependencyUnavailable) as raised:
            await embedder.embed(["rate limited"])
    assert raised.value.retryable
    assert raised.value.retry_after == 7.0
    assert "HTTP 429" in str(raised.value)
    assert "/v1/embeddings" in str(raised.value)


async def test_503_is_retryable(provider: FakeProvider) -> None:
    provider.respond = status(503)
    async with embedder_for(provider) as embedder:
        with pytest.raises(DependencyUnavailable) as raised:
            await embedder.embed(["overloaded"])
    assert raised.value.retryable
    assert raised.value.retry_after is None


@pytest.mark.parametrize(
    ("code", "error"), [(401, Unauthenticated), (404, NotFound), (400, InvalidArgument)]
)
async def test_client_errors_are_permanent(
    provider: FakeProvider, code: int, error: type[Exception]
) -> None:
    provider.respond = status(code)
    async with embedder_for(provider) as embedder:
        with pytest.raises(error) as raised:
            await embedder.embed(["refused"])
    assert not getattr(raised.value, "retryable", True)
    assert API_KEY not in str(raised.value)


async def test_a_slow_provider_times_out(provider: FakeProvider) -> None:
    async def never(_payload: dict[str, Any]) -> Response:
        await provider.release.wait()
        return Response(status_code=500)

    provider.respond = never
    async with embedder_for(provider, timeout_s=0.2) as embedder:
        with pytest.raises(DependencyTimeout, match="embeddings: read timeout"):
            await embedder.embed(["slow"])


async def test_an_unreachable_provider_is_unavailable() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and is closed now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    embedder = OpenAIEmbedder(base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=2)
    async with embedder:
        with pytest.raises(DependencyUnavailable, match="embeddings unavailable"):
            await embedder.embed(["anyone there?"])


def body(value: object) -> Callable[..., Awaitable[Response]]:
    async def respond(_payload: dict[str, Any]) -> Response:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return Response(raw, media_type="application/json")

    return respond


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"<html>502 from a proxy SECRET-PAGE</html>", "the body is not JSON"),
        ({"object": "list"}, "no 'data' list"),
        ({"data": [{"index": 0, "embedding": [1.0]}]}, "1 embeddings for 2 inputs"),
        (
            {"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]},
            "'index' is missing, repeated or out of range",
        ),
        (
            {"data": [{"index": 0, "embedding": [1.0]}, {"index": 5, "embedding": [1.0]}]},
            "'index' is missing, repeated or out of range",
        ),
        (
            {"data": [{"index": 0, "embedding": "AAAAAA=="}, {"index": 1, "embedding": [1.0]}]},
            "not a list of numbers",
        ),
        (
            {"data": [{"index": 0, "embedding": [0.0, 0.0]}, {"index": 1, "embedding": [1, 2]}]},
            "zero or not finite",
        ),
        (
            {"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}]},
            "different sizes",
        ),
    ],
)
async def test_a_malformed_response_is_a_clear_error(
    provider: FakeProvider, answer: object, problem: str
) -> None:
    provider.respond = body(answer)
    async with embedder_for(provider) as embedder:
        with pytest.raises(DependencyUnavailable, match="malformed response") as raised:
            await embedder.embed(["first", "second"])
    assert problem in str(raised.value)
    assert "SECRET-PAGE" not in str(raised.value)  # the body is never quoted
