"""Glue to ONNX Runtime's quantization machinery, driven by onnxcomp's ranges.

ONNX Runtime writes the QDQ / QOperator graphs (``QDQQuantizer`` /
``ONNXQuantizer`` from ``onnxruntime.quantization``) and provides the int8
kernels; onnxcomp supplies the ranges (``tensors_range``: ``TensorData(lowest,
highest)`` per tensor), the node selection and the typed options. Scale and
zero point follow ONNX Runtime's ``compute_scale_zp``: for an asymmetric u8
range ``[lo, hi]`` (extended to contain 0) ``s = (hi - lo) / 255`` and
``z = round(-lo / s)``; symmetric ranges use ``max(|lo|, |hi|)``.

``--mode dynamic`` calls ``quantize_dynamic`` (weights int8 offline,
activations quantized at run time), which needs no calibration data.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxcomp import io
from onnxcomp.errors import UnsupportedModelError
from onnxcomp.quantize._collectors import Range

__all__ = [
    "OrtOptions",
    "cpu_needs_reduce_range",
    "default_op_types",
    "quantize_dynamic_ort",
    "quantize_static_ort",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrtOptions:
    """What ONNX Runtime's quantizer is asked to do."""

    format: str = "qdq"
    per_channel: bool = True
    activation_type: str = "u8"
    weight_type: str = "s8"
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()


def cpu_needs_reduce_range() -> bool:
    """True on x86 CPUs without VNNI, where ONNX Runtime's u8 x s8 kernels saturate.

    Without VNNI the u8 x s8 dot product goes through ``vpmaddubsw``, whose int16
    pair sums saturate for 8-bit weights; measured on this project's MNIST ResNet:
    SQNR 10 dB and 94.5% top-1 agreement with 8-bit weights, 33 dB and 100% with
    7-bit weights (``reduce_range``), which is also the fastest option here.
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    if not flags:
        return False
    return not ({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)


def default_op_types() -> list[str]:
    """Every op type ONNX Runtime knows how to quantize (QDQ and QOperator)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def _qtype(name: str):  # type: ignore[no-untyped-def]
    from onnxruntime.quantization import QuantType

    return {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[name]


def _fill_types(proto, dtypes: Mapping[str, np.dtype]) -> None:  # type: ignore[no-untyped-def]
    """Add value_info for tensors whose type ONNX shape inference could not find."""
    import onnx
    from onnx import helper

    known = {vi.name for vi in proto.graph.value_info}
    known |= {v.name for v in proto.graph.input} | {v.name for v in proto.graph.output}
    known |= {t.name for t in proto.graph.initializer}
    for name, dt in dtypes.items():
        if name in known:
            continue
        try:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(dt))
        except Exception:  # non-tensor outputs
            continue
        vi = onnx.ValueInfoProto()
        vi.name = name
        vi.type.tensor_type.elem_type = elem
        proto.graph.value_info.append(vi)


def _to_proto_inferred(model: ir.Model, dtypes: Mapping[str, np.dtype]):  # type: ignore[no-untyped-def]
    import onnx

    proto = io.to_proto(model)
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception as e:  # partial types are completed from the calibration pass
        logger.info("ONNX shape inference failed (%s); using observed types", e)
    _fill_types(proto, dtypes)
    return proto


@contextlib.contextmanager
def _quiet_ort_warnings() -> Iterator[None]:
    """ONNX Runtime's quantizer warns on the root logger, once per tensor (120 lines on
    DenseNet-121 for per-channel axes it then skips): keep them out of the output and
    log one summary line at INFO instead."""
    seen: list[str] = []

    def drop(record: logging.LogRecord) -> bool:
        if "onnxruntime" in record.pathname and record.levelno < logging.ERROR:
            seen.append(record.getMessage())
            return False
        return True

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        if seen:
            logger.info(
                "ONNX Runtime's quantizer: %d warning(s), %d distinct; first: %s",
                len(seen),
                len(set(seen)),
                seen[0][:200],
            )


@contextlib.contextmanager
def _linear_time_helpers() -> Iterator[None]:
    """Same-result versions of two ONNX Runtime quantizer helpers that dominate on big graphs.

    ``ONNXModel.replace_input_of_all_nodes`` loops in Python over every input of
    every node once per quantized tensor, and ``find_by_name`` builds the list of
    all matches to return the first: together ~70% of quantizing DenseNet-121.
    The replacements skip nodes without the name (a C-level membership test) and
    stop at the first match; the model written is byte-identical (tested).
    """
    from onnxruntime.quantization import base_quantizer, onnx_model, qdq_quantizer, quant_utils

    def replace_input_of_all_nodes(self, old_input_name, new_input_name):  # type: ignore[no-untyped-def]
        for node in self.model.graph.node:
            if old_input_name in node.input:
                onnx_model.ONNXModel.replace_node_input(node, old_input_name, new_input_name)

    def find_by_name(item_name, item_list):  # type: ignore[no-untyped-def]
        return next((item for item in item_list if item.name == item_name), None)

    patches = [(onnx_model.ONNXModel, "replace_input_of_all_nodes", replace_input_of_all_nodes)]
    patches += [
        (mod, "find_by_name", find_by_name)
        for mod in (quant_utils, onnx_model, base_quantizer, qdq_quantizer)
        if hasattr(mod, "find_by_name")
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, fn in patches:
            setattr(obj, name, fn)
        yield
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)


def quantize_static_ort(
    model: ir.Model,
    ranges: Mapping[str, Range],
    options: OrtOptions,
    dtypes: Mapping[str, np.dtype] | None = None,
) -> ir.Model:
    """Quantize with ONNX Runtime's QDQ or QOperator quantizer and the given ranges.

    Raises:
        UnsupportedModelError: ONNX Runtime's quantizer fails on the model.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import QuantizationMode

    proto = _to_proto_inferred(model, dtypes or {})
    tensors = TensorsData(
        CalibrationMethod.MinMax,
        {
            k: TensorData(
                lowest=np.array(r.lo, dtype=np.float32), highest=np.array(r.hi, dtype=np.float32)
            )
            for k, r in ranges.items()
        },
    )
    extra = {
        "ActivationSymmetric": options.activation_symmetric,
        "WeightSymmetric": options.weight_symmetric,
    }
    op_types = list(options.op_types) or default_op_types()
    excluded = list(options.exclude_nodes)
    try:
        if options.format == "qoperator":
            quantizer = ONNXQuantizer(
                proto,
                options.per_channel,
                options.reduce_range,
                QuantizationMode.QLinearOps,
                True,
                _qtype(options.weight_type),
                _qtype(options.activation_type),
                tensors,
                [],
                excluded,
                op_types,
                extra,
            )
        else:
            quantizer = QDQQuantizer(
                proto,
                options.per_channel,
                options.reduce_range,
                _qtype(options.weight_type),
                _qtype(options.activation_type),
                tensors,
                [],
                excluded,
                op_types,
                extra,
            )
        with _quiet_ort_warnings(), _linear_time_helpers():
            quantizer.quantize_model()
        quantizer.model.topological_sort()
        for init in quantizer.model.model.graph.initializer:
            quantizer.model._check_init(init, "end")
    except Exception as e:
        msg = " ".join(str(e).split())[:300]
        raise UnsupportedModelError(
            f"ONNX Runtime's quantizer failed: {type(e).__name__}: {msg}"
        ) from e
    out = io.from_proto(quantizer.model.model)
    _copy_props(model, out)
    return out


def quantize_dynamic_ort(model: ir.Model, options: OrtOptions) -> ir.Model:
    """ONNX Runtime dynamic quantization (int8 weights, activations at run time)."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    proto = io.to_proto(model)
    with tempfile.TemporaryDirectory(prefix="onnxcomp-q-") as d:
        src, dst = Path(d) / "in.onnx", Path(d) / "out.onnx"
        onnx.save(proto, src)
        try:
            quantize_dynamic(
                src,
                dst,
                op_types_to_quantize=list(options.op_types) or None,
                per_channel=options.per_channel,
                reduce_range=options.reduce_range,
                weight_type=_qtype(options.weight_type),
                nodes_to_exclude=list(options.exclude_nodes),
                extra_options={"WeightSymmetric": options.weight_symmetric},
            )
        except Exception as e:
            msg = " ".join(str(e).split())[:300]
            raise UnsupportedModelError(f"ONNX Runtime's dynamic quantizer failed: {msg}") from e
        out = ir.load(dst)
        # materialize tensors before the temporary folder goes away
        out = io.from_proto(ir.serde.serialize_model(out))
    _copy_props(model, out)
    return out


def _copy_props(src: ir.Model, dst: ir.Model) -> None:
    dst.metadata_props.update(src.metadata_props)
    dst.producer_name = src.producer_name or dst.producer_name
    dst.producer_version = src.producer_version or dst.producer_version
    dst.doc_string = src.doc_string
    dst.model_version = src.model_version


def weight_quant_error(
    w: np.ndarray, axis: int | None, symmetric: bool = True, qmin: int = -127, qmax: int = 127
) -> np.ndarray:
    """Dequantized ``w`` as ONNX Runtime's s8 weight quantization produces it (for bias correction)."""
    w64 = w.astype(np.float64)
    if axis is None:
        red: Sequence[int] | None = None
    else:
        red = tuple(i for i in range(w.ndim) if i != axis)
    if symmetric:
        amax = np.max(np.abs(w64), axis=red, keepdims=True)
        scale = np.where(amax > 0, amax / ((qmax - qmin) / 2), 1.0)
        q = np.clip(np.round(w64 / scale), qmin, qmax)
        return (q * scale).astype(w.dtype)
    lo = np.minimum(np.min(w64, axis=red, keepdims=True), 0.0)
    hi = np.maximum(np.max(w64, axis=red, keepdims=True), 0.0)
    scale = np.where(hi > lo, (hi - lo) / 255.0, 1.0)
    zp = np.round(-128 - lo / scale)
    q = np.clip(np.round(w64 / scale) + zp, -128, 127)
    return ((q - zp) * scale).astype(w.dtype)
