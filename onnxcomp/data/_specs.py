"""Model input specifications and validation of samples against them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.errors import DataError

__all__ = ["LABEL_KEYS", "InputSpec", "input_specs", "to_feed"]

#: Keys of a sample that carry its label instead of a model input.
LABEL_KEYS = ("label", "labels")

Dim = int | str | None


@dataclass(frozen=True)
class InputSpec:
    """What a model expects on one input.

    Attributes:
        name: Input name.
        dtype: Numpy dtype of the tensor.
        shape: Dims (int = static, str = symbolic name, None = unknown), or None
            when the rank is unknown.
    """

    name: str
    dtype: np.dtype[Any]
    shape: tuple[Dim, ...] | None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def batch_dynamic(self) -> bool:
        """True when axis 0 is not fixed, so feeds can be stacked along it."""
        return self.shape is not None and len(self.shape) > 0 and not isinstance(self.shape[0], int)

    def describe(self) -> str:
        if self.shape is None:
            dims = "?"
        else:
            dims = "x".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{self.name}: {self.dtype} [{dims}]"


def input_specs(model: ir.Model) -> list[InputSpec]:
    """The input specs of a model's main graph (initializers excluded)."""
    specs = []
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        dtype = value.dtype
        if dtype is None:
            raise DataError(f"model input {value.name!r} has no tensor type")
        try:
            np_dtype = np.dtype(dtype.numpy())
        except Exception as e:  # bfloat16/float8 without ml_dtypes mapping etc.
            raise DataError(f"model input {value.name!r} has unsupported dtype {dtype}") from e
        shape: tuple[Dim, ...] | None = None
        if value.shape is not None:
            shape = tuple(
                d if isinstance(d, int) else (d.value if d.value else None) for d in value.shape
            )
        specs.append(InputSpec(str(value.name), np_dtype, shape))
    return specs


def _fmt(shape: tuple[Any, ...]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def to_feed(
    raw: Mapping[str, Any],
    specs: list[InputSpec],
    where: str,
    *,
    check_finite: bool = True,
) -> tuple[dict[str, np.ndarray], Any]:
    """Validate one raw sample and turn it into an ONNX Runtime feed.

    A raw array of rank r-1 for an input of rank r whose axis 0 is 1 or dynamic
    gets a leading batch axis of 1. Label keys are split off.

    Args:
        raw: Mapping of input name (or label key) to array.
        specs: The model's inputs.
        where: Names the sample in error messages (e.g. ``"sample 3 of data.npz"``).
        check_finite: Reject NaN/inf in float inputs.

    Returns:
        ``(feed, label)`` where label is None when the sample has none.

    Raises:
        DataError: Unknown or missing input, wrong dtype, rank or static dim.
    """
    if not isinstance(raw, Mapping):
        raise DataError(f"{where}: expected a mapping of input name to array, got {type(raw).__name__}")
    by_name = {s.name: s for s in specs}
    label = None
    feed: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        if key not in by_name:
            if key in LABEL_KEYS:
                label = value
                continue
            raise DataError(
                f"{where}: unknown input name {key!r}; the model's inputs are "
                f"{', '.join(by_name)}"
            )
        spec = by_name[key]
        arr = np.asarray(value)
        if arr.dtype != spec.dtype:
            raise DataError(
                f"{where}: input {key!r} has dtype {arr.dtype}, the model expects {spec.dtype}"
            )
        if spec.shape is not None:
            r = len(spec.shape)
            first = spec.shape[0] if r else None
            if r > 0 and arr.ndim == r - 1 and (first == 1 or not isinstance(first, int)):
                arr = arr[np.newaxis]
            if arr.ndim != r:
                raise DataError(
                    f"{where}: input {key!r} has shape {_fmt(arr.shape)} (rank {arr.ndim}), "
                    f"the model expects rank {r} {_fmt(spec.shape)}"
                )
            for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
                if isinstance(want, int) and want != got:
                    raise DataError(
                        f"{where}: input {key!r} has shape {_fmt(arr.shape)}, the model expects "
                        f"{_fmt(spec.shape)} (axis {axis} must be {want})"
                    )
        if check_finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise DataError(f"{where}: input {key!r} contains {bad} NaN or infinite values")
        feed[key] = arr
    missing = [s.name for s in specs if s.name not in feed]
    if missing:
        raise DataError(f"{where}: missing input {', '.join(repr(m) for m in missing)}")
    return feed, label
