"""Which nodes stay in float, and why (the quantization plan).

Rules, applied to the prepared model and its calibrated ranges:

* user exclusions: ``--exclude`` entries match a node name exactly, as an
  ``fnmatch`` pattern, or an op type;
* huge ranges (pitfall 4): a tensor with ``max(|lo|, |hi|) > limit`` (e.g. an
  additive attention mask of float32 lowest, -3.4e38) cannot share 256 levels
  with anything useful: its producer and consumers stay float; so does a node
  with a constant float input beyond the limit;
* mixed Concat outputs (pitfall 5): a Concat that reaches a graph output
  through layout-only ops, whose inputs' magnitudes ``max(|lo|, |hi|)`` differ by
  more than ``concat_ratio``, stays float (with those layout ops), so that each
  input keeps its own scale instead of one shared scale erasing the small one;
* non-finite activations seen at calibration: the producer stays float;
* grouped ConvTranspose with per-channel weights (ONNX Runtime picks the wrong axis);
* probabilities and attention (measured on an SVTR text recognizer: output
  cosine 0.77 with them quantized): a Softmax reaching a graph output (255 u8
  levels cannot hold probabilities spread over thousands of classes), the
  attention core (MatMul of two activations, e.g. ``Q K^T`` and ``A V``, whose
  u8 x u8 products lose the score differences) with its Softmax, and the nodes
  fed by normalization statistics (``ReduceMean``/``Pow``/``Sqrt``/``Div``/
  ``Reciprocal`` of a decomposed LayerNorm), whose ranges differ by orders of
  magnitude from the activations around them;
* affine elementwise ops (``float_affine``): an Add/Mul/Sub/Div with a
  constant operand (a bias or a per-channel scale left unfolded, e.g.
  PP-LCNetV3's learnable affine blocks) does no arithmetic worth int8, and each
  quantized one adds a u8 rounding of the whole activation: on that SVTR
  recognizer, keeping them float lifts the output cosine from 0.77 to 0.95 at
  the same latency.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcomp.quantize._collectors import Range

__all__ = ["Exclusion", "name_nodes", "plan_exclusions"]

_LAYOUT_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


@dataclass(frozen=True)
class Exclusion:
    """A node kept in float."""

    node: str
    op_type: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"node": self.node, "op_type": self.op_type, "reason": self.reason}


def name_nodes(model: ir.Model) -> int:
    """Give every unnamed main-graph node a unique name (ONNX Runtime excludes nodes by name)."""
    taken = {n.name for n in model.graph if n.name}
    named = 0
    for i, node in enumerate(model.graph):
        if node.name:
            continue
        base = f"{node.op_type}_{i}"
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        node.name = name
        taken.add(name)
        named += 1
    return named


def _mag(r: Range) -> float:
    return max(abs(r.lo), abs(r.hi))


def plan_exclusions(
    model: ir.Model,
    ranges: Mapping[str, Range],
    *,
    exclude: Iterable[str] = (),
    limit: float = 1e6,
    concat_ratio: float = 8.0,
    nonfinite: Iterable[str] = (),
    per_channel: bool = True,
    float_affine: bool = True,
) -> list[Exclusion]:
    """The nodes to keep in float, each with its reason (first reason wins)."""
    out: dict[str, Exclusion] = {}

    def add(node: ir.Node, reason: str) -> None:
        if node.name and node.name not in out:
            out[node.name] = Exclusion(node.name, node.op_type, reason)

    patterns = list(exclude)
    for node in model.graph:
        for p in patterns:
            if node.name == p or fnmatch.fnmatchcase(node.name or "", p) or node.op_type == p:
                add(node, f"--exclude {p}")
                break
    for node in model.graph:
        if per_channel and node.op_type == "ConvTranspose":
            g = node.attributes.get("group")
            if g is not None and g.as_int() > 1:
                # ONNX Runtime 1.32 computes per-channel scales of grouped ConvTranspose on the
                # wrong axis and fails; keep it float rather than guess
                add(
                    node,
                    "grouped ConvTranspose: ONNX Runtime cannot quantize its weights per channel",
                )
    for node in model.graph:
        for v in node.inputs:
            if v is None or v.const_value is None:
                continue
            if v.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16) or v.const_value.size == 0:
                continue
            if v.const_value.size > 1_000_000:
                continue
            arr = v.const_value.numpy()
            if float(np.max(np.abs(arr.astype(np.float64)))) > limit:
                add(node, f"constant input {v.name} holds values beyond +-{limit:g} (mask-like)")
    values = ir.convenience.create_value_mapping(model.graph)
    for name, r in ranges.items():
        if _mag(r) <= limit:
            continue
        v = values.get(name)
        if v is None:
            continue
        why = f"tensor {name} spans [{r.lo:.3g}, {r.hi:.3g}] (beyond +-{limit:g}, mask-like)"
        if v.producer() is not None:
            add(v.producer(), why)  # type: ignore[arg-type]
        for user in v.consumers():
            add(user, why)
    for name in nonfinite:
        v = values.get(name)
        if v is not None and v.producer() is not None:
            add(v.producer(), f"tensor {name} had NaN/inf values at calibration")  # type: ignore[arg-type]
    _sensitive_structures(model, add)
    if float_affine:
        for node in model.graph:
            if node.op_type in ("Add", "Mul", "Sub", "Div") and any(
                v is not None and not _is_activation(v) for v in node.inputs
            ):
                add(node, "affine elementwise op with a constant operand (nothing to gain in int8)")
    for node in model.graph:
        if node.op_type != "Concat" or not node.outputs:
            continue
        chain = _reaches_output(node.outputs[0])
        if chain is None:
            continue
        mags = [_mag(ranges[v.name]) for v in node.inputs if v is not None and v.name in ranges]
        mags = [m for m in mags if m > 0]
        if len(mags) < 2 or max(mags) / min(mags) <= concat_ratio:
            continue
        why = (
            f"Concat feeding graph output of inputs with magnitudes {min(mags):.3g}..{max(mags):.3g} "
            f"(ratio {max(mags) / min(mags):.1f} > {concat_ratio:g}); one shared scale would erase the small ones"
        )
        add(node, why)
        for n in chain:
            add(n, why)
    return list(out.values())


def _reaches_output(v: ir.Value) -> list[ir.Node] | None:
    """Layout-only nodes between ``v`` and a graph output, or None if it does not reach one."""
    chain: list[ir.Node] = []
    cur = v
    for _ in range(8):
        if cur.is_graph_output():
            return chain
        users = cur.consumers()
        if len(users) != 1 or users[0].op_type not in _LAYOUT_OPS:
            return None
        chain.append(users[0])
        cur = users[0].outputs[0]
    return None


_STAT_OPS = {"ReduceMean", "Pow", "Sqrt", "Div", "Reciprocal", "ReduceSumSquare", "ReduceL2"}


def _is_activation(v: ir.Value | None) -> bool:
    return v is not None and v.const_value is None and not v.is_initializer()


def _sensitive_structures(model: ir.Model, add: Callable[[ir.Node, str], None]) -> None:
    """Final Softmax, attention cores and normalization statistics stay float."""
    for node in model.graph:
        if node.op_type == "Softmax" and node.outputs:
            if _reaches_output(node.outputs[0]) is not None:
                add(node, "Softmax output reaches a graph output (probabilities need float)")
    for node in model.graph:
        if node.op_type != "MatMul" or len(node.inputs) < 2:
            continue
        if not (_is_activation(node.inputs[0]) and _is_activation(node.inputs[1])):
            continue
        why = "attention core: MatMul of two activations (and its Softmax) kept float"
        add(node, why)
        for v in node.inputs:
            p = v.producer() if v is not None else None
            if p is not None and p.op_type == "Softmax":
                add(p, why)
        for user in node.outputs[0].consumers():
            if user.op_type == "Softmax":
                add(user, why)
    for node in model.graph:
        if node.op_type not in _STAT_OPS or not node.outputs:
            continue
        for user in node.outputs[0].consumers():
            add(user, f"consumes normalization statistics ({node.op_type} {node.name})")
