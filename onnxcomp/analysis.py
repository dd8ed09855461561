"""Model statistics: parameters, MACs per op, op histogram (``onnxcomp inspect``).

Multiply-accumulates (MACs) per node, from inferred shapes:

* Conv / ConvInteger / QLinearConv: ``prod(Y.shape) * prod(W.shape[1:])``
  (``W.shape[1] = Cin / group``)
* ConvTranspose: ``prod(X.shape) * prod(W.shape[1:])`` (``W`` is ``[Cin, Cout/g, k...]``)
* Gemm: ``M * N * K``; MatMul / MatMulInteger / QLinearMatMul:
  ``prod(Y.shape) * K`` with ``K`` the last dim of ``A``.

Dynamic dims are fixed from user shapes; a remaining dynamic axis 0 is taken
as batch 1 (and reported as an assumption). Nodes whose shapes stay unknown
are listed, their MACs not guessed.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx_ir as ir

from onnxcomp import io

__all__ = ["LayerInfo", "ModelInfo", "TensorInfo", "count_macs", "inspect_model", "node_macs"]

logger = logging.getLogger(__name__)

MAC_OPS = (
    "Conv",
    "ConvInteger",
    "QLinearConv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "MatMulInteger",
    "QLinearMatMul",
)
_WEIGHT_INDEX = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
_MATMUL_A = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str | None] | None


@dataclass(frozen=True)
class LayerInfo:
    name: str
    op_type: str
    macs: int | None
    params: int


@dataclass
class ModelInfo:
    """Everything ``inspect`` reports about a model."""

    path: str | None
    file_size: int | None
    ir_version: int
    opsets: dict[str, int]
    producer: str
    producer_version: str
    metadata: dict[str, str]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    params: int
    params_bytes: int
    constant_node_params: int
    nodes: int
    op_histogram: dict[str, int]
    macs: int
    macs_by_op: dict[str, int]
    unknown_mac_nodes: list[str]
    assumptions: list[str]
    largest_layers: list[LayerInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shape_list(shape: ir.Shape | None) -> list[int | str | None] | None:
    if shape is None:
        return None
    return [d if isinstance(d, int) else (d.value or None) for d in shape]


def _tensor_info(v: ir.Value, opaque: Mapping[str, str] | None = None) -> TensorInfo:
    dtype = v.dtype.name.lower() if v.dtype is not None else (opaque or {}).get(str(v.name), "?")
    return TensorInfo(str(v.name), dtype, _shape_list(v.shape))


def _static(shape: ir.Shape | None) -> tuple[int, ...] | None:
    if shape is None:
        return None
    dims = []
    for d in shape:
        if not isinstance(d, int):
            return None
        dims.append(d)
    return tuple(dims)


def _input_shape(node: ir.Node, i: int) -> tuple[int, ...] | None:
    if i >= len(node.inputs) or node.inputs[i] is None:
        return None
    v = node.inputs[i]
    assert v is not None
    if v.const_value is not None:
        return tuple(v.const_value.shape.numpy())
    return _static(v.shape)


def node_macs(node: ir.Node) -> int | None:
    """MACs of one node from its (inferred) shapes; None when unknown.

    Returns 0 for ops that are not counted.
    """
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in MAC_OPS:
        return 0
    out = _static(node.outputs[0].shape) if node.outputs else None
    if op in _WEIGHT_INDEX:
        w = _input_shape(node, _WEIGHT_INDEX[op])
        if w is None:
            return None
        if op == "ConvTranspose":
            x = _input_shape(node, 0)
            return None if x is None else math.prod(x) * math.prod(w[1:])
        return None if out is None else math.prod(out) * math.prod(w[1:])
    if op == "Gemm":
        a = _input_shape(node, 0)
        if a is None or out is None or len(a) != 2:
            return None
        trans_a = node.attributes.get_int("transA", 0)
        k = a[0] if trans_a else a[1]
        return math.prod(out) * k
    a = _input_shape(node, _MATMUL_A[op])
    if a is None or out is None or not a:
        return None
    return math.prod(out) * a[-1]


def count_macs(model: ir.Model) -> tuple[int, dict[str, int], dict[str, int | None], list[str]]:
    """MACs of a model whose shapes are already inferred.

    Returns:
        ``(total, by_op_type, by_node_name, unknown_node_names)``
    """
    total = 0
    by_op: Counter[str] = Counter()
    by_node: dict[str, int | None] = {}
    unknown: list[str] = []
    for node in model.graph:
        m = node_macs(node)
        if node.op_type in MAC_OPS:
            by_node[str(node.name)] = m
        if m is None:
            unknown.append(f"{node.name or '?'} ({node.op_type})")
            continue
        if m:
            total += m
            by_op[node.op_type] += m
    return total, dict(by_op.most_common()), by_node, unknown


def shaped_copy(
    model: ir.Model, shapes: Mapping[str, Sequence[int]] | None = None
) -> tuple[ir.Model, list[str]]:
    """A copy with fixed input dims (batch 1 assumed) and inferred shapes.

    Returns:
        The copy and the assumptions made (e.g. dims set to 1).
    """
    copy = model.clone()
    if shapes:
        io.fix_input_shapes(copy, shapes)
    assumptions = []
    for v in io.graph_inputs(copy):
        if v.shape is None or not len(v.shape):
            continue
        d0 = v.shape[0]
        if not isinstance(d0, int) and all(isinstance(d, int) for d in list(v.shape)[1:]):
            dims = [1, *list(v.shape)[1:]]
            v.shape = ir.Shape(dims)
            assumptions.append(f"input {v.name!r}: dynamic axis 0 ({d0}) taken as 1")
    io.lift_constant_tensors(copy)
    copy = io.infer_shapes(copy)
    _runtime_shapes(copy)
    return copy, assumptions


def _runtime_shapes(model: ir.Model) -> None:
    """Fill shapes that static inference missed by one ONNX Runtime run on zeros.

    Only when some MAC node lacks shapes and every input is fully static.
    """
    missing: list[ir.Value] = []
    for node in model.graph:
        if node.op_type in MAC_OPS and node_macs(node) is None:
            for v in (*node.inputs, *node.outputs):
                if v is not None and v.const_value is None and _static(v.shape) is None:
                    missing.append(v)
    if not missing:
        return
    inputs = io.graph_inputs(model)
    feeds: dict[str, Any] = {}
    for v in inputs:
        shape = _static(v.shape)
        if shape is None or v.dtype is None:
            return
        import numpy as np

        feeds[str(v.name)] = np.zeros(shape, dtype=v.dtype.numpy())
    from onnxcomp.runtime import create_session, expose_outputs

    names = list(dict.fromkeys(str(v.name) for v in missing if v.name))
    try:
        session = create_session(expose_outputs(model, names), optimize=False)
        outs = session.run(names, feeds)
    except Exception as e:  # shapes stay unknown; inspect reports those nodes
        logger.info("runtime shape discovery failed: %s", e)
        return
    by_name = {str(v.name): v for v in missing}
    for name, arr in zip(names, outs):
        by_name[name].shape = ir.Shape(list(arr.shape))


def count_params(model: ir.Model) -> tuple[int, int, int]:
    """``(parameters, bytes, of_which_in_constant_nodes)`` over all graphs."""
    params = 0
    nbytes = 0
    for graph in model.graphs():
        for v in graph.initializers.values():
            if v.const_value is not None:
                params += v.const_value.size
                nbytes += v.const_value.nbytes
    const_params = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.domain == "ai.onnx.ml":
            # classic ML operators keep their weights (coefficients, tree thresholds and
            # leaf values) in float attributes
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.FLOATS:
                    params += len(attr.value)
                    nbytes += 4 * len(attr.value)
                elif attr.type == ir.AttributeType.TENSOR:
                    params += attr.as_tensor().size
                    nbytes += attr.as_tensor().nbytes
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            attr = node.attributes.get("value")
            if attr is not None and attr.type == ir.AttributeType.TENSOR:
                t = attr.as_tensor()
                const_params += t.size
                nbytes += t.nbytes
    return params + const_params, nbytes, const_params


def inspect_model(
    model: ir.Model,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    top: int = 10,
) -> ModelInfo:
    """Collect the statistics of ``inspect``.

    Args:
        model: The model (it is not modified).
        shapes: Fixed sizes for dynamic input dims, used for MACs.
        top: How many of the largest layers (by MACs, then params) to list.
    """
    src = io.source_path(model)
    opaque = io.opaque_types(model)
    params, nbytes, const_params = count_params(model)
    hist = Counter(
        (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}")
        for n in ir.traversal.RecursiveGraphIterator(model.graph)
    )
    shaped, assumptions = shaped_copy(model, shapes)
    macs, by_op, _, unknown = count_macs(shaped)
    layers = []
    for node in shaped.graph:
        if node.op_type == "Constant":
            continue
        p = sum(
            v.const_value.size
            for v in node.inputs
            if v is not None and v.const_value is not None and v.is_initializer()
        )
        m = node_macs(node)
        if p or m:
            layers.append(LayerInfo(str(node.name), node.op_type, m, int(p)))
    layers.sort(key=lambda layer: (layer.macs or 0, layer.params), reverse=True)
    return ModelInfo(
        path=str(src) if src else None,
        file_size=io.file_size(src) if src else None,
        ir_version=model.ir_version,
        opsets={k or "ai.onnx": v for k, v in model.opset_imports.items()},
        producer=model.producer_name or "",
        producer_version=model.producer_version or "",
        metadata={k: v for k, v in model.metadata_props.items() if k != io.OPAQUE_TYPES_KEY},
        inputs=[_tensor_info(v, opaque) for v in io.graph_inputs(model)],
        outputs=[_tensor_info(v, opaque) for v in model.graph.outputs],
        params=int(params),
        params_bytes=int(nbytes),
        constant_node_params=int(const_params),
        nodes=sum(hist.values()),
        op_histogram=dict(hist.most_common()),
        macs=int(macs),
        macs_by_op=by_op,
        unknown_mac_nodes=unknown,
        assumptions=assumptions,
        largest_layers=layers[:top],
    )
