"""Build the small synthetic ONNX graph fixtures in ``fixtures/graphs/``.

Run from the repository root::

    python tools/make_graph_fixtures.py            # writes fixtures/graphs/*.onnx
    python tools/make_graph_fixtures.py --out DIR  # somewhere else
    python tools/make_graph_fixtures.py --check    # rebuild in memory, compare with files on disk

Every model is built programmatically with ``onnx.helper`` (opset 17, IR
version 8), with random float32 weights stored as initializers. Weights come
from a numpy generator seeded from the model's name, so the output is
byte-for-byte reproducible and adding a model does not change the others.

Conventions shared by all models:

* one input named ``input`` (float32) whose first dimension is the symbolic
  batch dimension ``N``;
* image models take NCHW input (mostly ``[N,3,32,32]``);
* classifiers end with ``... -> Flatten -> Gemm`` and a ``logits`` output
  ``[N,10]``, and carry ``metadata_props`` ``source`` and ``labels``;
* ``producer_name`` is ``onnxcomp-fixtures``.

After building, each model is checked with
``onnx.checker.check_model(model, full_check=True)`` and run in onnxruntime
with batch sizes 1 and 3; outputs must have the expected shape and be finite.

Only numpy, onnx and onnxruntime are needed (no torch).
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
PRODUCER = "onnxcomp-fixtures"
PRODUCER_VERSION = "1"
SOURCE = "onnxcomp tools/make_graph_fixtures.py"
LABELS = "0,1,2,3,4,5,6,7,8,9"
NUM_CLASSES = 10
FLOAT32_LOWEST = float(np.finfo(np.float32).min)  # -3.4028235e38

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "fixtures" / "graphs"


class GraphBuilder:
    """Tiny helper to build a graph node by node with unique names."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}

    # ------------------------------------------------------------------ naming
    def uniq(self, prefix: str) -> str:
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{n}"

    # ---------------------------------------------------------- initializers
    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int, gain: float = 2.0) -> str:
        std = np.sqrt(gain / max(fan_in, 1))
        return self.const(name, (self.rng.standard_normal(shape) * std).astype(np.float32))

    def bias(self, name: str, n: int, scale: float = 0.1) -> str:
        return self.const(name, (self.rng.standard_normal(n) * scale).astype(np.float32))

    # -------------------------------------------------------------- nodes
    def op(self, op_type: str, inputs: list[str], n_out: int = 1, out: list[str] | None = None,
           name: str | None = None, **attrs: object) -> list[str]:
        node_name = name or self.uniq(op_type.lower())
        outputs = out or ([f"{node_name}_out"] if n_out == 1 else [f"{node_name}_out{i}" for i in range(n_out)])
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=node_name, **attrs))
        return outputs

    def op1(self, op_type: str, inputs: list[str], out: str | None = None, name: str | None = None,
            **attrs: object) -> str:
        return self.op(op_type, inputs, out=[out] if out else None, name=name, **attrs)[0]

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, pad: int | None = None,
             group: int = 1, bias: bool = True, dilation: int = 1, out: str | None = None) -> str:
        name = self.uniq("conv")
        if pad is None:
            pad = (k // 2) * dilation
        w = self.weight(f"{name}.weight", (cout, cin // group, k, k), fan_in=(cin // group) * k * k)
        inputs = [x, w]
        if bias:
            inputs.append(self.bias(f"{name}.bias", cout))
        attrs: dict[str, object] = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        if group != 1:
            attrs["group"] = group
        if dilation != 1:
            attrs["dilations"] = [dilation, dilation]
        return self.op1("Conv", inputs, out=out, name=name, **attrs)

    def conv_transpose(self, x: str, cin: int, cout: int, k: int, stride: int, pad: int,
                       group: int = 1, bias: bool = True, output_padding: int = 0) -> str:
        name = self.uniq("convtranspose")
        # ConvTranspose weight layout is [C_in, C_out / group, kH, kW].
        w = self.weight(f"{name}.weight", (cin, cout // group, k, k), fan_in=(cin // group) * k * k / stride**2)
        inputs = [x, w]
        if bias:
            inputs.append(self.bias(f"{name}.bias", cout))
        attrs: dict[str, object] = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        if group != 1:
            attrs["group"] = group
        if output_padding:
            attrs["output_padding"] = [output_padding] * 2
        return self.op1("ConvTranspose", inputs, name=name, **attrs)

    def bn(self, x: str, c: int, eps: float = 1e-5) -> str:
        name = self.uniq("bn")
        r = self.rng
        scale = self.const(f"{name}.weight", r.uniform(0.5, 1.5, c).astype(np.float32))
        b = self.const(f"{name}.bias", (r.standard_normal(c) * 0.1).astype(np.float32))
        mean = self.const(f"{name}.running_mean", (r.standard_normal(c) * 0.1).astype(np.float32))
        var = self.const(f"{name}.running_var", r.uniform(0.5, 1.5, c).astype(np.float32))
        return self.op1("BatchNormalization", [x, scale, b, mean, var], name=name, epsilon=eps, momentum=0.9)

    def relu(self, x: str) -> str:
        return self.op1("Relu", [x])

    def relu6(self, x: str) -> str:
        lo = self.const(self.uniq("clip_min"), np.array(0.0, dtype=np.float32))
        hi = self.const(self.uniq("clip_max"), np.array(6.0, dtype=np.float32))
        return self.op1("Clip", [x, lo, hi])

    def conv_bn_act(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1,
                    act: str | None = "relu", bias: bool = False) -> str:
        y = self.bn(self.conv(x, cin, cout, k=k, stride=stride, group=group, bias=bias), cout)
        if act == "relu":
            y = self.relu(y)
        elif act == "relu6":
            y = self.relu6(y)
        elif act == "hardswish":
            y = self.op1("HardSwish", [y])
        elif act is not None:
            raise ValueError(act)
        return y

    def gemm(self, x: str, k_in: int, n_out: int, trans_b: bool = True, out: str | None = None) -> str:
        name = self.uniq("gemm")
        shape = (n_out, k_in) if trans_b else (k_in, n_out)
        w = self.weight(f"{name}.weight", shape, fan_in=k_in, gain=1.0)
        b = self.bias(f"{name}.bias", n_out)
        attrs = {"transB": 1} if trans_b else {}
        return self.op1("Gemm", [x, w, b], out=out, name=name, **attrs)

    def matmul_add(self, x: str, k_in: int, n_out: int, prefix: str = "linear", out: str | None = None,
                   gain: float = 1.0) -> str:
        name = self.uniq(prefix)
        w = self.weight(f"{name}.weight", (k_in, n_out), fan_in=k_in, gain=gain)
        b = self.bias(f"{name}.bias", n_out)
        y = self.op1("MatMul", [x, w], name=f"{name}_matmul")
        return self.op1("Add", [y, b], out=out, name=f"{name}_add")

    def gelu_erf(self, x: str) -> str:
        """x * 0.5 * (1 + Erf(x / sqrt(2))), the pattern PyTorch/BERT exports produce."""
        name = self.uniq("gelu")
        sqrt2 = self.const(f"{name}.sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))
        one = self.const(f"{name}.one", np.array(1.0, dtype=np.float32))
        half = self.const(f"{name}.half", np.array(0.5, dtype=np.float32))
        d = self.op1("Div", [x, sqrt2], name=f"{name}_div")
        e = self.op1("Erf", [d], name=f"{name}_erf")
        a = self.op1("Add", [e, one], name=f"{name}_add")
        m = self.op1("Mul", [x, a], name=f"{name}_mul")
        return self.op1("Mul", [m, half], name=f"{name}_mul_half")

    def layer_norm(self, x: str, c: int) -> str:
        name = self.uniq("layernorm")
        scale = self.const(f"{name}.weight", self.rng.uniform(0.8, 1.2, c).astype(np.float32))
        b = self.const(f"{name}.bias", (self.rng.standard_normal(c) * 0.05).astype(np.float32))
        return self.op1("LayerNormalization", [x, scale, b], name=name, axis=-1, epsilon=1e-5)

    def classifier_head(self, x: str, c: int) -> str:
        g = self.op1("GlobalAveragePool", [x])
        f = self.op1("Flatten", [g], axis=1)
        return self.gemm(f, c, NUM_CLASSES, out="logits")

    # -------------------------------------------------------------- model
    def build(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
              doc: str, classifier: bool = True) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, initializer=self.initializers,
                                  doc_string=doc)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name=PRODUCER, producer_version=PRODUCER_VERSION,
                                  doc_string=doc)
        model.ir_version = IR_VERSION
        props = {"source": SOURCE, "fixture": self.name}
        if classifier:
            props["labels"] = LABELS
        helper.set_model_props(model, props)
        return model


def image_input(c: int = 3, h: int = 32, w: int = 32) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, w])


def logits_output() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES])


# =========================================================================== models


def make_conv_bn_relu() -> onnx.ModelProto:
    b = GraphBuilder("conv_bn_relu")
    x = b.relu(b.bn(b.conv("input", 3, 8, k=3, bias=True), 8))                 # conv with bias
    x = b.relu(b.bn(b.conv(x, 8, 16, k=3, stride=2, bias=False), 16))         # conv without bias
    x = b.relu(b.bn(b.conv(x, 16, 32, k=3, stride=2, bias=True), 32))
    b.classifier_head(x, 32)
    return b.build([image_input()], [logits_output()],
                   "Conv->BN->Relu x3 (bias / no bias), GAP, Flatten, Gemm")


def make_residual() -> onnx.ModelProto:
    b = GraphBuilder("residual")
    stem = b.conv_bn_act("input", 3, 16)
    # Basic block, identity shortcut.
    y = b.conv_bn_act(stem, 16, 16)
    y = b.conv_bn_act(y, 16, 16, act=None)
    x = b.relu(b.op1("Add", [y, stem]))
    # Basic block, stride 2, 1x1 conv + BN projection shortcut.
    y = b.conv_bn_act(x, 16, 32, stride=2)
    y = b.conv_bn_act(y, 32, 32, act=None)
    sc = b.conv_bn_act(x, 16, 32, k=1, stride=2, act=None)
    x = b.relu(b.op1("Add", [y, sc]))
    b.classifier_head(x, 32)
    return b.build([image_input()], [logits_output()],
                   "ResNet basic blocks: identity shortcut and stride-2 1x1 conv+BN downsample shortcut")


def make_concat() -> onnx.ModelProto:
    b = GraphBuilder("concat")
    stem = b.conv_bn_act("input", 3, 16, stride=2)
    # Inception-like branches concatenated on channels: 8 + 12 + 8 = 28.
    br1 = b.relu(b.conv(stem, 16, 8, k=1))
    br2 = b.relu(b.conv(stem, 16, 12, k=3))
    br3 = b.relu(b.conv(b.relu(b.conv(stem, 16, 8, k=1)), 8, 8, k=3))
    cat = b.op1("Concat", [br1, br2, br3], axis=1)
    t = b.relu(b.conv(cat, 28, 16, k=1))
    # Uneven Split on channels; each part goes through its own conv, the parts
    # are concatenated back and added to the pre-split tensor.
    split = b.const("split_sizes", np.array([6, 10], dtype=np.int64))
    s0, s1 = b.op("Split", [t, split], n_out=2, axis=1)
    c0 = b.relu(b.conv(s0, 6, 8, k=3))
    c1 = b.relu(b.conv(s1, 10, 8, k=3))
    merged = b.op1("Concat", [c0, c1], axis=1)
    x = b.op1("Add", [merged, t])
    b.classifier_head(x, 16)
    return b.build([image_input()], [logits_output()],
                   "Inception-like parallel branches + Concat(axis=1), Split(axis=1) -> convs -> Concat + Add")


def make_depthwise() -> onnx.ModelProto:
    b = GraphBuilder("depthwise")
    x = b.conv_bn_act("input", 3, 16, stride=2, act="relu")
    # Depthwise-separable block: depthwise 3x3 (group=C) + pointwise 1x1.
    x = b.conv_bn_act(x, 16, 16, k=3, group=16, act="relu6")
    x = b.conv_bn_act(x, 16, 16, k=1, act="relu6")
    # Depthwise with channel multiplier 2: group=16, 16 -> 32.
    x = b.conv_bn_act(x, 16, 32, k=3, stride=2, group=16, act="relu6")
    x = b.conv_bn_act(x, 32, 24, k=1, act=None)
    b.classifier_head(x, 24)
    return b.build([image_input()], [logits_output()],
                   "MobileNet-style depthwise (group=C), pointwise, depthwise multiplier 2, BN, Relu, Clip(0,6)")


def make_grouped() -> onnx.ModelProto:
    b = GraphBuilder("grouped")
    x = b.conv_bn_act("input", 3, 16)
    x = b.conv_bn_act(x, 16, 32, group=2, stride=2)   # group=2
    x = b.conv_bn_act(x, 32, 32, group=4)             # group=4
    x = b.conv_bn_act(x, 32, 16, k=1, stride=2)
    b.classifier_head(x, 16)
    return b.build([image_input()], [logits_output()], "Grouped convs (group=2, group=4) with BN and Relu")


def make_se() -> onnx.ModelProto:
    b = GraphBuilder("se")
    x = b.conv_bn_act("input", 3, 16, act="hardswish")
    # Squeeze-excite.
    s = b.op1("GlobalAveragePool", [x])
    s = b.relu(b.conv(s, 16, 4, k=1))
    s = b.conv(s, 4, 16, k=1)
    s = b.op1("HardSigmoid", [s], alpha=1.0 / 6.0, beta=0.5)
    x = b.op1("Mul", [x, s])
    x = b.conv_bn_act(x, 16, 32, stride=2)
    b.classifier_head(x, 32)
    return b.build([image_input()], [logits_output()],
                   "Squeeze-excite: GAP->Conv->Relu->Conv->HardSigmoid->Mul, HardSwish")


def _lenet_features(b: GraphBuilder) -> str:
    x = b.relu(b.conv("input", 3, 8, k=3))                                    # 16x16
    x = b.op1("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])            # 8x8
    return b.relu(b.conv(x, 8, 16, k=5, pad=0))                               # 4x4


def make_flatten_gemm() -> onnx.ModelProto:
    b = GraphBuilder("flatten_gemm")
    x = _lenet_features(b)
    f = b.op1("Flatten", [x], axis=1)                                         # [N, 16*4*4]
    h = b.relu(b.gemm(f, 16 * 4 * 4, 32, trans_b=True))
    b.gemm(h, 32, NUM_CLASSES, trans_b=True, out="logits")
    return b.build([image_input(3, 16, 16)], [logits_output()],
                   "LeNet head: conv features (16ch x 4x4) -> Flatten -> Gemm(transB=1) -> Relu -> Gemm")


def make_reshape_matmul() -> onnx.ModelProto:
    b = GraphBuilder("reshape_matmul")
    x = _lenet_features(b)
    shape = b.const("flatten_shape", np.array([-1, 16 * 4 * 4], dtype=np.int64))
    f = b.op1("Reshape", [x, shape])
    h = b.relu(b.matmul_add(f, 16 * 4 * 4, 32, gain=2.0))
    b.matmul_add(h, 32, NUM_CLASSES, out="logits")
    return b.build([image_input(3, 16, 16)], [logits_output()],
                   "LeNet head: conv features -> Reshape([-1, C*H*W]) -> MatMul + Add -> Relu -> MatMul + Add")


def make_mlp() -> onnx.ModelProto:
    b = GraphBuilder("mlp")
    x = b.relu(b.matmul_add("input", 64, 128, gain=2.0))
    x = b.gelu_erf(b.matmul_add(x, 128, 64, gain=2.0))
    b.matmul_add(x, 64, NUM_CLASSES, out="logits")
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])
    return b.build([inp], [logits_output()], "MLP: MatMul+Add, Relu, Gelu (Erf pattern)")


SEQ, HIDDEN, HEADS = 16, 32, 2
HEAD_DIM = HIDDEN // HEADS
N_MASKED = 3  # last key positions masked out, as padding would be


def make_attention() -> onnx.ModelProto:
    b = GraphBuilder("attention")
    x0 = "input"
    h = b.layer_norm(x0, HIDDEN)
    heads_shape = b.const("heads_shape", np.array([0, 0, HEADS, HEAD_DIM], dtype=np.int64))
    merge_shape = b.const("merge_shape", np.array([0, 0, HIDDEN], dtype=np.int64))

    def project(prefix: str) -> str:
        y = b.matmul_add(h, HIDDEN, HIDDEN, prefix=prefix)
        return b.op1("Reshape", [y, heads_shape], name=f"{prefix}_reshape")     # [N,S,H,D]

    q = b.op1("Transpose", [project("q_proj")], perm=[0, 2, 1, 3])             # [N,H,S,D]
    k = b.op1("Transpose", [project("k_proj")], perm=[0, 2, 3, 1])             # [N,H,D,S]
    v = b.op1("Transpose", [project("v_proj")], perm=[0, 2, 1, 3])             # [N,H,S,D]
    scores = b.op1("MatMul", [q, k], name="qk_matmul")                         # [N,H,S,S]
    sqrt_d = b.const("sqrt_head_dim", np.array(np.sqrt(HEAD_DIM), dtype=np.float32))
    scores = b.op1("Div", [scores, sqrt_d], name="qk_scale")
    mask = np.zeros((1, 1, 1, SEQ), dtype=np.float32)
    mask[..., SEQ - N_MASKED:] = FLOAT32_LOWEST
    scores = b.op1("Add", [scores, b.const("attention_mask", mask)], name="mask_add")
    probs = b.op1("Softmax", [scores], axis=-1)
    ctx = b.op1("MatMul", [probs, v], name="attn_v_matmul")                    # [N,H,S,D]
    ctx = b.op1("Transpose", [ctx], perm=[0, 2, 1, 3])                         # [N,S,H,D]
    ctx = b.op1("Reshape", [ctx, merge_shape], name="merge_heads")             # [N,S,HIDDEN]
    attn = b.matmul_add(ctx, HIDDEN, HIDDEN, prefix="o_proj")
    x1 = b.op1("Add", [x0, attn], name="residual_attn")
    h = b.layer_norm(x1, HIDDEN)
    h = b.gelu_erf(b.matmul_add(h, HIDDEN, 2 * HIDDEN, prefix="fc1"))
    h = b.matmul_add(h, 2 * HIDDEN, HIDDEN, prefix="fc2")
    b.op1("Add", [x1, h], out="output", name="residual_mlp")
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", SEQ, HIDDEN])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", SEQ, HIDDEN])
    return b.build([inp], [out],
                   "Pre-LN transformer encoder block, 2 heads, float32-lowest additive attention mask",
                   classifier=False)


def make_convtranspose() -> onnx.ModelProto:
    b = GraphBuilder("convtranspose")
    x = b.conv_bn_act("input", 3, 16, stride=2)                               # 16x16
    x = b.conv_bn_act(x, 16, 32, stride=2)                                    # 8x8
    x = b.relu(b.conv_transpose(x, 32, 16, k=4, stride=2, pad=1, bias=True))  # 16x16
    x = b.relu(b.conv_transpose(x, 16, 16, k=3, stride=1, pad=1, group=2))    # 16x16, group=2
    scales = b.const("resize_scales", np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32))
    x = b.op1("Resize", [x, "", scales], mode="nearest")                       # 32x32
    b.conv(x, 16, 2, k=3, out="output")
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 2, 32, 32])
    return b.build([image_input()], [out],
                   "Encoder convs, ConvTranspose (stride 2, bias; group=2), Resize(scales), final conv",
                   classifier=False)


MODELS: dict[str, tuple[Callable[[], onnx.ModelProto], str]] = {
    "conv_bn_relu.onnx": (make_conv_bn_relu,
                          "Conv->BatchNormalization->Relu x3 (conv with and without bias), GAP->Flatten->Gemm"),
    "residual.onnx": (make_residual,
                      "ResNet basic blocks: identity residual Add; stride-2 block with 1x1 conv+BN downsample shortcut"),
    "concat.onnx": (make_concat,
                    "Inception-like 1x1 / 3x3 / 1x1->3x3 branches Concat(axis=1) -> conv -> uneven Split(axis=1) "
                    "-> per-part conv -> Concat -> Add with the pre-split tensor"),
    "depthwise.onnx": (make_depthwise,
                       "MobileNet-style: depthwise conv (group=C), pointwise conv, depthwise with channel "
                       "multiplier 2 (group=C, out=2C), BN, Relu and Clip(0,6) (ReLU6)"),
    "grouped.onnx": (make_grouped, "Grouped convs group=2 and group=4, each with BN and Relu"),
    "se.onnx": (make_se,
                "Squeeze-excite: Conv->BN->HardSwish, GAP->Conv(reduce)->Relu->Conv(expand)->HardSigmoid->Mul"),
    "flatten_gemm.onnx": (make_flatten_gemm,
                          "LeNet head: conv->Relu->MaxPool->conv->Relu (16ch x 4x4) -> Flatten -> "
                          "Gemm(transB=1, bias) -> Relu -> Gemm; each conv channel maps to 16 Gemm weight columns"),
    "reshape_matmul.onnx": (make_reshape_matmul,
                            "Same LeNet features but flatten is Reshape(const [-1, 256]) -> MatMul(const W) + Add(bias)"),
    "mlp.onnx": (make_mlp,
                 "MLP on [N,64]: MatMul+Add->Relu->MatMul+Add->Gelu (x*0.5*(1+Erf(x/sqrt2)))->MatMul+Add"),
    "attention.onnx": (make_attention,
                       "Transformer encoder block on [N,16,32]: LayerNormalization, Q/K/V MatMul+Add, Reshape/Transpose "
                       "to 2 heads, QK^T, Div sqrt(d), additive mask with float32 lowest (-3.4028235e38), Softmax, "
                       "MatMul V, merge heads, out proj, residual Add, LayerNorm, MLP with Erf-Gelu, residual Add"),
    "convtranspose.onnx": (make_convtranspose,
                           "Conv encoder, ConvTranspose (stride 2, bias), ConvTranspose group=2, Resize (scales, "
                           "nearest), final conv; output [N,2,32,32] spatial map"),
}


# =========================================================================== checks


def _static_shape(vi: onnx.ValueInfoProto, batch: int) -> tuple[int, ...]:
    dims = vi.type.tensor_type.shape.dim
    return tuple(batch if d.dim_param == "N" else d.dim_value for d in dims)


def verify(model: onnx.ModelProto, name: str) -> None:
    """check_model(full_check=True), then run in onnxruntime with batch 1 and 3."""
    import onnxruntime as ort

    onnx.checker.check_model(model, full_check=True)
    inp = model.graph.input
    assert len(inp) == 1 and inp[0].name == "input", f"{name}: input must be called 'input'"
    assert inp[0].type.tensor_type.shape.dim[0].dim_param == "N", f"{name}: batch dim must be 'N'"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        x = rng.standard_normal(_static_shape(inp[0], batch)).astype(np.float32)
        outs = sess.run(None, {"input": x})
        for vi, y in zip(model.graph.output, outs):
            expected = _static_shape(vi, batch)
            assert y.shape == expected, f"{name}: output {vi.name} shape {y.shape} != {expected}"
            assert y.dtype == np.float32, f"{name}: output {vi.name} dtype {y.dtype}"
            assert np.isfinite(y).all(), f"{name}: output {vi.name} has non-finite values"
            assert float(np.abs(y).max()) > 0, f"{name}: output {vi.name} is all zeros"


def write_readme(out: Path) -> None:
    lines = [
        "# Graph fixtures",
        "",
        "Small synthetic ONNX models (random float32 weights, opset 17, IR version 8) used as test inputs",
        "for graph rewrites (pruning, quantization, folding). They are **not** trained: outputs are meaningless,",
        "only the graph structure matters.",
        "",
        "Regenerate (deterministic, byte-identical) with `python tools/make_graph_fixtures.py`;",
        "`python tools/make_graph_fixtures.py --check` verifies the committed files are up to date.",
        "",
        "All models: input `input` float32 with symbolic batch dim `N` (image models NCHW `[N,3,32,32]`,",
        "LeNet-style ones `[N,3,16,16]`), producer_name `onnxcomp-fixtures`, metadata_props `source`",
        "(and `labels` = `0,...,9` on the classifiers, whose output is `logits` `[N,10]`).",
        "Each file passes `onnx.checker.check_model(full_check=True)` and runs in onnxruntime.",
        "",
        "| file | input | output | patterns |",
        "| --- | --- | --- | --- |",
    ]
    for fname, (fn, desc) in MODELS.items():
        m = fn()
        ins = ", ".join(f"`{_fmt_vi(v)}`" for v in m.graph.input)
        outs = ", ".join(f"`{_fmt_vi(v)}`" for v in m.graph.output)
        lines.append(f"| `{fname}` | {ins} | {outs} | {desc} |")
    lines.append("")
    (out / "README.md").write_text("\n".join(lines))


def _fmt_vi(vi: onnx.ValueInfoProto) -> str:
    dims = [d.dim_param or str(d.dim_value) for d in vi.type.tensor_type.shape.dim]
    return f"{vi.name} [{','.join(dims)}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--check", action="store_true",
                    help="do not write; fail if the files in --out differ from freshly built ones")
    ap.add_argument("--only", nargs="*", default=None, help="build only these file names")
    args = ap.parse_args(argv)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stale = []
    for fname, (fn, _desc) in MODELS.items():
        if args.only and fname not in args.only and fname.removesuffix(".onnx") not in args.only:
            continue
        model = fn()
        verify(model, fname)
        data = model.SerializeToString()
        path = out / fname
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(fname)
            status = "stale" if fname in stale else "ok"
        else:
            path.write_bytes(data)
            status = "written"
        ops = sorted({n.op_type for n in model.graph.node})
        print(f"{fname:22s} {len(data):7d} bytes  {len(model.graph.node):3d} nodes  {status}  ops={','.join(ops)}")
    if args.check:
        if stale:
            print("stale fixtures: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    if not args.only:
        write_readme(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
