from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from onnxcomp.data import (
    Dataset,
    ImagePreprocess,
    InputSpec,
    NpzSource,
    SyntheticSource,
    open_data,
)
from onnxcomp.errors import DataError, InvalidInputError

SPEC = [InputSpec("x", np.dtype(np.float32), ("N", 3, 4, 4))]
TWO = [
    InputSpec("a", np.dtype(np.float32), ("N", 5)),
    InputSpec("b", np.dtype(np.int64), ("N", 2)),
]


def _collect(ds: Dataset) -> list:
    return list(ds.samples())


@pytest.mark.parametrize("compressed", [True, False])
def test_npz_streams_rows_exactly(tmp_path: Path, compressed: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 3, 4, 4)).astype(np.float32)
    labels = np.arange(7)
    p = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(p, x=x, label=labels)
    ds = open_data(p, SPEC)
    samples = _collect(ds)
    assert len(ds) == 7 and len(samples) == 7
    for i, s in enumerate(samples):
        assert s.feed["x"].shape == (1, 3, 4, 4)
        np.testing.assert_array_equal(s.feed["x"][0], x[i])
        assert int(s.label) == i
    # re-iterable
    assert len(_collect(ds)) == 7


def test_npz_with_extra_sample_axis_and_fortran_order(tmp_path: Path) -> None:
    x = np.asfortranarray(np.random.default_rng(1).standard_normal((3, 1, 3, 4, 4)).astype(np.float32))
    p = tmp_path / "d.npz"
    np.savez(p, x=x)
    feeds = list(open_data(p, SPEC))
    assert [f["x"].shape for f in feeds] == [(1, 3, 4, 4)] * 3
    for i, f in enumerate(feeds):
        np.testing.assert_array_equal(f["x"], x[i])


def test_npz_reader_memory_does_not_hold_all_rows(tmp_path: Path) -> None:
    # Each yielded row is its own small array, not a view into a loaded whole.
    x = np.zeros((50, 3, 4, 4), np.float32)
    p = tmp_path / "d.npz"
    np.savez_compressed(p, x=x)
    for feed in open_data(p, SPEC):
        assert feed["x"].base is None or feed["x"].base.nbytes <= x[0].nbytes


def test_npz_errors(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((3, 3, 4, 4), np.float32), y=np.zeros((3, 2), np.float32))
    with pytest.raises(DataError, match=r"sample 0 of .*d.npz: unknown input name 'y'"):
        _collect(open_data(p, SPEC))
    np.savez(p, x=np.zeros((3, 3, 4, 4), np.float64))
    with pytest.raises(DataError, match="input 'x' has dtype float64, the model expects float32"):
        _collect(open_data(p, SPEC))
    np.savez(p, x=np.zeros((3, 3, 5, 4), np.float32))
    with pytest.raises(DataError, match=r"axis 2 must be 4"):
        _collect(open_data(p, SPEC))
    np.savez(p, x=np.zeros((3, 4, 4), np.float32))
    with pytest.raises(DataError, match="rank"):
        _collect(open_data(p, SPEC))
    bad = np.zeros((3, 3, 4, 4), np.float32)
    bad[2, 0, 0, 0] = np.nan
    np.savez(p, x=bad)
    with pytest.raises(DataError, match="sample 2 .* NaN or infinite"):
        _collect(open_data(p, SPEC))
    np.savez(p, x=np.zeros((3, 3, 4, 4), np.float32), label=np.zeros(2))
    with pytest.raises(InvalidInputError, match="different sample counts"):
        open_data(p, SPEC)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="not a valid .npz"):
        open_data(tmp_path / "junk.npz", SPEC)
    with pytest.raises(InvalidInputError, match="no such data"):
        open_data(tmp_path / "missing.npz", SPEC)


def test_missing_input_and_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing input 'b'"):
        _collect(open_data([{"a": np.zeros((1, 5), np.float32)}], TWO))
    with pytest.raises(DataError, match="no samples"):
        _collect(open_data([], TWO))


def test_folder_of_npz_and_npy(tmp_path: Path) -> None:
    d = tmp_path / "samples"
    d.mkdir()
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((3, 4, 4)).astype(np.float32) for _ in range(3)]
    for i, a in enumerate(arrays):
        np.save(d / f"s{i}.npy", a)
    feeds = list(open_data(d, SPEC))
    assert len(feeds) == 3
    for f, a in zip(feeds, arrays):
        np.testing.assert_array_equal(f["x"][0], a)
    d2 = tmp_path / "multi"
    d2.mkdir()
    np.savez(d2 / "0.npz", a=np.ones((1, 5), np.float32), b=np.ones((1, 2), np.int64), label=3)
    s = _collect(open_data(d2, TWO))
    assert s[0].label == 3 and s[0].feed["b"].dtype == np.int64


def test_image_folder_preprocessing_matches_manual(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "cat" / "a.png")
    Image.fromarray(pixels[::-1]).save(root / "dog" / "b.png")
    spec = [InputSpec("img", np.dtype(np.float32), (1, 3, 10, 16))]
    pre = ImagePreprocess(scale=1 / 255, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), channels="BGR")
    samples = _collect(open_data(root, spec, image=pre))
    assert [int(s.label) for s in samples] == [0, 1]
    resized = np.asarray(Image.fromarray(pixels).resize((16, 10), Image.Resampling.BILINEAR))
    manual = (resized[:, :, ::-1].astype(np.float32) / 255 - np.array([0.5, 0.4, 0.3], np.float32)) / np.array(
        [0.2, 0.25, 0.3], np.float32
    )
    np.testing.assert_allclose(samples[0].feed["img"][0], manual.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)
    nhwc = [InputSpec("img", np.dtype(np.float32), ("N", 12, 12, 3))]
    crop = _collect(open_data(root, nhwc, image=ImagePreprocess(resize=14)))
    assert crop[0].feed["img"].shape == (1, 12, 12, 3)
    dyn = [InputSpec("img", np.dtype(np.float32), ("N", 3, "H", "W"))]
    with pytest.raises(InvalidInputError, match="--image-size"):
        open_data(root, dyn)


def test_synthetic_source() -> None:
    src = SyntheticSource(TWO, 4, seed=1)
    ds = Dataset(src, TWO)
    assert ds.synthetic and len(ds) == 4
    feeds = list(ds)
    assert feeds[0]["a"].shape == (1, 5) and feeds[0]["b"].dtype == np.int64
    again = list(Dataset(SyntheticSource(TWO, 4, seed=1), TWO))
    np.testing.assert_array_equal(feeds[3]["a"], again[3]["a"])
    with pytest.raises(InvalidInputError, match="dynamic dim at axis 2"):
        SyntheticSource([InputSpec("x", np.dtype(np.float32), ("N", 3, "H", 4))], 2)


def test_one_shot_iterator_and_reader() -> None:
    gen = ({"a": np.zeros((1, 5), np.float32), "b": np.zeros((1, 2), np.int64)} for _ in range(2))
    ds = open_data(gen, TWO)
    assert len(list(ds)) == 2
    with pytest.raises(DataError, match="already consumed"):
        list(ds)

    class Reader:
        def __init__(self) -> None:
            self.items = iter([{"x": np.ones((1, 3, 4, 4), np.float32)}] * 3)

        def get_next(self):
            return next(self.items, None)

    assert len(list(open_data(Reader(), SPEC))) == 3


def test_limit_and_transform(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.ones((10, 3, 4, 4), np.float32))
    ds = open_data(p, SPEC, limit=4, transform=lambda s: {"x": s["x"] * 2})
    feeds = list(ds)
    assert len(feeds) == 4 and len(ds) == 4
    assert float(feeds[0]["x"].max()) == 2.0


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 6),
    dims=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    extra_axis=st.booleans(),
)
def test_npz_round_trip_property(tmp_path_factory, n: int, dims: list[int], extra_axis: bool) -> None:
    spec = [InputSpec("t", np.dtype(np.float32), ("N", *dims))]
    shape = (n, 1, *dims) if extra_axis else (n, *dims)
    arr = np.random.default_rng(n).standard_normal(shape).astype(np.float32)
    p = tmp_path_factory.mktemp("npz") / "d.npz"
    np.savez_compressed(p, t=arr)
    feeds = list(open_data(p, spec))
    assert len(feeds) == n
    for i, f in enumerate(feeds):
        np.testing.assert_array_equal(f["t"].reshape(-1), arr[i].reshape(-1))
        assert f["t"].shape == (1, *dims)


def test_npz_source_length_without_loading(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((5, 3, 4, 4), np.float32))
    assert len(NpzSource(p)) == 5
