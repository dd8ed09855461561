"""Numeric verification of a candidate model against its reference.

Both models run in ONNX Runtime on the same samples; every output common to
both is compared with the metrics of :mod:`onnxcomp.metrics`. Latency is the
median of interleaved single-sample runs after warm-up (same process). Gates
(thresholds) turn the report into a pass/fail decision for pipelines.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp import io
from onnxcomp.data import Dataset
from onnxcomp.errors import DataError, InvalidInputError, UnsupportedModelError
from onnxcomp.metrics import FidelityAccumulator, OutputFidelity, top1
from onnxcomp.runtime import LatencyStats, ModelRunner, iter_batches, measure_latency

__all__ = ["GateResult", "Gates", "VerifyConfig", "VerifyReport", "verify"]

logger = logging.getLogger(__name__)

ModelLike = ir.Model | str | os.PathLike[str]
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Gates:
    """Thresholds; None disables a gate."""

    min_cosine: float | None = None
    min_top1: float | None = None
    min_sqnr: float | None = None
    max_abs_error: float | None = None
    max_latency_ratio: float | None = None
    max_accuracy_drop: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_cosine", "min_top1"):
            v = getattr(self, name)
            if v is not None and not (-1.0 <= v <= 1.0):
                raise InvalidInputError(f"--{name.replace('_', '-')} must be within [-1, 1], got {v}")
        for name in ("max_abs_error", "max_latency_ratio", "max_accuracy_drop"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be >= 0, got {v}")

    def active(self) -> bool:
        return any(v is not None for v in vars(self).values())


@dataclass(frozen=True)
class VerifyConfig:
    """Options of :func:`verify`."""

    batch_size: int = 16
    latency_repeats: int = 20
    warmup: int = 3
    threads: int | None = None
    gates: Gates = field(default_factory=Gates)
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateResult:
    name: str
    threshold: float
    value: float | None
    passed: bool

    @property
    def margin(self) -> float | None:
        if self.value is None:
            return None
        return self.value - self.threshold if self.name.startswith("min") else self.threshold - self.value


@dataclass
class VerifyReport:
    """Result of :func:`verify`."""

    reference: str
    candidate: str
    data: str
    synthetic: bool
    samples: int
    outputs: list[OutputFidelity]
    reference_size: int
    candidate_size: int
    reference_latency: LatencyStats | None
    candidate_latency: LatencyStats | None
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None
    gates: list[GateResult] = field(default_factory=list)

    @property
    def size_ratio(self) -> float:
        return self.candidate_size / self.reference_size if self.reference_size else math.nan

    @property
    def latency_ratio(self) -> float | None:
        if self.reference_latency is None or self.candidate_latency is None:
            return None
        if self.reference_latency.median_ms == 0:
            return None
        return self.candidate_latency.median_ms / self.reference_latency.median_ms

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def min_cosine(self) -> float:
        return min(o.cosine for o in self.outputs)

    @property
    def min_top1(self) -> float | None:
        vals = [o.top1_agreement for o in self.outputs if o.top1_agreement is not None]
        return min(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "data": self.data,
            "synthetic": self.synthetic,
            "samples": self.samples,
            "outputs": [o.to_dict() for o in self.outputs],
            "reference_size": self.reference_size,
            "candidate_size": self.candidate_size,
            "size_ratio": round(self.size_ratio, 6),
            "reference_latency": self.reference_latency.to_dict() if self.reference_latency else None,
            "candidate_latency": self.candidate_latency.to_dict() if self.candidate_latency else None,
            "latency_ratio": None if self.latency_ratio is None else round(self.latency_ratio, 4),
            "reference_accuracy": self.reference_accuracy,
            "candidate_accuracy": self.candidate_accuracy,
            "gates": [
                {"name": g.name, "threshold": g.threshold, "value": g.value, "passed": g.passed}
                for g in self.gates
            ],
            "passed": self.passed,
        }


def _describe(model: ModelLike) -> str:
    if isinstance(model, ir.Model):
        src = io.source_path(model)
        return str(src) if src else (model.graph.name or "<in-memory model>")
    return str(model)


def model_size(model: ModelLike) -> int:
    """Bytes on disk (with external data), or the serialized size of a model object."""
    if isinstance(model, ir.Model):
        nbytes = io.model_nbytes(model)
        if nbytes > io.PROTOBUF_LIMIT:
            return nbytes
        return int(io.to_proto(model).ByteSize())
    return io.file_size(model)


def _labels_to_int(labels: list[Any]) -> np.ndarray | None:
    if any(lb is None for lb in labels):
        return None
    arr = np.asarray([np.asarray(lb).reshape(-1)[0] for lb in labels])
    if arr.dtype.kind not in "iu":
        return None
    return arr.astype(np.int64)


def verify(
    reference: ModelLike,
    candidate: ModelLike,
    data: Dataset,
    config: VerifyConfig | None = None,
    *,
    progress: Progress | None = None,
) -> VerifyReport:
    """Compare ``candidate`` against ``reference`` on ``data``.

    Args:
        reference: The original model (object or path).
        candidate: The model to check; must have the reference's inputs.
        data: Samples validated against the reference's inputs.
        config: Batch size, latency repeats and gates.
        progress: Called with (samples done, total or None).

    Raises:
        InvalidInputError: The models do not share inputs/outputs, or a gate
            refers to something the models do not have.
    """
    cfg = config or VerifyConfig()
    ref_runner = ModelRunner(reference, threads=cfg.threads, name=_describe(reference))
    cand_runner = ModelRunner(candidate, threads=cfg.threads, name=_describe(candidate))
    if set(ref_runner.input_names) != set(cand_runner.input_names):
        raise InvalidInputError(
            f"the models have different inputs: {sorted(ref_runner.input_names)} vs "
            f"{sorted(cand_runner.input_names)}"
        )
    common = [n for n in ref_runner.output_names if n in cand_runner.output_names]
    if cfg.outputs:
        unknown = [n for n in cfg.outputs if n not in common]
        if unknown:
            raise InvalidInputError(
                f"output {unknown[0]!r} is not an output of both models; common outputs: "
                f"{', '.join(common) or 'none'}"
            )
        common = list(cfg.outputs)
    if not common:
        raise InvalidInputError(
            f"the models share no output name: {ref_runner.output_names} vs {cand_runner.output_names}"
        )
    accs = {n: FidelityAccumulator(n) for n in common}
    total = data.length()
    done = 0
    first_feed: dict[str, np.ndarray] | None = None
    correct_ref = correct_cand = labelled = 0
    label_output: str | None = None
    for batch in iter_batches(data.samples(), data.specs, cfg.batch_size):
        if first_feed is None:
            first_feed = {k: v[:1] if _can_slice(data, k) else v for k, v in batch.feed.items()}
        where = f"samples {batch.indices[0]}-{batch.indices[-1]} of {data.description}"
        r_out = ref_runner.run(batch.feed, where)
        c_out = cand_runner.run(batch.feed, where)
        for n in common:
            r, c = r_out[n], c_out[n]
            if not isinstance(r, np.ndarray) or not isinstance(c, np.ndarray):
                raise UnsupportedModelError(f"output {n!r} is not a tensor; use --output to pick tensors")
            try:
                accs[n].update(r, c, batch.size)
            except ValueError as e:
                raise UnsupportedModelError(f"{where}: {e}") from e
        labels = _labels_to_int(batch.labels)
        if labels is not None:
            if label_output is None:
                label_output = next((n for n in common if accs[n].classifier), None)
            if label_output is not None:
                rp = top1(r_out[label_output])
                cp = top1(c_out[label_output])
                if rp.shape[0] == labels.shape[0]:
                    correct_ref += int((rp == labels).sum())
                    correct_cand += int((cp == labels).sum())
                    labelled += labels.shape[0]
        done += batch.size
        if progress:
            progress(done, total)
    if first_feed is None:
        raise DataError(f"{data.description}: no samples")
    lat_ref = lat_cand = None
    if cfg.latency_repeats > 0:
        lat_ref, lat_cand = measure_latency(
            [ref_runner, cand_runner], first_feed, warmup=cfg.warmup, repeats=cfg.latency_repeats
        )
    report = VerifyReport(
        reference=_describe(reference),
        candidate=_describe(candidate),
        data=data.description,
        synthetic=data.synthetic,
        samples=done,
        outputs=[a.result() for a in accs.values()],
        reference_size=model_size(reference),
        candidate_size=model_size(candidate),
        reference_latency=lat_ref,
        candidate_latency=lat_cand,
        reference_accuracy=correct_ref / labelled if labelled else None,
        candidate_accuracy=correct_cand / labelled if labelled else None,
    )
    report.gates = evaluate_gates(report, cfg.gates)
    return report


def _can_slice(data: Dataset, name: str) -> bool:
    spec = next((s for s in data.specs if s.name == name), None)
    return spec is not None and spec.batch_dynamic


def evaluate_gates(report: VerifyReport, gates: Gates) -> list[GateResult]:
    """Check each active gate against the report."""
    results = []

    def add(name: str, threshold: float | None, value: float | None, ok: Callable[[float], bool]) -> None:
        if threshold is None:
            return
        if value is None:
            raise InvalidInputError(_MISSING[name])
        results.append(GateResult(name, threshold, value, bool(ok(value))))

    g = gates
    add("min_cosine", g.min_cosine, report.min_cosine, lambda v: v >= g.min_cosine)  # type: ignore[operator]
    add("min_top1", g.min_top1, report.min_top1, lambda v: v >= g.min_top1)  # type: ignore[operator]
    add("min_sqnr", g.min_sqnr, min(o.sqnr_db for o in report.outputs), lambda v: v >= g.min_sqnr)  # type: ignore[operator]
    add(
        "max_abs_error",
        g.max_abs_error,
        max(o.max_abs_error for o in report.outputs),
        lambda v: v <= g.max_abs_error,  # type: ignore[operator]
    )
    add("max_latency_ratio", g.max_latency_ratio, report.latency_ratio, lambda v: v <= g.max_latency_ratio)  # type: ignore[operator]
    drop = None
    if report.reference_accuracy is not None and report.candidate_accuracy is not None:
        drop = report.reference_accuracy - report.candidate_accuracy
    add("max_accuracy_drop", g.max_accuracy_drop, drop, lambda v: v <= g.max_accuracy_drop)  # type: ignore[operator]
    return results


_MISSING = {
    "min_cosine": "--min-cosine: no output to compare",
    "min_top1": "--min-top1: no output is classifier-like ([batch, classes] float)",
    "min_sqnr": "--min-sqnr: no output to compare",
    "max_abs_error": "--max-abs-error: no output to compare",
    "max_latency_ratio": "--max-latency-ratio: latency was not measured (repeats = 0)",
    "max_accuracy_drop": "--max-accuracy-drop: the data has no integer labels for a classifier-like output",
}

