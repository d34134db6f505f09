"""Embeddings from any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

OpenAI itself, and the many servers that speak its API (vLLM, Ollama, LiteLLM,
text-embeddings-inference, Azure's v1 surface...). Texts go in batches of
``batch_size``, one request at a time (a write never bursts a rate limit), and
each vector is re-normalised to unit length: not every server returns unit
vectors, and the port promises them.

Failures are translated here, at the boundary, and never retried here: the error
says whether and when to retry, and the bus's retry tiers (or the gRPC caller)
act on it.

=====================================================  ==========================
429, 5xx                                               DependencyUnavailable,
                                                       ``retry_after`` from Retry-After
timeout (connect, read, write, pool), 408              DependencyTimeout
connection refused/reset, protocol error               DependencyUnavailable
401 / 403 / 404 (a wrong ``base_url``)                Unauthenticated / PermissionDenied /
                                                       NotFound
other 4xx (unknown model, too many dimensions...)      InvalidArgument
200 whose body is not the embeddings shape             DependencyUnavailable,
                                                       "malformed response: ..."
=====================================================  ==========================

Messages name the endpoint and the problem, never the API key or the body.

Providers are unreachable from the development machines, so this adapter is
tested against a real local HTTP server that speaks the provider's API
(``services/memory/tests/embedding/test_openai.py``), which exercises the real
client path (sockets, timeouts, headers, status codes) a mocked transport skips.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

from mainstay_common.errors import DependencyUnavailable
from mainstay_memory.store._openai import OpenAIAdapter
from mainstay_memory.store._texts import check_texts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mainstay_memory.domain.ports import Vector

__all__ = ["OpenAIEmbedder"]

_SERVICE = "embeddings"
_PROBE_TEXT = "dimension probe"


class OpenAIEmbedder(OpenAIAdapter):
    """An async context manager owning one ``httpx.AsyncClient`` (its connection pool).

    ``dimension``: ask the endpoint for vectors of this size (the ``dimensions``
    request field); ``None`` keeps the model's native size, learned from the first
    response.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        dimension: int | None = None,
        batch_size: int = 64,
        timeout_s: float = 30.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if dimension is not None and dimension < 1:
            raise ValueError("dimension must be positive")
        super().__init__(
            base_url=base_url, path="embeddings", model=model, api_key=api_key, timeout_s=timeout_s
        )
        self._requested_dimension = dimension
        self._dimension = dimension
        self._batch_size = batch_size

    @property
    def dimension(self) -> int:
        """The vector size; known once configured or after the first response."""
        if self._dimension is None:
            raise RuntimeError(
                f"the dimension of {self._model!r} is not known before its first response:"
                " set MEMORY_EMBEDDING_DIMENSION, or await detect_dimension() at startup"
            )
        return self._dimension

    async def detect_dimension(self) -> int:
        """The vector size, embedding a probe text if it is not known yet."""
        if self._dimension is None:
            await self.embed([_PROBE_TEXT])
        return self.dimension

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One unit vector per text, in order."""
        check_texts(texts)
        vectors: list[Vector] = []
        for start in range(0, len(texts), self._batch_size):
            vectors += await self._embed_batch(list(texts[start : start + self._batch_size]))
        return vectors

    async def _embed_batch(self, batch: list[str]) -> list[Vector]:
        payload: dict[str, Any] = {"model": self._model, "input": batch, "encoding_format": "float"}
        if self._requested_dimension is not None:
            payload["dimensions"] = self._requested_dimension
        body = await self._post(_SERVICE, payload)
        # Decoding and normalising a batch of 1536-float vectors is milliseconds of CPU.
        vectors = await asyncio.to_thread(_parse, body, len(batch), self._target)
        size = len(vectors[0])
        if any(len(vector) != size for vector in vectors):
            raise _malformed(self._target, "the vectors have different sizes")
        if self._dimension is None:
            self._dimension = size
        elif size != self._dimension:
            raise _malformed(
                self._target, f"{size}-dimensional vectors where {self._dimension} are expected"
            )
        return vectors


def _parse(body: bytes, expected: int, target: str) -> list[Vector]:
    """The vectors of an embeddings response, ordered by their ``index``, unit length."""
    try:
        document: Any = json.loads(body)
    except ValueError as exc:  # includes a body that is not UTF-8
        raise _malformed(target, "the body is not JSON") from exc
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        raise _malformed(target, "no 'data' list")
    if len(data) != expected:
        raise _malformed(target, f"{len(data)} embeddings for {expected} inputs")
    ordered: list[Vector | None] = [None] * expected
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not 0 <= index < expected
            or ordered[index] is not None
        ):
            raise _malformed(target, "an item's 'index' is missing, repeated or out of range")
        ordered[index] = _unit(item.get("embedding"), target)
    # ``expected`` distinct in-range indexes: every slot is filled.
    return [vector for vector in ordered if vector is not None]


def _unit(values: Any, target: str) -> Vector:
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    ):
        raise _malformed(target, "an 'embedding' is not a list of numbers")
    norm = math.hypot(*values)
    if not math.isfinite(norm) or norm == 0.0:
        raise _malformed(target, "an 'embedding' is zero or not finite")
    return [v / norm for v in values]


def _malformed(target: str, problem: str) -> DependencyUnavailable:
    # Retryable: a proxy's error page or a half-deployed server heals; a server
    # that is wrong for good ends in the DLQ once the retry tiers are spent.
    return DependencyUnavailable(f"{_SERVICE}: malformed response from {target}: {problem}")
