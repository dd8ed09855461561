"""Latency guard: do not quantize where it does not pay (pitfall 7).

On small models, or with layers that do little arithmetic per element, the
QuantizeLinear/DequantizeLinear pairs cost more than the int8 kernels save:
int8 can be slower than float. After quantization the guard measures
``r = t_int8 / t_float`` (median latencies, runs interleaved in one process,
the same feed). When ``r > 1`` it builds variants that keep more in float,
each a superset of the previous nodes kept float:

1. ``depthwise``: depthwise Convs (``group == C_in == C_out > 1``);
2. ``tiny``: Convs/Gemms/MatMuls with few MACs per output element
   (``C_in / group * prod(kernel) < tiny_macs``; depthwise ones included);
3. ``mac-only``: every node that is not a Conv/Gemm/MatMul/ConvTranspose
   (activation islands such as HardSwish or Sigmoid between quantized ops
   otherwise add a Q/DQ pair each);
4. ``mac-only+tiny``: both.

All variants are timed together (interleaved with the float model and the
base int8 model) and the fastest one whose fidelity still meets the targets
(``target_cosine`` / ``max_drop``, or without targets a min output cosine no
worse than the base model's minus ``cosine_slack``) is kept. When even the
fastest is slower than float, the guard says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

__all__ = ["GuardResult", "LatencyFn", "Variant", "guard", "variants"]

logger = logging.getLogger(__name__)

MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}

LatencyFn = Callable[[Sequence[ir.Model]], list[float]]
"""Latency in ms of each model (the first is the float one), measured together."""


@dataclass(frozen=True)
class Variant:
    """A set of extra nodes kept in float, and what it measured."""

    name: str
    nodes: tuple[str, ...]
    ratio: float | None = None
    cosine: float | None = None
    meets_target: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "float_nodes": len(self.nodes),
            "latency_ratio": self.ratio,
            "cosine": self.cosine,
            "meets_target": self.meets_target,
        }


@dataclass
class GuardResult:
    """What the latency guard measured and chose."""

    model: ir.Model
    base_ratio: float
    chosen: str = "base"
    ratio: float = 1.0
    float_nodes: list[str] = field(default_factory=list)
    tried: list[Variant] = field(default_factory=list)
    pays: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_latency_ratio": self.base_ratio,
            "chosen": self.chosen,
            "latency_ratio": self.ratio,
            "float_nodes": self.float_nodes,
            "pays": self.pays,
            "tried": [v.to_dict() for v in self.tried],
        }


def _const(v: ir.Value | None) -> np.ndarray | None:
    if v is None or v.const_value is None:
        return None
    return v.const_value.numpy()


def macs_per_output(node: ir.Node) -> int | None:
    """Multiply-adds per output element of a Conv/Gemm/MatMul with a constant weight."""
    if node.op_type in ("Conv", "ConvTranspose") and len(node.inputs) > 1:
        w = node.inputs[1]
        if w is None or w.shape is None or not all(isinstance(d, int) for d in w.shape):
            return None
        dims = [int(d) for d in w.shape]  # type: ignore[arg-type]
        if node.op_type == "Conv":
            return int(np.prod(dims[1:]))
        g = node.attributes["group"].as_int() if "group" in node.attributes else 1
        return int(dims[0] // max(g, 1) * np.prod(dims[2:]))
    if node.op_type in ("Gemm", "MatMul") and len(node.inputs) > 1:
        w = node.inputs[1]
        if w is None or w.shape is None or len(w.shape) < 2:
            return None
        k = w.shape[-2]
        if node.op_type == "Gemm" and "transB" in node.attributes:
            if node.attributes["transB"].as_int():
                k = w.shape[-1]
        return int(k) if isinstance(k, int) else None
    return None


def is_depthwise(node: ir.Node) -> bool:
    if node.op_type != "Conv" or len(node.inputs) < 2 or node.inputs[1] is None:
        return False
    g = node.attributes["group"].as_int() if "group" in node.attributes else 1
    w = node.inputs[1].shape
    return g > 1 and w is not None and w[1] == 1 and w[0] == g


def variants(
    model: ir.Model, skip: set[str], tiny_macs: int = 64
) -> list[tuple[str, tuple[str, ...]]]:
    """The candidate sets of extra float nodes, cheapest change first, deduplicated."""
    nodes = [n for n in model.graph if n.name and n.name not in skip]
    dw = tuple(n.name for n in nodes if is_depthwise(n))
    tiny = tuple(
        n.name
        for n in nodes
        if is_depthwise(n) or ((m := macs_per_output(n)) is not None and m < tiny_macs)
    )
    non_mac = tuple(n.name for n in nodes if n.op_type not in MAC_OPS)
    out: list[tuple[str, tuple[str, ...]]] = []
    seen: set[frozenset[str]] = {frozenset()}
    for name, sel in (
        ("depthwise", dw),
        ("tiny", tiny),
        ("mac-only", non_mac),
        ("mac-only+tiny", tuple(dict.fromkeys(non_mac + tiny))),
    ):
        key = frozenset(sel)
        if key in seen:
            continue
        seen.add(key)
        out.append((name, sel))
    return out


def measured_latency(feed: dict[str, np.ndarray], repeats: int, threads: int | None) -> LatencyFn:
    """A :data:`LatencyFn` with ONNX Runtime on ``feed`` (interleaved medians)."""

    def run(models: Sequence[ir.Model]) -> list[float]:
        from onnxcomp.runtime import ModelRunner, measure_latency

        runners = [ModelRunner(m, threads=threads, name=f"model {i}") for i, m in enumerate(models)]
        stats = measure_latency(runners, feed, warmup=3, repeats=max(repeats, 5))
        return [s.median_ms for s in stats]

    return run


def guard(
    *,
    float_model: ir.Model,
    qmodel: ir.Model,
    build: Callable[[Sequence[str]], ir.Model],
    kept: Sequence[str],
    skip: set[str],
    latency: LatencyFn,
    fidelity: Callable[[ir.Model], tuple[bool, float]],
    tiny_macs: int = 64,
    margin: float = 0.03,
) -> GuardResult:
    """Keep the fastest variant that meets the fidelity targets (see the module doc).

    Args:
        float_model: The prepared float model (node names match ``build``'s).
        qmodel: The int8 model built with ``kept`` nodes in float.
        build: Builds an int8 model with the given extra nodes in float.
        kept: Nodes already kept float (fallback).
        skip: Nodes already excluded by the plan.
        latency: Latency of each model, the float one first.
        fidelity: ``(meets target, min output cosine)`` of a candidate.
        margin: A variant must be this much faster (relative) than the base to replace it.
    """
    t = latency([float_model, qmodel])
    base = t[1] / t[0]
    res = GuardResult(qmodel, base, ratio=base, pays=base <= 1.0)
    logger.info("latency guard: int8/float %.3f", base)
    if base <= 1.0 + margin:
        # within the noise of one measurement: no variant could be shown to be faster
        return res
    cands = variants(float_model, skip | set(kept), tiny_macs)
    if not cands:
        res.pays = False
        return res
    models = [build(list(kept) + list(sel)) for _, sel in cands]
    times = latency([float_model, qmodel, *models])
    base = times[1] / times[0]
    res.base_ratio = res.ratio = base
    best: tuple[float, int] = (base, -1)
    # fidelity costs an evaluation run: only the fast enough variants get one, fastest
    # first, and the first that meets the targets wins
    ratios = [times[2 + i] / times[0] for i in range(len(cands))]
    tried: dict[int, Variant] = {}
    for i in sorted(range(len(cands)), key=ratios.__getitem__):
        name, sel = cands[i]
        if best[1] >= 0 or not ratios[i] < base * (1.0 - margin):
            tried[i] = Variant(name, sel, ratios[i])
            logger.info("latency guard: %s (%d float) %.3f", name, len(sel), ratios[i])
            continue
        ok, cos = fidelity(models[i])
        tried[i] = Variant(name, sel, ratios[i], cos, ok)
        logger.info(
            "latency guard: %s (%d float) %.3f cosine %.6f ok=%s",
            name,
            len(sel),
            ratios[i],
            cos,
            ok,
        )
        if ok:
            best = (ratios[i], i)
    res.tried = [tried[i] for i in range(len(cands))]
    if best[1] >= 0:
        # confirm on a second interleaved measurement (machines are noisy): the
        # variant must still beat the base model, on the mean of both runs
        again = latency([float_model, qmodel, models[best[1]]])
        base = 0.5 * (base + again[1] / again[0])
        ratio = 0.5 * (best[0] + again[2] / again[0])
        res.base_ratio = base
        best = (ratio, best[1]) if ratio < base * (1.0 - margin) else (base, -1)
        res.ratio = base
    if best[1] >= 0:
        name, sel = cands[best[1]]
        res.model, res.chosen, res.ratio = models[best[1]], name, best[0]
        res.float_nodes = list(sel)
    res.pays = res.ratio <= 1.0
    return res
