"""Streaming calibration: one pass of the model over the samples.

The tensors to calibrate (every float activation that is an input or output of
a node) are exposed as extra graph outputs; each batch of outputs is reduced
into fixed-size collectors (:mod:`._collectors`) and dropped at once, so memory
depends on the model and the batch size, never on the number of samples.

Besides ranges, the pass records for every tensor its element type and shape
(to fill in types that ONNX shape inference misses on dynamic models), and,
for the tensors named in ``channel_stats``, the per-channel mean over all
samples (axis 1 for rank >= 3, the last axis otherwise), used by bias
correction: ``E[x_c] = sum(x_c) / count``.

Ranges are saved as JSON ``{"format": "onnxcomp.ranges/1", "method": ...,
"tensors": {name: [lo, hi]}}`` and can be reused with ``--ranges``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.data import Dataset
from onnxcomp.errors import CalibrationError, InvalidInputError
from onnxcomp.quantize._collectors import DEFAULT_BINS, HistogramCollector, MinMaxCollector, Range
from onnxcomp.runtime import ModelRunner, expose_outputs, iter_batches

__all__ = [
    "METHODS",
    "CalibrationResult",
    "calibrate",
    "calibration_tensors",
    "load_ranges",
    "save_ranges",
]

logger = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy", "mse")
RANGES_FORMAT = "onnxcomp.ranges/1"
_FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)

Progress = Callable[[int, int | None], None]


@dataclass
class CalibrationResult:
    """Ranges and statistics of one calibration pass."""

    method: str
    ranges: dict[str, Range]
    samples: int = 0
    dtypes: dict[str, np.dtype[Any]] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    channel_means: dict[str, np.ndarray] = field(default_factory=dict)
    nonfinite: dict[str, int] = field(default_factory=dict)
    state_nbytes: int = 0


def calibration_tensors(model: ir.Model) -> list[str]:
    """Float activations that are inputs or outputs of a node of the main graph."""
    names: dict[str, None] = {}
    for node in model.graph:
        for v in (*node.inputs, *node.outputs):
            if v is None or not v.name or v.is_initializer() or v.const_value is not None:
                continue
            if v.dtype is not None and v.dtype not in _FLOAT_TYPES:
                continue
            names[v.name] = None
    return list(names)


def _channel_sum(x: np.ndarray) -> tuple[np.ndarray, int]:
    a = x.astype(np.float64, copy=False)
    if a.ndim >= 3:
        s = a.sum(axis=tuple(i for i in range(a.ndim) if i != 1))
        return s, a.size // a.shape[1]
    if a.ndim == 0:
        return a.reshape(1), 1
    s = a.reshape(-1, a.shape[-1]).sum(axis=0)
    return s, a.size // a.shape[-1]


def calibrate(
    model: ir.Model,
    data: Dataset,
    *,
    method: str = "minmax",
    percentile: float = 99.99,
    bins: int = DEFAULT_BINS,
    levels: int = 255,
    batch_size: int = 8,
    tensors: Iterable[str] | None = None,
    channel_stats: Iterable[str] = (),
    threads: int | None = None,
    progress: Progress | None = None,
) -> CalibrationResult:
    """Run ``model`` once over ``data`` and compute a range per calibrated tensor.

    Raises:
        CalibrationError: No samples, or a bad method/percentile.
        DataError: A sample does not fit the model.
    """
    if method not in METHODS:
        raise InvalidInputError(
            f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}"
        )
    if not 0.0 < percentile <= 100.0:
        raise InvalidInputError(f"--percentile must be in (0, 100], got {percentile}")
    names = list(tensors) if tensors is not None else calibration_tensors(model)
    exposed = expose_outputs(model, names)
    runner = ModelRunner(exposed, threads=threads, name="calibration model")
    available = set(runner.output_names) | set(runner.input_names)
    names = [n for n in names if n in available]
    hist = method != "minmax"
    collectors: dict[str, HistogramCollector | MinMaxCollector] = {}
    want_means = set(channel_stats)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    dtypes: dict[str, np.dtype[Any]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    total = data.length()
    done = 0
    for batch in iter_batches(data.samples(), data.specs, batch_size):
        where = f"samples {batch.indices[0]}-{batch.indices[-1]} of {data.description}"
        outs = runner.run(batch.feed, where)
        values: dict[str, Any] = {**batch.feed, **outs}
        for name in names:
            arr = values.get(name)
            if not isinstance(arr, np.ndarray):
                continue
            if name not in dtypes:
                dtypes[name] = arr.dtype
                shapes[name] = tuple(arr.shape)
            if arr.dtype.kind != "f":
                continue
            col = collectors.get(name)
            if col is None:
                col = HistogramCollector(bins) if hist else MinMaxCollector()
                collectors[name] = col
            col.update(arr)
            if name in want_means and arr.ndim >= 1:
                s, c = _channel_sum(arr)
                if name in sums and sums[name].shape == s.shape:
                    sums[name] += s
                    counts[name] += c
                elif name not in sums:
                    sums[name], counts[name] = s, c
        del outs, values
        done += batch.size
        if progress:
            progress(done, total)
    if done == 0:
        raise CalibrationError(f"{data.description}: no calibration samples")
    ranges: dict[str, Range] = {}
    nonfinite: dict[str, int] = {}
    outputs = {v.name for v in model.graph.outputs}
    for name, col in collectors.items():
        if isinstance(col, HistogramCollector):
            # graph outputs are never clipped: clipping them is a direct output error
            r = col.range(
                "minmax" if name in outputs else method, percentile=percentile, levels=levels
            )
            nf = col.minmax.nonfinite
        else:
            r = col.range()
            nf = col.nonfinite
        if nf:
            nonfinite[name] = nf
        ranges[name] = r
    return CalibrationResult(
        method=method,
        ranges=ranges,
        samples=done,
        dtypes=dtypes,
        shapes=shapes,
        channel_means={n: sums[n] / max(counts[n], 1) for n in sums},
        nonfinite=nonfinite,
        state_nbytes=sum(c.state_nbytes() for c in collectors.values()),
    )


def save_ranges(result: CalibrationResult, path: str | os.PathLike[str]) -> Path:
    """Write the ranges as JSON (atomically)."""
    p = Path(path)
    payload = {
        "format": RANGES_FORMAT,
        "method": result.method,
        "samples": result.samples,
        "tensors": {k: [r.lo, r.hi] for k, r in result.ranges.items()},
    }
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, p)
    return p


def load_ranges(path: str | os.PathLike[str]) -> CalibrationResult:
    """Read ranges written by :func:`save_ranges`.

    Raises:
        InvalidInputError: Missing file or not an onnxcomp ranges file.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"{p}: no such ranges file")
    try:
        payload = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{p}: not a JSON ranges file ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != RANGES_FORMAT:
        raise InvalidInputError(
            f"{p}: not an onnxcomp ranges file (expected format {RANGES_FORMAT})"
        )
    ranges: dict[str, Range] = {}
    for name, v in payload.get("tensors", {}).items():
        try:
            lo, hi = float(v[0]), float(v[1])
        except (TypeError, ValueError, IndexError) as e:
            raise InvalidInputError(f"{p}: bad range for tensor {name!r}: {v!r}") from e
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise InvalidInputError(f"{p}: bad range for tensor {name!r}: {v!r}")
        ranges[name] = Range(lo, hi)
    return CalibrationResult(
        method=str(payload.get("method", "minmax")),
        ranges=ranges,
        samples=int(payload.get("samples", 0)),
    )
