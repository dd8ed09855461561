"""ONNX Runtime sessions, batching and latency measurement.

onnxruntime is imported inside functions only, so that importing onnxcomp (and
``onnxcomp --help``) stays cheap.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxcomp import io
from onnxcomp.data import InputSpec, Sample
from onnxcomp.errors import DataError, UnsupportedModelError

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = [
    "Batch",
    "LatencyStats",
    "ModelRunner",
    "create_session",
    "expose_outputs",
    "iter_batches",
    "measure_latency",
]

logger = logging.getLogger(__name__)

ModelLike = ir.Model | str | os.PathLike[str]


def create_session(
    model: ModelLike,
    *,
    threads: int | None = None,
    optimize: bool = True,
) -> ort.InferenceSession:
    """An ONNX Runtime CPU session for a model object or file.

    In-memory models above the protobuf limit are written to a temporary file
    with external data first.

    Raises:
        UnsupportedModelError: ONNX Runtime refuses the model (its reason included).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    providers = ["CPUExecutionProvider"]
    label = str(model) if not isinstance(model, ir.Model) else (model.graph.name or "model")
    try:
        if isinstance(model, ir.Model):
            if io.model_nbytes(model) > io.PROTOBUF_LIMIT:
                with tempfile.TemporaryDirectory(prefix="onnxcomp-") as d:
                    path = Path(d) / "model.onnx"
                    io.save(model, path, external_data=True)
                    return ort.InferenceSession(str(path), so, providers=providers)
            data = ir.serde.serialize_model(model).SerializeToString()
            return ort.InferenceSession(data, so, providers=providers)
        return ort.InferenceSession(str(model), so, providers=providers)
    except Exception as e:
        if isinstance(e, (UnsupportedModelError, DataError)):
            raise
        msg = " ".join(str(e).split())
        raise UnsupportedModelError(
            f"{label}: onnxruntime cannot load the model: {msg[:400]}"
        ) from e


def expose_outputs(model: ir.Model, names: Sequence[str]) -> ir.Model:
    """A copy of ``model`` whose graph also outputs the named intermediate values."""
    copy = model.clone()
    values = ir.convenience.create_value_mapping(copy.graph)
    present = {v.name for v in copy.graph.outputs}
    for name in names:
        if name in present:
            continue
        value = values.get(name)
        if value is None:
            raise UnsupportedModelError(f"tensor {name!r} does not exist in the model")
        if value.is_graph_input() or value.is_initializer():
            continue
        copy.graph.outputs.append(value)
        present.add(name)
    return copy


@dataclass
class Batch:
    """Samples stacked along axis 0 (or a single sample when they cannot stack)."""

    feed: dict[str, np.ndarray]
    indices: list[int]
    labels: list[Any]

    @property
    def size(self) -> int:
        return len(self.indices)


def _stackable(specs: Sequence[InputSpec]) -> bool:
    return bool(specs) and all(s.batch_dynamic for s in specs)


def iter_batches(
    samples: Iterable[Sample], specs: Sequence[InputSpec], batch_size: int
) -> Iterator[Batch]:
    """Group samples into batches along a dynamic axis 0.

    Samples are stacked only when every input's axis 0 is dynamic and each
    sample has size 1 there; a batch is closed early when shapes change.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    stack = batch_size > 1 and _stackable(specs)
    pending: list[Sample] = []

    def flush() -> Batch:
        if len(pending) == 1:
            s = pending[0]
            return Batch(dict(s.feed), [s.index], [s.label])
        feed = {k: np.concatenate([p.feed[k] for p in pending], axis=0) for k in pending[0].feed}
        return Batch(feed, [p.index for p in pending], [p.label for p in pending])

    def key(s: Sample) -> tuple[Any, ...]:
        return tuple((k, v.shape) for k, v in sorted(s.feed.items()))

    for sample in samples:
        if not stack or any(v.shape[:1] != (1,) for v in sample.feed.values()):
            if pending:
                yield flush()
                pending = []
            yield Batch(dict(sample.feed), [sample.index], [sample.label])
            continue
        if pending and key(pending[0]) != key(sample):
            yield flush()
            pending = []
        pending.append(sample)
        if len(pending) == batch_size:
            yield flush()
            pending = []
    if pending:
        yield flush()


def _as_array(value: Any) -> Any:
    """A sequence of maps (scikit-learn's ZipMap probabilities) as an [N, classes] array.

    The keys of the first map fix the column order; other outputs pass unchanged.
    """
    if isinstance(value, list) and value and all(isinstance(d, dict) for d in value):
        keys = list(value[0])
        try:
            return np.asarray([[d[k] for k in keys] for d in value], dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            return value
    return value


class ModelRunner:
    """Runs one model over batches; names the model and batch in errors."""

    def __init__(self, model: ModelLike, *, threads: int | None = None, name: str = "") -> None:
        self.session = create_session(model, threads=threads)
        self.name = name or (str(model) if not isinstance(model, ir.Model) else "model")
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feed: dict[str, np.ndarray], where: str = "") -> dict[str, Any]:
        try:
            outs = self.session.run(None, feed)
        except Exception as e:
            msg = " ".join(str(e).split())
            raise DataError(
                f"{self.name}: onnxruntime failed on {where or 'a batch'}: {msg[:300]}"
            ) from e
        return dict(zip(self.output_names, [_as_array(o) for o in outs], strict=True))


@dataclass(frozen=True)
class LatencyStats:
    """Latency of repeated single runs, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    samples_ms: list[float] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "median_ms": round(self.median_ms, 4),
            "p10_ms": round(self.p10_ms, 4),
            "p90_ms": round(self.p90_ms, 4),
            "repeats": self.repeats,
        }


def _stats(times: list[float]) -> LatencyStats:
    ms = sorted(t * 1e3 for t in times)
    q = statistics.quantiles(ms, n=10) if len(ms) >= 2 else [ms[0]] * 9
    return LatencyStats(statistics.median(ms), q[0], q[-1], len(ms), ms)


SLOW_RUN_S = 0.02
"""Runs longer than this are timed without an untimed run of the same model first."""


def measure_latency(
    runners: Sequence[ModelRunner],
    feed: dict[str, np.ndarray],
    *,
    warmup: int = 3,
    repeats: int = 20,
) -> list[LatencyStats]:
    """Median latency of each runner on the same feed, measured interleaved.

    Runs are interleaved after a warm-up so that machine noise affects every
    model alike; the ratio of medians is what to compare. Each round visits the
    models in a fresh (seeded) random order, and each timed run follows an untimed
    run of the same model: a model run right after another one pays for the caches
    that one evicted (measured: 10% on a 0.03 ms int8 model run after its float
    original), which a fixed A, B, A, B order charges to one model only. A model
    serving requests runs with its own weights in cache. Models slower than
    ``SLOW_RUN_S`` in the warm-up skip the untimed run: refilling caches is noise
    next to them, and the untimed run would double the cost of measuring.
    """
    if repeats < 1:
        raise DataError(f"latency repeats must be >= 1, got {repeats}")
    warm = []
    for r in runners:
        t0 = time.perf_counter()
        for _ in range(max(1, warmup)):
            r.session.run(None, feed)
        warm.append((time.perf_counter() - t0) / max(1, warmup) < SLOW_RUN_S)
    times: list[list[float]] = [[] for _ in runners]
    order = list(range(len(runners)))
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for i in order:
            run = runners[i].session.run
            if warm[i]:
                run(None, feed)
            t0 = time.perf_counter()
            run(None, feed)
            times[i].append(time.perf_counter() - t0)
    return [_stats(t) for t in times]
