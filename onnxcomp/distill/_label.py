"""Teacher runner: ONNX teacher + data set -> soft-label store.

For each sample the teacher's class scores ``z`` (logits) are turned into
log-probabilities at temperature 1,

    log p_c = z_c - log sum_j exp(z_j)        (computed in float64),

so one store serves every training temperature: at temperature ``T`` the soft
target is ``softmax(log p / T)`` because the constant ``log sum exp z`` cancels.

*Where the logits come from.* When the chosen output is produced by ``Softmax``
(or ``LogSoftmax``) over its last axis, the tensor feeding it is exposed as an
extra graph output and read instead, so no probability is inverted (``log`` of a
float32 probability loses everything below ~1e-38 and all relative precision of
tiny ones). Otherwise the output is taken as logits, unless the first batch shows
rows of non-negative values summing to 1, in which case ``log p`` is taken and
renormalized (``tap = "probabilities"``).

*Top-k compression* (``top_k = K``) keeps, per sample, the K largest classes as
indices (smallest unsigned dtype for the class count) and float16 ``log p``
sorted by decreasing probability (ties by lower index), plus the tail mass
``m = sum_{c not in top-K} p_c`` summed directly in float64 (not ``1 - sum top``,
which cancels) and stored as float32. Dense mode stores ``log p`` for all classes.

*Where it is computed.* For teachers of opset >= 13 all of this runs inside
ONNX Runtime, in a copy of the teacher with the "label graph" appended
(:mod:`._graph`: LogSoftmax, or TopK + exp + scatter/sum for the tail, casts);
Python only copies the per-batch results into the shard arrays. The numpy
functions below are the reference and the path for older opsets and for
probability outputs. Both paths agree to float16 / float32 rounding; a store is
always written by one of them (decided by the teacher and the options).

*Batching.* Samples are stacked along axis 0 when every teacher input has a
dynamic batch axis, else run one at a time. Batches never cross a shard boundary,
so every shard is computed from the same batches whatever the order, the number
of workers or an interruption: the store is deterministic and resumable.

Plan, then apply: :func:`plan_label` inspects the teacher and one sample (which
output, which tensor to tap, class count, feature shapes) and returns a plain
:class:`LabelPlan`; :func:`label` then writes the shards.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp import io
from onnxcomp.data import Dataset, Sample, open_data, to_feed
from onnxcomp.distill import _store
from onnxcomp.errors import DataError, InvalidInputError, UnsupportedModelError

__all__ = [
    "LabelConfig",
    "LabelPlan",
    "LabelReport",
    "ShardWorker",
    "TapPlan",
    "compress_topk",
    "label",
    "log_softmax",
    "plan_label",
    "plan_tap",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]
_FLOAT_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class LabelConfig:
    """Options of :func:`label`.

    Attributes:
        top_k: Keep the K most likely classes plus the tail mass; None = dense.
        output: Teacher output to distill (required when several look class-like).
        features: Intermediate tensors to store as feature targets.
        shard_size: Samples per shard (the unit of resumption and of parallel work).
        batch_size: Samples per teacher run along a dynamic batch axis.
        workers: Local worker processes (one ONNX Runtime session each).
        engine: ``"local"`` (processes) or ``"ray"`` (Ray actors; needs ``ray``).
        threads: ONNX Runtime intra-op threads per session (default: cores / workers).
        dense_dtype: dtype of dense log-probs (``float32`` or ``float16``).
        feature_dtype: dtype of stored feature targets.
    """

    top_k: int | None = None
    output: str | None = None
    features: tuple[str, ...] = ()
    shard_size: int = 1024
    batch_size: int = 32
    workers: int = 1
    engine: str = "local"
    threads: int | None = None
    dense_dtype: str = "float32"
    feature_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise InvalidInputError(f"--top-k must be >= 1, got {self.top_k}")
        if self.shard_size < 1:
            raise InvalidInputError(f"--shard-size must be >= 1, got {self.shard_size}")
        if self.batch_size < 1:
            raise InvalidInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise InvalidInputError(f"--workers must be >= 1, got {self.workers}")
        if self.engine not in ("local", "ray"):
            raise InvalidInputError(f"--engine must be 'local' or 'ray', got {self.engine!r}")
        if self.threads is not None and self.threads < 1:
            raise InvalidInputError(f"--threads must be >= 1, got {self.threads}")
        for name in ("dense_dtype", "feature_dtype"):
            if getattr(self, name) not in _FLOAT_DTYPES:
                raise InvalidInputError(
                    f"{name} must be one of {_FLOAT_DTYPES}, got {getattr(self, name)!r}"
                )
        if len(set(self.features)) != len(self.features):
            raise InvalidInputError(f"--features lists a tensor twice: {', '.join(self.features)}")


@dataclass(frozen=True)
class TapPlan:
    """Which teacher tensor holds the class scores, and why."""

    output: str
    tapped: str
    tap: str  # "softmax-input" | "log-softmax-input" | "logits"
    reason: str


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class LabelPlan:
    """Everything needed to compute a shard (plain, picklable data)."""

    teacher: str
    teacher_sha256: str
    teacher_bytes: int
    tap: TapPlan
    classes: int
    top_k: int | None
    logp_dtype: str
    index_dtype: str | None
    features: tuple[FeatureSpec, ...]
    labels: bool
    batch_size: int
    stackable: bool
    probabilities: bool = False
    graph_outputs: tuple[str, ...] = ()

    @property
    def in_graph(self) -> bool:
        """Log-softmax / top-k / tail computed by ONNX Runtime in the label graph."""
        return bool(self.graph_outputs)

    @property
    def fetch(self) -> list[str]:
        """Session outputs to fetch, tapped tensor first."""
        return [self.tap.tapped, *(f.name for f in self.features)]

    def identity(self, shard_size: int, samples: int, fingerprint: str) -> dict[str, Any]:
        """The manifest fields that decide whether a store can be resumed."""
        dtypes: dict[str, str] = {"logp": self.logp_dtype}
        if self.top_k is not None:
            dtypes["index"] = str(self.index_dtype)
            dtypes["tail"] = "float32"
        return {
            "format": _store.FORMAT,
            "version": _store.VERSION,
            "teacher": Path(self.teacher).name,
            "teacher_sha256": self.teacher_sha256,
            "teacher_bytes": self.teacher_bytes,
            "output": self.tap.output,
            "tapped": self.tap.tapped,
            "tap": "probabilities" if self.probabilities else self.tap.tap,
            "classes": self.classes,
            "top_k": self.top_k,
            "dtypes": dtypes,
            "features": [
                {"name": f.name, "shape": list(f.shape), "dtype": f.dtype} for f in self.features
            ],
            "labels": self.labels,
            "shard_size": shard_size,
            "samples": samples,
            "data_fingerprint": fingerprint,
        }


@dataclass
class LabelReport:
    """What :func:`label` did."""

    store: str
    teacher: str
    output: str
    tapped: str
    tap: str
    classes: int
    top_k: int | None
    samples: int
    shards: int
    shards_written: int
    shards_reused: int
    seconds: float
    store_bytes: int
    workers: int
    engine: str
    features: list[str] = field(default_factory=list)
    samples_labelled: int = 0
    postprocess: str = "numpy"  # "onnxruntime" when the label graph computes the arrays

    @property
    def throughput(self) -> float:
        """Samples labelled per second in this run."""
        return self.samples_labelled / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_per_sample(self) -> float:
        return self.store_bytes / self.samples if self.samples else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 4)
        d["samples_per_second"] = round(self.throughput, 2)
        d["bytes_per_sample"] = round(self.bytes_per_sample, 2)
        return d


# ------------------------------------------------------------------- the math


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log softmax`` in float64 of a ``[batch, classes]`` array."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    s = z - m
    with np.errstate(under="ignore"):
        return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def _log_of_probabilities(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logp = np.log(np.maximum(p, np.finfo(np.float32).smallest_subnormal))
    return log_softmax(logp)


def _select_topk(v: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, by decreasing value, ties by lower index."""
    n, c = v.shape
    if k >= c:
        part = np.broadcast_to(np.arange(c), (n, c))
    else:
        part = np.argpartition(-v, k - 1, axis=1)[:, :k]
        # argpartition may pick any of equal values at the boundary: take the
        # lowest indices among ties, deterministically.
        picked = np.take_along_axis(v, part, axis=1)
        kth = picked.min(axis=1, keepdims=True)
        if np.any((v == kth).sum(axis=1) > (picked == kth).sum(axis=1)):
            order = np.lexsort((np.broadcast_to(np.arange(c), (n, c)), -v), axis=1)
            part = order[:, :k]
    vals = np.take_along_axis(v, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def compress_topk(
    logp: np.ndarray, k: int, idx_dtype: np.dtype[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k of float64 log-probs: (indices, float16 log-probs, float32 tail mass).

    Classes are ordered by decreasing probability, ties by lower index; the tail
    is the float64 sum of the probabilities outside the top K.
    """
    idx = _select_topk(logp, k)
    top = np.take_along_axis(logp, idx, axis=1)
    with np.errstate(under="ignore"):
        p = np.exp(logp)
    np.put_along_axis(p, idx, 0.0, axis=1)
    tail = p.sum(axis=1)
    return idx.astype(idx_dtype), top.astype(np.float16), tail.astype(np.float32)


def topk_from_logits(
    z: np.ndarray, k: int, idx_dtype: np.dtype[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`compress_topk` of ``log_softmax(z)`` with a single ``exp`` pass.

    ``log p_c = (z_c - max z) - log S`` with ``S = sum_j exp(z_j - max z)``; the tail
    mass is ``sum_{c not in top-K} exp(z_c - max z) / S``, summed directly. The
    exponentials are taken at the logits' precision (float32) and summed in
    float64: the tail is exact to float32 precision, which is what is stored.
    """
    z = np.asarray(z)
    if z.dtype != np.float64:
        z = z.astype(np.float32, copy=False)
    m = z.max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0).astype(z.dtype)
    with np.errstate(under="ignore"):
        e = np.exp(z - m)  # each term to the input's precision; sums in float64
    total = e.sum(axis=1, keepdims=True, dtype=np.float64)
    idx = _select_topk(z, k)
    top = (np.take_along_axis(z, idx, axis=1).astype(np.float64) - m) - np.log(total)
    np.put_along_axis(e, idx, 0.0, axis=1)
    tail = e.sum(axis=1, dtype=np.float64) / total[:, 0]
    return idx.astype(idx_dtype), top.astype(np.float16), tail.astype(np.float32)


# ------------------------------------------------------------------- planning


def _softmax_axis_is_last(node: ir.Node, rank: int | None, opset: int) -> bool:
    attr = node.attributes.get("axis")
    axis = attr.as_int() if attr is not None else (-1 if opset >= 13 else 1)
    if rank is None:
        return axis == -1
    return axis in (-1, rank - 1)


def _class_like_declared(value: ir.Value) -> bool | None:
    """True/False when the declared type tells, None when unknown."""
    if value.dtype is not None and value.dtype not in (
        ir.DataType.FLOAT,
        ir.DataType.FLOAT16,
        ir.DataType.DOUBLE,
        ir.DataType.BFLOAT16,
    ):
        return False
    if value.shape is None:
        return None
    if len(value.shape) not in (1, 2):
        return False
    last = value.shape[len(value.shape) - 1]
    if isinstance(last, int) and last < 2:
        return False
    return True


def _zipmap_input(value: ir.Value) -> ir.Value | None:
    """The ``[batch, classes]`` tensor behind a ZipMap output (scikit-learn classifiers)."""
    node = value.producer()
    if node is None or node.domain != "ai.onnx.ml" or node.op_type != "ZipMap":
        return None
    src = node.inputs[0] if node.inputs else None
    return None if src is None or src.is_initializer() else src


def plan_tap(model: ir.Model, output: str | None = None) -> TapPlan:
    """Choose the teacher output and the tensor that holds its logits.

    Raises:
        InvalidInputError: ``output`` is not an output of the model, or several
            outputs look like class scores and none was chosen.
        UnsupportedModelError: the chosen output is not ``[batch, classes]`` floats.
    """
    outputs = list(model.graph.outputs)
    names = [str(v.name) for v in outputs]
    if output is not None:
        if output not in names:
            raise InvalidInputError(
                f"--output {output!r} is not an output of the teacher; its outputs are "
                f"{', '.join(names)}"
            )
        value = outputs[names.index(output)]
    elif len(outputs) == 1:
        value = outputs[0]
    else:
        likely = [v for v in outputs if _class_like_declared(v) or _zipmap_input(v) is not None]
        if len(likely) != 1:
            raise InvalidInputError(
                f"the teacher has {len(outputs)} outputs ({', '.join(names)}); choose the class "
                "scores with --output NAME"
            )
        value = likely[0]
    name = str(value.name)
    zipped = _zipmap_input(value)
    if zipped is not None:
        return TapPlan(
            output=name,
            tapped=str(zipped.name),
            tap="logits",  # probabilities are recognised on the first batch
            reason=f"{name!r} is the ZipMap of {zipped.name!r}; reading that tensor",
        )
    if _class_like_declared(value) is False:
        shape = "?" if value.shape is None else "x".join(str(d) for d in value.shape)
        raise UnsupportedModelError(
            f"teacher output {name!r} ({value.dtype}, [{shape}]) is not class scores "
            "[batch, classes]; choose another with --output NAME"
        )
    opset = model.opset_imports.get("", 13)
    node = value.producer()
    # Identity between Softmax and the graph output is common in exports.
    while (
        node is not None
        and node.op_type == "Identity"
        and node.domain == ""
        and node.inputs[0] is not None
    ):
        prev = node.inputs[0]
        if prev is None or prev.is_graph_input() or prev.is_initializer():
            break
        node = prev.producer()
    if node is not None and node.domain == "" and node.op_type in ("Softmax", "LogSoftmax"):
        src = node.inputs[0]
        rank = None if value.shape is None else len(value.shape)
        if (
            src is not None
            and not src.is_initializer()
            and _softmax_axis_is_last(node, rank, opset)
        ):
            kind = "softmax-input" if node.op_type == "Softmax" else "log-softmax-input"
            if src.is_graph_input():
                kind = "logits"
            return TapPlan(
                output=name,
                tapped=str(src.name),
                tap=kind,
                reason=f"{name!r} is {node.op_type} node {node.name!r} of {src.name!r}; "
                "reading the logits",
            )
    return TapPlan(output=name, tapped=name, tap="logits", reason=f"{name!r} read as logits")


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _int_label(label: Any) -> int | None:
    if label is None:
        return None
    arr = np.asarray(label)
    if arr.size != 1 or arr.dtype.kind not in "iub":
        return None
    return int(arr.reshape(-1)[0])


def _labels_of(labels: Any, b: int) -> np.ndarray:
    """Integer labels of a batch (-1 where missing or not an integer)."""
    if isinstance(labels, np.ndarray) or (labels is not None and not isinstance(labels, list)):
        arr = np.asarray(labels)
        if arr.size == b and arr.dtype.kind in "iub":
            return arr.reshape(b).astype(np.int64)
        return np.full(b, -1, np.int64)
    if labels is None:
        return np.full(b, -1, np.int64)
    return np.asarray([(-1 if (v := _int_label(lb)) is None else v) for lb in labels], np.int64)


def _class_rows(arr: Any, batch: int, name: str, where: str) -> np.ndarray:
    """The ``[batch, classes]`` view of a tapped output, or UnsupportedModelError."""
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
        kind = type(arr).__name__ if not isinstance(arr, np.ndarray) else str(arr.dtype)
        raise UnsupportedModelError(
            f"teacher output {name!r} is {kind}, not float class scores; choose another "
            "with --output"
        )
    if arr.ndim == 1 and batch == 1:
        arr = arr[np.newaxis]
    if arr.ndim != 2 or arr.shape[0] != batch or arr.shape[1] < 2:
        raise UnsupportedModelError(
            f"teacher output {name!r} has shape {_fmt(arr.shape)} on {where} ({batch} sample(s)); "
            "distill needs class scores [batch, classes] with at least 2 classes; choose another "
            "with --output"
        )
    return arr


def plan_label(
    teacher: str | os.PathLike[str],
    dataset: Dataset,
    config: LabelConfig,
    *,
    model: ir.Model | None = None,
    session: Any = None,
    sha256: str | None = None,
) -> LabelPlan:
    """Inspect the teacher and its first sample; decide what the store holds.

    Raises:
        UnsupportedModelError: The output is not class scores or a feature does not exist.
        DataError: The first sample does not fit the teacher.
        InvalidInputError: ``top_k`` exceeds the class count.
    """
    from onnxcomp.runtime import create_session, expose_outputs

    path = Path(teacher)
    m = model if model is not None else io.load(path)
    tap = plan_tap(m, config.output)
    exposed_names = [tap.tapped, *config.features]
    if session is None:
        session = create_session(expose_outputs(m, exposed_names), threads=config.threads)
    first = next(iter_range(dataset, 0, 1), None)
    if first is None:
        raise DataError(f"{dataset.description}: no samples")
    where = f"sample 0 of {dataset.description}"
    outs = _run(session, exposed_names, first.feed, where)
    rows = _class_rows(outs[0], 1, tap.output if tap.tapped == tap.output else tap.tapped, where)
    classes = int(rows.shape[1])
    if config.top_k is not None and config.top_k > classes:
        raise InvalidInputError(
            f"--top-k {config.top_k} is larger than the teacher's class count {classes}"
        )
    probabilities = False
    if tap.tap == "logits":
        r = rows.astype(np.float64)
        probabilities = bool((r >= 0).all() and np.allclose(r.sum(axis=1), 1.0, atol=1e-4))
    feats = []
    for name, arr in zip(config.features, outs[1:], strict=False):
        arr = np.asarray(arr)
        if arr.dtype.kind != "f" or arr.ndim < 1 or arr.shape[0] != 1:
            raise UnsupportedModelError(
                f"feature {name!r} has shape {_fmt(arr.shape)} ({arr.dtype}) for one sample; "
                "feature "
                "targets must be float tensors with the batch on axis 0"
            )
        feats.append(FeatureSpec(name, tuple(int(d) for d in arr.shape[1:]), config.feature_dtype))
    top_k = config.top_k if config.top_k is not None and config.top_k else None
    return LabelPlan(
        teacher=str(path),
        teacher_sha256=sha256 or _store.file_sha256(path),
        teacher_bytes=io.file_size(path),
        tap=tap,
        classes=classes,
        top_k=top_k,
        logp_dtype="float16" if top_k is not None else config.dense_dtype,
        index_dtype=str(_store.index_dtype(classes)) if top_k is not None else None,
        features=tuple(feats),
        labels=_int_label(first.label) is not None,
        batch_size=config.batch_size,
        stackable=all(s.batch_dynamic for s in dataset.specs),
        probabilities=probabilities,
    )


# -------------------------------------------------------------------- running


def _label_graph(model: ir.Model, plan_or_cfg: Any, tapped: str, features: Sequence[str]) -> Any:
    """The label graph of ``model`` (None when its opset is too old or it cannot be built)."""
    from onnxcomp.distill._graph import build_label_graph, supports_label_graph

    if not supports_label_graph(model):
        return None
    if isinstance(plan_or_cfg, LabelPlan):
        top_k, dense = plan_or_cfg.top_k, plan_or_cfg.logp_dtype
    else:
        top_k, dense = plan_or_cfg.top_k, plan_or_cfg.dense_dtype
    try:
        return build_label_graph(model, tapped, top_k, dense_dtype=dense, features=features)
    except Exception as e:  # unusual graphs: the numpy path still works
        logger.info("label graph not built (%s); post-processing in numpy", e)
        return None


def _run(session: Any, names: list[str], feed: dict[str, np.ndarray], where: str) -> list[Any]:
    try:
        return list(session.run(names, feed))
    except Exception as e:
        msg = " ".join(str(e).split())
        raise DataError(f"teacher: onnxruntime failed on {where}: {msg[:300]}") from e


def iter_range(dataset: Dataset, start: int, stop: int) -> Iterator[Sample]:
    """Validated samples ``start <= index < stop``; earlier ones are skipped unvalidated."""
    limit = dataset.limit
    for i, raw in enumerate(dataset.source):
        if (limit is not None and i >= limit) or i >= stop:
            return
        if i < start:
            continue
        yield dataset.validate(i, raw)


class _BlockCursor:
    """Sequential reader of consecutive sample rows from a source's ``iter_blocks``."""

    def __init__(self, source: Any, block: int, description: str) -> None:
        self.source = source
        self.block = block
        self.description = description
        self._reset()

    def _reset(self) -> None:
        self._it = iter(self.source.iter_blocks(self.block))
        self._buf: dict[str, np.ndarray] | None = None
        self._len = 0
        self._off = 0
        self.pos = 0

    def take(self, start: int, n: int) -> dict[str, np.ndarray]:
        """Rows ``start .. start+n-1`` (moving forward; restarts when asked to go back)."""
        if self.pos > start:
            self._reset()
        parts: list[dict[str, np.ndarray]] = []
        while self.pos < start + n:
            if self._buf is None or self._off >= self._len:
                try:
                    self._buf = next(self._it)
                except StopIteration:
                    raise DataError(
                        f"{self.description}: ended at sample {self.pos}, expected {start + n} "
                        "samples (did the data change while labelling?)"
                    ) from None
                self._len = len(next(iter(self._buf.values())))
                self._off = 0
            avail = self._len - self._off
            if self.pos < start:
                step = min(avail, start - self.pos)
            else:
                step = min(avail, start + n - self.pos)
                parts.append({k: v[self._off : self._off + step] for k, v in self._buf.items()})
            self._off += step
            self.pos += step
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _block_reader(dataset: Dataset, plan: LabelPlan) -> _BlockCursor | None:
    """A batch-at-once reader when the source stores arrays shaped like the inputs."""
    src = dataset.source
    if (
        not plan.stackable
        or plan.batch_size < 2
        or dataset.transform is not None
        or not hasattr(src, "iter_blocks")
        or not hasattr(src, "array_ranks")
    ):
        return None
    ranks = src.array_ranks()
    if any(s.rank is None or ranks.get(s.name) != s.rank for s in dataset.specs):
        return None
    return _BlockCursor(src, plan.batch_size, dataset.description)


class ShardWorker:
    """One ONNX Runtime session that computes shards and writes their files.

    Keeps its position in the data so that consecutive shards read the data once.
    Sources that store whole arrays (``.npz``/``.npy`` shaped like the inputs) are
    read and validated a batch at a time; the batches are the same either way.
    """

    def __init__(
        self,
        plan: LabelPlan,
        dataset: Dataset,
        store: str | os.PathLike[str],
        *,
        threads: int | None = None,
        session: Any = None,
    ) -> None:
        from onnxcomp.runtime import create_session, expose_outputs

        self.plan = plan
        self.dataset = dataset
        self.store = Path(store)
        if session is None:
            model = io.load(plan.teacher)
            graph = (
                _label_graph(model, plan, plan.tap.tapped, [f.name for f in plan.features])
                if plan.in_graph
                else None
            )
            if graph is not None and tuple(graph.outputs) != plan.graph_outputs:
                raise UnsupportedModelError(
                    f"{plan.teacher}: the label graph differs from the planned one "
                    f"({graph.outputs} vs {list(plan.graph_outputs)})"
                )
            if plan.in_graph and graph is None:
                raise UnsupportedModelError(f"{plan.teacher}: the label graph cannot be built")
            built = graph.model if graph is not None else expose_outputs(model, plan.fetch)
            session = create_session(built, threads=threads)
        self.session = session
        self._iter: Iterator[tuple[int, Mapping[str, Any]]] | None = None
        self._next = 0
        self._blocks = _block_reader(dataset, plan)

    def _raw_from(self, start: int) -> Iterator[tuple[int, Mapping[str, Any]]]:
        if self._iter is None or self._next > start:
            self._iter = enumerate(self.dataset.source)
            self._next = 0
        assert self._iter is not None
        while self._next < start:
            next(self._iter)
            self._next += 1
        return self._iter

    def _samples(self, start: int, count: int) -> Iterator[Sample]:
        it = self._raw_from(start)
        for _ in range(count):
            try:
                i, raw = next(it)
            except StopIteration:
                raise DataError(
                    f"{self.dataset.description}: ended at sample {self._next}, expected "
                    f"{start + count} samples (did the data change while labelling?)"
                ) from None
            self._next = i + 1
            yield self.dataset.validate(i, raw)

    def _batches(
        self, start: int, count: int
    ) -> Iterator[tuple[int, int, dict[str, np.ndarray], Any, str]]:
        """(first index, size, feed, labels (array or list), where) per batch of the shard."""
        from onnxcomp.runtime import iter_batches

        desc = self.dataset.description
        if self._blocks is not None:
            bs = self.plan.batch_size
            for lo in range(start, start + count, bs):
                n = min(bs, start + count - lo)
                where = f"samples {lo}-{lo + n - 1} of {desc}"
                raw = self._blocks.take(lo, n)
                feed, lab = to_feed(
                    raw, self.dataset.specs, where, check_finite=self.dataset.check_finite
                )
                yield lo, n, feed, lab, where
            return
        bs = self.plan.batch_size if self.plan.stackable else 1
        for batch in iter_batches(self._samples(start, count), self.dataset.specs, bs):
            where = f"samples {batch.indices[0]}-{batch.indices[-1]} of {desc}"
            yield batch.indices[0], batch.size, batch.feed, batch.labels, where

    def compute(self, start: int, count: int) -> dict[str, np.ndarray]:
        """The arrays of samples ``start .. start+count-1``."""
        plan = self.plan
        k = plan.top_k
        width = k if k is not None else plan.classes
        arrays: dict[str, np.ndarray] = {
            "logp": np.empty((count, width), np.dtype(plan.logp_dtype))
        }
        if k is not None:
            arrays["index"] = np.empty((count, k), np.dtype(str(plan.index_dtype)))
            arrays["tail"] = np.empty((count,), np.float32)
        if plan.labels:
            arrays["label"] = np.full((count,), -1, np.int64)
        for j, f in enumerate(plan.features):
            arrays[f"feat{j}"] = np.empty((count, *f.shape), np.dtype(f.dtype))
        if plan.in_graph:
            self._compute_in_graph(start, count, arrays)
            return arrays
        names = plan.fetch
        for first, b, feed, labels, where in self._batches(start, count):
            outs = _run(self.session, names, feed, where)
            rows = _class_rows(outs[0], b, plan.tap.tapped, where)
            if rows.shape[1] != plan.classes:
                raise UnsupportedModelError(
                    f"teacher output {plan.tap.tapped!r} has {rows.shape[1]} classes on {where}, "
                    f"{plan.classes} on the first sample"
                )
            sl = slice(first - start, first - start + b)
            if k is not None:
                if plan.probabilities:
                    idx, top, tail = compress_topk(
                        _log_of_probabilities(rows), k, arrays["index"].dtype
                    )
                else:
                    idx, top, tail = topk_from_logits(rows, k, arrays["index"].dtype)
                arrays["index"][sl], arrays["logp"][sl], arrays["tail"][sl] = idx, top, tail
            else:
                arrays["logp"][sl] = (
                    _log_of_probabilities(rows) if plan.probabilities else log_softmax(rows)
                )
            if plan.labels:
                arrays["label"][sl] = _labels_of(labels, b)
            self._store_features(arrays, outs[1:], sl, b, where)
        return arrays

    def _store_features(
        self, arrays: dict[str, np.ndarray], outs: Sequence[Any], sl: slice, b: int, where: str
    ) -> None:
        for j, (f, arr) in enumerate(zip(self.plan.features, outs, strict=False)):
            arr = np.asarray(arr)
            if arr.shape != (b, *f.shape):
                raise UnsupportedModelError(
                    f"feature {f.name!r} has shape {_fmt(arr.shape)} on {where}; expected "
                    f"{_fmt((b, *f.shape))} (feature targets need a fixed per-sample shape)"
                )
            arrays[f"feat{j}"][sl] = arr

    def _compute_in_graph(self, start: int, count: int, arrays: dict[str, np.ndarray]) -> None:
        """:meth:`compute` when ONNX Runtime computes the label arrays (the label graph)."""
        plan = self.plan
        names = [*plan.graph_outputs, *(f.name for f in plan.features)]
        n_label = len(plan.graph_outputs)
        k = plan.top_k
        for first, b, feed, labels, where in self._batches(start, count):
            outs = _run(self.session, names, feed, where)
            shape = tuple(int(d) for d in outs[0])
            if shape not in ((b, plan.classes), (plan.classes,) if b == 1 else ()):
                raise UnsupportedModelError(
                    f"teacher output {plan.tap.tapped!r} has shape {_fmt(shape)} on {where} "
                    f"({b} sample(s)); expected {_fmt((b, plan.classes))} as on the first sample"
                )
            sl = slice(first - start, first - start + b)
            arrays["logp"][sl] = outs[1]
            if k is not None:
                arrays["index"][sl] = outs[2]
                arrays["tail"][sl] = outs[3].reshape(b)
            if plan.labels:
                arrays["label"][sl] = _labels_of(labels, b)
            self._store_features(arrays, outs[n_label:], sl, b, where)

    def run_shard(self, index: int, start: int, count: int) -> _store.ShardResult:
        """Compute one shard and write its files atomically."""
        arrays = self.compute(start, count)
        files: dict[str, str] = {}
        digests: dict[str, str] = {}
        for key, arr in arrays.items():
            name = _store.shard_file(index, key)
            digests[key] = _store.write_array(self.store / name, arr)
            files[key] = name
        return _store.ShardResult(index, start, count, files, digests)


# ---------------------------------------------------------------------- label


def _shard_entries(samples: int, shard_size: int) -> list[dict[str, Any]]:
    n = max(1, math.ceil(samples / shard_size))
    return [
        {
            "index": i,
            "start": i * shard_size,
            "count": min(shard_size, samples - i * shard_size),
            "complete": False,
        }
        for i in range(n)
    ]


def _check_existing(store: Path, sha: str) -> dict[str, Any] | None:
    """The manifest of an existing store (refusing another teacher), or None."""
    if not store.exists():
        return None
    if not store.is_dir():
        raise InvalidInputError(f"{store}: exists and is not a folder")
    if not (store / _store.MANIFEST).is_file():
        if any(store.iterdir()):
            raise InvalidInputError(
                f"{store}: folder exists, is not empty and is not a soft-label store; "
                "choose a new folder"
            )
        return None
    old = _store.read_manifest(store)
    if old.get("teacher_sha256") != sha:
        raise InvalidInputError(
            f"{store}: the store was made from another teacher "
            f"(sha256 {str(old.get('teacher_sha256'))[:12]}... vs {sha[:12]}...); it is left "
            "untouched: choose a new folder or delete it"
        )
    return old


def label(
    teacher: str | os.PathLike[str],
    data: Any,
    store: str | os.PathLike[str],
    config: LabelConfig | None = None,
    *,
    progress: Progress | None = None,
) -> LabelReport:
    """Run ``teacher`` over ``data`` and write (or resume) a soft-label store.

    Args:
        teacher: Path of the teacher ``.onnx`` (hashed into the manifest).
        data: A :class:`~onnxcomp.data.Dataset` or anything :func:`open_data` accepts.
        store: Folder to write; an existing store of the same teacher, data and
            options is resumed from its last complete shard.
        config: Options (top-k, output, features, shard and batch size, workers).
        progress: Called with (samples done, total).

    Raises:
        InvalidInputError: Missing teacher, an existing store made from another
            teacher / data / options (left untouched), top-k above the class count.
        UnsupportedModelError: The chosen output is not class scores.
        DataError: The data does not fit the teacher.
    """
    from onnxcomp.runtime import create_session, expose_outputs

    cfg = config or LabelConfig()
    path = Path(teacher)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such teacher model file")
    out = Path(store)
    sha = _store.file_sha256(path)
    existing = _check_existing(out, sha)
    model = io.load(path)
    dataset = open_data(data, model)
    total = dataset.length()
    if total is None:
        raise InvalidInputError(
            f"{dataset.description}: the number of samples is unknown; pass a sized source "
            "(a file, folder or list) so shards can be planned"
        )
    tap = plan_tap(model, cfg.output)
    threads = cfg.threads or (
        max(1, (os.cpu_count() or 1) // cfg.workers) if cfg.workers > 1 else None
    )
    graph = _label_graph(model, cfg, tap.tapped, cfg.features)
    session = None
    if graph is not None:
        try:
            session = create_session(graph.model, threads=threads)
            plan = plan_label(path, dataset, cfg, model=model, session=session, sha256=sha)
        except (UnsupportedModelError, DataError) as e:
            # probe again on the plain teacher: its own errors, or the numpy path
            logger.info("label graph failed (%s); post-processing in numpy", e)
            graph = session = None
    if session is None:
        session = create_session(
            expose_outputs(model, [tap.tapped, *cfg.features]), threads=threads
        )
        plan = plan_label(path, dataset, cfg, model=model, session=session, sha256=sha)
    if graph is not None and not plan.probabilities:
        plan = replace(plan, graph_outputs=tuple(graph.outputs))
    manifest = plan.identity(cfg.shard_size, total, dataset.fingerprint())
    if existing is not None:
        why = _store.identity_mismatch(existing, manifest)
        if why is not None:
            raise InvalidInputError(
                f"{out}: cannot resume this store: {why}; it is left untouched: choose a new "
                "folder or delete it"
            )
        entries = existing["shards"]
        for e in entries:
            if e.get("complete") and not _store.shard_complete(out, e):
                e["complete"] = False
        manifest = dict(existing)
        manifest["shards"] = entries
    else:
        manifest["shards"] = _shard_entries(total, cfg.shard_size)
        manifest["complete"] = False
        out.mkdir(parents=True, exist_ok=True)
        _store.write_manifest(out, manifest)
    pending = [e for e in manifest["shards"] if not e.get("complete")]
    reused = len(manifest["shards"]) - len(pending)
    done = sum(e["count"] for e in manifest["shards"] if e.get("complete"))
    if progress:
        progress(done, total)
    t0 = time.perf_counter()
    written = 0

    def finished(res: _store.ShardResult) -> None:
        nonlocal done, written
        manifest["shards"][res.index] = res.to_entry()
        manifest["complete"] = all(e.get("complete") for e in manifest["shards"])
        _store.write_manifest(out, manifest)
        done += res.count
        written += res.count
        if progress:
            progress(done, total)

    tasks = [(e["index"], e["start"], e["count"]) for e in pending]
    if tasks:
        if cfg.engine == "ray":
            from onnxcomp.distill._parallel import run_ray

            run_ray(plan, dataset, out, tasks, cfg.workers, threads, finished)
        elif cfg.workers > 1 and len(tasks) > 1:
            from onnxcomp.distill._parallel import run_processes

            run_processes(plan, dataset, out, tasks, cfg.workers, threads, finished)
        else:
            worker = ShardWorker(plan, dataset, out, session=session)
            for index, start, count in tasks:
                finished(worker.run_shard(index, start, count))
    if not manifest.get("complete"):
        manifest["complete"] = True
        _store.write_manifest(out, manifest)
    seconds = time.perf_counter() - t0
    nbytes = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    report = LabelReport(
        store=str(out),
        teacher=str(path),
        output=plan.tap.output,
        tapped=plan.tap.tapped,
        tap=manifest["tap"],
        classes=plan.classes,
        top_k=plan.top_k,
        samples=total,
        shards=len(manifest["shards"]),
        shards_written=len(tasks),
        shards_reused=reused,
        seconds=seconds,
        store_bytes=nbytes,
        workers=cfg.workers,
        engine=cfg.engine,
        features=[f.name for f in plan.features],
        samples_labelled=written,
        postprocess="onnxruntime" if plan.in_graph else "numpy",
    )
    logger.info("labelled %d samples in %.2fs", written, seconds)
    return report


def remove_store(store: str | os.PathLike[str]) -> None:
    """Delete a store folder (only if it holds a store manifest)."""
    path = Path(store)
    _store.read_manifest(path)
    shutil.rmtree(path)
