"""create_embedder picks the adapter the settings name; the public names stay put."""

from __future__ import annotations

import pytest

from mainstay_memory.settings import EmbeddingSettings
from mainstay_memory.store import embedding, embedding_local, embedding_openai
from mainstay_memory.store.embedding import create_embedder
from mainstay_memory.store.embedding_local import LocalEmbedder


def test_public_names() -> None:
    # A snapshot: adding or removing a public name must be a deliberate change here.
    assert embedding.__all__ == ["ManagedEmbedder", "create_embedder"]
    assert embedding_local.__all__ == ["LocalEmbedder"]
    assert embedding_openai.__all__ == ["OpenAIEmbedder"]


async def test_local_is_built_from_its_settings() -> None:
    embedder = create_embedder(EmbeddingSettings(backend="local", threads=1, batch_size=8))
    assert isinstance(embedder, LocalEmbedder)
    assert (embedder.dimension, embedder.threads) == (384, 1)
    await embedder.aclose()


@pytest.mark.parametrize("backend", ["local", "openai"])
async def test_every_backend_is_an_async_resource(backend: str) -> None:
    settings = EmbeddingSettings.model_validate({"backend": backend, "dimension": 3})
    async with create_embedder(settings) as embedder:
        assert await embedder.embed([]) == []
        # Known without a request: 384 for the local model, the configured size otherwise.
        assert await embedder.detect_dimension() == {"local": 384, "openai": 3}[backend]
    # (the OpenAI path end to end, from settings to the wire: test_openai.py)
