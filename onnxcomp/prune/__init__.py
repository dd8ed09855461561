"""Structured channel pruning of ONNX graphs by graph surgery.

Pipeline (plan, then apply)::

    plan = plan_pruning(model, PruneConfig(ratio=0.5), data)   # plain data, printable
    pruned = apply_plan(model, plan)                           # slices, rewrites, checks
    result = prune(model, PruneConfig(ratio=0.5), data)        # both + verification + report

1. :func:`~onnxcomp.prune._graph.analyze` finds the groups of coupled channels
   through per-op handlers (``_handlers.py``); anything unknown stops a group.
2. Channels are ranked by an importance criterion (``_importance.py``) and
   selected per group (``_plan.py``).
3. :func:`apply_plan` slices initializers, rewrites attributes and shape
   constants (``_apply.py``), re-infers shapes and runs the full checker.
4. Verification compares the pruned model with the *masked reference* (the
   original with every contraction weight reading a removed channel zeroed,
   which computes exactly the same function) in ONNX Runtime.
5. Optional reconstruction (``_reconstruct.py``) refits the consumers of pruned
   channels by least squares on calibration activations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.errors import CalibrationError, InvalidInputError, OnnxcompError, UnsupportedModelError
from onnxcomp.prune._plan import GroupPlan, LayerChange, PrunePlan

__all__ = [
    "CRITERIA",
    "GroupPlan",
    "LayerChange",
    "PruneConfig",
    "PrunePlan",
    "PruneResult",
    "apply_plan",
    "masked_reference",
    "plan_pruning",
    "prune",
]


CRITERIA = ("l1", "l2", "bn", "activation", "reconstruction")
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class PruneConfig:
    """Options of :func:`prune` / :func:`plan_pruning`.

    Attributes:
        ratio: Fraction of channels removed per group, in [0, 1).
        criterion: ``l1``, ``l2``, ``bn``, ``activation`` or ``reconstruction``
            (l1 selection followed by least-squares refit of the consumers).
        global_ranking: Rank channels across groups (``--global``).
        max_layer_ratio: With ``global_ranking``: at most this fraction of any group.
        layers: Per-layer ratio overrides: source node name or tensor name -> ratio.
        target_macs: Search the ratio so that MACs <= this fraction of the original.
        round_to: Keep channel counts multiples of this.
        min_channels: Never keep fewer channels in a group.
        ignore: fnmatch patterns of node names or op types whose outputs are not pruned.
        reconstruct: Refit the consumers by least squares (implied by ``reconstruction``).
        bias_fold: Fold the mean contribution of removed channels into the consumers'
            biases (calibration means with data, else a BatchNormalization estimate).
        verify: Compare the pruned model with the masked reference in ONNX Runtime.
        verify_samples: Synthetic samples for verification when no data is given.
        calib_samples: Calibration samples for ``activation``/reconstruction.
        batch_size: Batch size of calibration and verification runs.
        latency_repeats: Latency runs of the report (0 = skip).
    """

    ratio: float = 0.5
    criterion: str = "l1"
    global_ranking: bool = False
    max_layer_ratio: float = 0.9
    layers: Mapping[str, float] = field(default_factory=dict)
    target_macs: float | None = None
    round_to: int = 1
    min_channels: int = 1
    ignore: tuple[str, ...] = ()
    reconstruct: bool = False
    bias_fold: bool = True
    verify: bool = True
    verify_samples: int = 4
    calib_samples: int = 64
    batch_size: int = 16
    latency_repeats: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise InvalidInputError(f"--ratio must be within [0, 1), got {self.ratio}")
        if not 0.0 <= self.max_layer_ratio < 1.0:
            raise InvalidInputError(f"--max-layer-ratio must be within [0, 1), got {self.max_layer_ratio}")
        for name, r in self.layers.items():
            if not isinstance(r, (int, float)) or not 0.0 <= float(r) < 1.0:
                raise InvalidInputError(f"--layer {name}: ratio must be within [0, 1), got {r}")
        if self.target_macs is not None and not 0.0 < self.target_macs <= 1.0:
            raise InvalidInputError(f"--target-macs must be within (0, 1], got {self.target_macs}")
        if self.criterion not in CRITERIA:
            raise InvalidInputError(f"--criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}")
        if self.round_to < 1:
            raise InvalidInputError(f"--round-to must be >= 1, got {self.round_to}")
        if self.min_channels < 1:
            raise InvalidInputError(f"--min-channels must be >= 1, got {self.min_channels}")

    @property
    def refit(self) -> bool:
        return self.reconstruct or self.criterion == "reconstruction"


@dataclass
class PruneResult:
    """Outcome of :func:`prune`."""

    model: ir.Model
    plan: PrunePlan
    reference_check: dict[str, Any] | None = None
    report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "reference_check": self.reference_check, "report": self.report}


# ------------------------------------------------------------------ helpers


def prepare(model: ir.Model) -> ir.Model:
    """A copy with Constant tensors lifted, unique node names and inferred shapes."""
    from onnxcomp import io
    from onnxcomp.prune._graph import name_nodes

    m = model.clone()
    io.lift_constant_tensors(m)
    name_nodes(m)
    return io.infer_shapes(m, data_prop=True)  # partial shapes: handlers needing them stop


def finalize(model: ir.Model) -> ir.Model:
    """Drop stale intermediate shapes, then shape-infer and fully check the result.

    The returned model keeps no intermediate shapes (``value_info``); the check
    runs ONNX shape inference in strict mode on the serialized model.
    """
    import onnx

    from onnxcomp import io

    outputs = {id(v) for v in model.graph.outputs}
    for node in model.graph:
        for v in node.outputs:
            if id(v) not in outputs:
                v.shape = None
    proto = io.to_proto(model)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        msg = " ".join(str(e).split())[:400]
        raise OnnxcompError(f"internal error: the pruned model fails the ONNX checker: {msg}") from e
    return model


def _macs_params(m: ir.Model, shapes: Mapping[str, tuple[int, ...]] | None) -> tuple[dict[str, int | None], int, int]:
    from onnxcomp.analysis import count_macs, count_params, shaped_copy

    params = count_params(m)[0]
    if not shapes:
        total, _, by_node, unknown = count_macs(m)
        if not unknown:
            return by_node, int(total), int(params)
    shaped, _ = shaped_copy(m, shapes)
    total, _, by_node, _ = count_macs(shaped)
    return by_node, int(total), int(params)


def _data_shapes(model: ir.Model, data: Any) -> dict[str, tuple[int, ...]] | None:
    """Input shapes of the first sample, when the model has dynamic non-batch dims."""
    from onnxcomp.data import input_specs

    specs = input_specs(model)
    if all(s.shape is not None and all(isinstance(d, int) for d in s.shape[1:]) for s in specs):
        return None
    if data is None:
        return None
    for sample in data.samples():
        return {k: (1, *v.shape[1:]) for k, v in sample.feed.items()}
    return None


def _resolve_layers(an: Any, groups: list[Any], layers: Mapping[str, float]) -> dict[int, float]:
    """Group root -> ratio for the per-layer overrides."""
    out: dict[int, float] = {}
    by_name: dict[str, int] = {}
    for g in groups:
        for sid in g.spaces:
            sp = an.spaces[sid]
            if sp.node:
                by_name[sp.node] = g.root
                by_name[sp.key] = g.root
    for name, r in layers.items():
        if name not in by_name:
            if name in an.nodes:
                raise InvalidInputError(
                    f"--layer {name}: node {name!r} ({an.nodes[name].op_type}) does not produce prunable "
                    "channels (give a Conv/ConvTranspose/Gemm/MatMul node)"
                )
            raise InvalidInputError(f"--layer {name}: no node or tensor of that name in the model")
        out[by_name[name]] = float(r)
    return out


def _calibration_batches(data: Any, batch_size: int, limit: int) -> Iterable[dict[str, np.ndarray]]:
    from onnxcomp.runtime import iter_batches

    done = 0
    for batch in iter_batches(data.samples(), data.specs, batch_size):
        if done >= limit:
            break
        yield batch.feed
        done += batch.size


def _activation_stats(
    an: Any, model: ir.Model, data: Any, cfg: PruneConfig
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Mean ``|x|`` and mean ``x`` per channel-axis element of every contraction input (one streamed pass)."""
    from onnxcomp.prune._fold import tensor_means
    from onnxcomp.prune._importance import activation_values
    from onnxcomp.runtime import ModelRunner, expose_outputs

    names = [n for n in activation_values(an) if n in an.values]
    runner = ModelRunner(expose_outputs(model, names), name="activation statistics")
    return tensor_means(
        an, names, _calibration_batches(data, cfg.batch_size, cfg.calib_samples), lambda f: runner.run(f, "calibration")
    )


# --------------------------------------------------------------- planning


def plan_pruning(model: ir.Model, config: PruneConfig | None = None, data: Any = None) -> PrunePlan:
    """Decide which channels to remove (the model is not modified).

    Args:
        model: The model.
        config: Ratios, criterion and controls.
        data: A :class:`~onnxcomp.data.Dataset` (needed by ``activation``).

    Raises:
        InvalidInputError: Unknown ``--layer`` name or unreachable ``target_macs``.
        CalibrationError: ``activation`` without data.
    """
    cfg = config or PruneConfig()
    from onnxcomp.prune._graph import analyze

    m = prepare(model)
    an = analyze(m, ignore=cfg.ignore)
    return _make_plan(an, m, cfg, data)


def _make_plan(an: Any, m: ir.Model, cfg: PruneConfig, data: Any) -> PrunePlan:
    import onnxcomp.prune._plan as P
    from onnxcomp.prune._importance import channel_scores

    macs_by_node, macs0, params0 = _macs_params(m, _data_shapes(m, data))
    groups = P.build_groups(an)
    overrides = _resolve_layers(an, groups, cfg.layers)
    crit = cfg.criterion
    stats: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None
    if crit == "activation" or (cfg.bias_fold and data is not None):
        if data is None:
            raise CalibrationError("--criterion activation needs calibration samples (--data)")
        stats = _activation_stats(an, m, data, cfg)
    if crit == "activation":
        assert stats is not None
        scores = channel_scores(an, "activation", stats[0])
    else:
        scores = channel_scores(an, "l1" if crit == "reconstruction" else crit)
        if crit == "bn":
            fallback = channel_scores(an, "l1")
    live = [g for g in groups if not g.reasons and g.n > 1]
    unit_scores: dict[int, np.ndarray] = {}
    for g in live:
        src = scores
        if crit == "bn" and not any(scores[s].any() for s in g.spaces):
            src = fallback
        unit_scores[g.root] = np.array(
            [sum(src[sid][c] for sid, c in g.members[u]) for u in g.units], dtype=np.float64
        )

    def choose(ratio: float) -> dict[int, set[int]]:
        kept: dict[int, set[int]] = {}
        if cfg.global_ranking:
            counts = _global_counts(live, unit_scores, ratio, cfg, overrides)
        else:
            counts = {
                g.root: P.keep_count(g.n, overrides.get(g.root, ratio), cfg.min_channels, cfg.round_to)
                for g in live
            }
        for g in live:
            kept[g.root] = P.select(an, g, unit_scores[g.root], counts[g.root])
        return kept

    def cost(kept: dict[int, set[int]]) -> tuple[dict[int, np.ndarray], int, int]:
        masks = P.keep_masks(an, live, kept)
        macs, params = P.estimate(an, masks, macs_by_node, params0)
        return masks, macs, params

    notes: list[str] = []
    ratio = cfg.ratio
    if cfg.target_macs is not None:
        goal = cfg.target_macs * macs0
        hi_ratio = 0.999 if not cfg.global_ranking else 0.999
        kept = choose(hi_ratio)
        _, macs_hi, _ = cost(kept)
        if macs_hi > goal:
            raise InvalidInputError(
                f"--target-macs {cfg.target_macs}: unreachable, pruning every prunable group to the "
                f"minimum gives {macs_hi / max(macs0, 1):.3f}x of the original MACs"
            )
        lo, hi = 0.0, hi_ratio
        for _ in range(30):
            mid = (lo + hi) / 2
            _, macs_mid, _ = cost(choose(mid))
            if macs_mid <= goal:
                hi = mid
            else:
                lo = mid
        ratio = hi
        notes.append(f"ratio {ratio:.4f} found for --target-macs {cfg.target_macs}")
    kept = choose(ratio)
    masks, macs1, params1 = cost(kept)
    folds = []
    if cfg.bias_fold and masks:
        from onnxcomp.prune._fold import compute_folds

        folds = compute_folds(an, masks, stats[1] if stats is not None else None)
        notes.extend(_fold_notes(folds))
    plans = []
    for i, g in enumerate(groups):
        spaces = [an.spaces[s] for s in g.spaces]
        named = [s for s in spaces if s.node]
        gp = GroupPlan(
            id=i,
            spaces=[s.key for s in named],
            nodes=[s.node for s in named],
            channels=g.n,
            kept=g.n,
            pruned=False,
            reasons=list(g.reasons) or (["a single channel"] if g.n <= 1 else []),
        )
        if g.root in kept and len(kept[g.root]) == g.n:
            gp.reasons = [
                f"grouped convolution with {g.partition} groups of {g.n // g.partition} channel(s): "
                "nothing to remove" if g.partition > 1 and g.n // g.partition <= 1 else "no channel removed at this ratio"
            ]
        elif g.root in kept:
            gp.kept = len(kept[g.root])
            gp.pruned = True
            gp.removed = {
                s.key: [int(c) for c in np.nonzero(~masks[s.id])[0]] for s in named if s.id in masks
            }
        plans.append(gp)
    return PrunePlan(
        criterion=crit,
        groups=plans,
        layers=P.layer_changes(an, masks),
        macs_before=macs0,
        macs_after=macs1,
        params_before=params0,
        params_after=params1,
        notes=notes,
        folds=folds,
    )


def _fold_notes(folds: list[Any]) -> list[str]:
    done = [f for f in folds if f.delta]
    notes = []
    if done:
        src = sorted({f.source for f in done})
        padded = sum(f.padded for f in done)
        msg = f"bias fold: {len(done)} of {len(folds)} consumers ({', '.join(src)} means)"
        if padded:
            msg += f"; {padded} zero-pad (approximate at borders)"
        notes.append(msg)
    for f in folds:
        if f.reason:
            notes.append(f"bias fold {f.node} <- {f.tensor}: {f.reason}")
    return notes


def _global_counts(
    live: list[Any], unit_scores: dict[int, np.ndarray], ratio: float, cfg: PruneConfig, overrides: dict[int, float]
) -> dict[int, int]:
    import onnxcomp.prune._plan as P

    counts: dict[int, int] = {}
    pool: list[tuple[float, int]] = []
    total = 0
    for g in live:
        if g.root in overrides:
            counts[g.root] = P.keep_count(g.n, overrides[g.root], cfg.min_channels, cfg.round_to)
            continue
        s = unit_scores[g.root]
        mean = float(s.mean()) or 1.0
        for v in np.sort(s / mean):
            pool.append((float(v), g.root))
        total += g.n
    pool.sort(key=lambda t: t[0])
    budget = math.floor(ratio * total + 1e-9)
    removed: dict[int, int] = {}
    limits = {}
    for g in live:
        if g.root not in overrides:
            limits[g.root] = min(math.floor(cfg.max_layer_ratio * g.n + 1e-9), g.n - min(cfg.min_channels, g.n))
    done = 0
    for _, root in pool:
        if done >= budget:
            break
        if removed.get(root, 0) < limits[root]:
            removed[root] = removed.get(root, 0) + 1
            done += 1
    for g in live:
        if g.root in overrides:
            continue
        keep = g.n - removed.get(g.root, 0)
        if cfg.round_to > 1:
            keep = min(g.n, math.ceil(keep / cfg.round_to) * cfg.round_to)
        counts[g.root] = keep
    return counts


# --------------------------------------------------------------- applying


def _masks_from_plan(an: Any, plan: PrunePlan) -> dict[int, np.ndarray]:
    from onnxcomp.prune._plan import build_groups

    by_key = an.space_by_key()
    masks: dict[int, np.ndarray] = {}
    for gp in plan.groups:
        if not gp.pruned:
            continue
        for key, removed in gp.removed.items():
            sp = by_key.get(key)
            if sp is None:
                raise InvalidInputError(f"plan: tensor {key!r} is not a channel source of this model")
            if sp.blocked:
                raise InvalidInputError(f"plan: channels of {key!r} cannot be pruned: {sp.blocked[0]}")
            mask = np.ones(sp.size, dtype=bool)
            idx = np.asarray(removed, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= sp.size):
                raise InvalidInputError(f"plan: channel index out of range for {key!r} ({sp.size} channels)")
            mask[idx] = False
            if not mask.any():
                raise InvalidInputError(f"plan: would remove every channel of {key!r}")
            masks[sp.id] = mask
    # every unit all-or-nothing, every tied space covered
    for g in build_groups(an):
        touched = [s for s in g.spaces if s in masks]
        if not touched:
            continue
        if g.reasons:
            raise InvalidInputError(f"plan: group of {an.spaces[touched[0]].key!r} cannot be pruned: {g.reasons[0]}")
        for sid in g.spaces:
            masks.setdefault(sid, np.ones(an.spaces[sid].size, dtype=bool))
        for chans in g.members.values():
            states = {bool(masks[sid][c]) for sid, c in chans}
            if len(states) > 1:
                sid, c = chans[0]
                raise InvalidInputError(
                    f"plan: channel {c} of {an.spaces[sid].key!r} is tied to channels the plan treats differently"
                )
    from onnxcomp.prune._apply import kept_elements

    for layout, parts, where in an.balance_constraints():
        if not any(seg.space in masks for seg in layout.segments) or layout.size % parts:
            continue
        counts = np.bincount(kept_elements(layout, masks) // (layout.size // parts), minlength=parts)
        if counts.min() != counts.max():
            raise InvalidInputError(f"plan: {where} would keep unequal channel counts per group {counts.tolist()}")
    return masks


def apply_plan(model: ir.Model, plan: PrunePlan) -> ir.Model:
    """A pruned copy of ``model``: the plan's channels removed, shapes re-inferred, checked.

    Raises:
        InvalidInputError: The plan does not fit the model.
    """
    from onnxcomp.prune._apply import apply_selection
    from onnxcomp.prune._graph import analyze

    from onnxcomp.prune._fold import apply_folds

    m = prepare(model)
    an = analyze(m)
    masks = _masks_from_plan(an, plan)
    apply_selection(an, masks)
    apply_folds(m, an, plan.folds, masks)
    return finalize(m)


def masked_reference(model: ir.Model, plan: PrunePlan) -> ir.Model:
    """The original model with every contraction weight reading a removed channel zeroed
    and the plan's bias folds added (computes exactly what the pruned model computes)."""
    from onnxcomp.prune._apply import mask_selection
    from onnxcomp.prune._fold import apply_folds
    from onnxcomp.prune._graph import analyze

    m = prepare(model)
    an = analyze(m)
    mask_selection(an, _masks_from_plan(an, plan))
    apply_folds(m, an, plan.folds, None)
    return m


def compare(reference: ir.Model, candidate: ir.Model, feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Max abs difference of every output, relative to the reference's max magnitude."""
    from onnxcomp.runtime import ModelRunner

    r = ModelRunner(reference, name="reference")
    c = ModelRunner(candidate, name="pruned model")
    worst = 0.0
    scale = 0.0
    n = 0
    for feed in feeds:
        ro, co = r.run(feed), c.run(feed)
        for k, rv in ro.items():
            rv = np.asarray(rv, dtype=np.float64)
            cv = np.asarray(co[k], dtype=np.float64)
            if rv.shape != cv.shape:
                raise OnnxcompError(f"internal error: output {k!r} shape {cv.shape} != reference {rv.shape}")
            if rv.size:
                nan_r, nan_c = np.isnan(rv), np.isnan(cv)
                if (nan_r != nan_c).any():
                    worst = math.inf  # NaN in one model only
                ok = ~(nan_r | nan_c)
                if ok.any():
                    worst = max(worst, float(np.max(np.abs(rv[ok] - cv[ok]))))
                    scale = max(scale, float(np.max(np.abs(rv[ok]))))
        n += 1
    tol = 5e-4 * scale + 1e-6
    return {"samples": n, "max_abs_error": worst, "max_abs_reference": scale, "tolerance": tol, "passed": worst <= tol}


def _verify_feeds(model: ir.Model, data: Any, cfg: PruneConfig) -> list[dict[str, np.ndarray]]:
    from onnxcomp.data import Dataset, SyntheticSource, input_specs

    if data is None:
        specs = input_specs(model)
        data = Dataset(SyntheticSource(specs, cfg.verify_samples, 0), specs)
    return list(_calibration_batches(data, cfg.batch_size, max(cfg.verify_samples, 1)))


def prune(
    model: ir.Model,
    config: PruneConfig | None = None,
    data: Any = None,
    *,
    progress: Progress | None = None,
) -> PruneResult:
    """Plan, apply, verify and report.

    Args:
        model: The model (not modified).
        config: Options.
        data: Samples (a :class:`~onnxcomp.data.Dataset`) for activation importance,
            reconstruction, verification and the fidelity report.
        progress: Called with (samples done, total) during long runs.

    Raises:
        InvalidInputError: Bad options, unknown layer names, unreachable targets.
        DataError: Samples that do not fit the model.
        OnnxcompError: The pruned model does not match the masked reference (a bug).
    """
    from onnxcomp.prune._apply import apply_selection, mask_selection
    from onnxcomp.prune._fold import apply_folds
    from onnxcomp.prune._graph import analyze

    cfg = config or PruneConfig()
    if cfg.refit and data is None:
        raise CalibrationError("reconstruction needs calibration samples (--data)")
    t0 = time.perf_counter()
    m = prepare(model)
    an = analyze(m, ignore=cfg.ignore)
    plan = _make_plan(an, m, cfg, data)
    masks = _masks_from_plan(an, plan)
    reference = None
    if (cfg.verify or cfg.refit) and masks:
        reference = m.clone()
        mask_selection(an.rebind(reference), masks)
        apply_folds(reference, an, plan.folds, None)
    apply_selection(an, masks)
    if plan.folds:
        apply_folds(m, an, plan.folds, masks)
        an = an.rebind(m)  # a MatMul may have been replaced (bias Add inserted)
    pruned = finalize(m)
    seconds = time.perf_counter() - t0
    check = None
    if cfg.verify and reference is not None:
        check = compare(reference, pruned, _verify_feeds(model, data, cfg))
        if not check["passed"]:
            raise OnnxcompError(
                f"internal error: the pruned model differs from the masked reference by "
                f"{check['max_abs_error']:.3g} (tolerance {check['tolerance']:.3g}); please report this model"
            )
    if cfg.refit and masks:
        from onnxcomp.prune._reconstruct import reconstruct

        t1 = time.perf_counter()
        pruned = finalize(reconstruct(model, pruned, an, masks, data, cfg, progress=progress))
        seconds += time.perf_counter() - t1
    result = PruneResult(pruned, plan, check)
    result.report["prune_seconds"] = round(seconds, 3)
    # the plan's criterion ranks the channels; a refit then changes the consumers
    result.report["reconstructed"] = bool(cfg.refit and masks)
    return result


def report(
    original: ir.Model,
    pruned: ir.Model,
    plan: PrunePlan,
    data: Any = None,
    *,
    latency_repeats: int = 20,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Params, MACs, size, latency before/after (same run) and fidelity on ``data``."""
    from onnxcomp.runtime import ModelRunner, measure_latency
    from onnxcomp.verification import VerifyConfig, model_size, verify

    out: dict[str, Any] = {
        "params_before": plan.params_before,
        "params_after": plan.params_after,
        "macs_before": plan.macs_before,
        "macs_after": plan.macs_after,
        "size_before": model_size(original),
        "size_after": model_size(pruned),
    }
    if data is not None:
        rep = verify(original, pruned, data, VerifyConfig(batch_size=batch_size, latency_repeats=latency_repeats))
        out["fidelity"] = rep.to_dict()
        if rep.reference_latency and rep.candidate_latency:
            out["latency_before_ms"] = rep.reference_latency.median_ms
            out["latency_after_ms"] = rep.candidate_latency.median_ms
    elif latency_repeats > 0:
        feeds = _verify_feeds(original, None, PruneConfig(verify_samples=1))
        a, b = ModelRunner(original, name="original"), ModelRunner(pruned, name="pruned")
        la, lb = measure_latency([a, b], feeds[0], repeats=latency_repeats)
        out["latency_before_ms"] = la.median_ms
        out["latency_after_ms"] = lb.median_ms
    if out.get("latency_before_ms"):
        out["latency_ratio"] = out["latency_after_ms"] / out["latency_before_ms"]
    return out
