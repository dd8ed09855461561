"""Accuracy recovery: sensitivity, fallback to float, bias correction, equalization.

* Sensitivity: every tensor present in both models is exposed in the float and
  the int8 model; over the evaluation samples its SQNR
  ``10 log10(sum x^2 / sum (x - x_q)^2)`` and cosine are accumulated
  (streaming), worst first.
* Fallback: a node's own contribution is the growth of relative noise
  ``n = 10^(-SQNR/10)`` from its inputs to its output,
  ``delta = n(out) - max n(in)``. Nodes are kept in float in decreasing
  ``delta`` order (1, 1, 2, 2, 4, ... at a time) until every output's cosine
  reaches ``target_cosine`` and/or accuracy drops by at most ``max_drop``.
  Since a tensor is quantized whenever its producer is, keeping a node float
  also keeps the producers of its activation inputs float (its "unit").
* Bias correction (Nagel et al. 2019): weight quantization shifts the expected
  output of a Conv/Gemm by ``E[y_q - y] = (W_q - W) E[x]``; for a Conv with
  groups ``g`` and per-channel input means ``mu``,
  ``shift[o] = sum_{i,k} (W_q - W)[o, i, k] mu[group(o) * Cin/g + i]``.
  Subtracting it from the bias cancels the shift on calibration statistics.
  ``W_q`` is read from the DequantizeLinear nodes ONNX Runtime produced.
* Cross-layer equalization (Nagel et al. 2019, AIMET): for Conv1 -> [Relu] ->
  Conv2, channel ``c`` of Conv1's output is scaled by ``1/s_c`` and Conv2's
  matching input channel by ``s_c`` with ``s_c = sqrt(r1_c / r2_c)`` (``r`` the
  max absolute weight of the channel), which equalizes both ranges to
  ``sqrt(r1_c r2_c)``. Exact because Relu is positively homogeneous:
  ``relu(x / s) = relu(x) / s``. Clip/ReLU6 are not, so such pairs are skipped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.metrics import FidelityAccumulator
from onnxcomp.runtime import ModelRunner, expose_outputs, iter_batches

__all__ = [
    "Recovery",
    "TensorSensitivity",
    "bias_correct",
    "bias_correction_inputs",
    "equalize",
    "recover",
    "sensitivity",
]

logger = logging.getLogger(__name__)

_HOMOGENEOUS = {"Relu", "LeakyRelu"}


# ---------------------------------------------------------------- sensitivity


@dataclass(frozen=True)
class TensorSensitivity:
    """Error of one tensor of the int8 model against the float model."""

    tensor: str
    producer: str
    op_type: str
    sqnr_db: float
    cosine: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "producer": self.producer,
            "op_type": self.op_type,
            "sqnr_db": self.sqnr_db if math.isfinite(self.sqnr_db) else str(self.sqnr_db),
            "cosine": self.cosine,
        }


def _float_tensors(model: ir.Model) -> dict[str, ir.Node | None]:
    out: dict[str, ir.Node | None] = {}
    for node in model.graph:
        for v in node.outputs:
            if (
                v is not None
                and v.name
                and v.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16, None)
            ):
                out[v.name] = node
    return out


def sensitivity(
    float_model: ir.Model, qmodel: ir.Model, data: Any, limit: int = 64
) -> list[TensorSensitivity]:
    """SQNR/cosine of every tensor shared by both models, worst first."""
    fnames = _float_tensors(float_model)
    qvalues = ir.convenience.create_value_mapping(qmodel.graph)
    names = [n for n in fnames if n in qvalues and qvalues[n].producer() is not None]
    # in a QDQ model the value the consumers see is X -> Q -> DQ (a removed Relu/Clip
    # leaves X unclamped, the Q clamps it): compare that one
    qname = {n: _dequantized_name(qvalues[n]) for n in names}
    fr = ModelRunner(expose_outputs(float_model, names), name="float model")
    qr = ModelRunner(expose_outputs(qmodel, list(dict.fromkeys(qname.values()))), name="int8 model")
    accs = {n: FidelityAccumulator(n) for n in names}
    seen = 0
    for batch in iter_batches(data.samples(), data.specs, 8):
        fo = fr.run(batch.feed)
        qo = qr.run(batch.feed)
        for n in names:
            a, b = fo.get(n), qo.get(qname[n])
            if (
                isinstance(a, np.ndarray)
                and isinstance(b, np.ndarray)
                and a.shape == b.shape
                and a.dtype.kind == "f"
            ):
                accs[n].update(a, b, batch.size)
        seen += batch.size
        if seen >= limit:
            break
    out = []
    for n, acc in accs.items():
        if acc.samples == 0:
            continue
        r = acc.result()
        node = fnames[n]
        out.append(
            TensorSensitivity(
                n, node.name if node else "", node.op_type if node else "", r.sqnr_db, r.cosine
            )
        )
    out.sort(key=lambda s: (s.sqnr_db, s.cosine))
    return out


def output_sqnr(
    float_model: ir.Model, candidates: Sequence[ir.Model], data: Any, limit: int = 16
) -> list[float]:
    """Worst output SQNR (dB) of each candidate against ``float_model`` on ``limit`` samples.

    The float model runs once per batch for all candidates.
    """
    fr = ModelRunner(float_model, name="float model")
    runners = [ModelRunner(c, name=f"int8 candidate {i}") for i, c in enumerate(candidates)]
    accs = [{o: FidelityAccumulator(o) for o in fr.output_names} for _ in runners]
    seen = 0
    for batch in iter_batches(data.samples(), data.specs, 8):
        ref = fr.run(batch.feed)
        for acc, runner in zip(accs, runners, strict=True):
            out = runner.run(batch.feed)
            for o, a in acc.items():
                if isinstance(ref.get(o), np.ndarray) and np.asarray(ref[o]).dtype.kind == "f":
                    a.update(ref[o], out[o], batch.size)
        seen += batch.size
        if seen >= limit:
            break
    return [
        min((a.result().sqnr_db for a in acc.values() if a.samples), default=math.inf)
        for acc in accs
    ]


def _dequantized_name(v: ir.Value) -> str:
    for user in v.consumers():
        if user.op_type == "QuantizeLinear" and user.inputs[0] is v:
            for dq in user.outputs[0].consumers():
                if dq.op_type == "DequantizeLinear" and dq.outputs[0].name:
                    return dq.outputs[0].name
    return v.name or ""


def _noise(sqnr_db: float) -> float:
    if sqnr_db == math.inf:
        return 0.0
    if sqnr_db == -math.inf:
        return 1e6
    return 10.0 ** (-sqnr_db / 10.0)


def rank_nodes(
    float_model: ir.Model, sens: Sequence[TensorSensitivity], skip: set[str]
) -> list[tuple[str, float]]:
    """Nodes by their own noise contribution, largest first."""
    by_name = {s.tensor: s for s in sens}
    ranked = []
    for node in float_model.graph:
        if node.name in skip or not node.outputs or node.outputs[0] is None:
            continue
        s_out = by_name.get(node.outputs[0].name)
        if s_out is None:
            continue
        n_in = max(
            (
                _noise(by_name[v.name].sqnr_db)
                for v in node.inputs
                if v is not None and v.name in by_name
            ),
            default=0.0,
        )
        ranked.append((node.name, _noise(s_out.sqnr_db) - n_in))
    ranked.sort(key=lambda t: -t[1])
    seen = {n for n, _ in ranked}
    ranked += [
        (n.name, 0.0) for n in float_model.graph if n.name not in seen and n.name not in skip
    ]
    return ranked


_REMOVABLE = {"Relu", "Clip"}


def fallback_unit(float_model: ir.Model, name: str) -> list[str]:
    """Nodes to keep float so that node ``name`` computes on float inputs.

    A tensor is quantized when its producer is, so the producers of the node's
    activation inputs stay float too; a Relu/Clip that ONNX Runtime folds into
    its producer stands for that producer.
    """
    node = next((n for n in float_model.graph if n.name == name), None)
    if node is None:
        return [name]
    unit = [name]
    targets = [node]
    if node.op_type in _REMOVABLE and node.inputs and node.inputs[0] is not None:
        p = node.inputs[0].producer()
        if p is not None and p.name:
            unit.append(p.name)
            targets.append(p)
    for t in targets:
        for v in t.inputs:
            if v is None or v.const_value is not None or v.is_initializer():
                continue
            p = v.producer()
            if p is not None and p.name and p.name not in unit:
                unit.append(p.name)
    return unit


@dataclass
class Recovery:
    model: ir.Model
    sensitivity: list[TensorSensitivity] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    target_met: bool | None = None


def _limited(data: Any, limit: int) -> Any:
    from onnxcomp.data import Dataset

    return Dataset(
        data.source,
        data.specs,
        transform=data.transform,
        limit=min(limit, data.limit) if data.limit else limit,
        check_finite=data.check_finite,
    )


def _evaluate(
    float_model: ir.Model, qmodel: ir.Model, data: Any, cfg: Any
) -> tuple[bool, float, float | None]:
    from onnxcomp.verification import VerifyConfig, verify

    ok = True
    cos = 1.0
    drop = None
    if cfg.target_cosine is not None:
        rep = verify(
            float_model, qmodel, _limited(data, cfg.eval_limit), VerifyConfig(latency_repeats=0)
        )
        cos = rep.min_cosine
        ok = ok and cos >= cfg.target_cosine
    if cfg.max_drop is not None:
        rep = verify(float_model, qmodel, data, VerifyConfig(latency_repeats=0))
        if rep.reference_accuracy is None or rep.candidate_accuracy is None:
            from onnxcomp.errors import InvalidInputError

            raise InvalidInputError(
                "--max-drop: the evaluation data has no integer labels for a classifier output"
            )
        drop = rep.reference_accuracy - rep.candidate_accuracy
        ok = ok and drop <= cfg.max_drop
    return ok, cos, drop


def recover(
    *,
    original_float: ir.Model,
    qmodel: ir.Model,
    build: Callable[[Sequence[str]], ir.Model],
    data: Any,
    config: Any,
    excluded: set[str],
) -> Recovery:
    """Sensitivity report and, when a target is set, fallback to float until it is met."""
    cfg = config
    sens = sensitivity(original_float, qmodel, data, cfg.eval_limit)
    rec = Recovery(qmodel, sens if cfg.sensitivity else [])
    if cfg.target_cosine is None and cfg.max_drop is None:
        return rec
    ok, cos, drop = _evaluate(original_float, qmodel, data, cfg)
    logger.info("fallback: start cosine %.6f drop %s", cos, drop)
    if ok:
        rec.target_met = True
        return rec
    ranked = [n for n, _ in rank_nodes(original_float, sens, excluded)]
    kept: list[str] = []
    step, i = 1, 0
    while ranked and len(kept) < cfg.max_fallback:
        take = ranked[:step]
        ranked = ranked[step:]
        for name in take:
            for n in fallback_unit(original_float, name):
                if n not in kept and n not in excluded:
                    kept.append(n)
        ranked = [n for n in ranked if n not in kept]
        q = build(kept)
        ok, cos, drop = _evaluate(original_float, q, data, cfg)
        logger.info("fallback: %d float node(s), cosine %.6f drop %s", len(kept), cos, drop)
        rec.model = q
        if ok:
            break
        i += 1
        if i % 2 == 0:
            step *= 2
        step = min(step, cfg.max_fallback - len(kept)) or 1
    rec.fallback = kept
    rec.target_met = ok
    return rec


# ------------------------------------------------------------ bias correction


def _const(v: ir.Value | None) -> np.ndarray | None:
    if v is None or v.const_value is None:
        return None
    return v.const_value.numpy()


def _weighted_nodes(model: ir.Model) -> list[ir.Node]:
    out = []
    for node in model.graph:
        if node.op_type == "Conv" and len(node.inputs) >= 2 and _const(node.inputs[1]) is not None:
            out.append(node)
        elif (
            node.op_type == "Gemm" and len(node.inputs) >= 2 and _const(node.inputs[1]) is not None
        ):
            ta = node.attributes.get("transA")
            if ta is None or ta.as_int() == 0:
                out.append(node)
    return out


def bias_correction_inputs(model: ir.Model) -> list[str]:
    """Activations whose per-channel means bias correction needs."""
    return [
        n.inputs[0].name
        for n in _weighted_nodes(model)
        if n.inputs[0] is not None and n.inputs[0].name
    ]


def _dequantized_weight(qmodel: ir.Model, node_name: str, index: int = 1) -> np.ndarray | None:
    node = next((n for n in qmodel.graph if n.name == node_name), None)
    if node is None or len(node.inputs) <= index or node.inputs[index] is None:
        return None
    dq = node.inputs[index].producer()
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q, scale = _const(dq.inputs[0]), _const(dq.inputs[1])
    zp = _const(dq.inputs[2]) if len(dq.inputs) > 2 else None
    if q is None or scale is None:
        return None
    q = q.astype(np.float64)
    zp64 = np.zeros(1) if zp is None else zp.astype(np.float64)
    if scale.ndim == 1 and scale.size > 1:
        axis = dq.attributes["axis"].as_int() if "axis" in dq.attributes else 1
        axis %= q.ndim
        shp = [1] * q.ndim
        shp[axis] = -1
        return (q - zp64.reshape(shp)) * scale.astype(np.float64).reshape(shp)
    return (q - zp64) * scale.astype(np.float64)


def bias_correct(
    float_model: ir.Model, qdq_model: ir.Model, means: Mapping[str, np.ndarray]
) -> list[str]:
    """Subtract ``(W_q - W) E[x]`` from the bias of each quantized Conv/Gemm of ``float_model``."""
    corrected = []
    graph = float_model.graph
    for node in _weighted_nodes(float_model):
        x = node.inputs[0]
        mu = means.get(x.name) if x is not None else None
        w = _const(node.inputs[1])
        if mu is None or w is None:
            continue
        wq = _dequantized_weight(qdq_model, node.name)
        if wq is None or wq.shape != w.shape:
            continue
        dw = wq - w.astype(np.float64)
        if node.op_type == "Conv":
            g = node.attributes["group"].as_int() if "group" in node.attributes else 1
            co, ci_g = w.shape[0], w.shape[1]
            if mu.shape[0] != ci_g * g:
                continue
            per_in = dw.reshape(co, ci_g, -1).sum(axis=2)  # [Co, Ci/g]
            group_of = np.arange(co) // (co // g)
            mu_g = mu.reshape(g, ci_g)[group_of]  # [Co, Ci/g]
            shift = (per_in * mu_g).sum(axis=1)
        else:
            tb = node.attributes["transB"].as_int() if "transB" in node.attributes else 0
            wk = dw.T if tb else dw  # [K, N]
            if mu.shape[0] != wk.shape[0]:
                continue
            alpha = node.attributes["alpha"].as_float() if "alpha" in node.attributes else 1.0
            shift = alpha * (mu @ wk)
        n_out = shift.shape[0]
        b_val = node.inputs[2] if len(node.inputs) > 2 else None
        b = _const(b_val)
        if b_val is not None and b is None:
            continue
        if node.op_type == "Gemm" and b is not None:
            beta = node.attributes["beta"].as_float() if "beta" in node.attributes else 1.0
            if b.size not in (1, n_out) or beta == 0:
                continue
            b_new = (np.broadcast_to(b.astype(np.float64), (n_out,)) - shift / beta).astype(w.dtype)
        else:
            b_new = ((b.astype(np.float64) if b is not None else np.zeros(n_out)) - shift).astype(
                w.dtype
            )
        bv = ir.Value(name=f"{node.name}_B_biascorr", const_value=ir.tensor(b_new))
        bv.dtype = ir.DataType.from_numpy(b_new.dtype)
        bv.shape = ir.Shape(b_new.shape)
        graph.register_initializer(bv)
        if len(node.inputs) < 3:
            node.resize_inputs(3)
        node.replace_input_with(2, bv)
        corrected.append(node.name)
    return corrected


# ------------------------------------------------------ cross-layer equalization


def _single_consumer(v: ir.Value) -> ir.Node | None:
    users = v.consumers()
    if len(users) != 1 or v.is_graph_output() or len(v.uses()) != 1:
        return None
    return users[0]


def _set_const(graph: ir.Graph, node: ir.Node, index: int, arr: np.ndarray, tag: str) -> None:
    base = f"{node.name}_{tag}_cle"
    name, k = base, 0
    while name in graph.initializers:
        k += 1
        name = f"{base}{k}"
    v = ir.Value(name=name, const_value=ir.tensor(arr))
    v.dtype = ir.DataType.from_numpy(arr.dtype)
    v.shape = ir.Shape(arr.shape)
    graph.register_initializer(v)
    if len(node.inputs) <= index:
        node.resize_inputs(index + 1)
    node.replace_input_with(index, v)


def equalize(model: ir.Model, sweeps: int = 2) -> list[str]:
    """Cross-layer equalization of Conv -> [Relu] -> Conv pairs, in place. Returns 'a->b' pairs."""
    from onnxcomp.quantize._plan import name_nodes

    name_nodes(model)
    graph = model.graph
    done: dict[str, None] = {}
    for _ in range(sweeps):
        for c1 in list(graph):
            if c1.op_type != "Conv" or not c1.outputs:
                continue
            g1 = c1.attributes["group"].as_int() if "group" in c1.attributes else 1
            w1 = _const(c1.inputs[1]) if len(c1.inputs) > 1 else None
            if w1 is None:
                continue
            nxt = _single_consumer(c1.outputs[0])
            if nxt is not None and nxt.op_type in _HOMOGENEOUS:
                nxt = _single_consumer(nxt.outputs[0])
            if nxt is None or nxt.op_type != "Conv" or len(nxt.inputs) < 2:
                continue
            w2 = _const(nxt.inputs[1])
            if w2 is None:
                continue
            c = w1.shape[0]
            g2 = nxt.attributes["group"].as_int() if "group" in nxt.attributes else 1
            if g2 == 1 and w2.shape[1] == c:
                r2 = np.abs(w2).max(axis=tuple(i for i in range(w2.ndim) if i != 1))
                axis2 = 1
            elif g2 == c and w2.shape[0] == c and w2.shape[1] == 1:
                r2 = np.abs(w2).reshape(c, -1).max(axis=1)
                axis2 = 0
            else:
                continue
            if g1 != 1 and not (g1 == w1.shape[0] and w1.shape[1] == 1):
                continue
            r1 = np.abs(w1).reshape(c, -1).max(axis=1)
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones(c)
            s[ok] = np.sqrt(r1[ok] / r2[ok])
            if np.allclose(s, 1.0, rtol=1e-3):
                continue
            shp1 = [-1] + [1] * (w1.ndim - 1)
            _set_const(graph, c1, 1, (w1 / s.reshape(shp1)).astype(w1.dtype), "W")
            b1 = _const(c1.inputs[2]) if len(c1.inputs) > 2 else None
            if b1 is not None:
                _set_const(graph, c1, 2, (b1 / s).astype(b1.dtype), "B")
            shp2 = [1] * w2.ndim
            shp2[axis2] = -1
            _set_const(graph, nxt, 1, (w2 * s.reshape(shp2)).astype(w2.dtype), "W")
            done[f"{c1.name}->{nxt.name}"] = None
    # drop orphaned initializers
    for name, v in list(graph.initializers.items()):
        if not v.uses() and not v.is_graph_output() and v not in graph.inputs:
            del graph.initializers[name]
    return list(done)
