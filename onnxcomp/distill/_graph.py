"""The label graph: soft-label post-processing appended to the teacher, run by ONNX Runtime.

Per batch the teacher's tapped logits ``z`` (``[batch, classes]``) become, inside
the same ONNX Runtime session (no per-batch numpy math over all classes):

*dense* ``logp = Cast(LogSoftmax(Cast(z, double)), dense dtype)``, i.e.
``log p_c = z_c - log sum_j exp(z_j)`` in float64, as :func:`._label.log_softmax`;

*top-k* with ``zf`` = ``z`` as float32 (float64 kept), ``m = max_c zf_c``,
``e = exp(zf - m)`` at ``zf``'s precision and ``S = sum_c e_c`` in float64:

    values, index = TopK(zf, K)                  (sorted, ties by lower index)
    logp          = Cast((values - m) - log S, float16)        (float64 math)
    tail          = Cast(sum_c ScatterElements(e, index, 0)_c / S, float32)

The tail is the direct float64 sum of the probabilities outside the top K (the
top entries are zeroed, not subtracted, so nothing cancels), exactly what
:func:`._label.topk_from_logits` computes in numpy. ``K = min(k, classes)``
in-graph, so probing a sample never fails on a too-large k (the plan refuses it).

Scores are first reshaped to ``[-1, last dim]`` (rank 0 becomes ``[1, 1]``), so
the appended nodes run on any output the teacher may produce; the planner still
validates the tapped tensor itself. Needs default-domain opset >= 13 (reduction
axes as inputs, integer ``Min``); older teachers use the numpy path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxcomp import io
from onnxcomp.runtime import expose_outputs

__all__ = ["MIN_OPSET", "LabelGraph", "build_label_graph", "supports_label_graph"]

MIN_OPSET = 13
_PREFIX = "onnxcomp_distill__"


@dataclass(frozen=True)
class LabelGraph:
    """A teacher copy with the label outputs, and their names."""

    model: ir.Model
    shape: str
    logp: str
    index: str | None
    tail: str | None

    @property
    def outputs(self) -> list[str]:
        """The label outputs: the tapped tensor's shape, log-probs, then index and tail."""
        return [n for n in (self.shape, self.logp, self.index, self.tail) if n is not None]


def supports_label_graph(model: ir.Model) -> bool:
    """Whether the teacher's opset allows the appended nodes."""
    return model.opset_imports.get("", 1) >= MIN_OPSET


class _Builder:
    def __init__(self, graph: ir.Graph, opset: int) -> None:
        self.graph = graph
        self.opset = opset
        self.names = {str(v.name) for v in ir.convenience.create_value_mapping(graph).values()}
        self.names |= {str(n.name) for n in graph if n.name}
        self.count = 0

    def _name(self, hint: str) -> str:
        while True:
            self.count += 1
            name = f"{_PREFIX}{hint}_{self.count}"
            if name not in self.names:
                self.names.add(name)
                return name

    def op(
        self,
        op_type: str,
        inputs: Sequence[ir.Value],
        attrs: Sequence[ir.Attr] = (),
        *,
        outputs: int = 1,
        hint: str | None = None,
    ) -> list[ir.Value]:
        node = ir.Node(
            "", op_type, list(inputs), list(attrs), num_outputs=outputs, name=self._name(op_type)
        )
        for v in node.outputs:
            v.name = self._name(hint or op_type.lower())
        self.graph.append(node)
        return list(node.outputs)

    def const(self, array: np.ndarray, hint: str = "const") -> ir.Value:
        return self.op("Constant", [], [ir.AttrTensor("value", ir.tensor(array))], hint=hint)[0]

    def cast(self, x: ir.Value, to: ir.DataType) -> ir.Value:
        return self.op("Cast", [x], [ir.AttrInt64("to", to)])[0]

    def reduce_last(self, op_type: str, x: ir.Value, keepdims: int) -> ir.Value:
        """``op_type`` over the last axis (axes as input from the op's new-style opset)."""
        new_style = 18 if op_type == "ReduceMax" else 13
        keep = ir.AttrInt64("keepdims", keepdims)
        if self.opset >= new_style:
            axes = self.const(np.array([-1], np.int64), "axes")
            return self.op(op_type, [x, axes], [keep])[0]
        return self.op(op_type, [x], [keep, ir.AttrInt64s("axes", [-1])])[0]


def build_label_graph(
    model: ir.Model,
    tapped: str,
    top_k: int | None,
    *,
    dense_dtype: str = "float32",
    features: Sequence[str] = (),
) -> LabelGraph:
    """A copy of ``model`` that also outputs the tapped tensor, features and label arrays.

    Args:
        model: The teacher (not modified).
        tapped: Name of the logits tensor.
        top_k: K of top-k mode, or None for dense log-probs.
        dense_dtype: ``float32`` or ``float16`` (dense mode).
        features: Intermediate tensors also exposed.
    """
    copy = expose_outputs(model, [tapped, *features])
    graph = copy.graph
    # only what labelling reads: the original outputs' own heads (Softmax) become dead
    keep = {tapped, *features}
    kept = [v for v in graph.outputs if str(v.name) in keep]
    graph.outputs.clear()
    graph.outputs.extend(kept)
    RemoveUnusedNodesPass()(copy)
    values = ir.convenience.create_value_mapping(graph)
    z = values[tapped]
    if z.shape is None:  # a known [batch, classes] spares the reshape and K nodes
        copy = io.infer_shapes(copy)
        graph = copy.graph
        values = ir.convenience.create_value_mapping(graph)
        z = values[tapped]
    b = _Builder(graph, copy.opset_imports.get("", 1))
    dims = None if z.shape is None else list(z.shape)
    classes = dims[-1] if dims and isinstance(dims[-1], int) else None
    last: ir.Value | None = None
    if dims is not None and len(dims) == 2:
        z2 = z
    else:  # [-1, last dim]; Concat([1], Shape(z)) keeps a last dim for rank 0
        padded = b.op(
            "Concat", [b.const(np.array([1], np.int64)), b.op("Shape", [z])[0]],
            [ir.AttrInt64("axis", 0)],
        )[0]
        last = b.op(
            "Slice",
            [
                padded,
                b.const(np.array([-1], np.int64)),
                b.const(np.array([np.iinfo(np.int64).max], np.int64)),
            ],
        )[0]
        shape2 = b.op(
            "Concat", [b.const(np.array([-1], np.int64)), last], [ir.AttrInt64("axis", 0)]
        )[0]
        z2 = b.op("Reshape", [z, shape2])[0]
    zshape = b.op("Shape", [z], hint="shape")[0]
    zshape.dtype = ir.DataType.INT64
    graph.outputs.append(zshape)
    is_double = z.dtype == ir.DataType.DOUBLE
    zf = z2 if is_double or z.dtype == ir.DataType.FLOAT else b.cast(z2, ir.DataType.FLOAT)
    if top_k is None:
        logp = b.op("LogSoftmax", [zf], [ir.AttrInt64("axis", -1)])[0]
        want = ir.DataType.FLOAT16 if dense_dtype == "float16" else ir.DataType.FLOAT
        if is_double or want != ir.DataType.FLOAT:
            logp = b.cast(logp, want)
        logp.name = b._name("logp")
        logp.dtype = want if is_double or want != ir.DataType.FLOAT else zf.dtype or want
        graph.outputs.append(logp)
        return LabelGraph(copy, str(zshape.name), str(logp.name), None, None)
    if classes is not None:
        k = b.const(np.array([min(top_k, classes)], np.int64), "k")
    else:
        if last is None:
            shape = b.op("Shape", [z])[0]
            last = b.op(
                "Slice",
                [shape, b.const(np.array([-1], np.int64)), b.const(np.array([2], np.int64))],
            )[0]
        k = b.op("Min", [b.const(np.array([top_k], np.int64)), last])[0]
    values_k, index = b.op(
        "TopK",
        [zf, k],
        [ir.AttrInt64("axis", -1), ir.AttrInt64("largest", 1), ir.AttrInt64("sorted", 1)],
        outputs=2,
    )
    # the row maximum is the first top value
    m = b.op(
        "Slice",
        [
            values_k,
            b.const(np.array([0], np.int64)),
            b.const(np.array([1], np.int64)),
            b.const(np.array([-1], np.int64)),
        ],
    )[0]
    e = b.op("Exp", [b.op("Sub", [zf, m])[0]])[0]  # at the logits' precision
    zeros = b.op(
        "ConstantOfShape",
        [b.op("Shape", [index])[0]],
        [ir.AttrTensor("value", ir.tensor(np.zeros(1, np.float64 if is_double else np.float32)))],
    )[0]
    rest = b.op("ScatterElements", [e, index, zeros], [ir.AttrInt64("axis", -1)])[0]
    rest_d = rest if is_double else b.cast(rest, ir.DataType.DOUBLE)
    tail_sum = b.reduce_last("ReduceSum", rest_d, keepdims=1)
    top_e = b.op("GatherElements", [e, index], [ir.AttrInt64("axis", -1)])[0]
    top_e = top_e if is_double else b.cast(top_e, ir.DataType.DOUBLE)
    top_sum = b.reduce_last("ReduceSum", top_e, keepdims=1)
    # log p of the top K from the exact float64 differences ([N, K] only)
    vd = values_k if is_double else b.cast(values_k, ir.DataType.DOUBLE)
    md = m if is_double else b.cast(m, ir.DataType.DOUBLE)
    top_d = b.op("Sub", [vd, md])[0]
    total = b.op("Add", [tail_sum, top_sum])[0]
    logp = b.cast(b.op("Sub", [top_d, b.op("Log", [total])[0]])[0], ir.DataType.FLOAT16)
    tail = b.cast(b.op("Div", [tail_sum, total])[0], ir.DataType.FLOAT)
    for v, hint, dt in (
        (logp, "logp", ir.DataType.FLOAT16),
        (index, "index", ir.DataType.INT64),
        (tail, "tail", ir.DataType.FLOAT),
    ):
        v.name = b._name(hint)
        v.dtype = dt
        graph.outputs.append(v)
    return LabelGraph(copy, str(zshape.name), str(logp.name), str(index.name), str(tail.name))
