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

    def __init__(self, bins: int = DEFAULT_BINS, *, init: Range | None = None) -> None:
        if bins < 16:
            raise ValueError(f"bins must be >= 16, got {bins}")
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.width = 0.0
        self.offset = 0
        self.minmax = MinMaxCollector()
        if init is not None and math.isfinite(init.lo) and math.isfinite(init.hi):
            # the range is known (a first min/max pass): start on the grid that covers it
            self._init_grid(init.lo, init.hi)

    def _init_grid(self, lo: float, hi: float) -> bool:
        span = hi - lo
        scale = max(abs(lo), abs(hi))
        if span <= 0.0:
            span = scale * 1e-3 if scale > 0 else 1e-6
        # a power-of-two width keeps every later rescale exact
        w = 2.0 ** math.ceil(math.log2(span / (self.bins - 2)))
        grid = self._grid_for(lo, hi, w)
        if grid is None:
            return False
        self.width, self.offset = grid
        return True

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

    _BLOCK = 1 << 18  # 1 MB of float32: temporaries stay small and in cache

    def update(self, x: np.ndarray) -> None:
        a = np.asarray(x).reshape(-1)
        if a.size == 0:
            return
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float64)
        lo, hi = float(np.min(a)), float(np.max(a))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            ok = np.isfinite(a)
            self.minmax.nonfinite += int(a.size - np.count_nonzero(ok))
            a = a[ok]
            if a.size == 0:
                return
            lo, hi = float(np.min(a)), float(np.max(a))
        mm = self.minmax
        mm.min, mm.max, mm.count = min(mm.min, lo), max(mm.max, hi), mm.count + int(a.size)
        if self.width == 0.0:
            if not self._init_grid(lo, hi):
                return
        cur_lo = self.offset * self.width
        cur_hi = (self.offset + self.bins) * self.width
        if lo < cur_lo or hi >= cur_hi:
            # cover the used bins and the new data only (empty bins are dropped)
            nz = np.nonzero(self.counts)[0]
            if nz.size:
                lo = min(lo, (self.offset + int(nz[0])) * self.width)
                hi = max(hi, (self.offset + int(nz[-1]) + 0.5) * self.width)
            grid = self._grid_for(lo, hi, self.width)
            if grid is None:
                return
            self._rebin(*grid)
        # the width is a power of two: a / w is exact in the input's precision, so
        # float32 data is binned exactly like its float64 copy would be
        inv = 1.0 / self.width
        # the integer bin numbers floor(a / w) and the offset are exact in the input's
        # float type while below 2^mantissa: subtract and clip there (half the memory
        # traffic of int64), then cast the indices, already in [0, B)
        exact = float(abs(self.offset) + self.bins) < 2.0 ** np.finfo(a.dtype).nmant
        for start in range(0, a.size, self._BLOCK):
            blk = a[start : start + self._BLOCK] * a.dtype.type(inv)
            if self.offset == 0 and exact:
                # non-negative data on a grid starting at 0 (ReLU outputs): the cast
                # truncates, which is floor here, so no floor pass is needed
                np.clip(blk, 0, self.bins - 1, out=blk)
                idx = blk.astype(np.intp)
                self.counts += np.bincount(idx, minlength=self.bins)
                continue
            np.floor(blk, out=blk)
            if exact:
                blk -= a.dtype.type(self.offset)
                np.clip(blk, 0, self.bins - 1, out=blk)
                idx = blk.astype(np.intp)
            else:
                idx = blk.astype(np.int64)
                idx -= self.offset
                np.clip(idx, 0, self.bins - 1, out=idx)
            self.counts += np.bincount(idx, minlength=self.bins)

    def relu(self) -> HistogramCollector:
        """The histogram of ``max(x, 0)`` for the data seen, without seeing it.

        The grid is aligned (edges are integer multiples of the width), so 0 is an
        edge: the bins at and above it carry over and every negative value lands on
        the bin starting at 0, exactly where a histogram of ``max(x, 0)`` on the same
        grid would count it.
        """
        out = HistogramCollector(self.bins)
        src, mm = self.minmax, out.minmax
        mm.count, mm.nonfinite = src.count, src.nonfinite
        if src.empty:
            return out
        mm.min, mm.max = max(src.min, 0.0), max(src.max, 0.0)
        out.width = self.width
        if self.offset >= 0:
            out.offset, out.counts = self.offset, self.counts.copy()
            return out
        out.offset = 0
        shift = -self.offset  # index of the bin starting at 0
        if shift < self.bins:
            out.counts[: self.bins - shift] = self.counts[shift:]
        out.counts[0] += int(self.counts[: min(shift, self.bins)].sum())
        return out

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
    """Clipping range minimizing KL(P || Q) (TensorRT's entropy calibration).

    Every candidate window is evaluated in ``O(levels)`` from prefix sums rather
    than bin by bin. With total mass ``T`` (P's mass), window mass ``W`` (Q's),
    group masses ``M_g`` and non-empty bin counts ``N_g`` (group ``g`` of a window
    of ``m`` bins holds bins ``ceil(g m / L) .. ceil((g + 1) m / L) - 1``), the
    non-empty bins of group ``g`` all have ``q = M_g / N_g``, so

        KL = (1/T) sum_i p_i log p_i - log T - (1/T) sum_i p_i log max(q_i / W, 1e-12)

    where the first sum is a prefix sum of ``h log h`` corrected at the two edge
    bins (which also hold the outliers), and the last one is
    ``sum_g M_g log max(M_g / (N_g W), 1e-12)`` plus the outliers' terms.
    """
    counts = counts.astype(np.float64, copy=True)
    if edges[0] <= 0.0 < edges[-1]:
        # zero is exact in the quantized grid; the spike of exact zeros (ReLU outputs)
        # merged with its neighbours would dominate the divergence and force the
        # narrowest window, so its bin is left out of the comparison
        counts[int(np.searchsorted(edges, 0.0, side="right")) - 1] = 0.0
    total = float(counts.sum())
    if total <= 0:
        return Range(float(edges[0]), float(edges[-1]))
    n = counts.size
    cands = _candidates(counts, edges, levels)
    lr = np.asarray(cands, dtype=np.int64).reshape(-1, 2)
    left, right = lr[:, 0], lr[:, 1]
    width = right - left
    with np.errstate(divide="ignore", invalid="ignore"):
        hlogh = np.where(counts > 0, counts * np.log(counts), 0.0)
    cs = np.concatenate([[0.0], np.cumsum(counts)])
    cnz = np.concatenate([[0.0], np.cumsum(counts > 0)])
    chl = np.concatenate([[0.0], np.cumsum(hlogh)])
    mass = cs[right] - cs[left]  # W
    out_l = cs[left]
    out_r = total - cs[right]
    w0, w1 = counts[left], counts[right - 1]
    p0, p1 = w0 + out_l, w1 + out_r

    def xlogx(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, x * np.log(x), 0.0)

    a = chl[right] - chl[left] - xlogx(w0) - xlogx(w1) + xlogx(p0) + xlogx(p1)
    # groups: [C, L] masses and non-empty counts
    g = np.arange(levels + 1, dtype=np.int64)[None, :]
    bound = np.minimum(-((-g * width[:, None]) // levels), width[:, None])
    gstart = left[:, None] + bound
    g_mass = cs[gstart[:, 1:]] - cs[gstart[:, :-1]]
    g_nz = cnz[gstart[:, 1:]] - cnz[gstart[:, :-1]]
    safe_w = np.where(mass > 0, mass, 1.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        lq = np.log(np.maximum(g_mass / (np.maximum(g_nz, 1.0) * safe_w), 1e-12))
    lq = np.where(g_nz > 0, lq, 0.0)
    b = np.sum(g_mass * lq, axis=1)
    rows = np.arange(len(cands))
    log_tiny = math.log(1e-12)
    for extra, w_edge, gi in (
        (out_l, w0, np.zeros_like(width)),
        (out_r, w1, ((width - 1) * levels) // np.maximum(width, 1)),
    ):
        b = b + np.where(
            w_edge > 0, extra * lq[rows, gi], np.where(extra > 0, extra * log_tiny, 0.0)
        )
    kl = a / total - math.log(total) - b / total
    kl = np.where(mass > 0, kl, np.inf)
    if not np.isfinite(kl).any():
        return Range(float(edges[0]), float(edges[n]))
    # the first candidate within 1e-12 of the minimum, as a sequential search would keep
    best = int(np.argmax(kl <= kl.min() + 1e-12))
    l_, r_ = cands[best]
    return Range(float(edges[l_]), float(edges[r_]))


def mse_range(counts: np.ndarray, edges: np.ndarray, levels: int = 255) -> Range:
    """Clipping range minimizing the expected squared quantization error."""
    centers = 0.5 * (edges[:-1] + edges[1:])
    cands = _candidates(counts, edges, levels)
    lr = np.asarray(cands, dtype=np.int64).reshape(-1, 2)
    lo = np.minimum(edges[lr[:, 0]], 0.0)
    hi = np.maximum(edges[lr[:, 1]], 0.0)
    good = hi > lo
    step = np.where(good, (hi - lo) / levels, 1.0)
    zp = np.round(-lo / step)
    qc = np.clip(np.round(centers[None, :] / step[:, None]) + zp[:, None], 0, levels) - zp[:, None]
    q = qc * step[:, None]
    err = np.where(good, np.sum(counts[None, :] * (centers[None, :] - q) ** 2, axis=1), np.inf)
    if not np.isfinite(err).any():
        return Range(float(edges[0]), float(edges[-1]))
    best = int(np.argmin(err))
    return Range(float(edges[lr[best, 0]]), float(edges[lr[best, 1]]))
