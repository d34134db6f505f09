"""Choosing the embedder from settings: the one place that knows every adapter.

``create_embedder(settings)`` builds, without I/O, the adapter
``MEMORY_EMBEDDING_BACKEND`` names. What it returns is an :class:`Embedder` that is
also an async resource, so the composition root enters it at startup::

    async with create_embedder(settings.embedding) as embedder:
        # the local model is loaded before the service reports ready; an OpenAI
        # model's native size is learned here unless MEMORY_EMBEDDING_DIMENSION is set
        dimension = await embedder.detect_dimension()

Each adapter's module is imported only when chosen: the local model pulls in
numpy and onnxruntime (~0.5 s to import, ~200 MB of memory once loaded), which a
deployment using a remote provider should not pay for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Self, assert_never

from mainstay_memory.domain.ports import Embedder

if TYPE_CHECKING:
    from mainstay_memory.settings import EmbeddingSettings

__all__ = ["ManagedEmbedder", "create_embedder"]


class ManagedEmbedder(Embedder, Protocol):
    """An :class:`Embedder` owning resources (a model, a worker thread, a connection pool)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def aclose(self) -> None: ...

    async def detect_dimension(self) -> int:
        """``dimension``, asking the model first if only its answer can tell (``openai``)."""
        ...


def create_embedder(settings: EmbeddingSettings) -> ManagedEmbedder:
    """The embedder ``settings.backend`` names; entering it makes it ready to serve."""
    match settings.backend:
        case "local":
            from mainstay_memory.store.embedding_local import LocalEmbedder  # noqa: PLC0415

            return LocalEmbedder(
                batch_size=settings.batch_size, threads=settings.threads, spinning=settings.spinning
            )
        case "openai":
            from mainstay_memory.store.embedding_openai import OpenAIEmbedder  # noqa: PLC0415

            api_key = settings.api_key.get_secret_value() if settings.api_key else None
            return OpenAIEmbedder(
                base_url=settings.base_url,
                model=settings.model,
                api_key=api_key,
                dimension=settings.dimension,
                batch_size=settings.batch_size,
                timeout_s=settings.timeout_s,
            )
        case unknown:
            assert_never(unknown)
