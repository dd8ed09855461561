"""Sample sources: file formats as streaming adapters onto ``dict[str, ndarray]``.

Every source is re-iterable (each ``iter()`` starts over from the beginning)
and yields *raw* samples; validation against the model happens in
:class:`onnxcomp.data.Dataset`. Nothing loads a whole data set in memory: a
``.npz`` is read row by row straight from its zip members.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from onnxcomp.data._specs import InputSpec
from onnxcomp.errors import DataError, InvalidInputError

__all__ = [
    "FolderSource",
    "ImageFolderSource",
    "ImagePreprocess",
    "IterableSource",
    "NpySource",
    "NpzSource",
    "ReaderSource",
    "Source",
    "SyntheticSource",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class Source(Protocol):
    """A re-iterable stream of raw samples."""

    description: str

    def __iter__(self) -> Iterator[Mapping[str, Any]]: ...


def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


class _NpyRowReader:
    """Reads the rows (axis 0) of one ``.npy`` stream without loading it all."""

    def __init__(self, stream: IO[bytes], where: str) -> None:
        self._stream = stream
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        except Exception as e:
            raise InvalidInputError(f"{where}: not a valid .npy array ({e})") from e
        if dtype.hasobject:
            raise InvalidInputError(f"{where}: object arrays are not supported (pickled data)")
        if not shape:
            raise InvalidInputError(f"{where}: is a scalar; expected the sample axis first")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = dtype
        self._fortran = fortran
        self._row_items = int(np.prod(shape[1:], dtype=np.int64))
        self._row_bytes = self._row_items * dtype.itemsize
        self._where = where
        self._full: np.ndarray | None = None
        if fortran:  # rows are not contiguous: fall back to reading the array
            count = int(np.prod(shape, dtype=np.int64))
            data = np.frombuffer(stream.read(count * dtype.itemsize), dtype=dtype)
            self._full = data.reshape(shape[::-1]).transpose()

    def __len__(self) -> int:
        return self.shape[0]

    def read_row(self, i: int) -> np.ndarray:
        if self._full is not None:
            return np.ascontiguousarray(self._full[i])
        buf = self._stream.read(self._row_bytes)
        if len(buf) != self._row_bytes:
            raise InvalidInputError(f"{self._where}: truncated at row {i}")
        return np.frombuffer(buf, dtype=self.dtype).reshape(self.shape[1:]).copy()

    def read_rows(self, i: int, n: int) -> np.ndarray:
        """Rows ``i .. i+n-1`` (the next ``n`` rows of the stream), stacked."""
        if self._full is not None:
            return np.ascontiguousarray(self._full[i : i + n])
        buf = self._stream.read(self._row_bytes * n)
        if len(buf) != self._row_bytes * n:
            raise InvalidInputError(f"{self._where}: truncated at row {i}")
        return np.frombuffer(buf, dtype=self.dtype).reshape((n, *self.shape[1:])).copy()


class NpzSource:
    """A ``.npz`` whose arrays are keyed by input name, sample axis first.

    Keys ``label``/``labels`` carry per-sample labels.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidInputError(f"{self.path}: no such data file")
        self.description = str(self.path)
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = [n for n in zf.namelist() if n.endswith(".npy")]
                self.keys = [n[: -len(".npy")] for n in names]
                lengths = {}
                for key, name in zip(self.keys, names):
                    with zf.open(name) as f:
                        lengths[key] = len(_NpyRowReader(f, f"{self.path}[{key}]"))
        except zipfile.BadZipFile as e:
            raise InvalidInputError(f"{self.path}: not a valid .npz file ({e})") from e
        if not self.keys:
            raise InvalidInputError(f"{self.path}: the .npz holds no arrays")
        counts = set(lengths.values())
        if len(counts) != 1:
            detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            raise InvalidInputError(
                f"{self.path}: arrays have different sample counts ({detail}); "
                "the sample axis must come first"
            )
        self.length = counts.pop()

    def __len__(self) -> int:
        return self.length

    def fingerprint(self) -> str:
        return _file_fingerprint(self.path)

    def iter_blocks(self, block: int) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive blocks of up to ``block`` samples, each array sample axis first."""
        with zipfile.ZipFile(self.path) as zf:
            streams = {k: zf.open(k + ".npy") for k in self.keys}
            try:
                readers = {k: _NpyRowReader(s, f"{self.path}[{k}]") for k, s in streams.items()}
                for i in range(0, self.length, block):
                    n = min(block, self.length - i)
                    yield {k: r.read_rows(i, n) for k, r in readers.items()}
            finally:
                for s in streams.values():
                    s.close()

    def array_ranks(self) -> dict[str, int]:
        """Rank of each stored array (sample axis included)."""
        with zipfile.ZipFile(self.path) as zf:
            ranks = {}
            for k in self.keys:
                with zf.open(k + ".npy") as f:
                    ranks[k] = len(_NpyRowReader(f, f"{self.path}[{k}]").shape)
        return ranks

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        with zipfile.ZipFile(self.path) as zf:
            streams = {k: zf.open(k + ".npy") for k in self.keys}
            try:
                readers = {k: _NpyRowReader(s, f"{self.path}[{k}]") for k, s in streams.items()}
                for i in range(self.length):
                    yield {k: r.read_row(i) for k, r in readers.items()}
            finally:
                for s in streams.values():
                    s.close()


class NpySource:
    """A single ``.npy`` array (sample axis first) for a single-input model."""

    def __init__(self, path: str | os.PathLike[str], input_name: str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidInputError(f"{self.path}: no such data file")
        self.input_name = input_name
        self.description = str(self.path)
        try:
            self._arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except Exception as e:
            raise InvalidInputError(f"{self.path}: not a valid .npy file ({e})") from e
        if self._arr.ndim == 0:
            raise InvalidInputError(f"{self.path}: is a scalar; expected the sample axis first")

    def __len__(self) -> int:
        return int(self._arr.shape[0])

    def fingerprint(self) -> str:
        return _file_fingerprint(self.path)

    def __getstate__(self) -> dict[str, Any]:
        # Pickle the path, not the memory map (which would copy the whole array).
        state = dict(self.__dict__)
        state.pop("_arr", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._arr = np.load(self.path, mmap_mode="r", allow_pickle=False)

    def iter_blocks(self, block: int) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive blocks of up to ``block`` samples, sample axis first."""
        for i in range(0, len(self), block):
            yield {self.input_name: np.array(self._arr[i : i + block])}

    def array_ranks(self) -> dict[str, int]:
        """Rank of the stored array (sample axis included)."""
        return {self.input_name: int(self._arr.ndim)}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            yield {self.input_name: np.array(self._arr[i])}


class FolderSource:
    """A folder of ``.npz``/``.npy`` files, one sample per file, in name order."""

    def __init__(self, path: str | os.PathLike[str], input_names: list[str]) -> None:
        self.path = Path(path)
        self.files = sorted(
            p for p in self.path.iterdir() if p.suffix in (".npz", ".npy") and p.is_file()
        )
        if not self.files:
            raise InvalidInputError(f"{self.path}: folder holds no .npz or .npy files")
        self.input_names = input_names
        self.description = str(self.path)

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            h.update(_file_fingerprint(f).encode())
        return h.hexdigest()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for f in self.files:
            try:
                if f.suffix == ".npy":
                    if len(self.input_names) != 1:
                        raise InvalidInputError(
                            f"{f}: a .npy sample needs a single-input model; use .npz files "
                            f"keyed by {', '.join(self.input_names)}"
                        )
                    yield {self.input_names[0]: np.load(f, allow_pickle=False)}
                else:
                    with np.load(f, allow_pickle=False) as z:
                        yield {k: z[k] for k in z.files}
            except InvalidInputError:
                raise
            except Exception as e:
                raise InvalidInputError(f"{f}: cannot read sample ({e})") from e


@dataclass(frozen=True)
class ImagePreprocess:
    """How image files become model inputs.

    Pipeline: decode -> color order -> resize (shorter side to ``resize`` then
    center crop to ``size``; or straight to ``size`` when ``resize`` is None)
    -> ``x * scale`` -> ``(x - mean) / std`` -> layout -> model dtype.

    Attributes:
        size: Final (height, width); None takes it from the model input.
        resize: Shorter side before the center crop; None resizes to ``size``.
        scale: Multiplier applied to 0-255 pixel values.
        mean: Per-channel mean subtracted after scaling.
        std: Per-channel std divided after the mean.
        channels: ``RGB``, ``BGR`` or ``GRAY``.
        layout: ``NCHW`` or ``NHWC``; None infers it from the model input.
    """

    size: tuple[int, int] | None = None
    resize: int | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: str = "RGB"
    layout: str | None = None

    def __post_init__(self) -> None:
        if self.channels not in ("RGB", "BGR", "GRAY"):
            raise InvalidInputError(f"image channels must be RGB, BGR or GRAY, not {self.channels!r}")
        if self.layout not in (None, "NCHW", "NHWC"):
            raise InvalidInputError(f"image layout must be NCHW or NHWC, not {self.layout!r}")
        if any(s == 0 for s in self.std):
            raise InvalidInputError("image std must not contain 0")


class ImageFolderSource:
    """Image files in a folder; subfolders (one level) name the classes."""

    def __init__(self, path: str | os.PathLike[str], spec: InputSpec, pre: ImagePreprocess) -> None:
        self.path = Path(path)
        self.spec = spec
        self.pre = pre
        self.description = f"{self.path} (images)"
        classes = sorted(p.name for p in self.path.iterdir() if p.is_dir())
        self.items: list[tuple[Path, int | None]] = []
        for f in sorted(self.path.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                self.items.append((f, None))
        for ci, c in enumerate(classes):
            for f in sorted((self.path / c).rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    self.items.append((f, ci))
        if not self.items:
            raise InvalidInputError(f"{self.path}: folder holds no image files")
        self.classes = classes
        self._layout, self._size = self._geometry()

    def _geometry(self) -> tuple[str, tuple[int, int]]:
        shape = self.spec.shape
        if shape is None or len(shape) not in (3, 4):
            raise InvalidInputError(
                f"{self.path}: image data needs an image input (rank 3 or 4); "
                f"input {self.spec.describe()}"
            )
        dims = shape[-3:]
        layout = self.pre.layout
        if layout is None:
            if dims[0] in (1, 3):
                layout = "NCHW"
            elif dims[2] in (1, 3):
                layout = "NHWC"
            else:
                raise InvalidInputError(
                    f"{self.path}: cannot tell the layout of input {self.spec.describe()}; "
                    "give --layout NCHW or NHWC"
                )
        hw = dims[1:] if layout == "NCHW" else dims[:2]
        size = self.pre.size
        if size is None:
            if not all(isinstance(d, int) for d in hw):
                raise InvalidInputError(
                    f"{self.path}: input {self.spec.describe()} has dynamic height/width; "
                    "give --image-size HxW"
                )
            size = (int(hw[0]), int(hw[1]))  # type: ignore[arg-type]
        return layout, size

    def __len__(self) -> int:
        return len(self.items)

    def fingerprint(self) -> str:
        h = hashlib.sha256(repr(self.pre).encode())
        for f, _ in self.items:
            h.update(_file_fingerprint(f).encode())
        return h.hexdigest()

    def load_image(self, path: Path) -> np.ndarray:
        from PIL import Image

        pre = self.pre
        try:
            with Image.open(path) as im:
                im = im.convert("L" if pre.channels == "GRAY" else "RGB")
                h, w = self._size
                if pre.resize is not None:
                    s = pre.resize / min(im.size)
                    im = im.resize(
                        (max(w, round(im.size[0] * s)), max(h, round(im.size[1] * s))),
                        Image.Resampling.BILINEAR,
                    )
                    left = (im.size[0] - w) // 2
                    top = (im.size[1] - h) // 2
                    im = im.crop((left, top, left + w, top + h))
                else:
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                arr = np.asarray(im)
        except Exception as e:
            raise InvalidInputError(f"{path}: cannot read image ({e})") from e
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if pre.channels == "BGR":
            arr = arr[:, :, ::-1]
        if self.spec.dtype == np.uint8:
            out = arr
        else:
            x = arr.astype(np.float32) * np.float32(pre.scale)
            x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
            out = x.astype(self.spec.dtype)
        if self._layout == "NCHW":
            out = out.transpose(2, 0, 1)
        return np.ascontiguousarray(out)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for f, label in self.items:
            sample: dict[str, Any] = {self.spec.name: self.load_image(f)}
            if label is not None:
                sample["label"] = np.int64(label)
            yield sample


class SyntheticSource:
    """Random inputs drawn from the model's input types (clearly not real data)."""

    synthetic = True

    def __init__(self, specs: list[InputSpec], count: int, seed: int = 0) -> None:
        if count <= 0:
            raise InvalidInputError(f"--synthetic needs a positive sample count, got {count}")
        self.specs = specs
        self.count = count
        self.seed = seed
        self.description = f"synthetic ({count} random samples, seed {seed})"
        self.shapes = {s.name: self._shape(s) for s in specs}

    @staticmethod
    def _shape(spec: InputSpec) -> tuple[int, ...]:
        if spec.shape is None:
            raise InvalidInputError(
                f"input {spec.name!r} has an unknown rank; give --shape {spec.name}=D1xD2x..."
            )
        dims = []
        for axis, d in enumerate(spec.shape):
            if isinstance(d, int):
                dims.append(d)
            elif axis == 0:
                dims.append(1)
            else:
                raise InvalidInputError(
                    f"input {spec.describe()} has a dynamic dim at axis {axis}; give "
                    f"--shape {spec.name}=D1xD2x... for synthetic data"
                )
        return tuple(dims)

    def __len__(self) -> int:
        return self.count

    def fingerprint(self) -> str:
        return f"synthetic:{self.count}:{self.seed}:{self.shapes}"

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.count):
            sample = {}
            for s in self.specs:
                shape = self.shapes[s.name]
                if s.dtype.kind == "f":
                    sample[s.name] = rng.standard_normal(shape).astype(s.dtype)
                elif s.dtype.kind == "b":
                    sample[s.name] = rng.integers(0, 2, shape).astype(bool)
                elif s.dtype.kind in "iu":
                    sample[s.name] = rng.integers(0, 8, shape).astype(s.dtype)
                else:
                    raise InvalidInputError(
                        f"input {s.describe()}: cannot synthesize dtype {s.dtype}"
                    )
            yield sample


@dataclass
class IterableSource:
    """Any Python iterable of mappings. One-shot iterators can be read once."""

    data: Iterable[Mapping[str, Any]]
    description: str = "python iterable"
    _used: bool = field(default=False, repr=False)

    def __len__(self) -> int:
        if hasattr(self.data, "__len__"):
            return len(self.data)  # type: ignore[arg-type]
        raise TypeError("length unknown")

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        one_shot = iter(self.data) is self.data
        if one_shot and self._used:
            raise DataError(
                f"{self.description}: a one-shot iterator was already consumed; pass a list "
                "or another re-iterable object"
            )
        self._used = True
        return iter(self.data)


class ReaderSource:
    """An ONNX Runtime ``CalibrationDataReader`` (``get_next()`` until None)."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.description = f"{type(reader).__name__} (CalibrationDataReader)"
        self._used = False

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        if self._used:
            rewind = getattr(self.reader, "rewind", None)
            if rewind is None:
                raise DataError(
                    f"{self.description}: the reader was already consumed and has no rewind()"
                )
            rewind()
        self._used = True
        while True:
            item = self.reader.get_next()
            if item is None:
                return
            yield item

