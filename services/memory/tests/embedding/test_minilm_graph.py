"""The ONNX graph computes all-MiniLM-L6-v2 exactly: against a numpy reference and upstream.

The graph uses onnxruntime's fused kernels; the reference is a plain numpy
forward pass written from the BERT definition. They share only the weights and
the tokenizer, so agreement to ~1e-6 checks the graph's wiring (QKV layout,
masking, GELU form, pooling) rather than restating it. The published similarity
matrix checks the whole path, tokenizer included, against sentence-transformers.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from typing import TYPE_CHECKING

import numpy as np
import pytest

from mainstay_memory.store._minilm import read_config
from mainstay_memory.store._minilm_reference import ReferenceMiniLM, _erf

if TYPE_CHECKING:
    from pathlib import Path

    from tokenizers import Tokenizer

    from mainstay_memory.store._minilm import BertConfig, Weights
    from mainstay_memory.store.embedding_local import LocalEmbedder

TEXTS = [
    "I live in Paris",
    "ok",
    "The quarterly report is due on Friday, 12 December 2025 (UTC+1).",
    "Zürich, naïve café, 東京, emoji 🚀 and punctuation?!",
    "Remember: the deploy window is 14:00-16:00 UTC, never on Fridays!",
    "A long memory " + "that the agent kept writing about its day " * 40,  # truncated at 256
]


async def test_the_graph_matches_the_numpy_reference(
    local_embedder: LocalEmbedder,
    minilm_weights: Weights,
    minilm_config: BertConfig,
    minilm_tokenizer: Tokenizer,
) -> None:
    reference = ReferenceMiniLM(minilm_weights, minilm_config)
    # Batched (padded, regrouped) through the service path; the reference sees each
    # text alone, unpadded: agreement also shows padding is fully masked.
    got = np.array(await local_embedder.embed(TEXTS))
    for text, vector in zip(TEXTS, got, strict=True):
        encoding = minilm_tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        want = reference.embed(ids, mask)[0]
        assert np.abs(vector - want).max() < 1e-5, text


async def test_long_texts_are_cut_at_256_tokens(minilm_tokenizer: Tokenizer) -> None:
    assert len(minilm_tokenizer.encode(TEXTS[-1]).ids) == 256
    # tokenizer.json pads everything to 128 as shipped: padding is per batch instead.
    assert len(minilm_tokenizer.encode("ok").ids) == 3


async def test_the_published_similarities_are_reproduced(local_embedder: LocalEmbedder) -> None:
    # The similarity matrix sentence-transformers' documentation prints for this
    # model and these sentences, to four decimals.
    vectors = np.array(
        await local_embedder.embed(
            ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
        )
    )
    published = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    assert np.abs(vectors @ vectors.T - published).max() < 5e-4


def test_the_reference_gelu_uses_erf_to_float32_precision() -> None:
    x = np.linspace(-6, 6, 2001, dtype=np.float32)
    exact = np.array([math.erf(float(v)) for v in x])
    assert np.abs(_erf(x) - exact).max() < 2e-7


def test_the_config_is_the_one_the_graph_implements(minilm_config: BertConfig) -> None:
    assert (minilm_config.hidden, minilm_config.heads, minilm_config.layers) == (384, 12, 6)
    assert minilm_config.max_tokens == 256


@pytest.mark.parametrize(
    ("file", "change", "problem"),
    [
        ("config.json", {"hidden_act": "gelu_new"}, "hidden_act is 'gelu_new'"),
        ("config.json", {"model_type": "roberta"}, "model_type is 'roberta'"),
        (
            "1_Pooling/config.json",
            {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True},
            "only mean pooling",
        ),
    ],
)
def test_a_different_checkpoint_is_refused_by_name(
    minilm_dir: Path, tmp_path: Path, file: str, change: dict[str, object], problem: str
) -> None:
    for name in ("config.json", "1_Pooling/config.json", "sentence_bert_config.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(minilm_dir / name, tmp_path / name)
    config = json.loads((tmp_path / file).read_text()) | change
    (tmp_path / file).write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match=re.escape(problem)):
        read_config(tmp_path)
