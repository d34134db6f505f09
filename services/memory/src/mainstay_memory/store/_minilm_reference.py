"""A plain numpy forward pass of all-MiniLM-L6-v2: the readable specification.

The service never runs this (it is ~5-8x slower than the onnxruntime graph). It
exists so the ONNX graph of :mod:`._minilm_onnx`, which uses onnxruntime's fused
kernels, is checked against an independent implementation written straight from
the BERT definition and the checkpoint's tensor names, with nothing shared
except the weights and the tokenizer; and so the benchmark can report what the
graph buys. Everything is float32, like the checkpoint; GELU is the exact (erf)
form BERT uses, not the tanh approximation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    from mainstay_memory.store._minilm import BertConfig, Weights

__all__ = ["ReferenceMiniLM"]


class ReferenceMiniLM:
    """``embed(input_ids, attention_mask)``: unit vectors as sentence-transformers computes them."""

    def __init__(self, weights: Weights, config: BertConfig) -> None:
        self._w = weights
        self._config = config

    def embed(
        self, input_ids: npt.NDArray[np.integer], attention_mask: npt.NDArray[np.integer]
    ) -> npt.NDArray[np.float32]:
        w, config = self._w, self._config
        tokens = input_ids.shape[1]
        x: npt.NDArray[np.float32] = (
            w["embeddings.word_embeddings.weight"][input_ids]
            + w["embeddings.position_embeddings.weight"][:tokens][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._layer_norm(x, "embeddings.LayerNorm")
        mask = attention_mask.astype(np.float32)
        # Additive mask: padded keys get -inf-like scores, so softmax gives them weight 0.
        key_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in range(config.layers):
            x = self._layer(x, key_bias, f"encoder.layer.{layer}.")
        summed: npt.NDArray[np.float32] = (x * mask[..., None]).sum(axis=1)
        mean = summed / np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        norm = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), np.float32(1e-12))
        unit: npt.NDArray[np.float32] = (mean / norm).astype(np.float32)
        return unit

    def _layer(
        self, x: npt.NDArray[np.float32], key_bias: npt.NDArray[np.float32], prefix: str
    ) -> npt.NDArray[np.float32]:
        config = self._config
        batch, tokens, _ = x.shape

        def heads(name: str) -> npt.NDArray[np.float32]:
            projected = self._linear(x, f"{prefix}attention.self.{name}")
            return projected.reshape(batch, tokens, config.heads, config.head_size).transpose(
                0, 2, 1, 3
            )

        q, k, v = heads("query"), heads("key"), heads("value")
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(config.head_size)) + key_bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, config.hidden)
        x = self._layer_norm(
            x + self._linear(context, f"{prefix}attention.output.dense"),
            f"{prefix}attention.output.LayerNorm",
        )
        hidden = _gelu(self._linear(x, f"{prefix}intermediate.dense"))
        return self._layer_norm(
            x + self._linear(hidden, f"{prefix}output.dense"), f"{prefix}output.LayerNorm"
        )

    def _linear(self, x: npt.NDArray[np.float32], name: str) -> npt.NDArray[np.float32]:
        # PyTorch's Linear: y = x W^T + b, with W stored as [out, in].
        return x @ self._w[f"{name}.weight"].T + self._w[f"{name}.bias"]

    def _layer_norm(self, x: npt.NDArray[np.float32], name: str) -> npt.NDArray[np.float32]:
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)
        eps = np.float32(self._config.layer_norm_eps)
        normed: npt.NDArray[np.float32] = (x - mean) / np.sqrt(var + eps)
        return normed * self._w[f"{name}.weight"] + self._w[f"{name}.bias"]


def _gelu(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.float32(0.5) * x * (np.float32(1.0) + _erf(x / np.float32(np.sqrt(2.0))))


def _erf(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, below float32 resolution near 1.

    numpy has no vectorised erf and scipy is not a dependency; ``math.erf`` per
    element would make the reference minutes slow on a batch.
    """
    sign = np.sign(x)
    a = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
