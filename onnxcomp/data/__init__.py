"""Data sets shared by every command that needs samples.

A :class:`Dataset` is a validated, re-iterable stream of ONNX Runtime feeds
(``dict[str, np.ndarray]``) for one model. Sources are adapters onto it:

* ``.npz`` keyed by input name with the sample axis first (``label`` key optional),
* a single ``.npy`` (sample axis first) for single-input models,
* a folder of ``.npz``/``.npy`` files, one sample each,
* an image folder with an :class:`ImagePreprocess` (class subfolders give labels),
* any Python iterable of mappings, or an ONNX Runtime ``CalibrationDataReader``,
* :class:`SyntheticSource` random inputs, flagged ``synthetic``.

A sample array whose rank is one less than the input's gets a batch axis of 1
when the input's axis 0 is 1 or dynamic. Samples are streamed, never all loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.data._sources import (
    IMAGE_SUFFIXES,
    FolderSource,
    ImageFolderSource,
    ImagePreprocess,
    IterableSource,
    NpySource,
    NpzSource,
    ReaderSource,
    SyntheticSource,
)
from onnxcomp.data._specs import LABEL_KEYS, InputSpec, input_specs, to_feed
from onnxcomp.errors import DataError, InvalidInputError

__all__ = [
    "LABEL_KEYS",
    "Dataset",
    "FolderSource",
    "ImageFolderSource",
    "ImagePreprocess",
    "InputSpec",
    "IterableSource",
    "NpySource",
    "NpzSource",
    "ReaderSource",
    "Sample",
    "SyntheticSource",
    "input_specs",
    "open_data",
    "to_feed",
]


@dataclass(frozen=True)
class Sample:
    """One validated sample: its position, the model feed and its label (or None)."""

    index: int
    feed: dict[str, np.ndarray]
    label: Any = None


class Dataset:
    """A validated, re-iterable stream of feeds for one model.

    Args:
        source: Raw samples (mappings of input name to array).
        specs: The model's inputs, from :func:`input_specs`.
        transform: Optional function applied to each raw sample before validation.
        limit: Use at most this many samples.
        check_finite: Reject NaN/inf values in float inputs.
    """

    def __init__(
        self,
        source: Iterable[Mapping[str, Any]],
        specs: list[InputSpec],
        *,
        transform: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
        limit: int | None = None,
        check_finite: bool = True,
    ) -> None:
        self.source = source
        self.specs = specs
        self.transform = transform
        self.limit = limit
        self.check_finite = check_finite
        self.description: str = getattr(source, "description", type(source).__name__)

    @property
    def synthetic(self) -> bool:
        """True for random data that says nothing about real accuracy."""
        return bool(getattr(self.source, "synthetic", False))

    def __len__(self) -> int:
        n = len(self.source)  # type: ignore[arg-type]
        return n if self.limit is None else min(n, self.limit)

    def length(self) -> int | None:
        """Sample count when the source knows it, else None."""
        try:
            return len(self)
        except TypeError:
            return None

    def fingerprint(self) -> str:
        """Identifies the data source (path, sizes, times) for caches and stores."""
        fp = getattr(self.source, "fingerprint", None)
        base = fp() if callable(fp) else self.description
        return f"{base}|limit={self.limit}"

    def samples(self) -> Iterator[Sample]:
        """Validated samples with their labels; raises DataError on the first bad one."""
        count = 0
        for i, raw in enumerate(self.source):
            if self.limit is not None and i >= self.limit:
                break
            count += 1
            yield self.validate(i, raw)
        if count == 0:
            raise DataError(f"{self.description}: no samples")

    def validate(self, index: int, raw: Mapping[str, Any]) -> Sample:
        """Apply the transform to raw sample ``index`` and validate it into a Sample."""
        where = f"sample {index} of {self.description}"
        if self.transform is not None:
            try:
                raw = self.transform(raw)
            except Exception as e:
                raise DataError(f"{where}: transform failed: {e}") from e
        feed, label = to_feed(raw, self.specs, where, check_finite=self.check_finite)
        return Sample(index, feed, label)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for s in self.samples():
            yield s.feed


def open_data(
    data: Any,
    model: ir.Model | list[InputSpec],
    *,
    image: ImagePreprocess | None = None,
    transform: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    limit: int | None = None,
    check_finite: bool = True,
) -> Dataset:
    """Make a :class:`Dataset` for ``model`` from a path or a Python object.

    Args:
        data: A path (``.npz``, ``.npy``, folder of samples, image folder), a
            :class:`Dataset`, a ``CalibrationDataReader`` or an iterable of mappings.
        model: The model (or its input specs) that the samples must fit.
        image: Preprocessing for image folders.
        transform: Applied to every raw sample before validation.
        limit: Use at most this many samples.
        check_finite: Reject NaN/inf in float inputs.

    Raises:
        InvalidInputError: Missing path or unrecognized data.
    """
    specs = model if isinstance(model, list) else input_specs(model)
    if isinstance(data, Dataset):
        return Dataset(
            data.source, specs, transform=transform or data.transform,
            limit=limit if limit is not None else data.limit, check_finite=check_finite,
        )
    source: Any
    if isinstance(data, (str, Path)):
        source = _path_source(Path(data), specs, image)
    elif hasattr(data, "get_next"):
        source = ReaderSource(data)
    elif isinstance(data, Mapping):
        raise InvalidInputError(
            "data: got a single mapping; pass a list of samples (dicts of input name to array)"
        )
    elif isinstance(data, Iterable):
        source = IterableSource(data)
    else:
        raise InvalidInputError(f"data: cannot read samples from {type(data).__name__}")
    return Dataset(source, specs, transform=transform, limit=limit, check_finite=check_finite)


def _path_source(path: Path, specs: list[InputSpec], image: ImagePreprocess | None) -> Any:
    if not path.exists():
        raise InvalidInputError(f"{path}: no such data file or folder")
    if path.is_file():
        if path.suffix == ".npz":
            return NpzSource(path)
        if path.suffix == ".npy":
            if len(specs) != 1:
                raise InvalidInputError(
                    f"{path}: a .npy file fits single-input models only; this model has inputs "
                    f"{', '.join(s.name for s in specs)} (use a .npz keyed by input name)"
                )
            return NpySource(path, specs[0].name)
        raise InvalidInputError(f"{path}: unsupported data file (expected .npz, .npy or a folder)")
    entries = [p for p in path.rglob("*") if p.is_file()]
    if any(p.suffix in (".npz", ".npy") for p in entries if p.parent == path):
        return FolderSource(path, [s.name for s in specs])
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries):
        if len(specs) != 1:
            raise InvalidInputError(
                f"{path}: an image folder fits single-input models only; this model has inputs "
                f"{', '.join(s.name for s in specs)}"
            )
        return ImageFolderSource(path, specs[0], image or ImagePreprocess())
    raise InvalidInputError(f"{path}: folder holds no .npz/.npy samples or images")
