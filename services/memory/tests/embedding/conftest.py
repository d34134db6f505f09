"""Fixtures for the embedding adapters: one loaded local model per session.

Loading all-MiniLM-L6-v2 takes about a second, so every local test shares one
embedder. Its ``batch_size`` is small on purpose: a list of ten texts then spans
several inference runs, so batching and reordering are exercised everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from mainstay_memory.store._minilm import (
    BertConfig,
    Weights,
    load_tokenizer,
    load_weights,
    model_dir,
    read_config,
)
from mainstay_memory.store.embedding_local import LocalEmbedder

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tokenizers import Tokenizer

SMALL_BATCH = 4


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def local_embedder() -> AsyncIterator[LocalEmbedder]:
    async with LocalEmbedder(batch_size=SMALL_BATCH) as embedder:
        yield embedder


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return model_dir()


@pytest.fixture(scope="session")
def minilm_config(minilm_dir: Path) -> BertConfig:
    return read_config(minilm_dir)


@pytest.fixture(scope="session")
def minilm_weights(minilm_dir: Path, minilm_config: BertConfig) -> Weights:
    return load_weights(minilm_dir, minilm_config)


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir: Path, minilm_config: BertConfig) -> Tokenizer:
    return load_tokenizer(minilm_dir, minilm_config)
