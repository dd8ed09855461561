"""Mean-contribution bias folding: what the removed channels still contributed on average.

A consumer contraction ``N`` (Conv, Gemm, MatMul) reads a tensor ``X`` whose
channel-axis elements ``R`` are removed. Its output keeps

    y[o] = sum_{i not in R, k} W[o, i, k] x[i, k] + b[o]
         + sum_{i in R, k} W[o, i, k] x[i, k]            # lost by pruning

Replacing the lost term by its expectation gives the folded bias

    b'[o] = b[o] + sum_{i in R} mu[i] * sum_k W[o, i, k]          (Conv, grouped per group)
    C'    = C + alpha / beta * sum_{i in R} mu[i] B[i, :]         (Gemm)
    b'    = b + sum_{i in R} mu[i] B[i, :]                        (MatMul, into the next Add)

which is exact when the removed channels are constant (``x[i] = mu[i]``) and
the consumer sees no zero padding; otherwise it is exact in expectation for
interior positions ("better, not exact": with zero padding the border positions
see part of the kernel on padding zeros instead of ``mu``).

``mu`` comes from calibration data (the per-element mean of ``X`` over samples
and positions), or, data-free, from moment propagation back to a
BatchNormalization: a BN output is ``N(beta + gamma (m - M) / sqrt(V + eps),
gamma^2 v / (V + eps))`` where ``(m, v)`` are the producer's moments when known
(an all-zero filter gives exactly its bias, variance 0) and the running
statistics ``(M, V)`` otherwise. Activations map a normal ``N(mu, s^2)`` to its
mean and variance (closed form for Relu, ``E = mu Phi(mu/s) + s phi(mu/s)``,
``E[relu^2] = (mu^2 + s^2) Phi(mu/s) + mu s phi(mu/s)``; Gauss-Hermite quadrature for
the others), sums of tensors add means and variances (independence assumed),
mean-preserving ops (Identity, Reshape, Flatten, average pools, ...) keep the
mean, max pools keep a non-negative mean as a lower bound (folding it is still
closer than 0). Elements without an estimate are not folded and the plan says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcomp.prune._apply import kept_elements, set_const_input
from onnxcomp.prune._graph import Analysis, Layout

logger = logging.getLogger(__name__)

__all__ = ["BiasFold", "apply_folds", "compute_folds", "fold_tensors", "tensor_means"]

Keep = Mapping[int, np.ndarray]


@dataclass
class BiasFold:
    """A bias change of one consumer (plain data, part of the plan).

    Attributes:
        node: The consumer node (Conv, Gemm or MatMul).
        tensor: Its input whose removed channels are folded.
        source: ``data`` (calibration means), ``bn`` (data-free estimate) or ``none``.
        folded: Removed channel-axis elements folded.
        removed: Removed channel-axis elements of ``tensor``.
        padded: The consumer zero-pads (the fold is approximate at borders).
        delta: Change of the consumer's bias per *original* output channel (empty if nothing folded).
        reason: Why some or all elements were not folded.
    """

    node: str
    tensor: str
    source: str
    folded: int
    removed: int
    padded: bool = False
    delta: list[float] | None = None
    reason: str = ""


# ------------------------------------------------------------ targets


def fold_tensors(an: Analysis, masks: Keep) -> list[tuple[str, str]]:
    """``(node, tensor)`` of every contraction input losing channels."""
    out: list[tuple[str, str]] = []
    for sl in an.slices:
        if sl.role != "in":
            continue
        lay = an.layouts[sl.value]
        if not any(s.space in masks and not masks[s.space].all() for s in lay.segments):
            continue
        if (sl.node, sl.value) not in out:
            out.append((sl.node, sl.value))
    return out


# ------------------------------------------------------------ data means


def tensor_means(
    an: Analysis,
    names: list[str],
    batches: Iterable[dict[str, np.ndarray]],
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per channel-axis element: root mean square and mean of each named tensor, streamed."""
    sums_abs: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for feed in batches:
        outs = run(feed)
        for name in names:
            x = outs.get(name)
            if x is None:
                continue
            axis = an.layouts[name].axis
            x = np.asarray(x, dtype=np.float64)
            if x.ndim <= axis:
                continue
            m = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
            sums_abs[name] = sums_abs.get(name, 0) + np.square(m).sum(1)
            sums[name] = sums.get(name, 0) + m.sum(1)
            counts[name] = counts.get(name, 0) + m.shape[1]
    rms = {k: np.sqrt(sums_abs[k] / max(counts[k], 1)) for k in sums_abs}
    mean = {k: sums[k] / max(counts[k], 1) for k in sums}
    return rms, mean


# ------------------------------------------------------------ data-free moments

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(64)
_GH_W = _GH_W / _GH_W.sum()
_erf = np.frompyfunc(math.erf, 1, 1)


def _phi(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(x / math.sqrt(2)).astype(np.float64))


def relu_moments(mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``relu(x)`` for ``x ~ N(mu, var)`` (exact; ``var = 0`` allowed)."""
    s = np.sqrt(np.maximum(var, 0.0))
    pos = s > 0
    t = np.where(pos, mu / np.where(pos, s, 1.0), 0.0)
    e1 = np.where(pos, mu * _cdf(t) + s * _phi(t), np.maximum(mu, 0.0))
    e2 = np.where(pos, (mu * mu + s * s) * _cdf(t) + mu * s * _phi(t), np.maximum(mu, 0.0) ** 2)
    return e1, np.maximum(e2 - e1 * e1, 0.0)


def _quad_moments(
    f: Callable[[np.ndarray], np.ndarray], mu: np.ndarray, var: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    s = np.sqrt(np.maximum(var, 0.0))
    pts = mu[:, None] + s[:, None] * _GH_X[None, :]
    with np.errstate(all="ignore"):
        fx = f(pts)
    e1 = fx @ _GH_W
    e2 = (fx * fx) @ _GH_W
    return e1, np.maximum(e2 - e1 * e1, 0.0)


def _activation(node: ir.Node) -> Callable[[np.ndarray], np.ndarray] | None:
    op = node.op_type
    a = node.attributes
    if op == "LeakyRelu":
        alpha = a.get_float("alpha", 0.01)
        return lambda x: np.where(x >= 0, x, alpha * x)
    if op == "Sigmoid":
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if op == "HardSigmoid":
        al, be = a.get_float("alpha", 0.2), a.get_float("beta", 0.5)
        return lambda x: np.clip(al * x + be, 0, 1)
    if op == "HardSwish":
        return lambda x: x * np.clip(x / 6 + 0.5, 0, 1)
    if op == "Tanh":
        return np.tanh
    if op == "Erf":
        return lambda x: _erf(x).astype(np.float64)
    if op == "Gelu":
        if a.get_string("approximate", "none") == "tanh":
            return lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2)).astype(np.float64))
    if op == "Elu":
        alpha = a.get_float("alpha", 1.0)
        return lambda x: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
    if op == "Softplus":
        return lambda x: np.logaddexp(0, x)
    if op == "Mish":
        return lambda x: x * np.tanh(np.logaddexp(0, x))
    if op == "Swish":
        alpha = a.get_float("alpha", 1.0)
        return lambda x: x / (1.0 + np.exp(-alpha * x))
    return None


_KEEP_MOMENTS = ("Identity", "Dropout", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze")
_KEEP_MEAN = ("GlobalAveragePool", "AveragePool", "Resize", "Upsample")
_LOWER_BOUND = ("MaxPool", "GlobalMaxPool")


class Moments:
    """Per-channel (layout order) mean and variance of tensors; NaN = unknown."""

    def __init__(self, an: Analysis) -> None:
        self.an = an
        self.memo: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        self.sources: dict[str, str] = {}

    def n_channels(self, layout: Layout) -> int:
        return sum(s.count for s in layout.segments)

    def of(self, name: str, depth: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
        if name in self.memo:
            return self.memo[name]
        self.memo[name] = None  # cycle guard
        try:
            res = self._compute(name, depth)
        except Exception:  # an estimate must never break pruning
            logger.debug("moments of %s failed", name, exc_info=True)
            res = None
        self.memo[name] = res
        return res

    def _unknown(self, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
        n = self.n_channels(layout)
        return np.full(n, np.nan), np.full(n, np.nan)

    def _input(
        self, node: ir.Node, i: int, layout: Layout, depth: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        v = node.inputs[i]
        if v is None or not v.name or self.an.layouts.get(str(v.name)) is None:
            return None
        if self.n_channels(self.an.layouts[str(v.name)]) != self.n_channels(layout):
            return None
        return self.of(str(v.name), depth + 1)

    def _compute(self, name: str, depth: int) -> tuple[np.ndarray, np.ndarray] | None:
        an = self.an
        layout = an.layouts.get(name)
        v = an.values.get(name)
        if layout is None or v is None or depth > 200:
            return None
        node = v.producer()
        if node is None:
            return None
        op = node.op_type
        if op in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            return self._source(node, layout)
        if op in ("BatchNormalization", "InstanceNormalization"):
            return self._norm(node, layout, depth)
        x = self._input(node, 0, layout, depth)
        if op in _KEEP_MOMENTS or (
            op == "Cast" and v.dtype in (ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16)
        ):
            return x
        if x is None:
            if op in ("Add", "Sub", "Sum", "Mul", "Concat"):
                return self._combine(node, layout, depth)
            return None
        mu, var = x
        if op == "Relu":
            return relu_moments(mu, var)
        if op == "Clip":
            lo, hi = self._clip_bounds(node)
            f = lambda t: np.clip(t, lo, hi)
            return _quad_moments(f, mu, var)
        if op in _KEEP_MEAN:
            if (
                op == "AveragePool"
                and any(node.attributes.get_ints("pads", [0]))
                and node.attributes.get_int("count_include_pad", 0)
            ):
                return None
            return mu, np.full_like(var, np.nan)
        if op in _LOWER_BOUND:
            return np.where(mu >= 0, mu, np.nan), np.full_like(var, np.nan)
        f = _activation(node)
        if f is not None:
            return _quad_moments(f, mu, var)
        if op in ("Add", "Sub", "Sum", "Mul", "Div", "Concat"):
            return self._combine(node, layout, depth)
        return None

    def _clip_bounds(self, node: ir.Node) -> tuple[float, float]:
        lo, hi = -np.inf, np.inf
        if node.attributes.get("min") is not None:
            lo = node.attributes.get_float("min", -np.inf)
        if node.attributes.get("max") is not None:
            hi = node.attributes.get_float("max", np.inf)
        for i, which in ((1, "lo"), (2, "hi")):
            if len(node.inputs) > i and node.inputs[i] is not None and node.inputs[i].name:
                c = node.inputs[i].const_value
                if c is None:
                    raise ValueError("Clip bounds are not constant")
                val = float(np.asarray(c.numpy()).reshape(-1)[0])
                if which == "lo":
                    lo = val
                else:
                    hi = val
        return lo, hi

    def _source(self, node: ir.Node, layout: Layout) -> tuple[np.ndarray, np.ndarray] | None:
        """Channels of an all-zero filter are exactly the bias (variance 0); others unknown."""
        if len(layout.segments) != 1 or layout.segments[0].rep != 1:
            return None
        w = node.inputs[1]
        if w is None or w.const_value is None:
            return None
        wa = w.const_value.numpy()
        op = node.op_type
        n = layout.size
        if op == "Conv":
            axis = 0
        elif op == "ConvTranspose":
            if node.attributes.get_int("group", 1) != 1:
                return None
            axis = 1
        elif op == "Gemm":
            axis = 0 if node.attributes.get_int("transB", 0) else 1
        else:
            axis = wa.ndim - 1
        if wa.shape[axis] != n:
            return None
        zero = ~np.moveaxis(wa, axis, 0).reshape(n, -1).any(axis=1)
        bias = np.zeros(n)
        if op in ("Conv", "ConvTranspose") and len(node.inputs) > 2 and node.inputs[2] is not None:
            b = node.inputs[2].const_value
            if b is None:
                return None
            bias = b.numpy().astype(np.float64).reshape(-1)
        elif op == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
            c = node.inputs[2].const_value
            if c is None:
                return None
            ca = c.numpy().astype(np.float64)
            if ca.ndim == 2 and ca.shape[0] != 1:
                return None
            bias = np.broadcast_to(ca.reshape(-1), (n,)) * node.attributes.get_float("beta", 1.0)
        mu = np.where(zero, bias, np.nan)
        var = np.where(zero, 0.0, np.nan)
        return mu, var

    def _norm(
        self, node: ir.Node, layout: Layout, depth: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        if len(layout.segments) != 1 or layout.segments[0].rep != 1:
            return None
        ps = [
            node.inputs[i].const_value
            if len(node.inputs) > i and node.inputs[i] is not None
            else None
            for i in range(1, 5)
        ]
        n = layout.size
        if node.op_type == "InstanceNormalization":
            if ps[0] is None or ps[1] is None:
                return None
            s = ps[0].numpy().astype(np.float64).reshape(-1)
            b = ps[1].numpy().astype(np.float64).reshape(-1)
            return b, s * s
        if any(p is None for p in ps):
            return None
        s, b, m, var = (p.numpy().astype(np.float64).reshape(-1) for p in ps)  # type: ignore[union-attr]
        eps = node.attributes.get_float("epsilon", 1e-5)
        in_mu, in_var = m.copy(), var.copy()
        x = self._input(node, 0, layout, depth)
        if x is not None and x[0].size == n:
            known = ~np.isnan(x[0]) & ~np.isnan(x[1])
            in_mu = np.where(known, x[0], in_mu)
            in_var = np.where(known, x[1], in_var)
        scale = s / np.sqrt(var + eps)
        return scale * (in_mu - m) + b, scale * scale * in_var

    def _combine(
        self, node: ir.Node, layout: Layout, depth: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        an = self.an
        op = node.op_type
        n = self.n_channels(layout)
        if op == "Concat":
            mus, vars_ = [], []
            for v in node.inputs:
                if v is None:
                    continue
                lin = an.layouts.get(str(v.name))
                if lin is None or lin.axis != layout.axis:
                    return None
                r = self.of(str(v.name), depth + 1)
                mu, var = r if r is not None else self._unknown(lin)
                mus.append(mu)
                vars_.append(var)
            if sum(m.size for m in mus) != n:
                return None
            return np.concatenate(mus), np.concatenate(vars_)
        if any(s.rep != 1 for s in layout.segments):
            return None
        mu = np.zeros(n) if op != "Mul" else np.ones(n)
        var = np.zeros(n)
        tensors = 0
        for i, v in enumerate(node.inputs):
            if v is None:
                continue
            lin = an.layouts.get(str(v.name))
            if lin is not None:
                r = self.of(str(v.name), depth + 1)
                if r is None or r[0].size != n:
                    return None
                tensors += 1
                if op == "Mul":
                    if tensors > 1:
                        return None
                    mu, var = mu * r[0], r[1] * mu * mu
                elif op == "Sub" and i == 1:
                    mu, var = mu - r[0], var + r[1]
                elif op == "Div":
                    if i != 0:
                        return None
                    mu, var = r
                else:
                    mu, var = mu + r[0], var + r[1]
                continue
            c = v.const_value
            if c is None:
                return None
            ca = np.asarray(c.numpy(), dtype=np.float64)
            vec = _channel_vector(
                ca, layout.axis, len(v.shape) if v.shape is not None else ca.ndim, an, node, n
            )
            if vec is None:
                return None
            if op == "Mul":
                mu, var = mu * vec, var * vec * vec
            elif op == "Div":
                if i != 1:
                    return None
                mu, var = mu / vec, var / (vec * vec)
            elif op == "Sub" and i == 1:
                mu = mu - vec
            elif op == "Sub":
                mu = vec - mu
            else:
                mu = mu + vec
        if tensors == 0:
            return None
        return mu, var


def _channel_vector(
    ca: np.ndarray, out_axis: int, rank: int, an: Analysis, node: ir.Node, n: int
) -> np.ndarray | None:
    """A constant operand as one value per channel (broadcast over the rest), or None."""
    out = node.outputs[0]
    ry = len(out.shape) if out.shape is not None else None
    if ry is None:
        return None
    a = out_axis - (ry - ca.ndim)
    if ca.size == 1:
        return np.full(n, float(ca.reshape(-1)[0]))
    if not 0 <= a < ca.ndim or ca.shape[a] != n or ca.size != n:
        return None
    return ca.reshape(-1)


# ------------------------------------------------------------ folds


def _padded(node: ir.Node) -> bool:
    if node.op_type != "Conv":
        return False
    if node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
        return True
    return any(node.attributes.get_ints("pads", [0]))


def _contribution(node: ir.Node, mu: np.ndarray) -> np.ndarray | None:
    """``sum_i mu[i] * sum_k W[o, i, k]`` per output channel (``mu`` 0 outside the removed set)."""
    w = node.inputs[1]
    if w is None or w.const_value is None:
        return None
    wa = w.const_value.numpy().astype(np.float64)
    op = node.op_type
    if op == "Conv":
        g = node.attributes.get_int("group", 1)
        cout, cin_g = wa.shape[0], wa.shape[1]
        if mu.size != cin_g * g:
            return None
        ws = wa.reshape(cout, cin_g, -1).sum(axis=2)  # [Cout, Cin/g]
        per_out = cout // g
        out = np.empty(cout)
        for k in range(g):
            out[k * per_out : (k + 1) * per_out] = (
                ws[k * per_out : (k + 1) * per_out] @ mu[k * cin_g : (k + 1) * cin_g]
            )
        return out
    if op == "Gemm":
        b = wa.T if node.attributes.get_int("transB", 0) else wa  # [K, N]
        if b.shape[0] != mu.size:
            return None
        return node.attributes.get_float("alpha", 1.0) * (mu @ b)
    if op == "MatMul":
        if wa.ndim != 2 or wa.shape[0] != mu.size:
            return None
        return mu @ wa
    return None


def compute_folds(
    an: Analysis,
    masks: Keep,
    means: Mapping[str, np.ndarray] | None,
) -> list[BiasFold]:
    """The bias folds of every consumer losing channels.

    Args:
        an: The analysis of the (unmodified) model.
        masks: Space id -> kept channels.
        means: Measured per-element means of the consumers' inputs (``None``: data-free).
    """
    moments = Moments(an) if means is None else None
    folds: list[BiasFold] = []
    for node_name, tensor in fold_tensors(an, masks):
        node = an.nodes[node_name]
        layout = an.layouts[tensor]
        kept = kept_elements(layout, masks)
        removed = np.ones(layout.size, dtype=bool)
        removed[kept] = False
        n_removed = int(removed.sum())
        source = "data" if means is not None else "bn"
        fold = BiasFold(node_name, tensor, source, 0, n_removed, _padded(node))
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            fold.source, fold.reason = "none", f"{node.op_type} has no bias to fold into"
            folds.append(fold)
            continue
        if node.op_type == "Gemm" and node.attributes.get_float("beta", 1.0) == 0.0:
            fold.source, fold.reason = "none", "Gemm with beta = 0"
            folds.append(fold)
            continue
        if means is not None:
            mu = means.get(tensor)
            if mu is None or mu.size != layout.size:
                fold.source, fold.reason = "none", "no calibration statistics"
                folds.append(fold)
                continue
            mu = np.asarray(mu, dtype=np.float64)
        else:
            assert moments is not None
            r = moments.of(tensor)
            if r is None:
                fold.source, fold.reason = (
                    "none",
                    "no estimate (no BatchNormalization on the path; give --data)",
                )
                folds.append(fold)
                continue
            reps = [s.rep for s in layout.segments for _ in range(s.count)]
            mu = np.repeat(r[0], reps)
        use = removed & np.isfinite(mu)
        fold.folded = int(use.sum())
        if fold.folded < n_removed:
            fold.reason = (
                f"{n_removed - fold.folded} of {n_removed} removed elements without an estimate "
                "(no BatchNormalization on the path; give --data)"
            )
        if fold.folded == 0:
            fold.source = "none"
            folds.append(fold)
            continue
        delta = _contribution(node, np.where(use, mu, 0.0))
        if delta is None:
            fold.source, fold.folded, fold.reason = "none", 0, "unsupported weight layout"
        else:
            fold.delta = [float(d) for d in delta]
        folds.append(fold)
    return folds


def apply_folds(
    model: ir.Model, an: Analysis, folds: Iterable[BiasFold], masks: Keep | None
) -> None:
    """Add the folds' bias deltas to ``model`` (nodes looked up by name).

    Args:
        model: The model (the pruned one, or the masked reference).
        an: Analysis of the original model (only its layouts are read: the consumers' outputs).
        folds: The folds of the plan.
        masks: Kept channels when ``model`` is pruned (deltas are sliced to the kept
            output channels); ``None`` for the unpruned masked reference.
    """
    graph = model.graph
    nodes = {str(n.name): n for n in graph}
    for fold in folds:
        if not fold.delta:
            continue
        node = nodes.get(fold.node)
        if node is None:
            raise ValueError(f"bias fold: node {fold.node!r} not in the model")
        delta = np.asarray(fold.delta, dtype=np.float64)
        y = str(node.outputs[0].name)
        if masks is not None and y in an.layouts:
            delta = delta[kept_elements(an.layouts[y], masks)]
        _add_bias(graph, node, delta)


def _new_const(graph: ir.Graph, base: str, arr: np.ndarray) -> ir.Value:
    name, k = base, 0
    while name in graph.initializers:
        k += 1
        name = f"{base}_{k}"
    v = ir.Value(
        name=name,
        shape=ir.Shape(arr.shape),
        type=ir.TensorType(ir.DataType.from_numpy(arr.dtype)),
        const_value=ir.tensor(arr, name=name),
    )
    graph.register_initializer(v)
    return v


def _add_bias(graph: ir.Graph, node: ir.Node, delta: np.ndarray) -> None:
    w = node.inputs[1]
    assert w is not None and w.const_value is not None
    dtype = w.const_value.numpy().dtype
    op = node.op_type
    if op == "Gemm":
        delta = delta / node.attributes.get_float("beta", 1.0)
    if op in ("Conv", "Gemm"):
        c = node.inputs[2] if len(node.inputs) > 2 else None
        if c is not None and c.name:
            old = c.const_value
            assert old is not None
            new = old.numpy().astype(np.float64) + delta
            set_const_input(graph, node, 2, np.ascontiguousarray(new.astype(dtype)))
            return
        v = _new_const(graph, f"{node.name}_bias", delta.astype(dtype))
        node.resize_inputs(3)
        node.replace_input_with(2, v)
        return
    # MatMul: into a directly following Add of a constant vector, else a new Add
    y = node.outputs[0]
    users = y.consumers()
    if len(users) == 1 and users[0].op_type == "Add" and not y.is_graph_output():
        add = users[0]
        idx = 1 if add.inputs[0] is y else 0
        other = add.inputs[idx]
        if other is not None and other.const_value is not None and len(other.uses()) >= 1:
            old = other.const_value.numpy()
            if old.ndim >= 1 and old.shape[-1] == delta.size and old.size == delta.size:
                new = old.astype(np.float64) + delta.reshape(old.shape)
                set_const_input(graph, add, idx, np.ascontiguousarray(new.astype(old.dtype)))
                return
    c = _new_const(graph, f"{node.name}_bias", delta.astype(dtype))
    pre = ir.Value(name=f"{y.name}_nobias", shape=y.shape, type=y.type)
    # the MatMul writes to a fresh value; the Add takes over the original output value
    new_mm = ir.Node(node.domain, "MatMul", list(node.inputs), name=str(node.name), outputs=[pre])
    graph.insert_before(node, new_mm)
    old_out = node.outputs[0]
    add = ir.Node("", "Add", [pre, c], name=f"{node.name}_bias_add", num_outputs=1)
    graph.insert_after(new_mm, add)
    ir.convenience.replace_all_uses_with(old_out, add.outputs[0], replace_graph_outputs=True)
    name = old_out.name
    graph.remove(node, safe=True)
    add.outputs[0].name = name
    add.outputs[0].shape = old_out.shape
    add.outputs[0].type = old_out.type
