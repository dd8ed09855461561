"""Post-training int8 quantization with streaming calibration and accuracy recovery.

Pipeline (each step a separate, testable function)::

    prepare (constants, shapes, BN folding, onnxsim, opset)
      -> [cross-layer equalization]
      -> calibrate (one streaming pass; minmax / percentile / entropy / mse)
      -> plan (nodes kept float: user exclusions, mask-like ranges, mixed Concats)
      -> ONNX Runtime QDQ / QOperator quantizer with these ranges
      -> [bias correction] -> [fallback to float until the target is met]
      -> checker + ONNX Runtime load check -> verify against the float model

Example::

    from onnxcomp.quantize import QuantizeConfig, quantize
    result = quantize("model.onnx", "calib.npz", QuantizeConfig(method="entropy"))
    onnxcomp.save(result.model, "model.int8.onnx")
    print(result.report.verify.min_cosine)
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import onnx_ir as ir

from onnxcomp import io
from onnxcomp.errors import CalibrationError, InvalidInputError, UnsupportedModelError
from onnxcomp.quantize._calibrate import (
    METHODS,
    CalibrationResult,
    calibrate,
    calibration_tensors,
    load_ranges,
    save_ranges,
)
from onnxcomp.quantize._collectors import Range
from onnxcomp.quantize._ort import (
    OrtOptions,
    cpu_needs_reduce_range,
    default_op_types,
    quantize_dynamic_ort,
    quantize_static_ort,
)
from onnxcomp.quantize._plan import Exclusion, name_nodes, plan_exclusions
from onnxcomp.quantize._prepare import PrepareConfig, prepare

__all__ = [
    "METHODS",
    "CalibrationResult",
    "Exclusion",
    "QuantizeConfig",
    "QuantizeReport",
    "QuantizeResult",
    "Range",
    "calibrate",
    "load_ranges",
    "quantize",
    "save_ranges",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class QuantizeConfig:
    """Options of :func:`quantize`.

    Attributes:
        mode: ``static`` (calibrated) or ``dynamic`` (ONNX Runtime dynamic quantization).
        format: ``qdq`` (QuantizeLinear/DequantizeLinear pairs) or ``qoperator`` (QLinear* ops).
        method: Calibration method: minmax, percentile, entropy, mse.
        percentile: Central percentage kept by ``percentile``.
        bins: Histogram bins of the histogram methods (many more than the 255 levels).
        per_channel: Per-output-channel weight scales (opset upgraded to 13 when needed).
        activation_type / weight_type: ``u8`` or ``s8``.
        activation_symmetric / weight_symmetric: Symmetric ranges.
        reduce_range: 7-bit weights; None = automatic: on x86 CPUs without VNNI, where
            ONNX Runtime's u8 x s8 kernels can saturate with 8-bit weights, both are
            built and the one with the better worst-output SQNR on up to 8 evaluation
            samples is kept (7 bits without evaluation data).
        exclude: Node names, fnmatch patterns or op types kept in float.
        op_types: Op types to quantize (default: all ONNX Runtime supports).
        shapes: Fixed input dims (``{"input": (1, 3, 224, 224)}``).
        fix_shapes_from_data: Fix every dynamic input dim from the first sample.
        onnxsim: Run onnxsim in preparation (off by default: the installed onnxsim imports
            torch, +3-14 s and +300 MB; BN folding and constant lifting are done without it).
        fold_bn: Fold BatchNormalization into the preceding Conv.
        batch_size: Calibration batch size (memory is batch-bound, not sample-bound); None =
            automatic: the largest power of two <= 32 whose activations fit ``calib_memory_mb``
            when the batch axis is dynamic, else 1.
        calib_memory_mb: Most activation megabytes of one batch exposed at a time by the
            histogram passes (min/max are reduced inside the graph and cost nothing).
        ranges: Precomputed ranges (JSON file from ``save_ranges``) instead of calibrating.
        save_ranges: Where to write the calibrated ranges.
        range_limit: Tensors with ``max|x|`` beyond this stay float (attention masks).
        concat_ratio: Magnitude ratio above which a Concat reaching an output stays float.
        float_affine: Keep Add/Mul/Sub/Div with a constant operand in float (each quantized
            one only adds a rounding; SVTR recognizer cosine 0.77 -> 0.95).
        equalize: Cross-layer equalization of consecutive convs before calibration.
        bias_correction: Correct the output shift caused by weight quantization.
        target_cosine: Keep the most sensitive nodes in float until every output's cosine reaches this.
        max_drop: Same, until accuracy (labelled evaluation data) drops by at most this (0-1).
        max_fallback: Most nodes the fallback may keep in float.
        eval_limit: Samples used by sensitivity analysis and the fallback loop.
        sensitivity: Compute the per-tensor sensitivity report.
        verify: Compare the result with the float model (fidelity, size, latency).
        latency_repeats: Latency runs of the verification and the latency guard (0 = skip).
        latency_guard: When int8 is slower than float here, try keeping depthwise/tiny
            convs and non-MAC ops in float and keep the fastest variant that meets the
            fidelity targets (pitfall 7); say so when nothing pays.
        threads: ONNX Runtime intra-op threads.
    """

    mode: str = "static"
    format: str = "qdq"
    method: str = "minmax"
    percentile: float = 99.99
    bins: int = 2048
    per_channel: bool = True
    activation_type: str = "u8"
    weight_type: str = "s8"
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    reduce_range: bool | None = None
    exclude: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()
    shapes: Mapping[str, Sequence[int]] | None = None
    fix_shapes_from_data: bool = False
    onnxsim: bool = False
    fold_bn: bool = True
    batch_size: int | None = None
    calib_memory_mb: float = 256.0
    ranges: str | None = None
    save_ranges: str | None = None
    range_limit: float = 1e6
    concat_ratio: float = 8.0
    float_affine: bool = True
    equalize: bool = False
    bias_correction: bool = False
    target_cosine: float | None = None
    max_drop: float | None = None
    max_fallback: int = 32
    eval_limit: int = 64
    sensitivity: bool = False
    verify: bool = True
    latency_repeats: int = 20
    latency_guard: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("static", "dynamic"):
            raise InvalidInputError(f"--mode must be static or dynamic, got {self.mode!r}")
        if self.format not in ("qdq", "qoperator"):
            raise InvalidInputError(f"--format must be qdq or qoperator, got {self.format!r}")
        if self.method not in METHODS:
            raise InvalidInputError(
                f"--method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if not 0.0 < self.percentile <= 100.0:
            raise InvalidInputError(f"--percentile must be in (0, 100], got {self.percentile}")
        for name in ("activation_type", "weight_type"):
            if getattr(self, name) not in ("u8", "s8"):
                raise InvalidInputError(f"{name} must be u8 or s8, got {getattr(self, name)!r}")
        if self.bins < 256:
            raise InvalidInputError(
                f"--bins must be >= 256 (many more than 255 levels), got {self.bins}"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.calib_memory_mb > 0:
            raise InvalidInputError(f"--calib-memory must be > 0 MB, got {self.calib_memory_mb}")
        if self.target_cosine is not None and not -1.0 <= self.target_cosine <= 1.0:
            raise InvalidInputError(
                f"--target-cosine must be within [-1, 1], got {self.target_cosine}"
            )
        if self.max_drop is not None and not 0.0 <= self.max_drop <= 1.0:
            raise InvalidInputError(f"--max-drop must be within [0, 1], got {self.max_drop}")
        if self.mode == "dynamic" and (self.target_cosine is not None or self.max_drop is not None):
            raise InvalidInputError("--target-cosine/--max-drop need static quantization")


@dataclass
class QuantizeReport:
    """What :func:`quantize` did and how the result compares with the float model."""

    mode: str
    format: str
    method: str | None
    per_channel: bool
    opset: tuple[int, int]
    samples: int
    synthetic: bool
    calibrated_tensors: int
    excluded: list[Exclusion] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    folded_bn: list[str] = field(default_factory=list)
    equalized: list[str] = field(default_factory=list)
    bias_corrected: list[str] = field(default_factory=list)
    sensitivity: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    quantized_nodes: int = 0
    target_met: bool | None = None
    verify: Any = None
    calibration_state_bytes: int = 0
    reduce_range: bool = False
    weight_bits: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    latency_guard: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "format": self.format,
            "method": self.method,
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "weight_bits": self.weight_bits,
            "seconds": self.seconds,
            "opset": list(self.opset),
            "samples": self.samples,
            "synthetic": self.synthetic,
            "calibrated_tensors": self.calibrated_tensors,
            "quantized_nodes": self.quantized_nodes,
            "excluded": [e.to_dict() for e in self.excluded],
            "fallback": self.fallback,
            "folded_bn": self.folded_bn,
            "equalized": self.equalized,
            "bias_corrected": self.bias_corrected,
            "sensitivity": [s.to_dict() for s in self.sensitivity],
            "target_met": self.target_met,
            "warnings": self.warnings,
            "calibration_state_bytes": self.calibration_state_bytes,
            "latency_guard": self.latency_guard.to_dict() if self.latency_guard else None,
            "verify": self.verify.to_dict() if self.verify is not None else None,
        }


@dataclass
class QuantizeResult:
    """The quantized model and its report."""

    model: ir.Model
    report: QuantizeReport


def _load(
    model: ir.Model | str | os.PathLike[str], shapes: Mapping[str, Sequence[int]] | None
) -> ir.Model:
    if isinstance(model, ir.Model):
        return model
    return io.load(model, shapes=shapes)


def _dataset(data: Any, model: ir.Model) -> Any:
    from onnxcomp.data import Dataset, open_data

    if data is None:
        return None
    if isinstance(data, Dataset):
        return data
    return open_data(data, model)


def load_check(model: ir.Model) -> None:
    """The quantized model must pass the ONNX checker and load in ONNX Runtime (pitfall 1)."""
    import onnx

    from onnxcomp.runtime import create_session

    proto = io.to_proto(model)
    try:
        onnx.checker.check_model(proto, full_check=False)
    except Exception as e:
        raise UnsupportedModelError(f"the quantized model fails the ONNX checker: {e}") from e
    create_session(model)


def _first_shapes(data: Any) -> dict[str, tuple[int, ...]]:
    for s in data.samples():
        return {k: tuple(v.shape) for k, v in s.feed.items()}
    raise CalibrationError(f"{data.description}: no samples")


def count_quantized(model: ir.Model) -> int:
    """Nodes fed by a DequantizeLinear or of a QLinear*/integer op type."""
    n = 0
    for node in model.graph:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
            continue
        if node.op_type.startswith("QLinear") or node.op_type in ("ConvInteger", "MatMulInteger"):
            n += 1
            continue
        if any(
            v is not None
            and v.producer() is not None
            and v.producer().op_type == "DequantizeLinear"  # type: ignore[union-attr]
            for v in node.inputs
        ):
            n += 1
    return n


def quantize(
    model: ir.Model | str | os.PathLike[str],
    data: Any = None,
    config: QuantizeConfig | None = None,
    *,
    eval_data: Any = None,
    progress: Progress | None = None,
    latency_fn: Any = None,
) -> QuantizeResult:
    """Quantize ``model`` to int8.

    Args:
        model: Float model (object or path).
        data: Calibration samples: a path, :class:`~onnxcomp.data.Dataset`, an
            iterable of ``{input: array}`` or an ONNX Runtime ``CalibrationDataReader``.
            Not needed with ``config.ranges`` or ``mode="dynamic"`` (then no verification).
        config: Options.
        eval_data: Samples (with labels for ``max_drop``) for verification and
            fallback; defaults to ``data``.
        progress: Called with (samples done, total or None) during calibration.
        latency_fn: Latency of a list of models (float first), for the latency guard;
            default: ONNX Runtime on the first evaluation sample.

    Raises:
        InvalidInputError / DataError / CalibrationError: Bad options or samples.
        UnsupportedModelError: The model cannot be quantized (reason given).
    """
    from onnxcomp.quantize import _recovery

    cfg = config or QuantizeConfig()
    original = _load(model, None)
    dataset = _dataset(data, original)
    evalset = _dataset(eval_data, original) if eval_data is not None else dataset
    shapes = dict(cfg.shapes or {})
    if cfg.fix_shapes_from_data:
        if dataset is None:
            raise InvalidInputError("fixing shapes from the data needs calibration data")
        for k, v in _first_shapes(dataset).items():
            shapes.setdefault(k, v)
    if cfg.mode == "static" and dataset is None and cfg.ranges is None:
        raise CalibrationError("static quantization needs calibration data (--data) or --ranges")
    if cfg.max_drop is not None and evalset is None:
        raise InvalidInputError("--max-drop needs labelled evaluation data")
    clock = _Clock()
    prep = prepare(
        original,
        PrepareConfig(
            shapes=shapes or None,
            onnxsim=cfg.onnxsim,
            fold_bn=cfg.fold_bn,
            per_channel=cfg.per_channel,
        ),
    )
    float_model = prep.model
    name_nodes(float_model)
    clock.lap("prepare")
    if shapes:
        # fixed dims (batch included) change how samples may be stacked
        from onnxcomp.data import open_data

        dataset = open_data(dataset, float_model) if dataset is not None else None
        evalset = open_data(evalset, float_model) if evalset is not None else None
    report = QuantizeReport(
        mode=cfg.mode,
        format=cfg.format,
        method=cfg.method if cfg.mode == "static" else None,
        per_channel=prep.per_channel,
        opset=(prep.opset_before, prep.opset_after),
        samples=0,
        synthetic=bool(dataset is not None and dataset.synthetic),
        calibrated_tensors=0,
        folded_bn=prep.folded_bn,
        warnings=list(prep.warnings),
    )
    if report.synthetic:
        report.warnings.append(
            "calibrated on SYNTHETIC random inputs: ranges and accuracy on real data may be poor"
        )
    reduce_range = cfg.reduce_range
    # None: on x86 without VNNI, ONNX Runtime's u8 x s8 kernels add weight pairs in
    # saturating int16; 7-bit weights cannot saturate but are coarser. With evaluation
    # data both are built and the more faithful kept (below), else 7 bits.
    choose_bits = False
    if reduce_range is None:
        reduce_range = choose_bits = (
            cfg.activation_type == "u8" and cfg.weight_type == "s8" and cpu_needs_reduce_range()
        )
    report.reduce_range = reduce_range
    opts = OrtOptions(
        reduce_range=reduce_range,
        format=cfg.format,
        per_channel=prep.per_channel,
        activation_type=cfg.activation_type,
        weight_type=cfg.weight_type,
        activation_symmetric=cfg.activation_symmetric,
        weight_symmetric=cfg.weight_symmetric,
        op_types=tuple(cfg.op_types),
    )
    if cfg.mode == "dynamic":
        plan = plan_exclusions(float_model, {}, exclude=cfg.exclude, limit=cfg.range_limit)
        report.excluded = plan
        qmodel = quantize_dynamic_ort(
            float_model, replace(opts, exclude_nodes=tuple(e.node for e in plan))
        )
        load_check(qmodel)
        _require_quantized(float_model, qmodel, opts, plan)
        report.quantized_nodes = count_quantized(qmodel)
        clock.lap("quantize")
    else:
        if cfg.equalize:
            report.equalized = _recovery.equalize(float_model)
        means_for = _recovery.bias_correction_inputs(float_model) if cfg.bias_correction else []
        if cfg.ranges:
            calib = load_ranges(cfg.ranges)
            if dataset is not None and (
                means_for or calib.ranges.keys() < set(calibration_tensors(float_model))
            ):
                # ranges given: still one pass for missing types/means (cheap minmax)
                extra = calibrate(
                    float_model,
                    dataset,
                    method="minmax",
                    batch_size=cfg.batch_size,
                    channel_stats=means_for,
                    threads=cfg.threads,
                    memory_budget=int(cfg.calib_memory_mb * 2**20),
                )
                calib.dtypes, calib.channel_means = extra.dtypes, extra.channel_means
                calib.samples = extra.samples
        else:
            calib = calibrate(
                float_model,
                dataset,
                method=cfg.method,
                percentile=cfg.percentile,
                bins=cfg.bins,
                batch_size=cfg.batch_size,
                channel_stats=means_for,
                threads=cfg.threads,
                progress=progress,
                memory_budget=int(cfg.calib_memory_mb * 2**20),
            )
            if cfg.save_ranges:
                save_ranges(calib, cfg.save_ranges)
        clock.lap("calibrate")
        report.samples = calib.samples
        report.calibrated_tensors = len(calib.ranges)
        report.calibration_state_bytes = calib.state_nbytes
        if calib.nonfinite:
            names = ", ".join(list(calib.nonfinite)[:5])
            report.warnings.append(
                f"NaN/inf seen in activations ({names}); their producers stay float"
            )
        plan = plan_exclusions(
            float_model,
            calib.ranges,
            exclude=cfg.exclude,
            limit=cfg.range_limit,
            concat_ratio=cfg.concat_ratio,
            nonfinite=calib.nonfinite,
            per_channel=prep.per_channel,
            float_affine=cfg.float_affine,
        )
        chosen = None
        if choose_bits and evalset is not None:
            reduce_range, chosen = _choose_weight_bits(
                cfg, float_model, calib, opts, plan, evalset, report
            )
            opts = replace(opts, reduce_range=reduce_range)
            choose_bits = False
            clock.lap("weight_bits")
        if cfg.bias_correction:
            names = tuple(e.node for e in plan)
            q0 = quantize_static_ort(
                float_model,
                calib.ranges,
                replace(opts, format="qdq", exclude_nodes=names),
                calib.dtypes,
            )
            report.bias_corrected = _recovery.bias_correct(float_model, q0, calib.channel_means)
        report.excluded = plan

        def build(extra_float: Sequence[str]) -> ir.Model:
            names = tuple(e.node for e in plan) + tuple(extra_float)
            q = quantize_static_ort(
                float_model, calib.ranges, replace(opts, exclude_nodes=names), calib.dtypes
            )
            load_check(q)
            return q

        if chosen is not None and not cfg.bias_correction:
            qmodel = chosen  # the candidate just measured is the same build
            load_check(qmodel)
        else:
            qmodel = build(())
        del chosen
        _require_quantized(float_model, qmodel, opts, plan)
        clock.lap("quantize")
        if cfg.target_cosine is not None or cfg.max_drop is not None or cfg.sensitivity:
            if evalset is None:
                raise InvalidInputError("sensitivity analysis and fallback need samples (--data)")
            rec = _recovery.recover(
                original_float=float_model,
                qmodel=qmodel,
                build=build,
                data=evalset,
                config=cfg,
                excluded={e.node for e in plan},
            )
            qmodel = rec.model
            report.sensitivity = rec.sensitivity
            report.fallback = rec.fallback
            report.target_met = rec.target_met
            if rec.target_met is False:
                report.warnings.append(
                    f"target not met after keeping {len(rec.fallback)} node(s) in float"
                )
            clock.lap("fallback")
        if cfg.latency_guard and evalset is not None and (cfg.latency_repeats > 0 or latency_fn):
            qmodel = _latency_guard(cfg, float_model, qmodel, build, report, evalset, latency_fn)
            clock.lap("latency_guard")
        report.quantized_nodes = count_quantized(qmodel)
    if choose_bits:
        report.warnings.append(
            "this CPU has no VNNI: weights use 7 bits (reduce_range) to avoid u8 x s8 "
            "saturation in ONNX Runtime's kernels (--no-reduce-range to force 8 bits)"
        )
    if cfg.verify and evalset is not None:
        from onnxcomp.verification import VerifyConfig, verify

        report.verify = verify(
            original,
            qmodel,
            evalset,
            VerifyConfig(latency_repeats=cfg.latency_repeats, threads=cfg.threads),
        )
        clock.lap("verify")
        lr = report.verify.latency_ratio
        if lr is not None and lr > 1.05 and report.latency_guard is None:
            report.warnings.append(
                f"the int8 model is {lr:.2f}x the float latency here; quantization does not pay on "
                "this model/CPU (consider --exclude for small layers or keeping float)"
            )
    report.seconds = clock.laps
    return QuantizeResult(qmodel, report)


def _require_quantized(
    float_model: ir.Model, qmodel: ir.Model, opts: OrtOptions, plan: Sequence[Exclusion]
) -> None:
    """A model in which nothing got quantized is an error, not a bigger copy."""
    if count_quantized(qmodel):
        return
    ops = sorted(
        {
            n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
            for n in float_model.graph
        }
    )
    supported = set(opts.op_types) or set(default_op_types())
    if not supported & set(ops):
        raise UnsupportedModelError(
            f"nothing to quantize: none of the model's op types ({', '.join(ops[:12])}"
            f"{', ...' if len(ops) > 12 else ''}) is one ONNX Runtime quantizes"
        )
    raise UnsupportedModelError(
        f"nothing to quantize: every quantizable node stays float ({len(plan)} kept by "
        "--exclude or the plan); see --op-types/--exclude"
    )


class _Clock:
    """Wall seconds of each stage (time since the previous lap)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._t, 4)
        self._t = now


def _choose_weight_bits(
    cfg: QuantizeConfig,
    float_model: ir.Model,
    calib: CalibrationResult,
    opts: OrtOptions,
    plan: Sequence[Exclusion],
    evalset: Any,
    report: QuantizeReport,
) -> tuple[bool, ir.Model]:
    """7-bit (True) or 8-bit weights, whichever gives the better worst-output SQNR, and that model.

    On x86 without VNNI the u8 x s8 kernels saturate pair sums of 8-bit weights
    (the MNIST ResNet falls to 10 dB), while models whose activations stay small
    lose only resolution with 7 bits (the wakeword MLP: 41 dB vs 44 dB).
    """
    from onnxcomp.quantize import _recovery

    names = tuple(e.node for e in plan)
    limit = min(cfg.eval_limit, 8)
    models = [
        quantize_static_ort(
            float_model,
            calib.ranges,
            replace(opts, reduce_range=r, exclude_nodes=names),
            calib.dtypes,
        )
        for r in (True, False)
    ]
    s7, s8 = _recovery.output_sqnr(float_model, models, evalset, limit)
    seven = not s8 > s7
    chosen = models[0] if seven else models[1]
    report.weight_bits = {
        "bits": 7 if seven else 8,
        # identical outputs give inf dB: kept JSON-safe
        "sqnr_db_7bit": round(s7, 3) if math.isfinite(s7) else str(s7),
        "sqnr_db_8bit": round(s8, 3) if math.isfinite(s8) else str(s8),
    }
    report.reduce_range = seven
    report.warnings.append(
        f"this CPU has no VNNI (ONNX Runtime's u8 x s8 kernels can saturate with 8-bit "
        f"weights): {7 if seven else 8}-bit weights kept, worst output SQNR {s7:.1f} dB "
        f"with 7 bits vs {s8:.1f} dB with 8 on up to {limit} samples "
        "(--reduce-range/--no-reduce-range to force)"
    )
    return seven, chosen


def _latency_guard(
    cfg: QuantizeConfig,
    float_model: ir.Model,
    qmodel: ir.Model,
    build: Callable[[Sequence[str]], ir.Model],
    report: QuantizeReport,
    evalset: Any,
    latency_fn: Any,
) -> ir.Model:
    """Pitfall 7: keep in float what makes int8 slower than float (see :mod:`._latency`)."""
    from onnxcomp.quantize import _latency, _recovery
    from onnxcomp.runtime import iter_batches

    if latency_fn is None:
        first = next(iter(iter_batches(evalset.samples(), evalset.specs, 1)), None)
        if first is None:
            return qmodel
        latency_fn = _latency.measured_latency(first.feed, cfg.latency_repeats, cfg.threads)
    probe = replace(cfg, target_cosine=-1.0 if cfg.target_cosine is None else cfg.target_cosine)
    targets = cfg.target_cosine is not None or cfg.max_drop is not None
    base_cos: list[float] = []

    def fidelity(m: ir.Model) -> tuple[bool, float]:
        if not base_cos:
            base_cos.append(_recovery._evaluate(float_model, qmodel, evalset, probe)[1])
        ok, cos, _ = _recovery._evaluate(float_model, m, evalset, probe)
        if not targets:
            # no target: the variant must be about as faithful as the full int8 model
            ok = cos >= base_cos[0] - 1e-3
        return ok, cos

    res = _latency.guard(
        float_model=float_model,
        qmodel=qmodel,
        build=build,
        kept=report.fallback,
        skip={e.node for e in report.excluded},
        latency=latency_fn,
        fidelity=fidelity,
    )
    report.latency_guard = res
    if res.chosen != "base":
        report.warnings.append(
            f"latency guard: int8 was {res.base_ratio:.2f}x float; keeping {len(res.float_nodes)} "
            f"node(s) in float ({res.chosen}) gives {res.ratio:.2f}x"
        )
    if not res.pays:
        report.warnings.append(
            f"int8 is slower than float on this machine ({res.ratio:.2f}x float latency at best); "
            "consider not quantizing"
        )
    return res.model
