"""Streaming calibration collectors against exact numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxcomp.quantize._collectors import (
    HistogramCollector,
    MinMaxCollector,
    Range,
    entropy_range,
    mse_range,
    percentile_range,
)


def _batches(seed: int, n: int, size: int = 500) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal(size) * (0.5 + i % 7) + (i % 3)).astype(np.float32) for i in range(n)
    ]


def test_minmax_equals_numpy() -> None:
    batches = _batches(0, 30)
    c = MinMaxCollector()
    for b in batches:
        c.update(b)
    allx = np.concatenate(batches)
    assert c.range().lo == float(allx.min())
    assert c.range().hi == float(allx.max())
    assert c.count == allx.size


def test_minmax_counts_nonfinite() -> None:
    c = MinMaxCollector()
    c.update(np.array([1.0, np.nan, -2.0, np.inf], dtype=np.float32))
    assert (c.min, c.max, c.nonfinite) == (-2.0, 1.0, 2)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    nbatch=st.integers(1, 25),
    bins=st.sampled_from([64, 256, 2048]),
    grow=st.floats(1.0, 50.0),
)
def test_streaming_histogram_equals_one_shot(
    seed: int, nbatch: int, bins: int, grow: float
) -> None:
    rng = np.random.default_rng(seed)
    batches = [
        (rng.standard_normal(rng.integers(1, 400)) * (1 + grow * i / nbatch) + rng.normal()).astype(
            np.float32
        )
        for i in range(nbatch)
    ]
    h = HistogramCollector(bins)
    for b in batches:
        h.update(b)
    allx = np.concatenate(batches).astype(np.float64)
    ref, _ = np.histogram(allx, bins=h.edges)
    assert h.counts.sum() == allx.size
    # identical except for values lying exactly on an edge (float rounding)
    assert np.abs(ref - h.counts).sum() <= 2
    assert h.edges[0] <= allx.min() and h.edges[-1] >= allx.max()
    # the grid is not much wider than the data: at least a quarter of the bins span it
    used = np.nonzero(h.counts)[0]
    if allx.max() > allx.min():
        assert used[-1] - used[0] + 1 >= bins // 4 - 2


def test_collector_memory_does_not_grow() -> None:
    rng = np.random.default_rng(1)
    sizes = {}
    for n in (10, 1000):
        h = HistogramCollector(2048)
        for i in range(n):
            h.update(rng.standard_normal(64) * (1 + i / 100))
        sizes[n] = (h.counts.shape, h.counts.nbytes, h.state_nbytes())
    assert sizes[10] == sizes[1000]
    assert sizes[1000][1] == 2048 * 8


def test_percentile_matches_numpy_within_a_bin() -> None:
    batches = _batches(2, 20)
    h = HistogramCollector(2048)
    for b in batches:
        h.update(b)
    allx = np.concatenate(batches)
    r = h.range("percentile", percentile=99.0)
    lo, hi = np.percentile(allx, [0.5, 99.5])
    assert abs(r.lo - lo) <= 2 * h.width
    assert abs(r.hi - hi) <= 2 * h.width


def test_percentile_one_sided_for_nonnegative() -> None:
    x = np.abs(np.random.default_rng(3).standard_normal(10_000))
    h = HistogramCollector()
    h.update(x)
    r = h.range("percentile", percentile=99.0)
    assert r.lo == 0.0 or r.lo == pytest.approx(x.min())
    assert abs(r.hi - np.percentile(x, 99.0)) <= 2 * h.width


def test_entropy_does_not_degenerate_to_minmax() -> None:
    """Pitfall 3: with 2048 bins for 255 levels the KL search clips outliers."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal(100_000), [40.0, -35.0]])
    h = HistogramCollector(2048)
    h.update(x)
    r = h.range("entropy")
    assert 2.0 < r.hi < 30.0 and -30.0 < r.lo < -2.0
    m = h.range("mse")
    assert 2.0 < m.hi < 40.0
    assert h.range("minmax").hi == 40.0


def test_range_functions_on_uniform_data_keep_full_range() -> None:
    counts = np.full(2048, 100.0)
    edges = np.linspace(-1, 1, 2049)
    assert entropy_range(counts, edges, 255).hi == pytest.approx(1.0, abs=0.05)
    assert mse_range(counts, edges, 255).hi == pytest.approx(1.0, abs=0.05)
    r = percentile_range(counts, edges, 100.0)
    assert (r.lo, r.hi) == (-1.0, 1.0)


def test_constant_data() -> None:
    h = HistogramCollector()
    for _ in range(3):
        h.update(np.full(10, 3.5))
    for method in ("minmax", "percentile", "entropy", "mse"):
        r = h.range(method)
        assert r.lo <= 3.5 <= r.hi + 1e-6


def test_entropy_on_relu_output_is_not_the_narrowest_window() -> None:
    """Half the values are exact zeros: the zero spike must not force the tightest clip."""
    rng = np.random.default_rng(5)
    x = np.maximum(rng.standard_normal(200_000), 0.0)
    h = HistogramCollector(2048)
    h.update(x)
    r = h.range("entropy")
    assert r.lo == 0.0
    assert r.hi > 2.5  # the old narrowest window was ~255 bins (~1.0)


# ---------------------------------------------------------------- vectorized search


def _entropy_loop(counts: np.ndarray, edges: np.ndarray, levels: int = 255) -> Range:
    """Reference: one candidate at a time, exactly as TensorRT describes it."""
    from onnxcomp.quantize._collectors import _candidates

    best = (np.inf, 0, counts.size)
    counts = counts.astype(np.float64, copy=True)
    if edges[0] <= 0.0 < edges[-1]:
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
        group = (np.arange(m) * levels) // m
        g_mass = np.bincount(group, weights=window, minlength=levels)
        g_nz = np.bincount(group, weights=nz.astype(np.float64), minlength=levels)
        q = np.where(nz, g_mass[group] / np.maximum(g_nz[group], 1.0), 0.0)
        if p.sum() <= 0 or q.sum() <= 0:
            continue
        ps, qs = p / p.sum(), q / q.sum()
        mask = ps > 0
        kl = float(np.sum(ps[mask] * np.log(ps[mask] / np.maximum(qs[mask], 1e-12))))
        if kl < best[0] - 1e-12:
            best = (kl, l_, r_)
    return Range(float(edges[best[1]]), float(edges[best[2]]))


def _mse_loop(counts: np.ndarray, edges: np.ndarray, levels: int = 255) -> Range:
    from onnxcomp.quantize._collectors import _candidates

    centers = 0.5 * (edges[:-1] + edges[1:])
    best = (np.inf, float(edges[0]), float(edges[-1]))
    for l_, r_ in _candidates(counts, edges, levels):
        lo, hi = float(min(edges[l_], 0.0)), float(max(edges[r_], 0.0))
        if hi <= lo:
            continue
        step = (hi - lo) / levels
        zp = round(-lo / step)
        q = (np.clip(np.round(centers / step) + zp, 0, levels) - zp) * step
        err = float(np.sum(counts * (centers - q) ** 2))
        if err < best[0]:
            best = (err, float(edges[l_]), float(edges[r_]))
    return Range(best[1], best[2])


@pytest.mark.parametrize(
    "kind", ["normal", "relu", "laplace", "negative", "skewed", "sparse", "wide_outlier"]
)
def test_vectorized_searches_equal_the_loop(kind: str) -> None:
    rng = np.random.default_rng(sum(map(ord, kind)))
    x = {
        "normal": rng.standard_normal(50_000),
        "relu": np.maximum(rng.standard_normal(50_000), 0),
        "laplace": rng.laplace(size=50_000),
        "negative": -np.abs(rng.standard_normal(50_000)) - 0.5,
        "skewed": rng.exponential(size=50_000) - 0.3,
        "sparse": rng.choice([0.0, 1.0, 5.0, -2.0], size=5_000),
        "wide_outlier": np.concatenate([rng.standard_normal(50_000), [80.0, -60.0]]),
    }[kind].astype(np.float32)
    h = HistogramCollector(2048)
    for part in np.array_split(x, 7):
        h.update(part)
    counts, edges = h._used()
    assert entropy_range(counts, edges, 255) == _entropy_loop(counts, edges, 255)
    assert mse_range(counts, edges, 255) == _mse_loop(counts, edges, 255)
    assert h.range("entropy") == _entropy_loop(counts, edges, 255)


def test_histogram_started_on_known_range_equals_streaming() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.standard_normal(10_000).astype(np.float32) * (1 + i) for i in range(5)]
    allx = np.concatenate(parts)
    a = HistogramCollector(2048)
    b = HistogramCollector(2048, init=Range(float(allx.min()), float(allx.max())))
    for p in parts:
        a.update(p)
        b.update(p)
    assert b.counts.sum() == allx.size
    # b never re-binned: its grid is the finest one covering the data
    assert b.width <= a.width
    edges = b.edges
    ref, _ = np.histogram(allx.astype(np.float64), bins=edges)
    assert np.abs(ref - b.counts).sum() <= 2


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shift=st.floats(-3.0, 3.0),
    scale=st.floats(0.01, 100.0),
    chunks=st.integers(1, 5),
)
def test_relu_histogram_equals_direct_histogram_of_relu(
    seed: int, shift: float, scale: float, chunks: int
) -> None:
    """Deriving max(x, 0)'s histogram from x's equals binning max(x, 0) on that grid."""
    rng = np.random.default_rng(seed)
    parts = [((rng.standard_normal(300) + shift) * scale).astype(np.float32) for _ in range(chunks)]
    h = HistogramCollector(512)
    for p in parts:
        h.update(p)
    d = h.relu()
    direct = HistogramCollector(512)
    direct.width, direct.offset = d.width, d.offset
    for p in parts:
        direct.update(np.maximum(p, 0))
    assert (direct.width, direct.offset) == (d.width, d.offset)  # no rebinning happened
    np.testing.assert_array_equal(d.counts, direct.counts)
    assert (d.minmax.min, d.minmax.max, d.minmax.count) == (
        direct.minmax.min,
        direct.minmax.max,
        direct.minmax.count,
    )
    for method in ("minmax", "percentile", "entropy", "mse"):
        assert d.range(method, percentile=99.9) == direct.range(method, percentile=99.9)


def test_relu_of_all_negative_and_empty() -> None:
    h = HistogramCollector(256)
    assert h.relu().empty
    h.update(-np.linspace(1, 5, 100, dtype=np.float32))
    d = h.relu()
    assert d.counts.sum() == 100 and d.counts[0] == 100
    assert d.range("minmax") == Range(0.0, 0.0)
