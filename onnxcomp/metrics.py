"""Streaming fidelity metrics between a reference and a candidate tensor.

For reference ``r`` and candidate ``c`` over all samples seen so far (each
output flattened):

* max / mean absolute error: ``max|r - c|``, ``mean|r - c|``
* cosine similarity: ``<r, c> / (|r| |c|)`` over the concatenation of all
  samples (1.0 when both are zero), and the minimum per-sample cosine
* SQNR in dB: ``10 log10(sum r^2 / sum (r - c)^2)`` (``inf`` when identical)
* top-1 agreement for classifier-like outputs (rank 2, ``[batch, classes]``
  with at least 2 classes): fraction of samples with equal ``argmax``.

Sums are accumulated in float64 batch by batch, so memory does not depend on
the number of samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FidelityAccumulator", "OutputFidelity", "is_classifier_like", "top1"]


def is_classifier_like(shape: tuple[int, ...], dtype: np.dtype[Any]) -> bool:
    """``[batch, classes]`` float outputs with at least two classes."""
    return dtype.kind == "f" and len(shape) == 2 and shape[1] >= 2


def top1(x: np.ndarray) -> np.ndarray:
    """Arg-max class per sample of a ``[batch, classes]`` array."""
    return np.asarray(x).reshape(x.shape[0], -1).argmax(axis=1)


@dataclass(frozen=True)
class OutputFidelity:
    """Fidelity of one output over a data set."""

    name: str
    samples: int
    max_abs_error: float
    mean_abs_error: float
    cosine: float
    min_sample_cosine: float
    sqnr_db: float
    top1_agreement: float | None
    ref_max_abs: float

    def to_dict(self) -> dict[str, Any]:
        def num(x: float | None) -> float | str | None:
            if x is None:
                return None
            if math.isinf(x):
                return "inf" if x > 0 else "-inf"
            if math.isnan(x):
                return "nan"
            return float(f"{x:.8g}")

        return {
            "name": self.name,
            "samples": self.samples,
            "max_abs_error": num(self.max_abs_error),
            "mean_abs_error": num(self.mean_abs_error),
            "cosine": num(self.cosine),
            "min_sample_cosine": num(self.min_sample_cosine),
            "sqnr_db": num(self.sqnr_db),
            "top1_agreement": num(self.top1_agreement),
            "ref_max_abs": num(self.ref_max_abs),
        }


def _cos(dot: float, nr: float, nc: float) -> float:
    if nr == 0.0 and nc == 0.0:
        return 1.0
    if nr == 0.0 or nc == 0.0:
        return 0.0
    return float(min(1.0, max(-1.0, dot / math.sqrt(nr * nc))))


class FidelityAccumulator:
    """Accumulates the metrics of one output, batch by batch."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.samples = 0
        self.elems = 0
        self.sum_abs = 0.0
        self.max_abs = 0.0
        self.ref_max_abs = 0.0
        self.dot = 0.0
        self.ref_sq = 0.0
        self.cand_sq = 0.0
        self.err_sq = 0.0
        self.min_cos = 1.0
        self.top1_total = 0
        self.top1_equal = 0
        self.classifier: bool | None = None
        self.nonfinite = 0

    def update(self, ref: Any, cand: Any, batch: int = 1) -> None:
        """Add one batch of outputs (``batch`` samples stacked on axis 0)."""
        r = np.asarray(ref)
        c = np.asarray(cand)
        if r.shape != c.shape:
            raise ValueError(
                f"output {self.name!r}: reference shape {list(r.shape)} != candidate {list(c.shape)}"
            )
        if self.classifier is None:
            self.classifier = is_classifier_like(r.shape, r.dtype)
        rf = r.astype(np.float64, copy=False).reshape(-1)
        cf = c.astype(np.float64, copy=False).reshape(-1)
        ok = np.isfinite(rf) & np.isfinite(cf)
        if not ok.all():
            same = (rf == cf) | (np.isnan(rf) & np.isnan(cf))
            self.nonfinite += int((~ok & ~same).sum())
            rf = np.where(ok, rf, 0.0)
            cf = np.where(ok, cf, 0.0)
        err = np.abs(rf - cf)
        self.elems += rf.size
        self.sum_abs += float(err.sum())
        if err.size:
            self.max_abs = max(self.max_abs, float(err.max()))
            self.ref_max_abs = max(self.ref_max_abs, float(np.abs(rf).max()))
        self.dot += float(rf @ cf)
        self.ref_sq += float(rf @ rf)
        self.cand_sq += float(cf @ cf)
        self.err_sq += float(err @ err)
        rows = batch if r.ndim > 0 and r.shape[0] == batch and batch > 0 else 1
        r2 = rf.reshape(rows, -1)
        c2 = cf.reshape(rows, -1)
        for i in range(rows):
            self.min_cos = min(
                self.min_cos, _cos(float(r2[i] @ c2[i]), float(r2[i] @ r2[i]), float(c2[i] @ c2[i]))
            )
        if self.classifier and r.ndim == 2:
            self.top1_total += r.shape[0]
            self.top1_equal += int((top1(r) == top1(c)).sum())
        self.samples += rows

    def result(self) -> OutputFidelity:
        """The metrics so far. Non-finite values that differ count as infinite error."""
        if self.nonfinite:
            return OutputFidelity(
                self.name, self.samples, math.inf, math.inf, 0.0, 0.0, -math.inf,
                (self.top1_equal / self.top1_total) if self.top1_total else None, self.ref_max_abs,
            )
        if self.err_sq == 0.0:
            sqnr = math.inf
        elif self.ref_sq == 0.0:
            sqnr = -math.inf
        else:
            sqnr = 10.0 * math.log10(self.ref_sq / self.err_sq)
        return OutputFidelity(
            name=self.name,
            samples=self.samples,
            max_abs_error=self.max_abs,
            mean_abs_error=self.sum_abs / self.elems if self.elems else 0.0,
            cosine=_cos(self.dot, self.ref_sq, self.cand_sq),
            min_sample_cosine=self.min_cos,
            sqnr_db=sqnr,
            top1_agreement=(self.top1_equal / self.top1_total) if self.top1_total else None,
            ref_max_abs=self.ref_max_abs,
        )
