"""Model preparation for quantization (works where ``quant_pre_process`` fails).

Steps, each on a copy:

1. ``Constant``-node tensors become initializers (PaddlePaddle-style exports).
2. Input dims are fixed from ``--shape`` (or from the first sample on request);
   no symbolic shape inference is involved, so dynamic dims are no obstacle:
   element types missing after ONNX shape inference are filled in later from
   the tensors observed at calibration.
3. BatchNormalization folding into the preceding Conv. With
   ``s = gamma / sqrt(var + eps)`` per output channel ``c``::

       W'[c] = W[c] * s[c]        b'[c] = (b[c] - mean[c]) * s[c] + beta[c]

   so ``BN(Conv(x, W, b)) == Conv(x, W', b')`` exactly (up to float rounding).
4. onnxsim simplification (skipped with a warning when it fails).
5. Opset: QDQ needs opset >= 10 and per-channel DequantizeLinear (``axis``)
   needs opset >= 13. Older models are converted with the ONNX version
   converter and checked; when that fails, per-channel falls back to per-tensor
   (reported), or the model is refused when even opset 10 cannot be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcomp import io
from onnxcomp.errors import UnsupportedModelError

__all__ = ["PrepareConfig", "Prepared", "fold_batchnorm", "opset_of", "prepare"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    """Options of :func:`prepare`."""

    shapes: Mapping[str, Sequence[int]] | None = None
    onnxsim: bool = True
    fold_bn: bool = True
    per_channel: bool = True
    min_opset: int = 10


@dataclass
class Prepared:
    """The prepared model and what preparation did."""

    model: ir.Model
    per_channel: bool
    opset_before: int
    opset_after: int
    folded_bn: list[str] = field(default_factory=list)
    simplified: bool = False
    warnings: list[str] = field(default_factory=list)


def opset_of(model: ir.Model) -> int:
    return int(model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1)))


def _const(v: ir.Value | None) -> np.ndarray | None:
    if v is None:
        return None
    t = ir.convenience.get_const_tensor(v) if v.const_value is None else v.const_value
    return None if t is None else t.numpy()


def fold_batchnorm(model: ir.Model) -> list[str]:
    """Fold ``Conv -> BatchNormalization`` pairs (Conv output used once). Returns folded BN names."""
    graph = model.graph
    folded: list[str] = []
    for bn in list(graph):
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
            continue
        if len(bn.outputs) > 1 and any(o.uses() for o in bn.outputs[1:]):
            continue
        x = bn.inputs[0]
        conv = x.producer() if x is not None else None
        if conv is None or conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
            continue
        if len(x.uses()) != 1 or x.is_graph_output():
            continue
        params = [_const(v) for v in bn.inputs[1:5]]
        w = _const(conv.inputs[1])
        if w is None or any(p is None for p in params):
            continue
        b = _const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
        gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)  # type: ignore[arg-type]
        eps = bn.attributes["epsilon"].as_float() if "epsilon" in bn.attributes else 1e-5
        s = gamma / np.sqrt(var + eps)
        if s.shape[0] != w.shape[0]:
            continue
        w_new = (w.astype(np.float64) * s.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
        b0 = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
        b_new = ((b0 - mean) * s + beta).astype(w.dtype)
        name = conv.name or "conv"
        wv = ir.Value(name=f"{name}_W_bnfold", const_value=ir.tensor(w_new))
        bv = ir.Value(name=f"{name}_B_bnfold", const_value=ir.tensor(b_new))
        for v, arr in ((wv, w_new), (bv, b_new)):
            v.dtype = ir.DataType.from_numpy(arr.dtype)
            v.shape = ir.Shape(arr.shape)
            graph.register_initializer(v)
        conv.replace_input_with(1, wv)
        if len(conv.inputs) > 2:
            conv.replace_input_with(2, bv)
        else:
            conv.resize_inputs(3)
            conv.replace_input_with(2, bv)
        out = bn.outputs[0]
        x.shape = out.shape or x.shape
        ir.convenience.replace_all_uses_with(out, x)
        if out.is_graph_output():
            idx = [i for i, o in enumerate(graph.outputs) if o is out]
            for i in idx:
                graph.outputs[i] = x
            old_name = out.name
            out.name = f"{old_name}_bn_removed"
            x.name = old_name
        graph.remove(bn, safe=True)
        folded.append(bn.name or "BatchNormalization")
    if folded:
        _drop_unused_initializers(model)
    return folded


def fold_constant_of_shape(model: ir.Model) -> int:
    """Turn ``ConstantOfShape`` nodes with a constant shape into initializers.

    Old exports (the onnx package's light models) make every weight this way;
    ONNX Runtime's quantizer only quantizes weights that are initializers.
    """
    graph = model.graph
    count = 0
    for node in list(graph):
        if node.op_type != "ConstantOfShape" or node.domain not in ("", "ai.onnx"):
            continue
        out = node.outputs[0]
        shape = _const(node.inputs[0] if node.inputs else None)
        if shape is None or out.is_graph_output() or not out.name:
            continue
        attr = node.attributes.get("value")
        fill = (
            np.asarray(attr.as_tensor().numpy()).reshape(-1)[:1]
            if attr is not None
            else np.zeros(1, np.float32)
        )
        arr = np.full(tuple(int(d) for d in shape.reshape(-1)), fill[0], dtype=fill.dtype)
        tensor = ir.tensor(arr, name=out.name)
        init = ir.Value(
            name=out.name, shape=tensor.shape, type=ir.TensorType(tensor.dtype), const_value=tensor
        )
        graph.register_initializer(init)
        out.replace_all_uses_with(init)
        graph.remove(node, safe=True)
        count += 1
    return count


def float16_to_float32(model: ir.Model) -> bool:
    """Compute in float32 inside a float16 model; its inputs and outputs stay float16.

    ONNX Runtime's int8 kernels take float32 scales (float16 ones make an invalid
    model before opset 19) and its CPU kernels are float32: weights and Cast/
    ConstantOfShape targets become float32, and Casts at the float16 inputs and
    outputs keep the model's interface. Returns whether anything changed.
    """
    graph = model.graph
    f16, f32 = ir.DataType.FLOAT16, ir.DataType.FLOAT
    changed = False
    for name, v in list(graph.initializers.items()):
        if v.const_value is not None and v.const_value.dtype == f16:
            v.const_value = ir.tensor(v.const_value.numpy().astype(np.float32), name=name)
            v.type = ir.TensorType(f32)
            changed = True
    for node in ir.traversal.RecursiveGraphIterator(graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        to = node.attributes.get("to")
        if node.op_type == "Cast" and to is not None and to.value == f16:
            node.attributes["to"] = ir.AttrInt64("to", int(f32))
            changed = True
        value = node.attributes.get("value")
        if node.op_type == "ConstantOfShape" and value is not None:
            t = value.as_tensor()
            if t.dtype == f16:
                node.attributes["value"] = ir.AttrTensor(
                    "value", ir.tensor(t.numpy().astype(np.float32))
                )
                changed = True
    inputs = [v for v in graph.inputs if v.dtype == f16 and not v.is_initializer()]
    outputs = [(i, v) for i, v in enumerate(graph.outputs) if v.dtype == f16]
    if not (changed or inputs or outputs):
        return False
    for x in inputs:
        uses = list(x.uses())
        cast = ir.Node(
            "", "Cast", [x], attributes=[ir.AttrInt64("to", int(f32))], name=f"{x.name}__to_float32"
        )
        inner = cast.outputs[0]
        inner.name, inner.type, inner.shape = f"{x.name}__float32", ir.TensorType(f32), x.shape
        if len(graph):
            graph.insert_before(graph.node(0), cast)
        else:
            graph.append(cast)
        for use in uses:
            use.node.replace_input_with(use.idx, inner)
    for i, y in outputs:
        name = y.name
        y.name = f"{name}__float32"
        cast = ir.Node(
            "", "Cast", [y], attributes=[ir.AttrInt64("to", int(f16))], name=f"{name}__to_float16"
        )
        out = cast.outputs[0]
        out.name, out.type, out.shape = name, ir.TensorType(f16), y.shape
        graph.append(cast)
        graph.outputs[i] = out
    for node in ir.traversal.RecursiveGraphIterator(graph):
        if node.name and node.name.endswith("__to_float16"):
            continue
        for v in node.outputs:
            if v.dtype == f16:
                v.type = ir.TensorType(f32)
    return True


def modernize_ir(model: ir.Model) -> None:
    """IR < 4 lists every initializer as a graph input too; new initializers then fail the checker.

    Those inputs are dropped (nobody feeds weights) and the IR version raised to
    what the opsets need.
    """
    import onnx

    graph = model.graph
    if model.ir_version < 4:
        keep = [v for v in graph.inputs if not v.is_initializer()]
        if len(keep) != len(graph.inputs):
            graph.inputs.clear()
            graph.inputs.extend(keep)
    need = onnx.helper.find_min_ir_version_for(
        [onnx.helper.make_opsetid(d, v) for d, v in model.opset_imports.items()], True
    )
    model.ir_version = max(model.ir_version, need, 4)


def _drop_unused_initializers(model: ir.Model) -> None:
    graph = model.graph
    inputs = {id(v) for v in graph.inputs}
    for name, v in list(graph.initializers.items()):
        if not v.uses() and id(v) not in inputs and not v.is_graph_output():
            del graph.initializers[name]


def _convert_opset(model: ir.Model, target: int) -> ir.Model:
    import onnx
    from onnx import version_converter

    proto = io.to_proto(model)
    converted = version_converter.convert_version(proto, target)
    onnx.checker.check_model(converted)
    out = io.from_proto(converted)
    out.meta.update(model.meta)
    return out


def prepare(model: ir.Model, config: PrepareConfig | None = None) -> Prepared:
    """A copy of ``model`` ready for calibration and quantization.

    Raises:
        UnsupportedModelError: The opset is too old and cannot be converted.
    """
    cfg = config or PrepareConfig()
    m = model.clone()
    m.meta.update(model.meta)
    io.lift_constant_tensors(m)
    widened = float16_to_float32(m)
    folded = fold_constant_of_shape(m)
    if folded:
        logger.info("%d ConstantOfShape weight(s) folded into initializers", folded)
    modernize_ir(m)
    if cfg.shapes:
        io.fix_input_shapes(m, cfg.shapes)
    before = opset_of(m)
    prep = Prepared(m, cfg.per_channel, before, before)
    if widened:
        prep.warnings.append(
            "float16 model: it computes in float32 inside the int8 model; its float16 "
            "inputs and outputs are kept with Casts"
        )
    if cfg.fold_bn:
        prep.folded_bn = fold_batchnorm(m)
    if cfg.onnxsim:
        from onnxcomp.simplification import SimplifyConfig, simplify

        try:
            simplified = simplify(m, SimplifyConfig(onnxsim=True, skip_fuse_bn=True))
            simplified.meta.update(m.meta)
            m = simplified
            prep.simplified = True
        except Exception as e:  # onnxsim has many failure modes; the model is still usable
            msg = f"onnxsim skipped: {' '.join(str(e).split())[:200]}"
            logger.warning(msg)
            prep.warnings.append(msg)
    need = 13 if cfg.per_channel else cfg.min_opset
    if before < need:
        try:
            m = _convert_opset(m, need)
            prep.opset_after = need
            logger.info("opset %d -> %d", before, need)
        except Exception as e:
            reason = " ".join(str(e).split())[:200]
            if cfg.per_channel and before >= cfg.min_opset:
                prep.per_channel = False
                msg = (
                    f"opset {before} has no per-channel DequantizeLinear and converting to opset 13 "
                    f"failed ({reason}); weights are quantized per tensor"
                )
                logger.warning(msg)
                prep.warnings.append(msg)
            elif before < cfg.min_opset:
                try:
                    m = _convert_opset(m, cfg.min_opset)
                    prep.opset_after = cfg.min_opset
                    prep.per_channel = False
                    prep.warnings.append(
                        f"opset {before} converted to {cfg.min_opset} only; weights are quantized per tensor"
                    )
                except Exception as e2:
                    raise UnsupportedModelError(
                        f"opset {before} is too old for QuantizeLinear (needs 10) and the ONNX version "
                        f"converter failed: {' '.join(str(e2).split())[:200]}"
                    ) from e2
    modernize_ir(m)
    prep.model = m
    return prep
