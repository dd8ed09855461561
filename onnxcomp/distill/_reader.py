"""Reading a soft-label store: soft targets per index or per batch, at any temperature.

The store holds ``log p`` at temperature 1. The soft target at temperature ``T``
is

    p_T = softmax(log p / T)

(the normalizer of ``log p`` cancels). For a top-k store the classes outside the
top K are known only through their total mass ``m``; the caller chooses how to
treat them, explicitly:

* ``tail="uniform"``: each of the ``C - K`` other classes gets ``m / (C - K)`` at
  T = 1, then the full vector is tempered as above (matches the dense target
  exactly when the tail is flat, and keeps the tail's weight at every T).
* ``tail="renormalize"``: the tail is dropped and the top K are renormalized,
  ``p_T[c] = exp(log p_c / T) / sum_{j in top-K} exp(log p_j / T)``, others 0.

Shards are memory-mapped ``.npy`` files; only the rows asked for are read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxcomp.distill import _store
from onnxcomp.errors import InvalidInputError

__all__ = ["SoftLabelStore", "TAIL_MODES", "open_store", "soft_targets"]

TAIL_MODES = ("uniform", "renormalize")


def soft_targets(log_probs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(log_probs / T)`` row-wise, in float64 (``-inf`` entries get 0)."""
    if temperature <= 0:
        raise InvalidInputError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(log_probs, dtype=np.float64) / temperature
    m = z.max(axis=-1, keepdims=True)
    with np.errstate(under="ignore", invalid="ignore"):
        e = np.exp(z - m)
    return e / e.sum(axis=-1, keepdims=True)


class SoftLabelStore:
    """Read access to a store written by :func:`onnxcomp.distill.label`.

    Attributes:
        path: The store folder.
        manifest: The parsed ``manifest.json``.
        classes: Class count C.
        top_k: K for a top-k store, None for a dense one.
    """

    def __init__(self, path: str | os.PathLike[str], *, allow_incomplete: bool = False) -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = _store.read_manifest(self.path)
        if not self.manifest.get("complete") and not allow_incomplete:
            missing = sum(1 for s in self.manifest["shards"] if not s.get("complete"))
            raise InvalidInputError(
                f"{self.path}: the store is incomplete ({missing} shard(s) missing); rerun "
                "`onnxcomp distill label` with the same arguments to finish it"
            )
        self.classes: int = int(self.manifest["classes"])
        self.top_k: int | None = self.manifest["top_k"]
        self.shard_size: int = int(self.manifest["shard_size"])
        self._shards: list[dict[str, Any]] = self.manifest["shards"]
        self._cache: dict[tuple[int, str], np.ndarray] = {}
        self._features = {f["name"]: j for j, f in enumerate(self.manifest["features"])}

    # ------------------------------------------------------------ properties
    def __len__(self) -> int:
        return int(self.manifest["samples"])

    @property
    def dense(self) -> bool:
        return self.top_k is None

    @property
    def has_labels(self) -> bool:
        return bool(self.manifest.get("labels"))

    @property
    def feature_names(self) -> list[str]:
        return list(self._features)

    @property
    def teacher_sha256(self) -> str:
        return str(self.manifest["teacher_sha256"])

    def __repr__(self) -> str:
        mode = "dense" if self.dense else f"top-{self.top_k}"
        return (
            f"SoftLabelStore({str(self.path)!r}, {len(self)} samples, {self.classes} classes, "
            f"{mode})"
        )

    # ------------------------------------------------------------- raw rows
    def _array(self, shard: int, key: str) -> np.ndarray:
        arr = self._cache.get((shard, key))
        if arr is None:
            entry = self._shards[shard]
            if not entry.get("complete"):
                raise InvalidInputError(f"{self.path}: shard {shard} is not complete")
            name = entry["files"].get(key)
            if name is None:
                raise InvalidInputError(f"{self.path}: the store has no {key!r} arrays")
            arr = np.load(self.path / name, mmap_mode="r", allow_pickle=False)
            self._cache[(shard, key)] = arr
        return arr

    def _indices(self, indices: int | Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"sample index out of range for a store of {n} samples")
        return np.where(idx < 0, idx + n, idx)

    def _gather(self, key: str, indices: int | Sequence[int] | np.ndarray) -> np.ndarray:
        idx = self._indices(indices)
        shard = idx // self.shard_size
        offset = idx - shard * self.shard_size
        first = self._array(int(shard[0]) if idx.size else 0, key)
        out = np.empty((idx.size, *first.shape[1:]), dtype=first.dtype)
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = self._array(int(s), key)[offset[sel]]
        return out

    def log_probs_raw(self, indices: int | Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored log-probs as they are: ``[B, C]`` dense or ``[B, K]`` top-k."""
        return self._gather("logp", indices)

    def topk(
        self, indices: int | Sequence[int] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A top-k store's (class indices [B, K], float16 log-probs [B, K], tail mass [B])."""
        if self.dense:
            raise InvalidInputError(f"{self.path}: a dense store has no top-k arrays")
        return (
            self._gather("index", indices),
            self._gather("logp", indices),
            self._gather("tail", indices),
        )

    def labels(self, indices: int | Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Hard labels of the data (int64, -1 where a sample had none)."""
        if not self.has_labels:
            raise InvalidInputError(f"{self.path}: the data had no labels when the store was made")
        if indices is None:
            indices = np.arange(len(self))
        return self._gather("label", indices)

    def features(self, name: str, indices: int | Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored feature target ``name`` for the given samples, ``[B, ...]``."""
        j = self._features.get(name)
        if j is None:
            raise InvalidInputError(
                f"{self.path}: no feature {name!r}; stored: {', '.join(self._features) or 'none'}"
            )
        return self._gather(f"feat{j}", indices)

    # ------------------------------------------------------------- targets
    def _tail_mode(self, tail: str | None) -> str:
        if self.dense:
            return "dense"
        if tail not in TAIL_MODES:
            raise InvalidInputError(
                f"{self.path} is a top-{self.top_k} store: choose how to treat the classes outside "
                f"the top {self.top_k} with tail='uniform' or tail='renormalize' (got {tail!r})"
            )
        return tail

    def log_probs(
        self, indices: int | Sequence[int] | np.ndarray, *, tail: str | None = None
    ) -> np.ndarray:
        """Dense ``[B, C]`` float64 log-probs at T = 1 (top-k expanded per ``tail``)."""
        mode = self._tail_mode(tail)
        if mode == "dense":
            return self._gather("logp", indices).astype(np.float64)
        idx, logp, mass = self.topk(indices)
        b, k = idx.shape
        c = self.classes
        out = np.full((b, c), -np.inf, dtype=np.float64)
        if mode == "uniform" and c > k:
            with np.errstate(divide="ignore"):
                fill = np.log(mass.astype(np.float64) / (c - k))
            out[:] = fill[:, None]
        np.put_along_axis(out, idx.astype(np.int64), logp.astype(np.float64), axis=1)
        if mode == "renormalize":
            out -= np.logaddexp.reduce(out, axis=1, keepdims=True)
        return out

    def targets(
        self,
        indices: int | Sequence[int] | np.ndarray,
        temperature: float = 1.0,
        *,
        tail: str | None = None,
        dtype: Any = np.float32,
    ) -> np.ndarray:
        """Soft targets ``[B, C]`` at ``temperature`` (rows sum to 1).

        Args:
            indices: Sample indices (any order, repeats allowed).
            temperature: T > 0.
            tail: Top-k stores only, required: ``"uniform"`` or ``"renormalize"``.
            dtype: Result dtype.
        """
        return soft_targets(self.log_probs(indices, tail=tail), temperature).astype(dtype)

    def target(
        self, index: int, temperature: float = 1.0, *, tail: str | None = None
    ) -> np.ndarray:
        """The soft target ``[C]`` of one sample."""
        return self.targets([index], temperature, tail=tail)[0]

    def iter_batches(
        self,
        batch_size: int,
        temperature: float = 1.0,
        *,
        tail: str | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices, targets)`` batches over the whole store."""
        order = np.arange(len(self))
        if shuffle:
            np.random.default_rng(seed).shuffle(order)
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            yield idx, self.targets(idx, temperature, tail=tail)


def open_store(path: str | os.PathLike[str], *, allow_incomplete: bool = False) -> SoftLabelStore:
    """Open a soft-label store for reading."""
    return SoftLabelStore(path, allow_incomplete=allow_incomplete)
