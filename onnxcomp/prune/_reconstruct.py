"""Reconstruction: refit the consumers of pruned channels by least squares.

For every contraction node ``N`` that reads pruned channels (Conv with
``group=1``, Gemm, MatMul with a constant weight) let ``X`` be its input in the
*pruned* model (kept channels only, unrolled into patches for a convolution)
and ``Y`` its output in the *original* model (kept output channels). The new
weights and bias solve the ridge-regularized least-squares problem::

    [W; b] = argmin ||[X 1] [W; b] - Y||^2 + lam ||W||^2
           = (A^T A + lam I)^-1 A^T Y,   A = [X 1]

accumulated streaming over calibration samples (``A^T A`` and ``A^T Y`` only,
on a random subset of rows per batch). The bias column absorbs the mean
contribution of the removed channels (the AIMET channel-pruning recipe, so the
model works without fine-tuning). MatMul has no bias: its bias goes into a
directly following ``Add`` of a constant, otherwise the fit is without bias.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.prune._apply import kept_elements, set_const_input
from onnxcomp.prune._graph import Analysis

logger = logging.getLogger(__name__)

__all__ = ["reconstruct"]

MAX_ROWS = 4096  # rows of the least-squares fit per layer, over all batches


@dataclass
class _Target:
    node: ir.Node
    kind: str  # conv | gemm | matmul
    x: str
    y: str
    out_keep: np.ndarray | None
    bias_add: ir.Node | None = None


def _targets(an: Analysis, masks: dict[int, np.ndarray]) -> list[_Target]:
    out: list[_Target] = []
    seen: set[str] = set()
    for sl in an.slices:
        if sl.role != "in" or sl.node in seen or sl.groups > 1:
            continue
        lay = an.layouts[sl.value]
        if not any(s.space in masks and not masks[s.space].all() for s in lay.segments):
            continue
        node = an.nodes[sl.node]
        kind = {"Conv": "conv", "Gemm": "gemm", "MatMul": "matmul"}.get(node.op_type)
        if kind is None:
            continue
        if kind == "conv":
            if node.attributes.get_int("group", 1) != 1 or node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", ""):
                continue
            w = node.inputs[1]
            if w is None or w.const_value is None or len(w.const_value.shape) != 4:
                continue
        if kind == "gemm" and (
            node.attributes.get_int("transA", 0)
            or node.attributes.get_float("alpha", 1.0) != 1.0
            or node.attributes.get_float("beta", 1.0) != 1.0
        ):
            continue
        y = node.outputs[0]
        out_lay = an.layouts.get(str(y.name))
        keep = kept_elements(out_lay, masks) if out_lay is not None else None
        t = _Target(node, kind, str(node.inputs[0].name), str(y.name), keep)
        if kind == "matmul":
            users = y.consumers()
            if len(users) == 1 and users[0].op_type == "Add":
                add = users[0]
                other = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
                if other is not None and other.const_value is not None and other.const_value.shape.numpy()[-1:] != ():
                    t.bias_add = add
        seen.add(sl.node)
        out.append(t)
    return out


def _positions(t: _Target, y_shape: tuple[int, ...], rng: np.random.Generator, budget: int) -> np.ndarray:
    """Rows of one batch used for the fit (output positions), chosen once per batch."""
    if t.kind == "conv":
        total = y_shape[0] * y_shape[2] * y_shape[3]
    else:
        total = int(np.prod(y_shape[:-1]))
    return np.sort(rng.choice(total, size=min(total, budget), replace=False))


def _targets_rows(t: _Target, y: np.ndarray, pick: np.ndarray) -> np.ndarray:
    if t.kind == "conv":
        n, _, ho, wo = y.shape
        bn, rem = np.divmod(pick, ho * wo)
        oh, ow = np.divmod(rem, wo)
        rows = y[bn, :, oh, ow]
    else:
        rows = y.reshape(-1, y.shape[-1])[pick]
    if t.out_keep is not None:
        rows = rows[:, t.out_keep]
    return rows.astype(np.float64)


def _design_rows(t: _Target, x: np.ndarray, y_shape: tuple[int, ...], pick: np.ndarray) -> np.ndarray:
    node = t.node
    if t.kind != "conv":
        return x.reshape(-1, x.shape[-1])[pick].astype(np.float64)
    w = node.inputs[1].const_value  # type: ignore[union-attr]
    kh, kw = (int(d) for d in w.shape.numpy()[2:])  # type: ignore[union-attr]
    sh, sw = node.attributes.get_ints("strides", [1, 1])
    dh, dw = node.attributes.get_ints("dilations", [1, 1])
    pt, pl, pb, pr = node.attributes.get_ints("pads", [0, 0, 0, 0])
    _, _, ho, wo = y_shape
    bn, rem = np.divmod(pick, ho * wo)
    oh, ow = np.divmod(rem, wo)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ii = oh[:, None] * sh + np.arange(kh)[None, :] * dh
    jj = ow[:, None] * sw + np.arange(kw)[None, :] * dw
    c = np.arange(x.shape[1])
    patches = xp[bn[:, None, None, None], c[None, :, None, None], ii[:, None, :, None], jj[:, None, None, :]]
    return patches.reshape(len(pick), -1).astype(np.float64)


def _has_bias(t: _Target) -> bool:
    return t.kind != "matmul" or t.bias_add is not None


def _current(t: _Target, original: dict[str, ir.Node]) -> np.ndarray:
    """The layer's current solution ``[W; b]`` (``[K', Cout']``) in the design-row layout."""
    node = t.node
    w = node.inputs[1].const_value.numpy().astype(np.float64)  # type: ignore[union-attr]
    if t.kind == "conv":
        wmat = w.reshape(w.shape[0], -1).T
    elif t.kind == "gemm":
        wmat = w.T if node.attributes.get_int("transB", 0) else w
    else:
        wmat = w
    if not _has_bias(t):
        return wmat
    n = wmat.shape[1]
    bias = np.zeros(n)
    if t.kind == "matmul":
        add = t.bias_add
        assert add is not None
        idx = 1 if add.inputs[0] is node.outputs[0] else 0
        cur = add.inputs[idx].const_value.numpy().astype(np.float64)  # type: ignore[union-attr]
        old = _original_add_bias(t, original, cur.shape)
        bias = np.broadcast_to((cur - old).reshape(-1) if (cur - old).size == n else (cur - old).reshape(-1)[:1], (n,))
    elif len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].const_value is not None:
        c = node.inputs[2].const_value.numpy().astype(np.float64).reshape(-1)
        bias = np.broadcast_to(c if c.size == n else c[:1], (n,))
    return np.concatenate([wmat, bias[None, :]], axis=0)


def _original_add_bias(t: _Target, original: dict[str, ir.Node], shape: tuple[int, ...]) -> np.ndarray:
    """The MatMul's following Add constant in the original model (kept outputs); 0 for an inserted Add."""
    add = t.bias_add
    assert add is not None
    orig = original.get(str(add.name))
    if orig is None:  # an Add inserted by the bias fold: no original bias
        return np.zeros(shape)
    out_name = t.node.outputs[0].name
    other = orig.inputs[1 if orig.inputs[0] is not None and orig.inputs[0].name == out_name else 0]
    assert other is not None and other.const_value is not None
    old = other.const_value.numpy().astype(np.float64)
    if t.out_keep is not None and old.ndim >= 1 and old.shape[-1] != 1:
        old = np.take(old, t.out_keep, axis=-1)
    return old


def _write(graph: ir.Graph, t: _Target, sol: np.ndarray, original: dict[str, ir.Node]) -> None:
    node = t.node
    bias = sol[-1] if _has_bias(t) else None
    wmat = sol[:-1] if _has_bias(t) else sol  # [K', Cout']
    old_w = node.inputs[1].const_value  # type: ignore[union-attr]
    dtype = old_w.numpy().dtype  # type: ignore[union-attr]
    if t.kind == "conv":
        shape = old_w.shape.numpy()  # type: ignore[union-attr]
        cout = wmat.shape[1]
        new_w = wmat.T.reshape(cout, -1, shape[2], shape[3])
    elif t.kind == "gemm":
        new_w = wmat.T if node.attributes.get_int("transB", 0) else wmat
    else:
        new_w = wmat
    set_const_input(graph, node, 1, np.ascontiguousarray(new_w.astype(dtype)))
    if bias is None:
        return
    b = bias.astype(dtype)
    if t.kind == "matmul":
        add = t.bias_add
        assert add is not None
        idx = 1 if add.inputs[0] is node.outputs[0] else 0
        # the fit replaces the whole bias: start from the original constant (before any bias fold)
        cur = add.inputs[idx]
        assert cur is not None and cur.const_value is not None
        old = _original_add_bias(t, original, tuple(cur.const_value.numpy().shape))
        set_const_input(graph, add, idx, np.ascontiguousarray((old + b).astype(dtype)))
        return
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        old = node.inputs[2].const_value
        assert old is not None
        shape = old.shape.numpy()
        set_const_input(graph, node, 2, np.ascontiguousarray(np.broadcast_to(b, shape).astype(dtype)))
        return
    name = f"{node.name}_bias"
    k = 0
    while name in graph.initializers:
        k += 1
        name = f"{node.name}_bias_{k}"
    v = ir.Value(name=name, const_value=ir.tensor(b, name=name), shape=ir.Shape(b.shape), type=ir.TensorType(ir.DataType.from_numpy(b.dtype)))
    graph.register_initializer(v)
    node.resize_inputs(3)
    node.replace_input_with(2, v)


def reconstruct(
    original: ir.Model,
    pruned: ir.Model,
    an: Analysis,
    masks: dict[int, np.ndarray],
    data: Any,
    cfg: Any,
    *,
    progress: Callable[[int, int | None], None] | None = None,
) -> ir.Model:
    """Refit, in ``pruned`` (in place), every consumer of pruned channels; returns ``pruned``.

    ``an`` is the analysis bound to ``pruned`` (node names shared with ``original``).
    """
    from onnxcomp.prune import _calibration_batches, prepare
    from onnxcomp.runtime import ModelRunner, expose_outputs

    targets = _targets(an, masks)
    if not targets:
        return pruned

    # 1) the original's outputs of every target, at fixed random positions per batch
    ref = prepare(original)
    original_nodes = {str(n.name): n for n in ref.graph}
    ref_runner = ModelRunner(expose_outputs(ref, [t.y for t in targets]), name="original (reconstruction)")
    rng = np.random.default_rng(0)
    n_batches = max(1, -(-cfg.calib_samples // max(cfg.batch_size, 1)))
    budget = max(64, MAX_ROWS // n_batches)
    feeds: list[dict[str, np.ndarray]] = []
    picks: list[dict[str, tuple[np.ndarray, tuple[int, ...]]]] = []
    wanted: list[list[np.ndarray]] = [[] for _ in targets]
    for feed in _calibration_batches(data, cfg.batch_size, cfg.calib_samples):
        ro = ref_runner.run(feed, "calibration")
        per: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}
        for i, t in enumerate(targets):
            y = np.asarray(ro[t.y])
            pick = _positions(t, y.shape, rng, budget)
            per[t.y] = (pick, y.shape)
            wanted[i].append(_targets_rows(t, y, pick))
        feeds.append(feed)
        picks.append(per)
    # 2) refit layer by layer, each on the inputs of the model refit so far
    for i, t in enumerate(targets):
        runner = ModelRunner(expose_outputs(pruned, [t.x]), name="pruned (reconstruction)")
        ata = aty = None
        count = 0
        for feed, per, y_rows in zip(feeds, picks, wanted[i]):
            x = np.asarray(runner.run(feed, "calibration")[t.x])
            pick, y_shape = per[t.y]
            rows = _design_rows(t, x, y_shape, pick)
            if _has_bias(t):
                rows = np.concatenate([rows, np.ones((rows.shape[0], 1))], axis=1)
            if ata is None:
                ata = np.zeros((rows.shape[1], rows.shape[1]))
                aty = np.zeros((rows.shape[1], y_rows.shape[1]))
            r32 = rows.astype(np.float32)
            count += rows.shape[0]
            ata += r32.T @ r32
            aty += r32.T @ y_rows.astype(np.float32)
        if progress:
            progress(i + 1, len(targets))
        if ata is None:
            continue
        n = ata.shape[0]
        if count < n:
            logger.warning(
                "%s: %d calibration rows for %d unknowns, too few to refit; weights kept (give more samples)",
                t.node.name, count, n,
            )
            continue
        # ridge towards the current weights (kept weights + folded bias): the solution's
        # calibration error is never above theirs; stronger when rows barely exceed the unknowns
        lam = (1e-4 if count >= 8 * n else 1e-2) * float(np.trace(ata)) / n + 1e-8
        reg = np.eye(n) * lam
        if _has_bias(t):
            reg[-1, -1] = 1e-8
        w0 = _current(t, original_nodes)
        try:
            sol = np.linalg.solve(ata + reg, aty + reg @ w0)
        except np.linalg.LinAlgError:
            logger.warning("least squares failed for %s; weights kept", t.node.name)
            continue
        _write(pruned.graph, t, sol, original_nodes)
    return pruned
