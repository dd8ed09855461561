"""Streaming range collectors for calibration.

Every collector sees a tensor batch by batch and keeps a fixed-size state, so
its memory does not depend on the number of samples.

* :class:`MinMaxCollector`: running ``min`` / ``max``.
* :class:`HistogramCollector`: a histogram of ``B`` bins on the aligned grid
  ``[o*w, (o+B)*w)`` (``o`` an integer offset, ``w`` the bin width). When data
  falls outside, the width is multiplied by ``2^m`` (the smallest ``m`` whose
  grid covers old and new data in ``B`` bins). Old bin ``i`` lies wholly in new
  bin ``floor((o + i) / 2^m) - o'``, so merging is exact: the final counts equal
  the one-shot histogram of the concatenated data on the final grid (up to
  values lying exactly on an edge, where float rounding may pick a neighbour).

Range selection from a histogram with counts ``h_i`` on bin centres ``x_i``:

* ``percentile p``: the ``(1-p)/2`` and ``1-(1-p)/2`` quantiles of the
  piecewise-uniform CDF (the lower one is the minimum when the data is
  non-negative, so ReLU outputs keep 0);
* ``entropy``: among clipping ranges ``[lo, hi]`` that shrink the observed range
  towards 0 (at least ``levels`` bins wide), the one minimizing
  ``KL(P || Q)``, where ``P`` is the clipped histogram (outliers added to the
  edge bins) and ``Q`` is the window without outliers merged into ``levels``
  quantization bins and spread back uniformly over its non-empty bins
  (TensorRT's method; outlier mass in ``P`` without a counterpart in ``Q`` is
  what penalizes tight clipping). The bin holding 0 is left out: zero is exact
  on the quantized grid, and the spike of exact zeros of ReLU outputs would
  otherwise dominate the divergence and force the narrowest window. This needs
  many more bins than levels (2048 bins for 255 levels);
* ``mse``: the same candidates, minimizing the expected squared error
  ``sum_i h_i (x_i - Q(x_i))^2`` with ``Q`` the uniform quantizer of
  ``levels`` steps on ``[lo, hi]`` (clipping included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_BINS",
    "HistogramCollector",
    "MinMaxCollector",
    "Range",
    "entropy_range",
    "mse_range",
    "percentile_range",
]

DEFAULT_BINS = 2048
_MAX_CANDIDATES = 256


@dataclass(frozen=True)
class Range:
    """A calibrated ``[lo, hi]`` range of one tensor."""

    lo: float
    hi: float


class MinMaxCollector:
    """Running minimum and maximum of the finite values; counts non-finite ones."""

    def __init__(self) -> None:
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.nonfinite = 0

    def update(self, x: np.ndarray) -> None:
        a = np.asarray(x).reshape(-1)
        if a.size == 0:
            return
        if a.dtype.kind != "f":
            a = a.astype(np.float32)
        lo, hi = np.min(a), np.max(a)
        if not (np.isfinite(lo) and np.isfinite(hi)):
            ok = np.isfinite(a)
            self.nonfinite += int(a.size - ok.sum())
            a = a[ok]
            if a.size == 0:
                return
            lo, hi = np.min(a), np.max(a)
        self.min = min(self.min, float(lo))
        self.max = max(self.max, float(hi))
        self.count += int(a.size)

    @property
    def empty(self) -> bool:
        return self.count == 0

    def range(self) -> Range:
        if self.empty:
            return Range(0.0, 0.0)
        return Range(self.min, self.max)

    def state_nbytes(self) -> int:
        return 32


class HistogramCollector:
    """A fixed-size histogram merged incrementally on an aligned, growing grid.

    Args:
        bins: Number of bins ``B`` (fixed for the life of the collector).
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if bins < 16:
            raise ValueError(f"bins must be >= 16, got {bins}")
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.width = 0.0
        self.offset = 0
        self.minmax = MinMaxCollector()

    @property
    def edges(self) -> np.ndarray:
        """Bin edges, ``B + 1`` values."""
        return (self.offset + np.arange(self.bins + 1, dtype=np.float64)) * self.width

    @property
    def empty(self) -> bool:
        return self.minmax.empty

    def state_nbytes(self) -> int:
        return int(self.counts.nbytes) + self.minmax.state_nbytes() + 16

    def _grid_for(self, lo: float, hi: float, width: float) -> tuple[float, int] | None:
        """Smallest power-of-two multiple of ``width`` whose grid covers [lo, hi]."""
        w = width
        for _ in range(2100):
            o = math.floor(lo / w)
            if math.floor(hi / w) - o < self.bins:
                return w, o
            w *= 2.0
        return None

    def update(self, x: np.ndarray) -> None:
        a = np.asarray(x).reshape(-1)
        if a.size == 0:
            return
        if a.dtype != np.float64:
            a = a.astype(np.float64)
        before = self.minmax.nonfinite
        self.minmax.update(a)
        if self.minmax.nonfinite != before:
            a = a[np.isfinite(a)]
        if a.size == 0:
            return
        lo, hi = float(a.min()), float(a.max())
        if self.width == 0.0:
            span = hi - lo
            scale = max(abs(lo), abs(hi))
            if span <= 0.0:
                span = scale * 1e-3 if scale > 0 else 1e-6
            # a power-of-two width keeps every later rescale exact
            w = 2.0 ** math.ceil(math.log2(span / (self.bins - 2)))
            grid = self._grid_for(lo, hi, w)
            if grid is None:
                return
            self.width, self.offset = grid
        else:
            cur_lo = self.offset * self.width
            cur_hi = (self.offset + self.bins) * self.width
            if lo < cur_lo or hi >= cur_hi:
                # cover the used bins and the new data only (empty bins are dropped)
                nz = np.nonzero(self.counts)[0]
                used_lo = (self.offset + int(nz[0])) * self.width
                used_hi = (self.offset + int(nz[-1]) + 0.5) * self.width
                grid = self._grid_for(min(lo, used_lo), max(hi, used_hi), self.width)
                if grid is None:
                    return
                self._rebin(*grid)
        idx = np.floor(a / self.width).astype(np.int64) - self.offset
        np.clip(idx, 0, self.bins - 1, out=idx)
        self.counts += np.bincount(idx, minlength=self.bins)

    def _rebin(self, width: float, offset: int) -> None:
        factor = int(round(width / self.width))
        old_index = self.offset + np.arange(self.bins, dtype=np.int64)
        new_index = np.floor_divide(old_index, factor) - offset
        keep = self.counts > 0
        counts = np.zeros(self.bins, dtype=np.int64)
        np.add.at(counts, new_index[keep], self.counts[keep])
        self.counts = counts
        self.width, self.offset = width, offset

    # ------------------------------------------------------------------ ranges

    def _used(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts and edges restricted to the non-empty span, clamped to the true min/max."""
        nz = np.nonzero(self.counts)[0]
        a, b = int(nz[0]), int(nz[-1]) + 1
        edges = self.edges[a : b + 1].copy()
        edges[0] = max(edges[0], self.minmax.min)
        edges[-1] = min(edges[-1], self.minmax.max)
        if edges[-1] <= edges[0]:
            edges[-1] = edges[0]
        return self.counts[a:b].astype(np.float64), edges

    def range(
        self, method: str = "minmax", *, percentile: float = 99.99, levels: int = 255
    ) -> Range:
        """The range chosen by ``method`` (minmax, percentile, entropy, mse)."""
        if self.empty:
            return Range(0.0, 0.0)
        if method == "minmax":
            return self.minmax.range()
        counts, edges = self._used()
        if method == "percentile":
            return percentile_range(counts, edges, percentile)
        if method == "entropy":
            return entropy_range(counts, edges, levels)
        if method == "mse":
            return mse_range(counts, edges, levels)
        raise ValueError(f"unknown calibration method {method!r}")


def _quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    cdf = np.concatenate([[0.0], np.cumsum(counts)])
    cdf /= cdf[-1]
    return float(np.interp(q, cdf, edges))


def percentile_range(counts: np.ndarray, edges: np.ndarray, percentile: float) -> Range:
    """Central ``percentile`` % of the distribution (one-sided for non-negative data)."""
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    tail = (100.0 - percentile) / 100.0
    if edges[0] >= 0.0:
        return Range(float(edges[0]), _quantile(counts, edges, 1.0 - tail))
    if edges[-1] <= 0.0:
        return Range(_quantile(counts, edges, tail), float(edges[-1]))
    return Range(_quantile(counts, edges, tail / 2), _quantile(counts, edges, 1.0 - tail / 2))


def _candidates(counts: np.ndarray, edges: np.ndarray, levels: int) -> list[tuple[int, int]]:
    """Clipping windows [l, r) of bins shrinking the used span towards the zero edge."""
    n = counts.size
    if n <= levels:
        return [(0, n)]
    z = int(np.clip(np.searchsorted(edges, 0.0), 0, n))
    left, right = z, n - z
    steps = min(_MAX_CANDIDATES, n - levels + 1)
    out: list[tuple[int, int]] = []
    for f in np.linspace(levels / n, 1.0, steps):
        l_ = z - int(round(f * left))
        r_ = z + int(round(f * right))
        if r_ - l_ < min(levels, n):
            continue
        if not out or out[-1] != (l_, r_):
            out.append((l_, r_))
    return out or [(0, n)]


def entropy_range(counts: np.ndarray, edges: np.ndarray, levels: int = 255) -> Range:
    """Clipping range minimizing KL(P || Q) (TensorRT's entropy calibration)."""
    best = (math.inf, 0, counts.size)
    counts = counts.copy()
    if edges[0] <= 0.0 < edges[-1]:
        # zero is exact in the quantized grid; the spike of exact zeros (ReLU outputs)
        # merged with its neighbours would dominate the divergence and force the
        # narrowest window, so its bin is left out of the comparison
        counts[int(np.searchsorted(edges, 0.0, side="right")) - 1] = 0.0
    if counts.sum() <= 0:
        return Range(float(edges[0]), float(edges[-1]))
    total_nz = counts > 0
    for l_, r_ in _candidates(counts, edges, levels):
        window = counts[l_:r_]
        p = window.copy()
        p[0] += counts[:l_].sum()
        p[-1] += counts[r_:].sum()
        nz = total_nz[l_:r_]
        m = p.size
        # the candidate: the window without outliers, merged into `levels` groups and
        # spread back over each group's non-empty bins
        group = (np.arange(m) * levels) // m
        g_mass = np.bincount(group, weights=window, minlength=levels)
        g_nz = np.bincount(group, weights=nz.astype(np.float64), minlength=levels)
        q = np.where(nz, g_mass[group] / np.maximum(g_nz[group], 1.0), 0.0)
        if p.sum() <= 0 or q.sum() <= 0:
            continue
        ps = p / p.sum()
        qs = q / q.sum()
        mask = ps > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = float(np.sum(ps[mask] * np.log(ps[mask] / np.maximum(qs[mask], 1e-12))))
        if kl < best[0] - 1e-12:
            best = (kl, l_, r_)
    _, l_, r_ = best
    return Range(float(edges[l_]), float(edges[r_]))


def mse_range(counts: np.ndarray, edges: np.ndarray, levels: int = 255) -> Range:
    """Clipping range minimizing the expected squared quantization error."""
    centers = 0.5 * (edges[:-1] + edges[1:])
    best = (math.inf, float(edges[0]), float(edges[-1]))
    for l_, r_ in _candidates(counts, edges, levels):
        lo, hi = float(min(edges[l_], 0.0)), float(max(edges[r_], 0.0))
        if hi <= lo:
            continue
        step = (hi - lo) / levels
        zp = round(-lo / step)
        q = (np.clip(np.round(centers / step) + zp, 0, levels) - zp) * step
        # within-bin rounding noise of a uniform density, when the bin is finer than the step
        err = float(np.sum(counts * (centers - q) ** 2))
        if err < best[0]:
            best = (err, float(edges[l_]), float(edges[r_]))
    return Range(best[1], best[2])
